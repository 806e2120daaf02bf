"""The cloud-image flow of the ``libvm`` command, as a subprocess, against a real Debian 12
guest (``libvm.testing.build_debian_image``): upload the image, ``vm create --image
--ssh-key``, ``vm wait-ssh``, ``vm ssh NAME -- hostname``, and a host key that is not
the one libvm gave the guest refused by ``wait_for_ssh`` and ``vm ssh`` alike.

One guest boots for the whole module (TCG: about 40 s to SSH). The commands run where
the guests' bridge is (the sandbox's network namespace), as a user on the hypervisor would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import libvm
from libvm.testing import Sandbox
from libvm.testing.debian import build_debian_image
from tests.realstack.conftest import PREFIX, unavailable

POOL = "libvmtestcli"
POOL_DIR = "/var/lib/libvirt/images/libvmtestcli"
NETWORK = f"{PREFIX}cli"
SUBNET = "10.213.90"
VM = f"{PREFIX}cli1"
IP = f"{SUBNET}.50"
ROOT = Path(__file__).parents[2]


@dataclass
class Cli:
    """``python -m libvm --uri URI ...`` in the guests' network namespace."""

    uri: str
    netns: str | None

    def __call__(self, *argv: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "libvm", "--uri", self.uri, *argv]
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        started = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        print(f"TIMING libvm {' '.join(argv[:3])}: {time.monotonic() - started:.1f} s (exit {proc.returncode})")
        return proc

    def python(self, code: str) -> str:
        command = [sys.executable, "-c", code, self.uri]
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    def ok(self, *argv: str) -> str:
        proc = self(*argv)
        assert proc.returncode == 0, (argv, proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
        return proc.stdout


@dataclass
class Guest:
    cli: Cli
    hv: libvm.Hypervisor
    key: Path


def _remove(hv: libvm.Hypervisor) -> None:
    for vm in hv.vms():
        if vm.name.startswith(f"{PREFIX}cli"):
            vm.delete(storage=True)
    if POOL in [p.name for p in hv.pools()]:
        hv.pool(POOL).delete(volumes=True)
    for net in hv.networks():
        if net.name == NETWORK:
            net.delete()


@pytest.fixture(scope="module")
def guest(uri: str, sandbox: Sandbox | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """The Debian image uploaded with the CLI and one guest made from it with ``vm create``."""
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        unavailable("the OpenSSH client is missing: apt-get install openssh-client")
    try:
        image = build_debian_image("ifupdown")
    except Exception as exc:
        unavailable(f"the Debian image could not be built: {exc}")
        raise
    key = tmp_path_factory.mktemp("ssh") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cli = Cli(uri, sandbox.netns if sandbox is not None else None)
    with libvm.connect(uri) as hv:
        _remove(hv)
        try:
            cli.ok("net", "ensure", NETWORK, f"{SUBNET}.0/24", "--dhcp-range", f"{SUBNET}.100", f"{SUBNET}.150")
            cli.ok("pool", "ensure", POOL, POOL_DIR)
            upload = cli("volume", "upload", POOL, str(image), "--name", "debian-12.qcow2")
            assert upload.returncode == 0, upload.stderr
            # Not a terminal: plain progress lines on stderr, the last at 100 %.
            assert upload.stderr.splitlines()[-1].startswith("uploading debian-12.qcow2: 100% ("), upload.stderr
            created = cli.ok("vm", "create", VM, "--network", NETWORK, "--ip", IP, "--memory", "512MiB",
                             "--image", f"{POOL}/debian-12.qcow2", "--size", "4GiB", "--ssh-key", f"{key}.pub",
                             "--virt-type", "qemu")
            assert VM in created and IP in created, created
            yield Guest(cli, hv, key)
        finally:
            _remove(hv)


def test_upload_create_wait_ssh_and_run_a_command(guest: Guest) -> None:
    vm = guest.hv.vm(VM)
    assert vm.host_key is not None and vm.login.user == "debian" and vm.login.identity == str(guest.key)
    started = time.monotonic()
    assert guest.cli.ok("vm", "wait-ssh", VM, "--timeout", "300").strip() == IP
    print(f"TIMING boot to a verified SSH host key: {time.monotonic() - started:.1f} s")
    assert guest.cli.ok("vm", "ssh", VM, "--", "hostname").strip() == VM
    # The API's vm.ssh() does the same, from where the guests' bridge is.
    api = guest.cli.python(f"import sys, libvm\nwith libvm.connect(sys.argv[1]) as hv:\n"
                           f"    proc = hv.vm({VM!r}).ssh(['uname', '-n'])\n    print(proc.returncode, proc.stdout)")
    assert api.split() == ["0", VM]
    # The guest presents the key libvm gave it, and no other: cloud-init made none of its own.
    keys = guest.cli.ok("vm", "ssh", VM, "--", "sudo", "-n", "cat", "/etc/ssh/ssh_host_*_key.pub").split("\n")
    assert [line.split()[:2] for line in keys if line] == [str(vm.host_key).split()]
    volumes = guest.cli.ok("--json", "volume", "list", POOL)
    assert f"{VM}-disk0.qcow2" in volumes and f"{VM}-seed.iso" in volumes


def test_another_host_key_is_refused_naming_both_fingerprints(guest: Guest) -> None:
    """The stored key replaced by another one: the guest now answers with a key libvm did not give it."""
    guest.cli.ok("vm", "wait-ssh", VM, "--timeout", "300")
    vm = guest.hv.vm(VM)
    assert vm.host_key is not None
    real = vm.host_key
    path = guest.key.with_name("other")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    other = libvm.HostKey.parse(path.with_suffix(".pub").read_text())
    xml = vm.xml(inactive=True)
    guest.hv.handle.defineXML(xml.replace(str(real), str(other)))
    try:
        assert vm.host_key == other
        for argv in (["vm", "wait-ssh", VM, "--timeout", "120"], ["vm", "ssh", VM, "--", "hostname"]):
            proc = guest.cli(*argv)
            assert proc.returncode == 3, (argv, proc.returncode, proc.stderr)
            assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
            assert re.match(r"libvm: host-key-mismatch: domain 'libvmtest-cli1': the SSH server on "
                            rf"{re.escape(IP)} presented host key ", proc.stderr), proc.stderr
            assert real.fingerprint in proc.stderr and other.fingerprint in proc.stderr, proc.stderr
    finally:
        guest.hv.handle.defineXML(xml)
    assert guest.cli.ok("vm", "ssh", VM, "--", "true") == ""


def test_delete_with_storage_leaves_the_base(guest: Guest) -> None:
    assert guest.cli.ok("vm", "delete", VM, "--storage").strip() == f"deleted {VM}"
    assert [v.name for v in guest.hv.pool(POOL).volumes()] == ["debian-12.qcow2"]
    assert guest.cli.ok("volume", "delete", POOL, "debian-12.qcow2").strip() == f"deleted {POOL}/debian-12.qcow2"
    assert guest.cli.ok("pool", "delete", POOL).strip() == f"deleted {POOL}"
