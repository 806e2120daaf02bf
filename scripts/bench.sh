#!/usr/bin/env bash
# Run libvm's benchmark suite (bench/), each benchmark printing its own table of ratios measured
# side by side in one run. As root: the real-stack benchmarks start their own sandbox (netns
# libvm-bench), or use $LIBVM_URI. Results and the machine they came from: docs/performance.md.
# Usage: bash scripts/bench.sh          the full configuration (about 35 minutes)
#        bash scripts/bench.sh --small  each benchmark once in a small configuration (CI: none rots)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [[ ${1:-} == --small ]]; then
    run() { echo "== $*"; "$py" "$@"; }
    run bench/bench_import.py 3
    run bench/bench_allocation.py 1000
    run bench/bench_reserve.py --sizes 3,5 --grow 0,200 --samples 2
    run bench/bench_time_to_ip.py 1
else
    run() { echo "== $*"; "$py" "$@"; }
    run bench/bench_import.py
    run bench/bench_allocation.py
    run bench/bench_reserve.py
    run bench/bench_time_to_ip.py
fi
