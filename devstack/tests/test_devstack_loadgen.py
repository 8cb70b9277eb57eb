"""The benchmark's keep-alive HTTP client against a real server on loopback: answers read
whole, connections reused, and a connection the server closed while idle replaced."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from tienda_devstack.loadgen import HttpConnections

pytestmark = pytest.mark.integration


@dataclass
class Server:
    port: int
    connections: int = 0


@asynccontextmanager
async def echo_server(*, answers_per_connection: int) -> AsyncIterator[Server]:
    """HTTP/1.1 that answers {"got": <body length>} and closes a connection after so many
    answers (0: at once, answering nothing), as a server's keep-alive timeout would."""
    server = Server(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            for _ in range(answers_per_connection):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = json.dumps({"got": len(await reader.readexactly(length))}).encode()
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(body))
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        await listening.wait_closed()


async def test_answers_are_read_whole_on_reused_connections() -> None:
    async with echo_server(answers_per_connection=100) as server:
        connections = HttpConnections("127.0.0.1", server.port, size=2, idle_seconds=60)
        answers = await asyncio.gather(
            *(connections.request("POST", "/x", b"a" * n) for n in (1, 10, 100, 1000))
        )
        await connections.close()
    assert [(status, json.loads(body)) for status, body, _ in answers] == [
        (201, {"got": n}) for n in (1, 10, 100, 1000)
    ]
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async with echo_server(answers_per_connection=1) as server:
        connections = HttpConnections("127.0.0.1", server.port, size=1, idle_seconds=60)
        for _ in range(3):  # each reuses a connection the server has closed meanwhile
            status, _, _ = await connections.request("POST", "/x", b"{}")
            assert status == 201
        await connections.close()
    assert server.connections == 3


async def test_a_connection_idle_too_long_is_not_used_again() -> None:
    async with echo_server(answers_per_connection=100) as server:
        connections = HttpConnections("127.0.0.1", server.port, size=1, idle_seconds=0)
        for _ in range(3):
            assert (await connections.request("GET", "/x"))[0] == 201
        await connections.close()
    assert server.connections == 3


async def test_a_new_connection_closed_unanswered_is_an_error_not_a_retry() -> None:
    async with echo_server(answers_per_connection=0) as server:
        connections = HttpConnections("127.0.0.1", server.port, size=1)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await connections.request("POST", "/x", b"{}")
    assert server.connections == 1
