"""A real HTTP server on 127.0.0.1 that records webhook POSTs and answers as scripted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: str


@dataclass
class WebhookReceiver:
    """Answers POSTs with `statuses` in turn, then 200. While `hold` is clear, requests wait
    for it (to catch a sender in the middle of an attempt)."""

    port: int
    statuses: list[int] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hold.set()
        self._lock = threading.Lock()

    def url(self, path: str = "/hooks/tienda") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, event_type: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if event_type is None or f'"{event_type}"' in r.body]

    def _answer(self, headers: dict[str, str], body: str) -> int:
        with self._lock:
            self.requests.append(Received(headers, body))
            status = self.statuses.pop(0) if self.statuses else 200
        self.hold.wait(30)
        return status

    @contextmanager
    def serving(self) -> Iterator[WebhookReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                status = receiver._answer({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.hold.set()
            server.shutdown()
            server.server_close()
            thread.join(5)
