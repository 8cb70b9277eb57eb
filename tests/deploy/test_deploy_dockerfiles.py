"""The service images: multi-stage, non-root, hash-checked dependencies, working health checks.

No Docker engine here: the Dockerfiles are read, their dependency filter is run on the real
lock, and their HEALTHCHECK commands are run against real health endpoints.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from concurrent import futures
from importlib import metadata
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tienda_devstack.stack import Stack
from tienda_platform.redis_server import free_port as pick_free_port

pytestmark = pytest.mark.contract

REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "observability" / "docker" / "runtime_requirements.py"

# folder -> (module, port variable, ports it exposes, health check kind)
IMAGES = {
    "auth_service": ("auth_service", "AUTH_GRPC_PORT", {50051, 9101}, "grpc"),
    "product_service": ("product_service", "PRODUCT_GRPC_PORT", {50052, 9102}, "grpc"),
    "order_service": ("order_service", "ORDER_GRPC_PORT", {50053, 9103}, "grpc"),
    "gateway": ("gateway", "GATEWAY_PORT", {8080}, "http"),
}


def instructions(folder: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a service's Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (REPO / folder / "Dockerfile").read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def final_stage(folder: str) -> list[tuple[str, str]]:
    steps = instructions(folder)
    last_from = max(i for i, (kind, _) in enumerate(steps) if kind == "FROM")
    return steps[last_from:]


def healthcheck_command(folder: str) -> list[str]:
    [args] = [args for kind, args in final_stage(folder) if kind == "HEALTHCHECK"]
    options, _, command = args.partition(" CMD ")
    assert "--interval=" in options
    assert "--start-period=" in options
    parsed = json.loads(command)
    assert isinstance(parsed, list), "exec form: no shell needed in the image"
    return [str(part) for part in parsed]


def build_args(folder: str) -> dict[str, str]:
    return dict(
        args.split("=", 1) for kind, args in instructions(folder) if kind == "ARG" and "=" in args
    )


@pytest.mark.parametrize("folder", IMAGES)
def test_image_is_multi_stage_slim_python_and_not_root(folder: str) -> None:
    steps = instructions(folder)
    froms = [args for kind, args in steps if kind == "FROM"]
    base = froms[-1].split()[0]
    for name, value in build_args(folder).items():
        base = base.replace(f"${{{name}}}", value)
    users = [args for kind, args in final_stage(folder) if kind == "USER"]

    assert len(froms) >= 2
    assert froms[0].split()[-1] == "builder"
    assert base.startswith("python:3.11-slim")
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(kind == "COPY" and "--from=builder" in args for kind, args in final_stage(folder))


@pytest.mark.parametrize("folder", IMAGES)
def test_image_runs_its_module_and_exposes_its_ports(folder: str) -> None:
    module, _, ports, _ = IMAGES[folder]
    stage = final_stage(folder)
    [cmd] = [args for kind, args in stage if kind == "CMD"]
    exposed = {int(p) for kind, args in stage if kind == "EXPOSE" for p in args.split()}

    assert json.loads(cmd) == ["python", "-m", module]
    assert exposed == ports
    assert any(kind == "HEALTHCHECK" for kind, _ in stage)


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, pattern) in order, as Docker reads .dockerignore."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def ignored(relative: str) -> bool:
    """True when the path, or a folder above it, is left out of the build context."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, pattern in dockerignore():
        if any(pattern.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("folder", IMAGES)
def test_every_copied_path_exists_and_reaches_the_build_context(folder: str) -> None:
    copied = []
    for kind, args in instructions(folder):
        if kind == "COPY" and not args.startswith("--from"):
            copied += args.split()[:-1]

    assert copied
    for source in copied:
        path = REPO / source
        assert path.exists(), f"COPY {source}: no such path"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        # an extension module built in place by `make install` is not sent: the image
        # builds its own
        needed = [
            f.relative_to(REPO).as_posix()
            for f in files
            if "tests" not in f.relative_to(REPO).parts
            and "__pycache__" not in f.parts
            and f.suffix != ".so"
        ]
        assert needed
        left_out = [f for f in needed if ignored(f)]
        assert not left_out, f".dockerignore leaves out {left_out[:5]}"


def test_dockerignore_keeps_tests_caches_and_secrets_out() -> None:
    for path in (
        "auth_service/tests/unit/test_auth_model.py",
        "libs/platform/src/tienda_platform/__pycache__/auth.cpython-311.pyc",
        "libs/platform/src/tienda_platform/_stackcache.cpython-311-x86_64-linux-gnu.so",
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "data/auth.db",
        "docker-compose.yml",
    ):
        assert ignored(path), path
    assert not ignored("libs/platform/src/tienda_platform/auth.py")
    assert not ignored("libs/platform/src/tienda_platform/_stackcache.c")
    assert not ignored("libs/platform/setup.py")


def members_built(folder: str) -> list[str]:
    """The workspace folders the builder turns into wheels."""
    [wheel] = [args for kind, args in instructions(folder) if kind == "RUN" and "pip wheel" in args]
    return [arg[2:] for arg in wheel.split() if arg.startswith("./")]


def roots(folder: str) -> list[str]:
    [run] = [
        args for kind, args in instructions(folder) if kind == "RUN" and "runtime.lock" in args
    ]
    match = re.search(
        r"runtime_requirements\.py requirements\.lock ([\w\s-]+?) > runtime\.lock", run
    )
    assert match, run
    return match.group(1).split()


@pytest.mark.parametrize("folder", IMAGES)
def test_builder_installs_the_service_and_the_workspace_members_it_needs(folder: str) -> None:
    built = members_built(folder)
    names = {
        tomllib.loads((REPO / member / "pyproject.toml").read_text())["project"]["name"]
        for member in built
    }
    own = tomllib.loads((REPO / folder / "pyproject.toml").read_text())["project"]

    assert folder in built
    assert set(roots(folder)) == names
    workspace = {"tienda-platform", "tienda-contracts"}
    assert {d for d in own["dependencies"] if d in workspace} <= names


def runtime_lock(root_names: list[str]) -> dict[str, list[str]]:
    """The filter's output for these roots: requirement name -> its lines."""
    result = subprocess.run(
        [sys.executable, str(FILTER), "requirements.lock", *root_names],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pins: dict[str, list[str]] = {}
    current = ""
    for line in result.stdout.splitlines():
        if line and not line[0].isspace():
            current = canonicalize_name(re.split(r"[=<>~!;\s\[]", line, maxsplit=1)[0])
            pins[current] = [line]
        else:
            pins[current].append(line)
    return pins


def installed_closure(root_names: list[str]) -> set[str]:
    """Every distribution the roots need on this platform, from the installed metadata."""
    needed: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [
        (canonicalize_name(r), frozenset()) for r in root_names
    ]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        for text in metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return needed


@pytest.mark.parametrize("folder", IMAGES)
def test_runtime_subset_of_the_lock_holds_every_dependency_and_no_dev_tool(folder: str) -> None:
    root_names = roots(folder)
    subset = runtime_lock(root_names)
    needed = installed_closure(root_names) - {canonicalize_name(r) for r in root_names}

    assert needed - set(subset) == set(), "pip --require-hashes would refuse the image build"
    assert not {"pytest", "mypy", "ruff", "grpcio-tools", "buf-bin"} & set(subset)
    for name, lines in subset.items():
        assert any(line.strip().startswith("--hash=sha256:") for line in lines), name


def build_roots(folder: str) -> list[str]:
    """The build tools the builder installs (from the lock) to build the members."""
    [run] = [args for kind, args in instructions(folder) if kind == "RUN" and "build.lock" in args]
    match = re.search(r"runtime_requirements\.py requirements\.lock ([\w\s-]+?) > build\.lock", run)
    assert match, run
    return match.group(1).split()


@pytest.mark.parametrize("folder", IMAGES)
def test_build_tools_subset_holds_every_built_members_backend(folder: str) -> None:
    """Each member it builds names its build backend (hatchling; setuptools for
    tienda-platform's C extension) in [build-system] requires; with no build isolation,
    the builder must install every one of them, with what they need, from the lock."""
    backends = {
        canonicalize_name(Requirement(text).name)
        for member in members_built(folder)
        for text in tomllib.loads((REPO / member / "pyproject.toml").read_text())["build-system"][
            "requires"
        ]
    }
    roots = build_roots(folder)
    subset = runtime_lock(roots)

    assert "setuptools" in backends
    assert backends <= {canonicalize_name(r) for r in roots}
    assert installed_closure(roots) <= set(subset)


def test_the_builders_wheel_of_tienda_platform_carries_its_compiled_extensions(
    tmp_path: Path,
) -> None:
    """`pip wheel --no-deps --no-build-isolation`, as the builder runs it (on a copy: the
    build writes into the source folder)."""
    source = tmp_path / "platform"
    shutil.copytree(
        REPO / "libs/platform",
        source,
        ignore=shutil.ignore_patterns("tests", "__pycache__", "*.so", "*.egg-info", "build"),
    )
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("--wheel-dir", str(tmp_path / "wheels"), str(source)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "wheels").glob("tienda_platform-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    for extension in ("_stackcache", "_otlp"):
        assert [
            n for n in names if n.startswith(f"tienda_platform/{extension}.") and n.endswith(".so")
        ]
        assert f"tienda_platform/{extension}.pyi" in names
    assert "tienda_platform/stackcache.py" in names
    assert "tienda_platform/runtime.py" in names


@pytest.fixture
def free_port() -> int:
    return pick_free_port()


def run_healthcheck(folder: str, port: int) -> int:
    """Run the image's HEALTHCHECK command with this interpreter; its exit code."""
    command = healthcheck_command(folder)
    assert command[0] == "python"
    env = {**os.environ, IMAGES[folder][1]: str(port)}
    result = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30
    )
    return result.returncode


@pytest.fixture
def grpc_health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


@pytest.mark.parametrize("folder", [f for f, spec in IMAGES.items() if spec[3] == "grpc"])
def test_grpc_healthcheck_passes_only_while_serving(
    folder: str, grpc_health_server: tuple[int, health.HealthServicer], free_port: int
) -> None:
    port, servicer = grpc_health_server

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_healthcheck(folder, port) != 0
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert run_healthcheck(folder, port) == 0
    assert run_healthcheck(folder, free_port) != 0


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_gateway_healthcheck_asks_healthz(free_port: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        _Health.status = 200
        assert run_healthcheck("gateway", port) == 0
        _Health.status = 503
        assert run_healthcheck("gateway", port) != 0
    finally:
        server.shutdown()
        server.server_close()
    assert run_healthcheck("gateway", free_port) != 0


def test_healthchecks_pass_against_the_running_services(stack: Stack) -> None:
    """The real services (tests/conftest.py's stack) answer each image's HEALTHCHECK."""
    ports = stack.ports
    port_of = {
        "auth_service": ports.auth,
        "product_service": ports.product,
        "order_service": ports.order,
        "gateway": ports.gateway,
    }

    for folder, port in port_of.items():
        assert run_healthcheck(folder, port) == 0, folder
