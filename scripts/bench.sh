#!/usr/bin/env bash
# Run libvm's benchmark suite (bench/) in its full configuration, each benchmark printing its own
# table of ratios measured side by side in one run (about 30 minutes). As root: the real-stack
# benchmarks start their own sandbox (netns libvm-bench), or use $LIBVM_URI. Results and the machine
# they came from: docs/performance.md. CI runs each once in a small configuration
# (tests/realstack/test_bench.py).
set -euo pipefail
cd "$(dirname "$0")/.."
for bench in bench_import bench_allocation bench_reserve bench_time_to_ip bench_create bench_rpc bench_remote bench_many; do
    echo "== bench/$bench.py"
    .venv/bin/python "bench/$bench.py"
done
