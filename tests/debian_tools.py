"""Tools from Debian's packages (Prometheus, promtool, amtool) that the deployment and
telemetry tests run for real, installed with apt-get when missing (CI machines run as root
and reach Debian's archive)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def debian_tool(binary: str, package: str) -> str:
    """The path of a tool from a Debian package, installing the package when it is missing."""
    if found := _find(binary):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    running_before = _pids("prometheus") | _pids("alertmanager")
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    # Only the tool is wanted: stop any server the package's scripts may have started.
    for pid in (_pids("prometheus") | _pids("alertmanager")) - running_before:
        subprocess.run(["kill", str(pid)], capture_output=True)
    found = _find(binary)
    assert found, f"{package} did not install {binary}"
    return found


def _find(binary: str) -> str | None:
    """On PATH, or in /usr/bin where Debian puts it (PATH may be a virtualenv's only)."""
    usr_bin = Path("/usr/bin") / binary
    return shutil.which(binary) or (str(usr_bin) if usr_bin.exists() else None)


def _pids(name: str) -> set[int]:
    result = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return {int(pid) for pid in result.stdout.split()}
