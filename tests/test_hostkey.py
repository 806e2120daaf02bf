"""No trust on first use (libvm/hostkey.py): the guest's host key made at create_vm, put in
its seed only, kept with the VM, and checked with the real ssh client.

The ssh checks run against a real ``sshd`` on 127.0.0.1 (skipped without root or sshd).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pycdlib
import pytest
import yaml

import libvm
from libvm import hostkey, storage
from libvm.cloudinit import CloudInit, host_key_config, user_data
from libvm.domainxml import DomainSpec, GuestLogin
from libvm.ssh import SshTarget
from tests.test_hypervisor import SEED_NIC

GiB = 2**30
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host"


def keygen(path: Path) -> libvm.HostKey:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return libvm.HostKey.parse(path.with_suffix(".pub").read_text())


# -- the key itself ------------------------------------------------------------------


def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    listed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True,
                            check=True).stdout.split()
    assert key.fingerprint == listed[1] and key.type == "ssh-ed25519"
    assert str(key) == " ".join((tmp_path / "k.pub").read_text().split()[:2])  # the comment is dropped


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-dss AAAA", "ssh-ed25519 not*base64",
                                 "ssh-rsa " + KEY.split()[1], "ssh-ed25519 AAAA\nssh-ed25519 AAAA", 5, None])
def test_parse_refuses_what_is_no_public_key(bad: object) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        libvm.HostKey.parse(bad)
    assert info.value.field == "host_key"


def test_generate_gives_a_private_key_and_its_public_half_and_leaves_no_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    private, public = hostkey.generate("libvm-pc001")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and public.type == "ssh-ed25519"
    assert list(tmp_path.iterdir()) == []  # the pair was only ever in a private temporary directory
    derived = subprocess.run(["ssh-keygen", "-y", "-f", "/dev/stdin"], input=private, capture_output=True,
                             text=True, check=True).stdout
    assert libvm.HostKey.parse(derived) == public


def test_generate_without_ssh_keygen_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(libvm.HostKeyUnavailable, match="openssh-client"):
        hostkey.generate()


def test_an_old_ssh_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\necho 'line 0: Bad configuration option: knownhostscommand' >&2\nexit 255\n")
    fake.chmod(0o755)
    with pytest.raises(libvm.HostKeyUnavailable, match=r"OpenSSH 8\.5"):
        hostkey.probe([str(fake), "-v", "x"], 5)


def test_pinned_options_accept_only_that_key() -> None:
    key = libvm.HostKey.parse(KEY)
    options = SshTarget("10.0.0.5", user="debian", host_key=KEY).options()
    text = " ".join(options)
    assert f"KnownHostsCommand=/bin/echo {hostkey.ALIAS} {key}" in text
    for option in ("StrictHostKeyChecking=yes", "UserKnownHostsFile=/dev/null", "GlobalKnownHostsFile=/dev/null",
                   f"HostKeyAlias={hostkey.ALIAS}", "ControlPath=none", "UpdateHostKeys=no"):
        assert option in options, option
    assert "accept-new" not in text and "StrictHostKeyChecking=no" not in text
    assert "BatchMode=yes" not in SshTarget("h", host_key=KEY).options(batch=False)


# -- the seed and the metadata --------------------------------------------------------


def test_host_key_is_on_with_authorized_keys_unless_the_user_data_keys_the_guest() -> None:
    assert CloudInit(ssh_authorized_keys=[KEY]).wants_host_key
    assert CloudInit(user_data={"ssh_authorized_keys": [KEY]}).wants_host_key
    assert not CloudInit().wants_host_key
    assert CloudInit(host_key=True).wants_host_key
    assert not CloudInit(ssh_authorized_keys=[KEY], host_key=False).wants_host_key
    assert not CloudInit(ssh_authorized_keys=[KEY], user_data={"ssh_genkeytypes": ["rsa"]}).wants_host_key


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"host_key": 1}, "cloud_init.host_key"),
    ({"host_key": True, "user_data": {"ssh_keys": {}}}, "cloud_init.host_key"),
    ({"user": "Alice"}, "cloud_init.user"),
    ({"user": "root@x"}, "cloud_init.user"),
    ({"user": "alice", "user_data": {"user": {"name": "bob"}}}, "cloud_init.user"),
    ({"ssh_identity": ""}, "cloud_init.ssh_identity"),
])
def test_cloud_init_login_options_are_checked(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        CloudInit(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_login_user_comes_from_user_or_the_user_data() -> None:
    assert CloudInit(user="alice").login_user == "alice"
    assert CloudInit(user_data={"user": {"name": "bob", "sudo": "ALL=(ALL) NOPASSWD:ALL"}}).login_user == "bob"
    assert CloudInit(user_data="#cloud-config\nuser: carol\n").login_user == "carol"
    assert CloudInit().login_user is None


def test_user_data_carries_the_host_key_and_the_user() -> None:
    private, public = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n", KEY
    config = yaml.safe_load(user_data(CloudInit(ssh_authorized_keys=[KEY], user="alice"), "pc001",
                                      (private, public)))
    assert config["ssh_keys"] == {"ed25519_private": private, "ed25519_public": KEY}
    assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == []
    assert config["user"] == {"name": "alice"} and config["ssh_authorized_keys"] == [KEY]
    assert "ssh_keys" not in yaml.safe_load(user_data(CloudInit(ssh_authorized_keys=[KEY]), "pc001"))
    with pytest.raises(libvm.InvalidSpec):
        host_key_config("not a key", KEY)


def test_login_round_trips_through_the_domain_metadata() -> None:
    login = GuestLogin(KEY.rsplit(" ", 1)[0], "debian", "/home/me/.ssh/id_ed25519")
    spec = DomainSpec("pc001", nics=[SEED_NIC], login=login)
    xml = spec.to_xml()
    assert "<libvm:ssh " in xml and "PRIVATE" not in xml
    assert DomainSpec.from_xml(xml).login == login
    assert not DomainSpec.from_xml(DomainSpec("pc002").to_xml()).login
    with pytest.raises(libvm.InvalidSpec):
        DomainSpec("pc001", login="debian")  # type: ignore[arg-type]


@pytest.fixture
def seeds(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The seeds create_vm uploads (the test driver has no upload streams)."""
    sent: list[bytes] = []

    def upload(handle: object, size: int, chunks: Iterator[bytes], what: str) -> int:
        sent.append(b"".join(chunks))
        return len(sent[-1])
    monkeypatch.setattr(storage, "volume_upload", upload)
    return sent


def _user_data(seed: bytes) -> dict[str, object]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(seed))
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path="/user-data")
    iso.close()
    loaded = yaml.safe_load(out.getvalue())
    assert isinstance(loaded, dict)
    return loaded


def test_create_vm_keeps_the_public_half_and_seeds_the_pair(hv: libvm.Hypervisor, seeds: list[bytes]) -> None:
    base = hv.ensure_pool("images", "/var/lib/libvirt/images/libvm").create("base.qcow2", 2 * GiB, "qcow2")
    vm = hv.create_vm("pc001", nics=[SEED_NIC], disks=[libvm.Disk.from_image(base)], virt_type="qemu",
                      cloud_init=CloudInit(ssh_authorized_keys=[KEY], user="alice", ssh_identity="/k/id"),
                      start=False)
    assert vm.host_key is not None and vm.login == GuestLogin(str(vm.host_key), "alice", "/k/id")
    config = _user_data(seeds[0])
    keys = config["ssh_keys"]
    assert isinstance(keys, dict) and keys["ed25519_public"].startswith(str(vm.host_key))
    assert "PRIVATE" in keys["ed25519_private"] and "PRIVATE" not in vm.xml(inactive=True)
    other = hv.create_vm("pc002", nics=[libvm.Nic("lab")], disks=[libvm.Disk.from_image(base)], virt_type="qemu",
                         cloud_init=CloudInit(ssh_authorized_keys=[KEY]), start=False)
    assert other.host_key is not None and other.host_key != vm.host_key  # one key per VM
    plain = hv.create_vm("pc003", nics=[libvm.Nic("lab")], disks=[libvm.Disk.from_image(base)], virt_type="qemu",
                         cloud_init=CloudInit(hostname="x"), start=False)
    assert plain.host_key is None and "ssh_keys" not in _user_data(seeds[2])


def test_vm_ssh_needs_a_user_and_an_address(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("pc001", nics=[SEED_NIC], virt_type="qemu", start=False)
    with pytest.raises(libvm.InvalidSpec, match="user="):
        vm.ssh_target()
    target = vm.ssh_target(user="root", key="/k/id", via=None)
    assert (target.host, target.user, target.keyfile, target.host_key, target.via) == (
        "192.168.150.88", "root", "/k/id", None, None)
    assert vm.check_host_key(target) is None  # nothing stored: nothing to check
    assert vm.ssh_argv("uname -a", target)[-3:] == ["root@192.168.150.88", "--", "uname -a"]
    assert vm.ssh_argv(["ls", "a b"], target)[-1] == "ls 'a b'"
    for bad in ([], [1], b"ls"):
        with pytest.raises(libvm.InvalidSpec):
            vm.ssh_argv(bad, target)  # type: ignore[arg-type]
    with pytest.raises(libvm.InvalidSpec):
        vm.ssh_target(user="a b")
    hop = vm.ssh_target(user="root", via="admin@hv.example:2222").via
    assert hop is not None and (hop.host, hop.user, hop.port) == ("hv.example", "admin", 2222)


def test_wait_for_ssh_checks_the_key_once_the_banner_is_there(hv: libvm.Hypervisor, seeds: list[bytes],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The glue in wait_for_ssh, on a static guest (no lease to wait for): banner, then the key."""
    from libvm import domain

    base = hv.ensure_pool("images", "/var/lib/libvirt/images/libvm").create("base.qcow2", 2 * GiB, "qcow2")
    vm = hv.create_vm("pc001", nics=[SEED_NIC], disks=[libvm.Disk.from_image(base)], virt_type="qemu",
                      cloud_init=CloudInit(ssh_authorized_keys=[KEY], static_network=True))
    assert vm.host_key is not None
    monkeypatch.setattr(domain, "_ssh_banner", lambda host, port, timeout: (True, "SSH-2.0-OpenSSH_9.2"))
    shown: list[hostkey.Probe] = [hostkey.Probe(None, "Connection closed"), hostkey.Probe(vm.host_key.fingerprint,
                                                                                          "Permission denied")]
    argvs: list[list[str]] = []

    def probe(argv: list[str], timeout: float) -> hostkey.Probe:
        argvs.append(argv)
        return shown.pop(0)
    monkeypatch.setattr(hostkey, "probe", probe)
    assert str(vm.wait_for_ssh(timeout=10, poll=0.01, via=None)) == "192.168.150.88"
    assert len(argvs) == 2 and "PreferredAuthentications=none" in argvs[0] and "-v" in argvs[0]
    monkeypatch.setattr(hostkey, "probe", lambda argv, timeout: hostkey.Probe("SHA256:other", "failed"))
    with pytest.raises(libvm.HostKeyMismatch) as info:
        vm.wait_for_ssh(timeout=10, poll=0.01, via=None)
    assert (info.value.expected, info.value.presented) == (vm.host_key.fingerprint, "SHA256:other")
    monkeypatch.setattr(hostkey, "probe", lambda argv, timeout: hostkey.Probe(None, "Connection reset"))
    with pytest.raises(libvm.WaitTimeout, match=r"a banner but no host key shown after 0\.2 s; "
                                                r"last attempt: Connection reset"):
        vm.wait_for_ssh(timeout=0.2, poll=0.01, via=None)


# -- against a real sshd ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, libvm.HostKey, Path]]:
    """A real sshd on 127.0.0.1 with its own host key, root logging in with a fresh key."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd") or shutil.which("ssh") is None:
        why = "needs root, /usr/sbin/sshd and ssh (openssh-server, openssh-client: scripts/setup-env.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"under CI=true a real sshd must run: {why}", pytrace=False)
        pytest.skip(why)
    host = keygen(tmp_path / "host")
    keygen(tmp_path / "client")
    shutil.copy(tmp_path / "client.pub", tmp_path / "authorized")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-o", f"HostKey={tmp_path / 'host'}",
                             "-o", f"Port={port}", "-o", "ListenAddress=127.0.0.1", "-o", "PidFile=none",
                             "-o", "UsePAM=no", "-o", f"AuthorizedKeysFile={tmp_path / 'authorized'}",
                             "-o", "StrictModes=no", "-o", "PermitRootLogin=prohibit-password"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port, host, tmp_path / "client"
    finally:
        proc.kill()
        proc.wait()


def test_probe_reads_the_presented_key_and_check_names_both(sshd: tuple[int, libvm.HostKey, Path],
                                                             tmp_path: Path) -> None:
    port, host, _ = sshd
    good = SshTarget("127.0.0.1", user="nobody", port=port, host_key=str(host))
    seen = hostkey.probe(good.probe_argv(), 10)
    assert seen.presented == host.fingerprint and "Permission denied" in seen.last
    assert hostkey.check(host, seen, domain="pc001", address="127.0.0.1")
    other = keygen(tmp_path / "other")
    seen = hostkey.probe(SshTarget("127.0.0.1", port=port, host_key=str(other)).probe_argv(), 10)
    with pytest.raises(libvm.HostKeyMismatch) as info:
        hostkey.check(other, seen, domain="pc001", address="127.0.0.1")
    assert (info.value.expected, info.value.presented) == (other.fingerprint, host.fingerprint)
    assert other.fingerprint in str(info.value) and host.fingerprint in str(info.value)
    closed = hostkey.probe(SshTarget("127.0.0.1", port=_free_port(), host_key=str(host)).probe_argv(), 10)
    assert closed.presented is None and "refused" in closed.last
    assert not hostkey.check(host, closed, domain="pc001", address="127.0.0.1")


def test_a_command_runs_with_the_pinned_key_and_fails_with_another(sshd: tuple[int, libvm.HostKey, Path],
                                                                   tmp_path: Path) -> None:
    port, host, client = sshd
    target = SshTarget("127.0.0.1", user="root", port=port, keyfile=str(client), host_key=str(host))
    done = subprocess.run(target.argv(["echo", "pinned"]), capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "pinned\n"), done.stderr
    other = SshTarget("127.0.0.1", user="root", port=port, keyfile=str(client),
                      host_key=str(keygen(tmp_path / "other")))
    refused = subprocess.run(other.argv(["true"]), capture_output=True, text=True, check=False)
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr
