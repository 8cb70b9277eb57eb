"""free_port: the ports the stack, the tests and the benchmarks give their servers."""

from __future__ import annotations

import socket

import pytest
from tienda_platform import redis_server
from tienda_platform.redis_server import free_port


def _ephemeral_range() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
    except OSError:
        low, high = 32768, 60999
    return range(low, high + 1)


def test_a_free_port_lies_outside_the_range_of_outgoing_connections() -> None:
    ephemeral = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert not [port for port in ports if port in ephemeral]
    # and it is free: a server can bind it
    with socket.socket() as server:
        server.bind(("127.0.0.1", ports[0]))


def test_a_free_port_is_none_of_those_to_avoid() -> None:
    taken: list[int] = []
    for _ in range(30):
        taken.append(free_port(avoid=taken))
    assert len(set(taken)) == 30


def test_a_port_in_use_is_not_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        in_use = held.getsockname()[1]
        spare = free_port(avoid=[in_use])
        # the picker's draws: the port in use twice, then a free one
        draws = iter([in_use, in_use, spare])
        monkeypatch.setattr(redis_server.random, "choice", lambda _ports: next(draws))
        assert free_port() == spare
