"""libvm.testing.build: the one way test artefacts are built into their cache."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import libvm.testing
from libvm.testing import build, guest
from libvm.testing.build import GuestBuildError, build_once, run


def test_build_once_builds_into_place_once(tmp_path: Path) -> None:
    final = tmp_path / "key"
    calls: list[Path] = []

    def make(staging: Path) -> None:
        calls.append(staging)
        (staging / "out").write_text("built")

    build_once(final, (final / "out").is_file, make, ".build-")
    build_once(final, (final / "out").is_file, make, ".build-")
    assert (final / "out").read_text() == "built" and len(calls) == 1
    assert calls[0].parent == tmp_path and calls[0].name.startswith(".build-")
    assert final.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "key"]


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def fail(staging: Path) -> None:
        (staging / "half").write_text("x")
        run(["false"])

    with pytest.raises(GuestBuildError, match="false failed"):
        build_once(tmp_path / "key", lambda: False, fail, ".build-")
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_run_returns_the_output() -> None:
    assert run(["echo", "hi"]) == "hi\n"


def test_guest_and_disk_share_the_build_helpers() -> None:
    assert guest.GuestBuildError is build.GuestBuildError
    package = Path(libvm.testing.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
