"""Every benchmark runs end to end once in a small configuration (CI runs them here), so none rots.

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


@pytest.mark.parametrize(("script", "args", "table"), [
    ("bench_import.py", ["3"], "peak RSS"),
    ("bench_allocation.py", ["1000"], "target free_ip"),
    ("bench_reserve.py", ["--sizes", "3,5", "--grow", "0,200", "--samples", "2"], "target: a lab of 5"),
    ("bench_time_to_ip.py", ["1"], "ratio libvm/plain"),
    ("bench_create.py", ["2"], "vs raw"),
    ("bench_rpc.py", ["--small"], "top procedures"),
    ("bench_remote.py", ["--small"], "create+start"),
    ("bench_many.py", ["2"], "vs one VM"),
])
def test_benchmark_runs_small(stack: Stack, uri: str, script: str, args: list[str], table: str) -> None:
    env = dict(os.environ, LIBVM_URI=uri, PYTHONPATH=str(ROOT))  # this checkout's libvm
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                              timeout=600, env=env, check=False)
    except subprocess.TimeoutExpired as exc:  # run() killed it; the stack fixture removes its objects
        raise AssertionError(f"{script} hung: {exc.stdout!r}") from exc
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert table in proc.stdout
    # The stack fixture removed every libvmtest-* object before: whatever is left, the benchmark left.
    made = [*stack.hv.vms(), *stack.hv.networks()]
    assert [x.name for x in made if x.name.startswith(stack.name(""))] == []
