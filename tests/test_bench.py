"""The benchmarks without a daemon: each answers --help, and they share bench/_common.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_answers_help_without_running(script: Path) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60,
                          check=False, cwd=BENCH.parent)
    doc = ast.get_docstring(ast.parse(script.read_text()))
    assert done.returncode == 0, done.stderr
    assert doc is not None and doc.split("\n", 1)[0][:40] in done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmarks_share_their_helpers(script: Path) -> None:
    tree = ast.parse(script.read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert not defined & {"daemon", "wants_help", "size", "cleanup"}, "use bench/_common.py"
    sources = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in sources if name and name.startswith("bench_")}, "import helpers from _common"
