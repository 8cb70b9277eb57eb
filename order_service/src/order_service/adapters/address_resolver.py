"""Host names to IP addresses through the system resolver (getaddrinfo)."""

from __future__ import annotations

import asyncio
import socket

from order_service.service_layer.notification_ports import AddressResolver


class SystemAddressResolver(AddressResolver):
    def __init__(self, *, timeout: float = 5.0) -> None:
        # Bounded, so an attempt always ends within its lease (TimeoutError is an OSError).
        self._timeout = timeout

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            ),
            self._timeout,
        )
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
