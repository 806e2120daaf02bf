"""The main job: boot a VM that gets the IP address reserved for its MAC.

The seed scenario: network 192.168.150.0/24 with dynamic range .30-.39, MAC
66:66:66:66:66:0b bound to 192.168.150.88 for host pc001. Without
``LIBVM_URI`` it starts a private libvirtd in its own network namespace
(root needed) and boots a tiny busybox guest built from Debian packages;
everything it made is removed at the end.

Run: ``sudo bash scripts/demo.sh`` (or ``sudo .venv/bin/python examples/reserved_ip.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvm

NETWORK = "libvmtest-demo"
SUBNET = "192.168.150.0/24"
DHCP_RANGE = ("192.168.150.30", "192.168.150.39")
MAC, IP, NAME = "66:66:66:66:66:0b", "192.168.150.88", "libvmtest-pc001"


@contextlib.contextmanager
def libvirt_uri() -> Iterator[str]:
    """``$LIBVM_URI``, else a private sandboxed libvirtd for the duration."""
    if os.environ.get("LIBVM_URI"):
        yield os.environ["LIBVM_URI"]
        return
    from libvm.testing import Sandbox, SandboxError

    try:
        with Sandbox(netns="libvm-demo") as box:
            yield box.uri
    except SandboxError as exc:
        sys.exit(f"libvm demo: cannot start the libvirt sandbox: {exc}")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s")
    if os.geteuid() != 0 and not os.environ.get("LIBVM_URI"):
        sys.exit("libvm demo: run as root (it starts libvirtd in a network namespace), "
                 "or set LIBVM_URI to a libvirtd you may use")
    from libvm.testing import build_guest, console_done, ensure_packages, parse_console
    from libvm.testing.guest import GuestBuildError
    from libvm.testing.sandbox import SandboxError

    try:
        ensure_packages()
        print("building the tiny DHCP guest (cached after the first run) ...")
        guest = build_guest()
    except (SandboxError, GuestBuildError) as exc:
        sys.exit(f"libvm demo: {exc}")
    with libvirt_uri() as uri, libvm.connect(uri) as hv, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # qemu (libvirt-qemu) writes the serial log here
        console = Path(tmp) / "console.log"
        net = hv.ensure_network(NETWORK, SUBNET, dhcp_range=DHCP_RANGE, forward="none")
        try:
            start = time.monotonic()
            vm = hv.create_vm(NAME, memory="256MiB", vcpus=1,
                              nics=[libvm.Nic(network=NETWORK, ip=IP, mac=MAC)],
                              kernel=guest.kernel, initrd=guest.initrd, cmdline=guest.cmdline,
                              serial_log=console, virt_type="qemu")
            got = vm.wait_for_ip(timeout=120)
            took = time.monotonic() - start
            # wait_for_ip returns as soon as dnsmasq hands out the lease; the guest prints
            # its line once it has configured the address, a moment later.
            deadline = time.monotonic() + 30
            while not console_done(console.read_text(errors="replace")) and time.monotonic() < deadline:
                time.sleep(0.1)
            seen = parse_console(console.read_text(errors="replace")).get(MAC, "?")
            print(f"VM        {vm.name} ({vm.state})")
            print(f"MAC       {vm.macs[0]}")
            print(f"reserved  {net.reservation_for(MAC)}")
            print(f"obtained  {got} (DHCP lease), {seen} (guest console)")
            print(f"time      {took:.1f} s from create_vm to lease")
            ok = str(got) == IP == seen
            print("OK: the guest holds its reserved address" if ok else "MISMATCH")
            return 0 if ok else 1
        finally:
            with contextlib.suppress(libvm.NotFound):
                hv.vm(NAME).delete()
            net.delete()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except libvm.LibvmError as exc:
        sys.exit(f"libvm demo failed: {type(exc).__name__}: {exc}")
