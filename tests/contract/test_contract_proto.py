"""proto/ is linted by buf, guarded against breaking changes, and its stubs are current."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
PROTOGEN = ROOT / "tools" / "protogen.py"


def build_image(proto_dir: Path, out: Path) -> None:
    """A descriptor set of another proto folder, built like tools/protogen.py builds ours."""
    script = (
        "import sys, tools.protogen as g; from pathlib import Path; "
        "g.PROTO = Path(sys.argv[1]); g.build_image(Path(sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", script, str(proto_dir), str(out)], cwd=ROOT, check=True)


def own_files() -> list[str]:
    """Every .proto file of ours (the image holds google/api's too, which are not ours to
    lint), as buf names them."""
    return sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("buf", path=str(Path(sys.executable).parent))
    assert binary, "buf is installed with the dev dependencies (buf-bin)"
    paths = [arg for name in own_files() for arg in ("--path", name)]
    return subprocess.run(
        [binary, *args, "--config", str(ROOT / "buf.yaml"), *paths],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_generated_stubs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(PROTOGEN), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_our_protos_pass_lint_and_breaking(tmp_path: Path) -> None:
    assert {name.split("/")[0] for name in own_files()} == {"auth", "events", "order", "product"}
    build_image(ROOT / "proto", tmp_path / "image.binpb")
    image = f"{tmp_path / 'image.binpb'}#format=binpb"
    assert buf("lint", image).returncode == 0
    baseline = f"{ROOT / 'proto' / 'breaking-baseline.binpb'}#format=binpb"
    assert buf("breaking", image, "--against", baseline).returncode == 0


def test_lint_and_breaking_catch_a_bad_change(tmp_path: Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", changed)
    auth = changed / "auth" / "v1" / "auth.proto"
    text = auth.read_text()
    text = text.replace("message GetUserRequest {", "message get_user_request {")
    text = text.replace("rpc GetUser(GetUserRequest)", "rpc GetUser(get_user_request)")
    text = text.replace("  string full_name = 3;\n  Role role = 4", "  Role role = 4")
    auth.write_text(text)
    build_image(changed, tmp_path / "image.binpb")
    image = f"{tmp_path / 'image.binpb'}#format=binpb"

    lint = buf("lint", image)
    assert lint.returncode != 0 and "PascalCase" in lint.stdout
    baseline = f"{ROOT / 'proto' / 'breaking-baseline.binpb'}#format=binpb"
    breaking = buf("breaking", image, "--against", baseline)
    assert breaking.returncode != 0 and "full_name" in breaking.stdout
