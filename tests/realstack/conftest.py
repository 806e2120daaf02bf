"""Real-stack fixtures: a real libvirtd, its dnsmasq and qemu guests.

The connection URI comes from ``$LIBVM_TEST_URI`` (a libvirtd you run), else
from a private :class:`libvm.testing.Sandbox` started for the session in its
own network namespace. Tests only create objects named ``libvmtest-*`` and
remove every such object afterwards.

Under ``CI=true`` a stack that cannot start is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

import libvm
from libvm.testing import GuestImage, RemoteHypervisor, Sandbox, build_guest, parse_console

PREFIX = "libvmtest-"
IN_CI = os.environ.get("CI", "").lower() == "true"
_subnets = itertools.count(10)



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/realstack (select with ``-m realstack``)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.realstack)


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere (e.g. a developer who is not root)."""
    if IN_CI:
        pytest.fail(f"real stack unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"real stack unavailable: {reason} (run as root or set LIBVM_TEST_URI)")


_S = TypeVar("_S", Sandbox, RemoteHypervisor)


def running(service: _S, what: str) -> Iterator[_S]:
    """Start ``service`` (as root), yield it, stop it; a failure to start is :func:`unavailable`."""
    if os.geteuid() != 0:
        unavailable("not root")
    try:
        service.start()
    except Exception as exc:  # any failure to start is reported the same way
        unavailable(f"{what} did not start: {exc}")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox | None]:
    """The private libvirtd (``None`` when ``LIBVM_TEST_URI`` names another one)."""
    if os.environ.get("LIBVM_TEST_URI"):
        yield None
        return
    yield from running(Sandbox(netns="libvmtest"), "sandbox")


@pytest.fixture(scope="session")
def remote() -> Iterator[RemoteHypervisor]:
    """A second libvirtd in its own network and mount namespaces, reached only over a veth
    (``remote.tcp_uri``, ``remote.ssh_uri``, ``remote.libssh_uri``); it runs beside the sandbox."""
    hv = RemoteHypervisor(name="libvmtest-remote", subnet="10.253.7.0/24")
    yield from running(hv, "remote hypervisor")
    left = hv.leftovers()
    assert not left, f"the remote hypervisor left {left} behind after stop()"


def next_subnet() -> str:
    """A fresh ``10.213.N`` prefix, never used before in this session."""
    return f"10.213.{next(_subnets)}"


@pytest.fixture(scope="session")
def uri(sandbox: Sandbox | None) -> str:
    """The URI of the libvirtd under test."""
    return os.environ.get("LIBVM_TEST_URI") or (sandbox.uri if sandbox else "qemu:///system")


@pytest.fixture(scope="session")
def guest() -> GuestImage:
    """The tiny busybox DHCP guest (built once, cached)."""
    try:
        return build_guest()
    except Exception as exc:
        unavailable(f"test guest could not be built: {exc}")
        raise


@dataclass
class Stack:
    """One test's view of the real stack; removes everything it made."""

    hv: libvm.Hypervisor
    guest: GuestImage
    uri: str
    logs: Path

    def name(self, label: str) -> str:
        return f"{PREFIX}{label}"

    def network(self, label: str, dhcp: tuple[int, int] = (30, 39), forward: str = "none",
                dual: bool = False) -> tuple[libvm.Network, str]:
        """A fresh network 10.213.N.0/24 (isolated by default; ``dual``: also fd00:213:N::/64, its
        DHCPv6 range ::100-::1ff); returns it and its prefix 10.213.N."""
        base = next_subnet()
        n = base.rsplit(".", 1)[1]
        net = self.hv.ensure_network(self.name(label), f"{base}.0/24", forward=forward,
                                     dhcp_range=(f"{base}.{dhcp[0]}", f"{base}.{dhcp[1]}"),
                                     subnet6=f"fd00:213:{n}::/64" if dual else None,
                                     dhcp_range6=(f"fd00:213:{n}::100", f"fd00:213:{n}::1ff") if dual else None)
        return net, base

    def vm(self, label: str, nics: Sequence[libvm.Nic], *, clientid: str | None = None,
           **kwargs: object) -> libvm.VM:
        """Boot the test guest with ``nics`` and a serial log."""
        return self.hv.create_vm(
            self.name(label), memory="256MiB", vcpus=1, nics=nics,
            kernel=self.guest.kernel, initrd=self.guest.initrd, cmdline=self.guest.cmdline_for(clientid),
            serial_log=self.console_path(label), virt_type="qemu", **kwargs,  # type: ignore[arg-type]
        )

    def console_path(self, label: str) -> Path:
        return self.logs / f"{label}.log"

    def console(self, label: str, macs: int = 1, timeout: float = 90.0) -> dict[str, str]:
        """``{mac: ip}`` the guest printed on its serial console, once it printed ``macs`` of them."""
        deadline = time.monotonic() + timeout
        path = self.console_path(label)
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace") if path.exists() else ""
            if "LIBVM-DONE" in text:
                return parse_console(text)
            time.sleep(0.5)
        text = path.read_text(errors="replace") if path.exists() else "<no console log>"
        raise AssertionError(f"guest {label} printed no LIBVM-DONE in {timeout} s:\n{text[-2000:]}")

    def virsh(self, *args: str) -> str:
        return subprocess.run(["virsh", "-c", self.uri, *args], check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def cleanup(self) -> None:
        for vm in self.hv.vms():
            if vm.name.startswith(PREFIX):
                vm.delete(storage=True)
        for net in self.hv.networks():
            if net.name.startswith(PREFIX):
                net.delete()


@pytest.fixture
def stack(uri: str, guest: GuestImage) -> Iterator[Stack]:
    """A connection to the real daemon plus helpers; cleans up ``libvmtest-*`` objects."""
    with stack_on(uri, guest) as s:
        yield s


@contextlib.contextmanager
def stack_on(uri: str, guest: GuestImage) -> Iterator[Stack]:
    """A :class:`Stack` on the daemon at ``uri``, without ``libvmtest-*`` objects before and after."""
    with libvm.connect(uri) as hv, tempfile.TemporaryDirectory(prefix="libvmtest-") as tmp:
        os.chmod(tmp, 0o755)  # qemu runs as libvirt-qemu and must reach the serial log
        s = Stack(hv=hv, guest=guest, uri=uri, logs=Path(tmp))
        s.cleanup()
        try:
            yield s
        finally:
            s.cleanup()
