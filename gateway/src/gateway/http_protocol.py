"""uvicorn's httptools protocol with bounds on the size of a request's head and on the time
it takes to arrive, and the gateway's JSON error shape for requests refused before they reach
the application.

httptools puts no limit on the request line or the headers: a client could send megabytes of
one header and the gateway would keep it all in memory. Here a request whose URL and headers
add up to more than `max_head_bytes` is refused with 431 Request Header Fields Too Large (as
nginx and Node.js refuse theirs), as soon as the parser has seen that much, or as soon as that
many bytes arrived without the head being complete.

uvicorn times only idle keep-alive connections: a client that opens a connection and sends
nothing, or a head a byte at a time, would hold it forever (slowloris). Here a head must be
complete within `read_timeout` of the connection opening or of the previous answer: else 408
Request Timeout, or a plain close if not a byte of a request came.

A request that cannot be parsed at all gets uvicorn's 400, but in JSON like every other error.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import grpc
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def bounded_protocol(max_head_bytes: int, read_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting, with these bounds."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "read_timeout": read_timeout},
    )


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the parser stops, and the request is refused."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 32 * 1024  # GATEWAY_MAX_HEADER_BYTES
    read_timeout = 15.0  # GATEWAY_READ_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # no request yet, or its headers not all received
        self._received = 0  # bytes received since the head began (the body's first ones too)
        self._parsed = 0  # bytes of the request line's URL and of the headers parsed so far
        self._too_large = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_the_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timing_the_head()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head and not self.transport.is_closing():
            self._time_the_head()  # the next request's head, unless it is already in

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._received += len(data)
        super().data_received(data)
        # a head still incomplete past the bound is not read any further
        if self._in_head and self._received > self.max_head_bytes:
            self._refuse_too_large()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # with ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_timing_the_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._received, self._parsed = True, 0, 0  # the next request

    def _time_the_head(self) -> None:
        self._stop_timing_the_head()
        self._head_timer = self.loop.call_later(self.read_timeout, self._head_timed_out)

    def _stop_timing_the_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._received == 0:
            self.transport.close()  # nothing of a request came: no one to answer
            return
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request's headers did not all arrive within {self.read_timeout:g} s",
        )

    def _count(self, size: int) -> None:
        self._parsed += size
        if self._parsed > self.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to any parser error, a callback's included
        if self._too_large:
            self._refuse_too_large()
        else:
            self._refuse(
                HTTPStatus.BAD_REQUEST, grpc.StatusCode.INVALID_ARGUMENT, "malformed HTTP request"
            )

    def _refuse_too_large(self) -> None:
        self._refuse(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request line and headers are larger than {self.max_head_bytes} bytes",
        )

    def _refuse(self, status: HTTPStatus, code: grpc.StatusCode, message: str) -> None:
        if self.transport.is_closing():
            return
        self.logger.warning("refused a request: %s", message)
        body = json.dumps({"code": code.value[0], "message": message, "details": []}).encode()
        head = [f"HTTP/1.1 {status.value} {status.phrase}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
