"""Import cost: ``import libvm`` next to its dependencies' own import, in fresh interpreters.

Each case runs N times in a new ``python`` process (no daemon needed); prints the
median import time and the process's peak RSS, and the ratios to the import of
libvm's dependencies (libvirt + lxml + netaddr), the issue's yardstick.
Bytecode caching is on (``PYTHONDONTWRITEBYTECODE`` unset, one warm-up run), as
for an installed wheel: otherwise every run compiles libvm from source.
"import libvm, everything" also loads every module libvm loads on first use.
Run: ``.venv/bin/python bench/bench_import.py [N]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from _common import wants_help

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
    "import libvm, everything": "import libvm, libvm.cli, libvm.provision, libvm.bulk, libvm.cloudinit, libvm.storage",
}
#: The yardstick: libvm's dependencies, imported on their own.
DEPENDENCIES = "import lxml, netaddr, libvirt"
#: As for an installed wheel: bytecode is written once and then read.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(statement: str, rounds: int) -> tuple[float, float]:
    times, rss = [], []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", PROBE, statement], capture_output=True, text=True, check=True,
                             env=ENV)
        row = json.loads(out.stdout)
        times.append(row["seconds"])
        rss.append(row["rss_kib"])
    return statistics.median(times), statistics.median(rss)


def main() -> int:
    if wants_help(__doc__):
        return 0
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    for statement in CASES.values():  # warm-up: write the bytecode
        measure(statement, 1)
    results = {label: measure(stmt, rounds) for label, stmt in CASES.items()}
    base_t, base_rss = results[DEPENDENCIES]
    print(f"import cost, median of {rounds} fresh interpreters (bytecode cached)")
    for label, (seconds, rss) in results.items():
        print(f"  {label:32s} {seconds * 1000:7.1f} ms  {rss / 1024:6.1f} MiB peak RSS  "
              f"({seconds / base_t:5.2f}x time, {rss / base_rss:4.2f}x RSS of {DEPENDENCIES})")
    ratio = results["import libvm"][0] / base_t
    print(f"target: import libvm within 1.5x of its dependencies: {ratio:.2f}x, "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
