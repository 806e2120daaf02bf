"""Import cost: ``import libvm`` next to ``import libvirt`` alone, in fresh interpreters.

Each case runs N times in a new ``python`` process (no daemon needed); prints the
median import time and the process's peak RSS, and the ratios to ``import libvirt``.
Run: ``.venv/bin/python bench/bench_import.py [N]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

PROBE = """
import json, resource, sys, time
start = time.perf_counter()
exec(sys.argv[1])
took = time.perf_counter() - start
print(json.dumps({"seconds": took, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

CASES = {
    "python (nothing)": "pass",
    "import libvirt": "import libvirt",
    "import lxml, netaddr, libvirt": "import lxml.etree, netaddr, libvirt",
    "import libvm": "import libvm",
}


def measure(statement: str, rounds: int) -> tuple[float, float]:
    times, rss = [], []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", PROBE, statement], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout)
        times.append(row["seconds"])
        rss.append(row["rss_kib"])
    return statistics.median(times), statistics.median(rss)


def main() -> int:
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    results = {label: measure(stmt, rounds) for label, stmt in CASES.items()}
    base_t, base_rss = results["import libvirt"]
    print(f"import cost, median of {rounds} fresh interpreters")
    for label, (seconds, rss) in results.items():
        print(f"  {label:32s} {seconds * 1000:7.1f} ms  {rss / 1024:6.1f} MiB peak RSS  "
              f"({seconds / base_t:5.2f}x time, {rss / base_rss:4.2f}x RSS of import libvirt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
