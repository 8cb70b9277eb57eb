"""The whole tienda system as local processes: what `make run`, the end-to-end tests and the
benchmarks start."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tienda_platform.redis_server import EMBEDDED_REDIS_URL_FILE, EmbeddedRedis, free_port

SERVICES = ("auth_service", "product_service", "order_service", "gateway")
GRPC_SERVICES = SERVICES[:3]
DEFAULT_ADMIN_EMAIL = "admin@tienda.local"


@dataclass(frozen=True)
class Ports:
    """Where each process listens."""

    auth: int = 50051
    product: int = 50052
    order: int = 50053
    gateway: int = 8080
    auth_metrics: int = 9101
    product_metrics: int = 9102
    order_metrics: int = 9103

    @classmethod
    def free(cls) -> Ports:
        """Seven different ports that are free on the loopback interface right now."""
        ports: list[int] = []
        while len(ports) < 7:
            ports.append(free_port(avoid=ports))
        return cls(*ports)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """The defaults, overridden by the variables the services themselves read."""
        names = (
            "AUTH_GRPC_PORT",
            "PRODUCT_GRPC_PORT",
            "ORDER_GRPC_PORT",
            "GATEWAY_PORT",
            "AUTH_METRICS_PORT",
            "PRODUCT_METRICS_PORT",
            "ORDER_METRICS_PORT",
        )
        defaults = cls()
        values = [
            int(env.get(name) or getattr(defaults, f))
            for name, f in zip(names, cls.__dataclass_fields__, strict=True)
        ]
        return cls(*values)

    def grpc_port(self, service: str) -> int:
        return {
            "auth_service": self.auth,
            "product_service": self.product,
            "order_service": self.order,
        }[service]

    def metrics_port(self, service: str) -> int:
        return {
            "auth_service": self.auth_metrics,
            "product_service": self.product_metrics,
            "order_service": self.order_metrics,
        }[service]


def _env_prefix(service: str) -> str:
    """The prefix of a service's own variables: order_service -> ORDER."""
    return service.removesuffix("_service").upper()


def stored_secret(path: Path) -> str:
    """A random secret generated on the first run and kept in the data folder."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class AdminLogin:
    email: str
    password: str

    @classmethod
    def for_data_dir(cls, data_dir: Path, env: Mapping[str, str]) -> AdminLogin:
        """The admin from the environment, else the one generated on the first run (kept)."""
        email = env.get("BOOTSTRAP_ADMIN_EMAIL") or DEFAULT_ADMIN_EMAIL
        if password := env.get("BOOTSTRAP_ADMIN_PASSWORD"):
            return cls(email, password)
        stored = data_dir / "admin-password"
        if not stored.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            stored.write_text(f"Admin{secrets.token_urlsafe(12)}7\n")
            stored.chmod(0o600)
        return cls(email, stored.read_text().strip())


@dataclass
class Stack:
    """Starts, watches and stops the services and the gateway as child processes."""

    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    env: dict[str, str] = field(default_factory=dict)
    log_to_files: bool = True
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    # more than one process of a gRPC service: {"order_service": 2} starts order_service and
    # order_service-2 (on ports of its own); the others' targets list every replica
    replicas: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        settings = {**os.environ, **self.env}
        self.admin = AdminLogin.for_data_dir(self.data_dir, settings)
        self.service_secret = stored_secret(self.data_dir / "service-client-secret")
        self.redis_url = settings.get("REDIS_URL", "")
        # the extra replicas: process name -> (service, gRPC port, metrics port)
        self.extra_replicas: dict[str, tuple[str, int, int]] = {}
        self.ports_in_use = list(astuple(self.ports))
        for service, count in self.replicas.items():
            if service not in GRPC_SERVICES:
                raise ValueError(f"replicas of {service}: only {', '.join(GRPC_SERVICES)} have")
            database = f"{_env_prefix(service)}_DATABASE_URL"
            if count > 1 and not settings.get(database, "").startswith("postgresql"):
                raise ValueError(
                    f"replicas of {service} share a PostgreSQL database: set {database}"
                )
            for number in range(2, count + 1):
                grpc_port = free_port(avoid=self.ports_in_use)
                metrics_port = free_port(avoid=[*self.ports_in_use, grpc_port])
                self.ports_in_use += [grpc_port, metrics_port]
                self.extra_replicas[f"{service}-{number}"] = (service, grpc_port, metrics_port)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def child_env(self) -> dict[str, str]:
        p = self.ports
        env = {
            **os.environ,
            "TIENDA_DATA_DIR": str(self.data_dir),
            "AUTH_GRPC_PORT": str(p.auth),
            "PRODUCT_GRPC_PORT": str(p.product),
            "ORDER_GRPC_PORT": str(p.order),
            "GATEWAY_PORT": str(p.gateway),
            "AUTH_METRICS_PORT": str(p.auth_metrics),
            "PRODUCT_METRICS_PORT": str(p.product_metrics),
            "ORDER_METRICS_PORT": str(p.order_metrics),
            "AUTH_GRPC_TARGET": self.grpc_target("auth_service"),
            "PRODUCT_GRPC_TARGET": self.grpc_target("product_service"),
            "ORDER_GRPC_TARGET": self.grpc_target("order_service"),
            "BOOTSTRAP_ADMIN_EMAIL": self.admin.email,
            "BOOTSTRAP_ADMIN_PASSWORD": self.admin.password,
            "PRODUCT_SEED_DEMO": "true",
            "REDIS_URL": self.redis_url,
            "SERVICE_CLIENT_SECRET": self.service_secret,
            # order_service is the only service that calls another as itself (the saga's
            # ReserveStock, ReleaseStock and CommitReservation)
            "SERVICE_CLIENT_SECRETS": f"order_service:{self.service_secret}",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.env)
        # byte-code caches make every start after the first one much faster
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def grpc_ports(self, service: str) -> list[int]:
        """The gRPC port of each replica of a service."""
        extra = [port for of, port, _ in self.extra_replicas.values() if of == service]
        return [self.ports.grpc_port(service), *extra]

    def metrics_port(self, name: str) -> int:
        """Where a service's process, or one of its replicas (order_service-2), serves
        /metrics."""
        if name in self.extra_replicas:
            return self.extra_replicas[name][2]
        return self.ports.metrics_port(name)

    def grpc_target(self, service: str) -> str:
        """The target a client dials: the service's one address, or the list of its
        replicas' (each call goes to the next, see tienda_platform.grpc_client)."""
        ports = self.grpc_ports(service)
        if len(ports) == 1:
            return f"127.0.0.1:{ports[0]}"
        return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)

    def log_path(self, service: str) -> Path:
        return self.data_dir / "logs" / f"{service}.log"

    def start(self, services: tuple[str, ...] = SERVICES) -> None:
        """Start the given processes (all by default, and their extra replicas) without
        waiting for them. A name may be a replica's (order_service-2)."""
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if not self.redis_url:
            # not on a port the services are about to bind
            self.redis = EmbeddedRedis(self.data_dir / "redis").start(avoid=self.ports_in_use)
            self.redis_url = self.redis.url
            (self.data_dir / EMBEDDED_REDIS_URL_FILE).write_text(self.redis_url + "\n")
        env = self.child_env()
        names: list[str] = []
        for service in services:
            names.append(service)
            if service not in self.extra_replicas:  # a service: its extra replicas too
                names += [name for name, (of, *_) in self.extra_replicas.items() if of == service]
        names = [name for name in names if name not in self.processes]  # running already
        for name in names:
            module, overrides = name, {}
            if name in self.extra_replicas:
                module, grpc_port, metrics_port = self.extra_replicas[name]
                overrides = {
                    f"{_env_prefix(module)}_GRPC_PORT": str(grpc_port),
                    f"{_env_prefix(module)}_METRICS_PORT": str(metrics_port),
                }
            out = self.log_path(name).open("ab") if self.log_to_files else None
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module],
                env=env | overrides,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
            )
            if out:
                out.close()

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until the gateway reports every service SERVING, and each replica of a
        service that has several does too (the gateway asks one); returns the seconds
        waited."""
        replica_ports = [
            port
            for service in {of for of, _, _ in self.extra_replicas.values()}
            for port in self.grpc_ports(service)
        ]
        started = time.monotonic()
        deadline = started + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                self.raise_if_exited()
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.gateway_url}/readyz").status_code == 200 and all(
                        _serving(port) for port in replica_ports
                    ):
                        return time.monotonic() - started
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"tienda not ready after {timeout:.0f}s; logs in {self.data_dir / 'logs'}"
                    )
                time.sleep(0.05)

    def raise_if_exited(self) -> None:
        for service, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{service} exited with code {process.returncode}; see {self.log_path(service)}"
                )

    def stop(self, services: tuple[str, ...] | None = None, timeout: float = 10.0) -> None:
        """SIGTERM (graceful: NOT_SERVING, drain), then SIGKILL whatever is left."""
        chosen = [s for s in (services or tuple(self.processes)) if s in self.processes]
        for service in reversed(chosen):
            with contextlib.suppress(ProcessLookupError):
                self.processes[service].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in chosen:
            process = self.processes.pop(service)
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not self.processes and self.redis is not None:
            self.redis.stop()
            self.redis = None
            (self.data_dir / EMBEDDED_REDIS_URL_FILE).unlink(missing_ok=True)
            self.redis_url = ""

    def kill(self, service: str) -> None:
        """SIGKILL one process, as a crash would."""
        process = self.processes.pop(service)
        process.kill()
        process.wait()

    def pids(self) -> list[int]:
        """Every process of the stack, the embedded Redis included."""
        pids = [p.pid for p in self.processes.values()]
        if self.redis is not None and self.redis.process is not None:
            pids.append(self.redis.process.pid)
        return pids

    def __enter__(self) -> Stack:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serving(port: int) -> bool:
    """Whether the gRPC server on this loopback port reports SERVING."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def resident_memory_bytes(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) summed over these processes, from Linux /proc.

    RSS counts shared library pages once per process; PSS splits each shared page between the
    processes that map it, so its sum is what the stack really occupies.
    """
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("Rss", "Pss"):
                    kib = int(value.split()[0]) * 1024
                    rss += kib if name == "Rss" else 0
                    pss += kib if name == "Pss" else 0
    return rss, pss


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, from Linux /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
