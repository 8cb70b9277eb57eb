"""Lint proto/ with buf and check it for breaking changes against the committed baseline.

buf reads a descriptor set built by protoc (tools/protogen.py --image), so google/api/*.proto
come from the installed googleapis-common-protos rather than a network registry.

Usage: python tools/buf_check.py IMAGE [--update-baseline]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "proto" / "breaking-baseline.binpb"


def buf() -> str:
    found = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if found is None:
        sys.exit("buf not found: install the dev dependencies (make install)")
    return found


def own_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))


def run(args: list[str]) -> int:
    paths = [arg for f in own_files() for arg in ("--path", f)]
    result = subprocess.run([buf(), *args, *paths, "--config", str(ROOT / "buf.yaml")], cwd=ROOT)
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image", type=Path)
    parser.add_argument("--update-baseline", action="store_true")
    args = parser.parse_args()
    image = f"{args.image}#format=binpb"
    if run(["lint", image]) != 0:
        print("buf lint failed", file=sys.stderr)
        return 1
    if args.update_baseline:
        shutil.copyfile(args.image, BASELINE)
        print(f"baseline updated: {BASELINE.relative_to(ROOT)}")
        return 0
    if run(["breaking", image, "--against", f"{BASELINE}#format=binpb"]) != 0:
        print(
            "breaking change against proto/breaking-baseline.binpb: add a new version instead",
            file=sys.stderr,
        )
        return 1
    print("buf lint and breaking checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
