"""Bulk reservations: ``Network.reserve_many`` and ``ensure_network(hosts=)`` (test driver).

The restart path needs a real daemon (network ports, dnsmasq): tests/realstack/test_bulk.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

import libvm
from libvm import Reservation
from libvm.network import Network
from tests.conftest import canonical
from tests.test_hypervisor import snapshot


class Unreadable:
    """An iterable whose iteration fails."""

    def __iter__(self) -> Iterator[object]:
        raise RuntimeError("cannot read")



def failing_hosts() -> Iterator[tuple[str, str]]:
    yield ("52:54:00:10:00:09", "192.168.150.109")
    raise RuntimeError("generator failed half-way")


class BrokenTuple(tuple[str, str]):
    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot read")


LAB_HOSTS = [("52:54:00:10:00:01", "192.168.150.101", "web1"), ("52:54:00:10:00:02", "192.168.150.102")]


def test_reserve_many_adds_every_host_live_and_returns_them_in_order(lab: libvm.Network) -> None:
    got = lab.reserve_many([Reservation("52:54:00:10:00:03", "192.168.150.103"), *LAB_HOSTS])
    assert [str(r.ip) for r in got] == ["192.168.150.103", "192.168.150.101", "192.168.150.102"]
    assert got[1].hostname == "web1"
    assert set(got) <= set(lab.reservations())
    assert "192.168.150.102" in lab.xml()  # the live definition


def test_reserve_many_is_idempotent_and_keeps_existing_entries(lab: libvm.Network) -> None:
    lab.reserve_many(LAB_HOSTS)
    before = canonical(lab.xml())
    again = lab.reserve_many([*LAB_HOSTS, ("52:54:00:aa:bb:01", "192.168.150.10")])  # 'legacy' is there already
    assert again[-1].hostname == "legacy"
    assert canonical(lab.xml()) == before


def test_reserve_many_refuses_a_clash_inside_the_list_and_changes_nothing(hv: libvm.Hypervisor,
                                                                          lab: libvm.Network) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.IpReserved, match=r"hosts\[2\] .* and hosts\[0\] .* of this list have the same IP"):
        lab.reserve_many([*LAB_HOSTS, ("52:54:00:10:00:09", "192.168.150.101")])
    with pytest.raises(libvm.HostnameReserved, match=r"hosts\[1\]"):
        lab.reserve_many([LAB_HOSTS[0], ("52:54:00:10:00:09", "192.168.150.109", "WEB1")])
    with pytest.raises(libvm.MacReserved, match=r"hosts\[1\]"):
        lab.reserve_many([LAB_HOSTS[1], ("52:54:00:10:00:02", "192.168.150.109")])
    assert snapshot(hv) == before


def test_reserve_many_refuses_a_clash_with_the_network_and_changes_nothing(hv: libvm.Hypervisor,
                                                                           lab: libvm.Network) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.IpReserved, match=r"hosts\[2\].*legacy") as info:
        lab.reserve_many([*LAB_HOSTS, ("52:54:00:10:00:09", "192.168.150.10")])
    assert info.value.other == "52:54:00:aa:bb:01"
    with pytest.raises(libvm.IpInDhcpRange):
        lab.reserve_many([("52:54:00:10:00:09", "192.168.150.31")], allow_dynamic=False)
    assert snapshot(hv) == before


@pytest.mark.parametrize(("hosts", "field"), [
    ("52:54:00:10:00:01", "hosts"),
    ({"mac": "52:54:00:10:00:01"}, "hosts"),
    (None, "hosts"),
    (Reservation("52:54:00:10:00:01", "192.168.150.101"), "hosts"),
    ([LAB_HOSTS[0], 7], "hosts[1]"),
    ([LAB_HOSTS[0], ("52:54:00:10:00:09",)], "hosts[1]"),
    ([("not-a-mac", "192.168.150.101")], "hosts[0].mac"),
    ([("52:54:00:10:00:09", "300.1.1.1")], "hosts[0].ip"),
    ([("52:54:00:10:00:09", "192.168.150.109", "bad name!")], "hosts[0].hostname"),
    ([("52:54:00:10:00:09", "10.9.9.9")], "hosts[0].ip"),
    ([("52:54:00:10:00:09", "192.168.150.255")], "hosts[0].ip"),
    ([(None, "192.168.150.109", "web9")], "hosts[0].mac"),
    ({("52:54:00:10:00:09", "192.168.150.109")}, "hosts"),
    (bytearray(b"ab"), "hosts"),
    (Unreadable(), "hosts"),
    (failing_hosts(), "hosts"),
    ([BrokenTuple(("52:54:00:10:00:09", "192.168.150.109"))], "hosts[0]"),
])
def test_reserve_many_bad_input_names_the_field(hv: libvm.Hypervisor, lab: libvm.Network, hosts: object,
                                                field: str) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.InvalidSpec) as info:
        lab.reserve_many(hosts)  # type: ignore[arg-type]
    assert info.value.field == field
    assert snapshot(hv) == before


@pytest.mark.parametrize("flag", ["allow_dynamic", "reclaim_stale", "restart_idle"])
def test_reserve_many_flags_must_be_booleans(lab: libvm.Network, flag: str) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        lab.reserve_many(LAB_HOSTS, **{flag: "yes"})  # type: ignore[arg-type]
    assert info.value.field == flag


def test_reserve_many_rolls_back_when_libvirt_refuses_half_way(hv: libvm.Hypervisor, lab: libvm.Network,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Another caller takes the third host's IP after libvm checked the list: libvirt's atomic
    add refuses it, and the two hosts already added are removed again."""
    hosts = [*LAB_HOSTS, ("52:54:00:10:00:03", "192.168.150.103")]
    real_update = Network.update_host
    calls = []

    def update(self: Network, *args: object, **kwargs: object) -> None:
        calls.append(args[2])
        if len(calls) == 3:  # the race: a rival's host lands just before libvm's third add
            self.handle.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                               -1, "<host mac='02:00:00:00:00:99' name='rival' ip='192.168.150.103'/>",
                               libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
        real_update(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Network, "update_host", update)
    with pytest.raises(libvm.IpReserved, match=r"^hosts\[2\]: .*rival"):
        lab.reserve_many(hosts)
    left = {str(r.ip) for r in lab.reservations()}
    assert left == {"192.168.150.10", "192.168.150.103"}  # legacy and the rival; ours rolled back


def test_ctrl_c_right_after_libvirt_answered_is_rolled_back(hv: libvm.Hypervisor, lab: libvm.Network,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(hv)
    real_update = Network.update_host
    calls = []

    def update(self: Network, *args: object, **kwargs: object) -> None:
        real_update(self, *args, **kwargs)  # type: ignore[arg-type]
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second host is in libvirt, libvm has not noted it yet

    monkeypatch.setattr(Network, "update_host", update)
    with pytest.raises(KeyboardInterrupt):
        lab.reserve_many([*LAB_HOSTS, ("52:54:00:10:00:03", "192.168.150.103")])
    assert snapshot(hv) == before


def test_a_failure_on_a_stopped_network_leaves_it_stopped(hv: libvm.Hypervisor, lab: libvm.Network,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lab.stop()
    before = snapshot(hv)
    real_update = Network.update_host

    def update(self: Network, *args: object, **kwargs: object) -> None:
        if str(args[2].ip) == "192.168.150.102":  # type: ignore[attr-defined]
            raise libvm.LibvirtFailure("refused")
        real_update(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Network, "update_host", update)
    with pytest.raises(libvm.LibvirtFailure):
        lab.reserve_many(LAB_HOSTS)
    assert not lab.active
    assert snapshot(hv) == before


def test_reserve_many_on_a_stopped_network_changes_its_definition(lab: libvm.Network) -> None:
    lab.stop()
    lab.reserve_many(LAB_HOSTS)
    lab.start()
    assert {"192.168.150.101", "192.168.150.102"} <= {str(r.ip) for r in lab.reservations()}


def test_ensure_network_defines_a_new_network_with_every_host(hv: libvm.Hypervisor) -> None:
    hosts = [(f"52:54:00:20:{i // 256:02x}:{i % 256:02x}", f"10.77.{i // 200}.{10 + i % 200}", f"h{i}")
             for i in range(600)]
    net = hv.ensure_network("bulk", "10.77.0.0/16", forward="none", hosts=hosts)
    assert net.active
    assert len(net.reservations()) == 600
    assert net.reservation_for("52:54:00:20:02:57") == Reservation("52:54:00:20:02:57", "10.77.2.209", "h599")


def test_ensure_network_hosts_of_a_dual_stack_network_go_to_their_subnet(hv: libvm.Hypervisor) -> None:
    net = hv.ensure_network("dual", "10.78.0.0/24", subnet6="fd00:78::1/64", forward="none",
                            dhcp_range6=("fd00:78::100", "fd00:78::1ff"),
                            hosts=[("52:54:00:30:00:01", "10.78.0.5"), Reservation(None, "fd00:78::5", "six")])
    spec = net.spec()
    assert [str(h.ip) for h in spec.ips[0].hosts] == ["10.78.0.5"]
    assert [str(h.ip) for h in spec.ips[1].hosts] == ["fd00:78::5"]


def test_ensure_network_with_clashing_hosts_defines_nothing(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.IpReserved, match=r"hosts\[1\]"):
        hv.ensure_network("bulk", "10.77.0.0/16", hosts=[("52:54:00:20:00:01", "10.77.0.10"),
                                                         ("52:54:00:20:00:02", "10.77.0.10")])
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.ensure_network("bulk", "10.77.0.0/16", hosts=[("52:54:00:20:00:01", "10.99.0.10")])
    assert info.value.field == "hosts[0].ip"
    assert snapshot(hv) == before


def test_ensure_network_adds_missing_hosts_to_an_existing_network(hv: libvm.Hypervisor) -> None:
    hv.ensure_network("lab", "192.168.150.0/24", dhcp_range=("192.168.150.30", "192.168.150.39"),
                      hosts=LAB_HOSTS)
    lab = hv.network("lab")
    assert {"192.168.150.10", "192.168.150.101", "192.168.150.102"} == {str(r.ip) for r in lab.reservations()}
    before = snapshot(hv)
    with pytest.raises(libvm.IpReserved):
        hv.ensure_network("lab", "192.168.150.0/24", dhcp_range=("192.168.150.30", "192.168.150.39"),
                          hosts=[("52:54:00:10:00:07", "192.168.150.107"), ("52:54:00:10:00:08", "192.168.150.10")])
    assert snapshot(hv) == before


def long_named(count: int, first: int = 0) -> list[tuple[str, str, str]]:
    """Hosts with 190-character names: about 250 bytes of XML each."""
    label = "n" * 60
    return [(f"52:54:00:40:{i // 256:02x}:{i % 256:02x}", f"10.79.{i // 250}.{2 + i % 250}",
             f"{label}.{label}.{label[:54]}{i:06d}") for i in range(first, first + count)]


def test_a_network_libvirt_could_not_carry_is_refused_before_anything_changes(hv: libvm.Hypervisor) -> None:
    """libvirt's RPC carries at most 4 MiB of XML: past that no client can read the network back."""
    before = snapshot(hv)
    with pytest.raises(libvm.InvalidSpec, match="4 MiB") as info:
        hv.ensure_network("huge", "10.79.0.0/16", forward="none", hosts=long_named(18000))
    assert info.value.field == "hosts"
    assert snapshot(hv) == before
    net = hv.ensure_network("huge", "10.79.0.0/16", forward="none", hosts=long_named(14000))
    xml = net.xml()
    with pytest.raises(libvm.InvalidSpec, match="4 MiB"):
        net.reserve_many(long_named(4000, first=14000))
    with pytest.raises(libvm.InvalidSpec, match="4 MiB"):
        hv.ensure_network("huge", "10.79.0.0/16", forward="none", hosts=long_named(4000, first=14000))
    assert net.xml() == xml
