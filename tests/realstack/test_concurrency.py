"""Many create_vm calls at once, from threads and from processes: unique addresses, no duplicates."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import libvm
from libvm import Nic
from tests.realstack.conftest import PREFIX, Stack

THREADS = 6
PROCESSES = 3
PER_PROCESS = 3

WORKER = """
import sys, libvm
uri, network, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with libvm.connect(uri) as hv:
    for i in range(count):
        vm = hv.create_vm(f"{tag}-{i}", memory=64, nics=[libvm.Nic(network)], virt_type="qemu", start=False)
        print(vm.name, vm.macs[0], vm.nics[0].ip, flush=True)
"""


def communicate_all(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[str, str]]:
    """Every process's (stdout, stderr). No process outlives this call: on a timeout
    (or any interruption) all are killed first, then the test fails; the ``stack``
    fixture then removes the ``libvmtest-*`` domains and networks they made."""
    deadline = time.monotonic() + timeout
    try:
        return [p.communicate(timeout=max(0.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        tails = [p.communicate()[1][-500:] for p in procs]
        pytest.fail(f"workers still running after {timeout:g} s, killed; stderr tails: {tails}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def host_entries(net: libvm.Network) -> list[str]:
    return [line.strip() for line in net.xml(inactive=True).splitlines() if "<host " in line]


def assert_unique(net: libvm.Network, expected: int) -> None:
    hosts = net.reservations()
    assert len(hosts) == expected, host_entries(net)
    for attr in ("mac", "ip", "hostname"):
        counts = collections.Counter(getattr(h, attr) for h in hosts)
        assert max(counts.values()) == 1, f"duplicate {attr}: {counts.most_common(2)}"
    live = host_entries(net)
    assert len(live) == len(set(live)) == expected


def test_threads_allocate_distinct_addresses(stack: Stack, uri: str) -> None:
    net, _ = stack.network("threads", dhcp=(200, 250))
    made: list[libvm.VM] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        try:
            with libvm.connect(uri) as hv:  # one connection per thread, as separate programs would
                barrier.wait()
                made.append(hv.create_vm(f"{PREFIX}t{index}", memory=64, nics=[Nic(net.name)],
                                         virt_type="qemu", start=False))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(made) == THREADS
    assert_unique(net, THREADS)
    macs = [m for v in stack.hv.vms() if v.name.startswith(f"{PREFIX}t") for m in v.macs]
    assert len(macs) == len(set(macs)) == THREADS


@pytest.mark.parametrize("shared_lock", [True, False], ids=["one-host", "hosts-without-shared-lock"])
def test_processes_allocate_distinct_addresses(stack: Stack, uri: str, tmp_path: Path, shared_lock: bool) -> None:
    """Separate processes; without a shared lock dir only libvirt's atomic add and the retry keep them apart."""
    net, _ = stack.network("procs", dhcp=(200, 250))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = []
    for n in range(PROCESSES):
        env = dict(os.environ)
        if not shared_lock:
            (tmp_path / f"lock{n}").mkdir()
            env["LIBVM_LOCK_DIR"] = str(tmp_path / f"lock{n}")
        procs.append(subprocess.Popen(
            [sys.executable, str(script), uri, net.name, f"{PREFIX}p{n}", str(PER_PROCESS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = communicate_all(procs, timeout=300)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    lines = [line.split() for out, _ in outputs for line in out.splitlines()]
    assert len(lines) == PROCESSES * PER_PROCESS
    assert len({mac for _, mac, _ in lines}) == len({ip for _, _, ip in lines}) == len(lines)
    assert_unique(net, PROCESSES * PER_PROCESS)
