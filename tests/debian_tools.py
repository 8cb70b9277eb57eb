"""Tools from Debian's packages (Prometheus, promtool, amtool) that the deployment and
telemetry tests run for real, installed with apt-get when missing (CI machines run as root
and reach Debian's archive)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# pytest-xdist workers install one at a time (apt-get holds dpkg's lock, and a second
# apt-get would fail on it rather than wait)
INSTALL_LOCK = Path(tempfile.gettempdir()) / "tienda-debian-tools.lock"


def debian_tool(binary: str, package: str) -> str:
    """The path of a tool from a Debian package, installing the package when it is missing."""
    if found := _find(binary):
        return found
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (found := _find(binary)):  # another worker may have installed it meanwhile
            _install(package)
            found = _find(binary)
    assert found, f"{package} did not install {binary}"
    return found


def _install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    running_before = _pids("prometheus") | _pids("alertmanager")
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    # Only the tool is wanted: stop any server the package's scripts started, and not the
    # Prometheus a test of this run (of another worker, say) started meanwhile.
    run = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()
    for pid in (_pids("prometheus") | _pids("alertmanager")) - running_before:
        if run not in _ancestors(pid):
            subprocess.run(["kill", str(pid)], capture_output=True)


def _find(binary: str) -> str | None:
    """On PATH, or in /usr/bin where Debian puts it (PATH may be a virtualenv's only)."""
    usr_bin = Path("/usr/bin") / binary
    return shutil.which(binary) or (str(usr_bin) if usr_bin.exists() else None)


def _pids(name: str) -> set[int]:
    result = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return {int(pid) for pid in result.stdout.split()}


def _ancestors(pid: int) -> set[int]:
    found: set[int] = set()
    while pid > 1 and pid not in found:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # the parent's pid
        found.add(pid)
    return found
