"""Print the part of requirements.lock that the named packages need, hashes included.

The lock holds the development tools too (pytest, mypy, buf, ...). A service image needs only
the dependencies of its own workspace members, so each Dockerfile installs this subset with
`pip install --require-hashes`. The subset is the closure of the lock's `# via` annotations
from the given roots: a pinned package belongs to it when something in it needs the package.
A missing dependency cannot slip through: pip refuses, in hash-checking mode, to install any
requirement that the subset does not pin.

    python runtime_requirements.py requirements.lock tienda-platform auth-service > runtime.lock
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical(name: str) -> str:
    """The PEP 503 normalised form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    """One requirement of the lock: its lines (requirement and hashes) and who needs it."""

    lines: list[str]
    needed_by: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Pin]:
    """The lock's pins by canonical name."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not line[0].isspace() and not stripped.startswith("#"):
            match = _NAME.match(stripped)
            if match is None:
                raise ValueError(f"cannot read the requirement line {line!r}")
            current = pins.setdefault(canonical(match.group()), Pin(lines=[]))
            current.lines.append(line)
            in_via = False
        elif current is None:
            continue
        elif stripped.startswith("--hash"):
            current.lines.append(line)
        elif stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.needed_by.add(_first_name(rest))
        elif in_via and stripped.startswith("#   "):
            current.needed_by.add(_first_name(stripped.removeprefix("#").strip()))
        else:
            in_via = False
    return pins


def _first_name(annotation: str) -> str:
    match = _NAME.match(annotation)
    return canonical(match.group()) if match else ""


def closure(pins: dict[str, Pin], roots: list[str]) -> list[str]:
    """Names of the pins that the roots need, directly or through each other, sorted."""
    needed = {canonical(root) for root in roots}
    changed = True
    while changed:
        changed = False
        for name, pin in pins.items():
            if name not in needed and pin.needed_by & needed:
                needed.add(name)
                changed = True
    return sorted(name for name in needed if name in pins)


def main(argv: list[str]) -> int:
    """Write the subset of the lock (argv[0]) for the roots (argv[1:]) to stdout."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    pins = parse_lock(Path(argv[0]).read_text())
    for name in closure(pins, argv[1:]):
        print("\n".join(pins[name].lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
