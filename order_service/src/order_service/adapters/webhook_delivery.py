"""Webhook POSTs with httpx, pinned to the IP address the SSRF check approved.

Connecting to that address (and not resolving the host again) closes the gap in which DNS
could change between the check and the request. The Host header and, for https, the TLS
server name (SNI and certificate check) stay those of the URL.
"""

from __future__ import annotations

import asyncio

import httpx

from order_service.service_layer.notification_ports import HttpOutcome, WebhookSender


class HttpxWebhookSender(WebhookSender):
    def __init__(self, *, timeout: float) -> None:
        # No proxies from the environment (they would bypass the address check), no redirects
        # (a 3xx could point anywhere; it counts as a failed attempt).
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        # httpx's timeouts bound each step (connect, each read); a receiver that trickles its
        # answer would pass them all, so the whole request is bounded too: an attempt must end
        # well within its lease, or another worker would make it again meanwhile
        self._timeout = timeout

    async def post(
        self, *, url: str, address: str, headers: dict[str, str], body: str
    ) -> HttpOutcome:
        original = httpx.URL(url)
        pinned = original.copy_with(host=address)
        name = original.raw_host.decode("ascii")  # IDNA-encoded
        authority = f"[{name}]" if ":" in name else name
        host_header = authority if original.port is None else f"{authority}:{original.port}"
        extensions = {"sni_hostname": name} if original.scheme == "https" else {}
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream(
                    "POST",
                    pinned,
                    content=body.encode(),
                    headers={**headers, "host": host_header, "content-type": "application/json"},
                    extensions=extensions,
                ) as response,
            ):
                # The answer is its status: the body is never read (a receiver could send
                # gigabytes of it), and the connection closes unread.
                status = response.status_code
        except (httpx.TimeoutException, TimeoutError):
            return HttpOutcome(0, "timed out")
        except httpx.HTTPError as error:
            return HttpOutcome(0, f"{type(error).__name__}: {error}"[:500])
        if 200 <= status < 300:
            return HttpOutcome(status)
        return HttpOutcome(status, f"HTTP {status}")

    async def close(self) -> None:
        await self._client.aclose()
