"""The creation benchmarks run end to end in a small configuration (CI runs them here).

No timing is asserted: the numbers depend on the machine. The benchmarks
use the daemon under test through ``$LIBVM_URI`` and remove what they made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realstack.conftest import Stack

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(("script", "table"), [("bench_create.py", "vs raw"), ("bench_many.py", "vs one VM")])
def test_benchmark_runs_with_two_vms(stack: Stack, uri: str, script: str, table: str) -> None:
    env = dict(os.environ, LIBVM_URI=uri, PYTHONPATH=str(ROOT))  # this checkout's libvm
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "2"], capture_output=True, text=True,
                              timeout=600, env=env, check=False)
    except subprocess.TimeoutExpired as exc:  # run() killed it; the stack fixture removes its objects
        raise AssertionError(f"{script} hung: {exc.stdout!r}") from exc
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert table in proc.stdout
    assert [vm.name for vm in stack.hv.vms() if vm.name.startswith(stack.name("b"))] == []
