"""A cloud-image VM end to end: base image in a storage pool, qcow2 overlay,
cloud-init seed (hostname + SSH key), reserved address, DNS name, SSH readiness.

    sudo .venv/bin/python examples/cloud_image.py                    # the test guest's disk image
    sudo .venv/bin/python examples/cloud_image.py --image debian-12-genericcloud-amd64.qcow2
    sudo .venv/bin/python examples/cloud_image.py --image "$(.venv/bin/python -c \
        'from libvm.testing import build_debian_image; print(build_debian_image())')"   # CI's Debian 12 image

Without ``LIBVM_URI`` it starts a private libvirtd in its own network namespace
(root needed). The readiness probe and the DNS query must run where the VM's
bridge is reachable: inside that namespace (``$LIBVM_NETNS`` names it when
``LIBVM_URI`` points at a sandboxed daemon). Everything it made is removed at
the end, the uploaded base image included.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvm

POOL, POOL_DIR = "libvmexample", "/var/lib/libvirt/images/libvmexample"
NETWORK, SUBNET = "libvmtest-cloud", "192.168.160.0/24"
DHCP_RANGE = ("192.168.160.100", "192.168.160.199")
NAME, HOST, IP = "libvmtest-web1", "web1", "192.168.160.50"
DEMO_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL1bvmExampleKeyOnlyForTheDemo0000000000 demo@libvm"


@contextlib.contextmanager
def libvirt_uri() -> Iterator[tuple[str, str | None]]:
    """``($LIBVM_URI, $LIBVM_NETNS)``, else a private sandboxed libvirtd and its netns."""
    if os.environ.get("LIBVM_URI"):
        yield os.environ["LIBVM_URI"], os.environ.get("LIBVM_NETNS")
        return
    from libvm.testing import Sandbox

    with Sandbox(netns="libvm-example") as box:
        yield box.uri, box.netns


def where_reachable(netns: str | None, argv: list[str], timeout: float) -> str:
    """Run ``argv`` where the guest's bridge is (``ip netns exec``), return its stdout."""
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise libvm.LibvmError(f"{' '.join(argv[-4:])} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def resolve(name: str, server: str) -> str:
    """One DNS A query to ``server`` (the network's dnsmasq), standard library only."""
    query = struct.pack(">HHHHHH", 0x4C56, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, (server, 53))
        reply = sock.recv(512)
    return socket.inet_ntoa(reply[-4:]) if struct.unpack(">H", reply[6:8])[0] else "NXDOMAIN"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, help="a qcow2 cloud image (default: the test guest's disk image)")
    parser.add_argument("--key", help="an SSH public key line (default: ~/.ssh/id_*.pub, else a demo key)")
    parser.add_argument("--probe", nargs=2, metavar=("URI", "VM"), help=argparse.SUPPRESS)
    parser.add_argument("--resolve", nargs=2, metavar=("NAME", "SERVER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:  # runs inside the network namespace
        with libvm.connect(args.probe[0]) as hv:
            print(hv.vm(args.probe[1]).wait_for_ssh(timeout=240))
        return 0
    if args.resolve:
        print(resolve(*args.resolve))
        return 0
    logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s")
    image = args.image
    if image is None:
        from libvm.testing import build_disk_image, ensure_packages

        ensure_packages()
        print("building the test guest's bootable disk image (cached after the first run) ...")
        image = build_disk_image()
    keys = sorted(Path("~/.ssh").expanduser().glob("id_*.pub"))
    key = args.key or (keys[0].read_text().strip() if keys else DEMO_KEY)
    with libvirt_uri() as (uri, netns), libvm.connect(uri) as hv, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # qemu (libvirt-qemu) writes the serial log here
        console = Path(tmp) / "console.log"
        pool = hv.ensure_pool(POOL, POOL_DIR)
        net = hv.ensure_network(NETWORK, SUBNET, dhcp_range=DHCP_RANGE, forward="none")
        base: libvm.Volume | None = None
        try:
            start = time.monotonic()
            base = pool.upload(f"base-{image.stem}.qcow2", image)
            print(f"uploaded  {image} -> {pool.name}/{base.name} ({base.capacity // 2**20} MiB virtual)"
                  f" in {time.monotonic() - start:.1f} s")
            start = time.monotonic()
            vm = hv.create_vm(
                NAME, memory="1GiB" if args.image else "256MiB", vcpus=1,
                disks=[libvm.Disk.from_image(base, size=max(base.capacity, 2**30) if args.image else None)],
                nics=[libvm.Nic(NETWORK, ip=IP, hostname=HOST, dns=True)],
                # A real image's sshd presents the host key libvm generated, which wait_for_ssh checks;
                # the test guest's port 22 only prints a banner (no key exchange): no host key for it.
                cloud_init=libvm.CloudInit(hostname=HOST, ssh_authorized_keys=[key], host_key=args.image is not None),
                serial_log=console, virt_type=os.environ.get("LIBVM_VIRT_TYPE", "qemu"))
            got = vm.wait_for_ip(timeout=300)
            print(f"leased    {got} (reserved {IP}) after {time.monotonic() - start:.1f} s")
            ready = where_reachable(netns, [sys.executable, __file__, "--probe", uri, NAME], timeout=300)
            checked = f"with its host key {vm.host_key.fingerprint}" if vm.host_key else "with an SSH banner"
            print(f"ssh       {ready}:22 answers {checked} after {time.monotonic() - start:.1f} s")
            server = str(net.spec().primary.gateway)
            name = where_reachable(netns, [sys.executable, __file__, "--resolve", HOST, server], timeout=30)
            print(f"dns       {HOST} -> {name} (the network's dnsmasq)")
            print(f"volumes   {', '.join(v.name for v in pool.volumes())}")
            ok = str(got) == IP == ready == name
            print("OK: the cloud-image VM is ready at its reserved address and name" if ok else "MISMATCH")
            return 0 if ok else 1
        finally:
            with contextlib.suppress(libvm.NotFound):
                hv.vm(NAME).delete(storage=True)
            if base is not None:
                base.delete()
            net.delete()
            pool.delete()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except libvm.LibvmError as exc:
        sys.exit(f"libvm example failed: {type(exc).__name__}: {exc}")
