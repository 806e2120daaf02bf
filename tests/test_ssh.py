"""The hypervisor's SSH as a qemu+ssh URI names it (libvm.ssh): same user, host, port, key and
known_hosts as libvirt's own connection; host keys checked, never silently accepted."""

from __future__ import annotations

import shlex

import pytest

import libvm
from libvm.ssh import SshTarget, hypervisor_target


def option(argv: list[str], name: str) -> str | None:
    values = [argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv[:-1]) if a == "-o"
              and argv[i + 1].startswith(f"{name}=")]
    return values[-1] if values else None


def test_an_ssh_uri_names_user_host_port_key_and_known_hosts() -> None:
    target = hypervisor_target("qemu+ssh://admin@hv1.example:2222/system?keyfile=/k/id&known_hosts=/k/hosts")
    assert target == SshTarget("hv1.example", "admin", 2222, "/k/id", "/k/hosts")
    argv = target.argv(["dhcp_release", "virbr0", "10.0.0.5", "52:54:00:00:00:01"])
    assert argv[0] == "ssh" and "admin@hv1.example" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/k/id"
    assert option(argv, "UserKnownHostsFile") == "/k/hosts"
    assert option(argv, "StrictHostKeyChecking") == "yes"  # a host key is checked, never learned silently
    assert option(argv, "BatchMode") == "yes"  # never a password prompt in a library call
    assert shlex.split(argv[-1]) == ["dhcp_release", "virbr0", "10.0.0.5", "52:54:00:00:00:01"]


def test_the_uris_ssh_command_is_the_client_run() -> None:
    target = hypervisor_target("qemu+ssh://root@hv1/system?command=/opt/ssh-wrapper&keyfile=/k/id")
    assert target is not None and target.program == "/opt/ssh-wrapper"
    assert target.argv(["true"])[0] == "/opt/ssh-wrapper"
    guest = SshTarget("10.0.0.5", via=target)
    assert shlex.split(option(guest.argv(["true"]), "ProxyCommand") or "")[0] == "/opt/ssh-wrapper"


def test_no_verify_accepts_a_new_host_key_only() -> None:
    target = hypervisor_target("qemu+ssh://hv1/system?no_verify=1")
    assert target is not None
    assert option(target.argv(["true"]), "StrictHostKeyChecking") == "accept-new"


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu+tcp://hv1/system", "qemu+tls://hv1/system",
                                 "test:///default", "qemu+unix:///system"])
def test_other_transports_have_no_ssh_target(uri: str) -> None:
    assert hypervisor_target(uri) is None


def test_an_ssh_uri_without_a_host_is_refused() -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        hypervisor_target("qemu+ssh:///system")
    assert info.value.field == "uri"


def test_a_guest_is_reached_through_its_hypervisor() -> None:
    hypervisor = hypervisor_target("qemu+ssh://root@hv1:2200/system?keyfile=/k/hv")
    assert hypervisor is not None
    guest = SshTarget("192.168.150.88", "debian", keyfile="/k/guest", known_hosts="/k/guest_hosts", via=hypervisor)
    argv = guest.argv(["hostname"])
    hop = shlex.split(option(argv, "ProxyCommand") or "")
    assert hop[0] == "ssh" and hop[-3:] == ["-W", "%h:%p", "root@hv1"]
    assert hop[hop.index("-p") + 1] == "2200" and hop[hop.index("-i") + 1] == "/k/hv"
    assert argv[argv.index("-i") + 1] == "/k/guest" and "debian@192.168.150.88" in argv


def test_wait_for_ssh_jumps_through_the_hypervisor_of_a_qemu_ssh_uri() -> None:
    from libvm.domain import _hop

    hop = _hop("qemu+ssh://root@hv1:2200/system?keyfile=/k/hv", "auto")
    assert hop is not None and (hop.destination, hop.port, hop.keyfile) == ("root@hv1", 2200, "/k/hv")
    assert _hop("qemu:///system", "auto") is None  # a local guest is reached directly
    assert _hop("qemu+tcp://hv1/system", "auto") is None  # explicit for other transports:
    explicit = _hop("qemu+tcp://hv1/system", "admin@hv1:22")
    assert explicit is not None and (explicit.destination, explicit.port) == ("admin@hv1", 22)
    assert _hop("qemu+ssh://root@hv1/system", None) is None


@pytest.mark.parametrize("bad", [123, "", "a b", "host:99999", "host\n"])
def test_a_bad_hop_is_refused_naming_via(hv: libvm.Hypervisor, bad: object) -> None:
    vm = hv.vm("legacy")
    with pytest.raises(libvm.InvalidSpec) as info:
        vm.wait_for_ssh(1, via=bad)  # type: ignore[arg-type]
    assert info.value.field == "via"


@pytest.mark.parametrize(("kwargs", "field"), [({"host": ""}, "host"), ({"host": "-oProxyCommand=x"}, "host"),
                                               ({"host": "hv1", "user": "-oX"}, "user"),
                                               ({"host": "hv1", "port": 0}, "port"),
                                               ({"host": "hv1", "port": "22"}, "port")])
def test_a_target_ssh_would_misread_is_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        SshTarget(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_hop_on_port_0_is_refused_naming_via(hv: libvm.Hypervisor) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.vm("legacy").wait_for_ssh(1, via="hv1:0")
    assert info.value.field == "via"
