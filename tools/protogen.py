"""Generate the Python stubs of proto/ into libs/contracts/src, or check that they are current.

Usage: python tools/protogen.py [--check] [--image PATH]
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "libs" / "contracts" / "src"
# One Python package per top-level proto folder (auth, product, order, ...).
DESCRIPTOR_SET = "tienda.binpb"
PACKAGES = tuple(sorted(p.name for p in PROTO.iterdir() if p.is_dir()))


def include_paths() -> list[str]:
    """Where google/protobuf and google/api protos live: grpcio-tools and googleapis-common-protos."""
    import google.api.annotations_pb2 as annotations

    google_api_root = Path(annotations.__file__).resolve().parent.parent.parent
    return [str(PROTO), str(Path(grpc_tools.__file__).parent / "_proto"), str(google_api_root)]


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))


def run_protoc(args: list[str]) -> None:
    includes = [f"-I{p}" for p in include_paths()]
    code = protoc.main(["protoc", *includes, *args, *proto_files()])
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")


def generate(out: Path) -> None:
    for pkg in PACKAGES:
        shutil.rmtree(out / pkg, ignore_errors=True)
    run_protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"])
    # With comments and imports: the gateway's OpenAPI document reads descriptions from it.
    build_image(out / "tienda_contracts" / DESCRIPTOR_SET)
    for pkg in PACKAGES:
        for folder in [out / pkg, *(p for p in (out / pkg).rglob("*") if p.is_dir())]:
            if folder.exists():
                (folder / "__init__.py").touch()


def build_image(path: Path) -> None:
    """Write a FileDescriptorSet of proto/ with its imports, for buf lint and breaking checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_protoc([f"--descriptor_set_out={path}", "--include_imports", "--include_source_info"])


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale: list[str] = []
        for pkg in PACKAGES:
            fresh, committed = Path(tmp) / pkg, OUT / pkg
            fresh_files = {p.relative_to(tmp) for p in fresh.rglob("*") if p.is_file()}
            committed_files = {
                p.relative_to(OUT)
                for p in committed.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            }
            stale += [str(p) for p in fresh_files ^ committed_files]
            stale += [
                str(p)
                for p in fresh_files & committed_files
                if not filecmp.cmp(Path(tmp) / p, OUT / p, shallow=False)
            ]
        image = Path("tienda_contracts") / DESCRIPTOR_SET
        if not filecmp.cmp(Path(tmp) / image, OUT / image, shallow=False):
            stale.append(str(image))
    if stale:
        print("generated stubs are stale; run `make proto`:", *sorted(stale), sep="\n  ")
        return 1
    print("generated stubs match proto/")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    parser.add_argument("--image", type=Path, help="also write a descriptor set here")
    args = parser.parse_args()
    if args.image:
        build_image(args.image)
    if args.check:
        return check()
    generate(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
