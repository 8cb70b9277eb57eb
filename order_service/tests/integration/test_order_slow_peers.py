"""A webhook receiver or an SMTP server that answers a byte at a time: each read is quick, so
per-step timeouts never fire, but the attempt as a whole still ends at its timeout (well
within its lease, after which another worker would make the attempt again). A receiver that
answers with an endless body is heard by its status alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from order_service.adapters.smtp import SmtpMailer
from order_service.adapters.webhook_delivery import HttpxWebhookSender
from order_service.service_layer.notification_ports import MailerError

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
# a byte every 0.2 s: the whole answer takes several times TIMEOUT
BYTE_EVERY = 0.2


async def trickle(writer: asyncio.StreamWriter, answer: bytes) -> None:
    for byte in answer:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(BYTE_EVERY)


@contextlib.asynccontextmanager
async def trickling_server(request_ends: bytes | None, answer: bytes) -> AsyncIterator[int]:
    """A server on a free port that reads up to `request_ends` (None: reads nothing) and
    trickles `answer` back; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if request_ends is not None:
                await reader.readuntil(request_ends)
            await trickle(writer, answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def trickling_http() -> AsyncIterator[int]:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with trickling_server(b"\r\n\r\n", answer) as port:
        yield port


@pytest.fixture
async def trickling_smtp() -> AsyncIterator[int]:
    # the greeting, a byte at a time: the client waits for it before anything else
    async with trickling_server(None, b"220 slow.example ESMTP at your service\r\n") as port:
        yield port


async def test_a_webhook_receiver_that_trickles_its_answer_times_out_as_a_whole(
    trickling_http: int,
) -> None:
    sender = HttpxWebhookSender(timeout=TIMEOUT)
    started = time.monotonic()
    try:
        outcome = await sender.post(
            url=f"http://hooks.example:{trickling_http}/x",
            address="127.0.0.1",
            headers={},
            body="{}",
        )
    finally:
        await sender.close()
    assert (outcome.status_code, outcome.error) == (0, "timed out")
    assert time.monotonic() - started < TIMEOUT + 2


async def test_an_smtp_server_that_trickles_its_replies_times_out_as_a_whole(
    trickling_smtp: int,
) -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=trickling_smtp, sender="shop@x.io", timeout=TIMEOUT)
    started = time.monotonic()
    with pytest.raises(MailerError, match="timed out"):
        await mailer.send(recipient="ada@x.io", subject="Hi", body="Hello")
    assert time.monotonic() - started < TIMEOUT + 2


async def test_a_webhook_receiver_answering_an_endless_body_is_heard_by_its_status() -> None:
    """The status line is the answer: the body, however large, is not read, so it neither
    fills the service's memory nor holds the attempt until it times out."""
    sent = 0
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
        chunk = b"x" * 65536
        try:
            while sent < 256 * 1024 * 1024:  # until the sender hangs up (at most 256 MiB)
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except ConnectionError:
            pass
        finally:
            writer.close()
            closed.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = HttpxWebhookSender(timeout=30.0)
    try:
        outcome = await sender.post(
            url=f"http://hooks.example:{port}/x", address="127.0.0.1", headers={}, body="{}"
        )
        await asyncio.wait_for(closed.wait(), 30)
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert (outcome.status_code, outcome.error) == (200, "")
    assert sent < 64 * 1024 * 1024, f"the sender read {sent} bytes of the body"
