"""What libvm's checks cost on top of libvirt's own reservation call, on a real daemon.

Starts the sandbox (root; or uses ``$LIBVM_URI``), then times, in one run,
N reservations made with a raw ``virNetworkUpdate`` ADD next to N made with
``Network.reserve`` (validation, conflict checks, lease checks, then the same
call), and the same for releases; prints the ratios. The live update itself
dominates: libvirt rewrites dnsmasq's hosts file and reloads firewall rules.
Run: ``sudo .venv/bin/python bench/bench_reserve.py [N]``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

import libvirt

import libvm

FLAGS = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
SECTION = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST


@contextlib.contextmanager
def daemon() -> Iterator[str]:
    if os.environ.get("LIBVM_URI"):
        yield os.environ["LIBVM_URI"]
        return
    from libvm.testing import Sandbox

    with Sandbox(netns="libvm-bench") as box:
        yield box.uri


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    hosts = [(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", f"10.215.0.{10 + i}") for i in range(count)]
    with daemon() as uri, libvm.connect(uri) as hv:
        net = hv.ensure_network("libvmtest-bench", "10.215.0.0/24", dhcp_range=("10.215.0.200", "10.215.0.250"),
                                forward="none")
        try:
            raw = net.handle

            def raw_add() -> None:
                for mac, ip in hosts:
                    raw.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, SECTION, -1,
                               f"<host mac='{mac}' ip='{ip}'/>", FLAGS)

            def raw_delete() -> None:
                for mac, ip in hosts:
                    raw.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, SECTION, -1,
                               f"<host mac='{mac}' ip='{ip}'/>", FLAGS)

            def libvm_add() -> None:
                for mac, ip in hosts:
                    net.reserve(mac, ip)

            def libvm_release() -> None:
                for mac, _ in hosts:
                    net.release(mac)

            rows = [("raw virNetworkUpdate ADD", timed(raw_add)), ("raw virNetworkUpdate DELETE", timed(raw_delete)),
                    ("libvm Network.reserve", timed(libvm_add)), ("libvm Network.release", timed(libvm_release))]
        finally:
            net.delete()
    print(f"{count} reservations on a live network (dnsmasq running)")
    print(f"{'operation':32} {'ms each':>9} {'vs raw':>8}")
    for index, (label, seconds) in enumerate(rows):
        base = rows[index % 2][1]
        print(f"{label:32} {1000 * seconds / count:9.1f} {seconds / base:7.2f}x")


if __name__ == "__main__":
    main()
