"""The cloud-image commands of ``libvm`` (libvm/cli_cloud.py) on the test driver: pools,
volumes, ``vm create --image``, ``vm wait-ssh`` and ``vm ssh`` argument handling and errors.

Flows run the handlers in this process on the ``hv`` fixture's one connection (the
test driver gives every process a fresh node); usage errors run ``python -m libvm``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

import libvm
from libvm import cli, cli_cloud, storage

from .test_cli import assert_one_line_error, libvm_cmd

GiB = 2**30


def run(hv: libvm.Hypervisor, *argv: str) -> None:
    """Parse ``argv`` as the command line does and run its handler on ``hv``."""
    args = cli._parse(list(argv))
    args.handler(hv, args)


@pytest.fixture(autouse=True)
def streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test driver has no upload streams: take the chunks as sent."""
    monkeypatch.setattr(storage, "volume_upload", lambda handle, size, chunks, what, sparse=False:
                        sum(c if isinstance(c, int) else len(c) for c in chunks))


@pytest.fixture
def keypair(tmp_path: Path) -> Path:
    """A client key pair: returns the private key's path (its .pub beside it)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    return tmp_path / "id"


@pytest.fixture
def base(hv: libvm.Hypervisor) -> libvm.Volume:
    return hv.ensure_pool("images", "/var/lib/libvirt/images/libvm").create("debian-12.qcow2", 2 * GiB, "qcow2")


def test_pool_ensure_list_delete(hv: libvm.Hypervisor, capsys: pytest.CaptureFixture[str]) -> None:
    run(hv, "--json", "pool", "ensure", "images", "/var/lib/libvirt/images/libvm")
    assert json.loads(capsys.readouterr().out) == {"name": "images", "active": True,
                                                   "path": "/var/lib/libvirt/images/libvm", "volumes": 0}
    run(hv, "pool", "list")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ACTIVE", "PATH", "VOLUMES"]
    assert ["images", "yes", "/var/lib/libvirt/images/libvm", "0"] in [line.split() for line in lines]
    run(hv, "pool", "delete", "images")
    assert capsys.readouterr().out == "deleted images\n"
    assert "images" not in [p.name for p in hv.pools()]


def test_pool_delete_refuses_a_pool_with_volumes(hv: libvm.Hypervisor, base: libvm.Volume) -> None:
    with pytest.raises(libvm.InUse, match=r"debian-12\.qcow2"):
        run(hv, "pool", "delete", "images")
    run(hv, "pool", "delete", "images", "--volumes")


def test_volume_upload_list_delete(hv: libvm.Hypervisor, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    hv.ensure_pool("images", "/var/lib/libvirt/images/libvm")
    image = tmp_path / "cloud.img"
    image.write_bytes(b"\0" * (9 * 2**20))
    run(hv, "--json", "volume", "upload", "images", str(image), "--name", "base.raw")
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert (record["pool"], record["name"], record["format"]) == ("images", "base.raw", "raw")
    # Not a terminal: plain lines, the last one at 100 %.
    assert err.splitlines()[-1].startswith("uploading base.raw: 100% (9.0 MiB of 9.0 MiB"), err
    run(hv, "volume", "list", "images")
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:5] == ["POOL", "NAME", "FORMAT", "CAPACITY", "ALLOCATION"]
    assert rows[1][:5] == ["images", "base.raw", "raw", "9.0", "MiB"]
    run(hv, "volume", "delete", "images", "base.raw")
    assert capsys.readouterr().out == "deleted images/base.raw\n"
    assert hv.pool("images").volumes() == []


def test_upload_progress_on_a_terminal_redraws_one_line() -> None:
    stream = io.StringIO()
    progress = cli_cloud.UploadProgress("x.qcow2", stream, tty=True)
    for sent in (2**20, 2 * 2**20, 4 * 2**20):
        progress(sent, 4 * 2**20)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "[" + "#" * 30 + "] 100% 4.0 MiB of 4.0 MiB" in text


def test_plain_progress_prints_every_tenth() -> None:
    stream = io.StringIO()
    progress = cli_cloud.UploadProgress("x", stream, tty=False)
    for sent in range(1, 101):
        progress(sent, 100)
    assert len(stream.getvalue().splitlines()) == 11  # 0 %... 100 %


def test_vm_create_from_an_image_with_a_key(hv: libvm.Hypervisor, base: libvm.Volume, keypair: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run(hv, "--json", "vm", "create", "web1", "--network", "lab", "--ip", "192.168.150.88",
        "--image", "images/debian-12.qcow2", "--size", "10GiB", "--ssh-key", f"{keypair}.pub", "--no-start")
    record = json.loads(capsys.readouterr().out)
    assert record["nics"][0]["ip"] == "192.168.150.88"
    vm = hv.vm("web1")
    assert vm.host_key is not None and record["host_key"] == vm.host_key.fingerprint
    assert vm.login == libvm.GuestLogin(str(vm.host_key), "debian", str(keypair))  # user from the image's name
    pool = hv.pool("images")
    assert pool.volume("web1-disk0.qcow2").capacity == 10 * GiB
    assert pool.has("web1-seed.iso")
    target = vm.ssh_target()
    assert (target.host, target.user, target.keyfile) == ("192.168.150.88", "debian", str(keypair))
    run(hv, "vm", "delete", "web1", "--storage")
    assert [v.name for v in pool.volumes()] == ["debian-12.qcow2"]


def test_vm_create_takes_a_private_key_and_a_user(hv: libvm.Hypervisor, base: libvm.Volume, keypair: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run(hv, "vm", "create", "web2", "--network", "lab", "--image", "images/debian-12.qcow2",
        "--ssh-key", str(keypair), "--user", "alice", "--static", "--no-start")
    out, err = capsys.readouterr()
    assert "web2" in out and "192.168.150." in out
    vm = hv.vm("web2")
    assert vm.host_key is not None and f"host key {vm.host_key.fingerprint}" in err
    assert (vm.login.user, vm.login.identity, vm.spec().static_network) == ("alice", str(keypair), True)


def test_vm_create_errors(hv: libvm.Hypervisor, base: libvm.Volume, tmp_path: Path) -> None:
    for argv, field in [
        (["--image", "debian-12.qcow2"], "image"),  # no pool
        (["--ssh-key", str(tmp_path / "missing.pub")], "image"),  # a seed needs an image
        (["--size", "10GiB"], "image"),
        (["--image", "images/debian-12.qcow2", "--ssh-key", str(tmp_path / "missing.pub")], "ssh_key"),
        (["--image", "images/debian-12.qcow2", "--cloud-config", str(tmp_path / "none.yaml")], "cloud_config"),
        (["--image", "images/debian-12.qcow2", "--user", "Not A User"], "cloud_init.user"),
    ]:
        with pytest.raises(libvm.InvalidSpec) as info:
            run(hv, "vm", "create", "bad", "--network", "lab", "--no-start", *argv)
        assert info.value.field == field, (argv, info.value)
    with pytest.raises(libvm.NotFound):
        run(hv, "vm", "create", "bad", "--network", "lab", "--image", "images/nothing.qcow2")


def test_guess_user_reads_the_image_name() -> None:
    assert cli_cloud.guess_user("images/debian-12-genericcloud-amd64.qcow2") == "debian"
    assert cli_cloud.guess_user("p/jammy-server-cloudimg-amd64.img") == "ubuntu"
    assert cli_cloud.guess_user("p/Fedora-Cloud-Base-39.qcow2") == "fedora"
    assert cli_cloud.guess_user("p/disk.qcow2") is None


def test_vm_ssh_without_a_known_user_says_what_to_pass(hv: libvm.Hypervisor, base: libvm.Volume,
                                                       keypair: Path) -> None:
    run(hv, "vm", "create", "web3", "--network", "lab", "--image", "images/debian-12.qcow2", "--no-start")
    hv.pool("images").create("plain.qcow2", GiB, "qcow2")
    run(hv, "vm", "create", "web4", "--network", "lab", "--image", "images/plain.qcow2",
        "--ssh-key", f"{keypair}.pub", "--no-start")
    with pytest.raises(libvm.InvalidSpec, match=r"pass the image's, e\.g\. user='debian'"):
        run(hv, "vm", "ssh", "web4")
    assert hv.vm("web3").host_key is None  # no key: nothing to pin


def test_vm_ssh_checks_the_host_key_then_becomes_ssh(hv: libvm.Hypervisor, base: libvm.Volume, keypair: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run(hv, "vm", "create", "web5", "--network", "lab", "--ip", "192.168.150.89",
        "--image", "images/debian-12.qcow2", "--ssh-key", f"{keypair}.pub", "--no-start")
    checked: list[str] = []
    execs: list[list[str]] = []
    monkeypatch.setattr(libvm.VM, "check_host_key", lambda self, target, timeout=30.0: checked.append(target.host))
    monkeypatch.setattr(os, "execvp", lambda file, argv: execs.append(argv))
    run(hv, "vm", "ssh", "web5", "--", "hostname", "-f")
    run(hv, "vm", "ssh", "web5", "--user", "root")
    run(hv, "vm", "ssh", "--user", "root", "web5", "--key", "/k", "--", "ls", "--", "-l")
    assert checked == ["192.168.150.89"] * 3
    command, interactive, options = execs
    assert command[-3:] == ["debian@192.168.150.89", "--", "hostname -f"]
    assert options[-3:] == ["root@192.168.150.89", "--", "ls -- -l"] and "/k" in options  # as ssh joins them
    assert "StrictHostKeyChecking=yes" in command and "BatchMode=yes" in command
    assert f"KnownHostsCommand=/bin/echo libvm-guest {hv.vm('web5').host_key}" in command
    assert interactive[-1] == "root@192.168.150.89" and "BatchMode=yes" not in interactive
    assert "StrictHostKeyChecking=no" not in " ".join(command + interactive)


def test_host_key_mismatch_exits_3() -> None:
    error = libvm.HostKeyMismatch(domain="web1", address="10.0.0.5", expected="SHA256:a", presented="SHA256:b")
    assert cli.exit_code(error) == 3


def test_usage_errors_of_the_new_commands_exit_2() -> None:
    for argv in (["pool", "ensure", "images"], ["volume", "upload", "images"], ["vm", "wait-ssh"],
                 ["volume", "upload", "p", "f", "--format", "vmdk"]):
        result = libvm_cmd(*argv)
        assert_one_line_error(result, 2, "error:")


def test_missing_pool_exits_4() -> None:
    assert_one_line_error(libvm_cmd("volume", "list", "nopool"), 4, "not-found")


def test_help_lists_the_new_commands() -> None:
    result = libvm_cmd("--help", uri=False)
    for word in ("pool", "volume"):
        assert word in result.stdout
    result = libvm_cmd("vm", "--help", uri=False)
    for word in ("wait-ssh", "ssh"):
        assert word in result.stdout
