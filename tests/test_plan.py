"""The planner (libvm.plan): pure decisions on a hand-made snapshot, then the same rules
through create_vm / create_vms on the test driver (each case was a wrong or confusing
result before the planner saw every NIC of a call at once)."""

from __future__ import annotations

from pathlib import Path

import netaddr
import pytest

import libvm
from libvm import Nic
from libvm.networkxml import DnsHost, HostEntry, NetworkSpec
from libvm.plan import Snapshot, VmRequest, plan_vms
from libvm.reservations import CONFIG, LIVE, NetworkState

LAB = NetworkSpec.build("lab", "192.168.150.0/24", dhcp_range=("192.168.150.30", "192.168.150.39"))


def state(hosts: list[HostEntry] = (), dns: list[DnsHost] = (), spec: NetworkSpec = LAB) -> NetworkState:  # type: ignore[assignment]
    return NetworkState(spec.name, True, True, ((LIVE | CONFIG, spec.to_xml()),), spec,
                        {h: LIVE | CONFIG for h in hosts}, {d: LIVE | CONFIG for d in dns}, ())


def snap(net: NetworkState, owners: dict[str, str] | None = None) -> Snapshot:
    return Snapshot({net.name: net}, ((net.name, net.spec.primary.subnet),), owners or {})


def ips(plans: list, vm: int = 0) -> list[str]:  # type: ignore[type-arg]
    return [str(nic.nic.ip) for nic in plans[vm].nics]


# -- pure ----------------------------------------------------------------------


def test_allocation_skips_an_address_a_later_nic_asks_for() -> None:
    plans = plan_vms([VmRequest("a", (Nic("lab"), Nic("lab", ip="192.168.150.2")))], snap(state()))
    assert ips(plans) == ["192.168.150.3", "192.168.150.2"]


def test_allocation_skips_an_address_a_later_vm_asks_for() -> None:
    plans = plan_vms([VmRequest("a", (Nic("lab"),)), VmRequest("b", (Nic("lab", ip="192.168.150.2"),))],
                     snap(state()))
    assert ips(plans, 0) == ["192.168.150.3"]
    assert ips(plans, 1) == ["192.168.150.2"]


def test_a_mac_with_a_reservation_gets_its_address() -> None:
    held = HostEntry(0, "52:54:00:00:00:77", "192.168.150.77", "old", None)
    plans = plan_vms([VmRequest("a", (Nic("lab", mac="52:54:00:00:00:77"),), label="a")], snap(state([held])))
    nic = plans[0].nics[0]
    assert str(nic.nic.ip) == "192.168.150.77"
    assert nic.reservation is None  # nothing to add: it is there
    assert nic.nic.hostname == "old"


def test_two_vms_given_one_address_name_the_address() -> None:
    with pytest.raises(libvm.IpReserved, match=r"^specs\[1\]\.nics\[0\]: 192\.168\.150\.9 .*specs\[0\]\.nics\[0\]"):
        plan_vms([VmRequest("a", (Nic("lab", ip="192.168.150.9"),), where="specs[0]."),
                  VmRequest("b", (Nic("lab", ip="192.168.150.9"),), where="specs[1].")], snap(state()))


def test_a_dhcp_name_the_dns_resolves_elsewhere_is_refused() -> None:
    dns = [DnsHost("192.168.150.5", ("dnsonly",))]
    with pytest.raises(libvm.HostnameReserved, match=r"^nics\[0\]: .*'dnsonly'.*192\.168\.150\.5"):
        plan_vms([VmRequest("dnsonly", (Nic("lab"),), label="dnsonly")], snap(state(dns=dns)))


def test_a_second_dns_nic_on_one_network_needs_its_own_name() -> None:
    request = VmRequest("web", (Nic("lab", dns=True), Nic("lab", dns=True)), label="web")
    with pytest.raises(libvm.InvalidSpec) as info:
        plan_vms([request], snap(state()))
    assert info.value.field == "nics[1].hostname"
    assert "nics[0]" in info.value.reason
    named = VmRequest("web", (Nic("lab", dns=True), Nic("lab", dns=True, hostname="web-b")), label="web")
    plans = plan_vms([named], snap(state()))
    assert [n.dns.hostnames for n in plans[0].nics if n.dns] == [("web",), ("web-b",)]


def test_a_mac_on_another_domain_is_refused_with_its_owner() -> None:
    with pytest.raises(libvm.MacInUse, match="legacy"):
        plan_vms([VmRequest("a", (Nic("lab", mac="52:54:00:00:00:01"),))],
                 snap(state(), {"52:54:00:00:00:01": "legacy"}))


def test_an_ipv6_only_network_says_why_it_cannot_allocate() -> None:
    v6 = NetworkSpec.build("six", "fd00:6::/64", dhcp_range=("fd00:6::100", "fd00:6::1ff"))
    with pytest.raises(libvm.InvalidSpec) as info:
        plan_vms([VmRequest("a", (Nic("six"),))], snap(state(spec=v6)))
    assert info.value.field == "nics[0].network"
    assert "IPv4" in info.value.reason
    assert "mac" not in info.value.field


def test_an_address_inside_another_running_subnet_is_ambiguous() -> None:
    narrow = Snapshot({"lab": state()}, (("lab", LAB.primary.subnet),
                                         ("half", netaddr.IPNetwork("192.168.150.0/25"))), {})
    assert ips(plan_vms([VmRequest("a", (Nic("lab"),))], narrow)) == ["192.168.150.128"]  # allocation avoids it
    with pytest.raises(libvm.SubnetOverlap, match="half"):  # an address asked for is refused
        plan_vms([VmRequest("a", (Nic("lab", ip="192.168.150.9"),))], narrow)


# -- through the public API (test driver) ----------------------------------------


def test_create_vm_takes_the_reservation_its_mac_has(hv: libvm.Hypervisor, lab: libvm.Network) -> None:
    lab.reserve("52:54:00:00:00:77", "192.168.150.77", "pc77")
    vm = hv.create_vm("pc77", nics=[Nic("lab", mac="52:54:00:00:00:77")], virt_type="qemu", start=False)
    assert [str(n.ip) for n in vm.nics] == ["192.168.150.77"]


def test_create_vm_refuses_a_name_the_dns_gives_another_address(hv: libvm.Hypervisor, lab: libvm.Network) -> None:
    lab.add_dns_host("192.168.150.5", "dnsonly")
    before = lab.reservations()
    with pytest.raises(libvm.HostnameReserved, match="dnsonly"):
        hv.create_vm("dnsonly", nics=[Nic("lab")], virt_type="qemu", start=False)
    assert lab.reservations() == before
    with pytest.raises(libvm.HostnameReserved, match="dnsonly"):
        lab.reserve("52:54:00:00:00:78", "192.168.150.78", "dnsonly")


def test_a_dns_name_that_is_another_address_dhcp_name_is_refused(lab: libvm.Network) -> None:
    lab.reserve("52:54:00:00:00:79", "192.168.150.79", "pc79")
    with pytest.raises(libvm.HostnameReserved, match="DHCP name"):
        lab.add_dns_host("192.168.150.80", "pc79")
    assert lab.add_dns_host("192.168.150.79", "pc79").ip == "192.168.150.79"  # the same address: fine


def test_order_of_nics_no_longer_matters(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("two", nics=[Nic("lab"), Nic("lab", ip="192.168.150.2")], virt_type="qemu", start=False)
    assert sorted(str(n.ip) for n in vm.nics) == ["192.168.150.2", "192.168.150.3"]


def test_create_vms_plans_every_vm_before_it_makes_one(hv: libvm.Hypervisor, lab: libvm.Network) -> None:
    before = lab.reservations()
    with pytest.raises(libvm.IpReserved) as info:
        hv.create_vms([{"name": "a", "nics": [Nic("lab", ip="192.168.150.9")], "virt_type": "qemu"},
                       {"name": "b", "nics": [Nic("lab", ip="192.168.150.9")], "virt_type": "qemu"}])
    assert "192.168.150.9" in str(info.value) and "specs[1]" in str(info.value)
    assert [vm.name for vm in hv.vms()] == ["legacy"]
    assert lab.reservations() == before
    made = hv.create_vms([{"name": "a", "nics": [Nic("lab")], "virt_type": "qemu", "start": False},
                          {"name": "b", "nics": [Nic("lab", ip="192.168.150.2")], "virt_type": "qemu",
                           "start": False}])
    assert [str(vm.nics[0].ip) for vm in made] == ["192.168.150.3", "192.168.150.2"]


def test_an_address_whose_derived_mac_another_domain_has_is_skipped() -> None:
    """The MAC libvm derives for .2 is on another domain (made by hand, or by another caller whose
    reservation this snapshot missed): allocation takes .3, it does not fail."""
    from libvm.addressing import format_mac, generate_mac

    theirs = format_mac(generate_mac("lab", netaddr.IPAddress("192.168.150.2")))
    plans = plan_vms([VmRequest("a", (Nic("lab"),))], snap(state(), {theirs: "other"}))
    assert ips(plans) == ["192.168.150.3"]
    # The same MAC for an address the caller chose is a real conflict.
    with pytest.raises(libvm.MacInUse):
        plan_vms([VmRequest("a", (Nic("lab", ip="192.168.150.2"),))], snap(state(), {theirs: "other"}))


def test_two_nics_of_one_call_given_one_name_name_each_other() -> None:
    with pytest.raises(libvm.HostnameReserved, match=r"^specs\[1\]\.nics\[0\]: .*also given to specs\[0\]"):
        plan_vms([VmRequest("a", (Nic("lab", hostname="web"),), where="specs[0]."),
                  VmRequest("b", (Nic("lab", hostname="web"),), where="specs[1].")], snap(state()))


def test_an_address_the_dns_names_is_not_allocated() -> None:
    plans = plan_vms([VmRequest("a", (Nic("lab"),))], snap(state(dns=[DnsHost("192.168.150.2", ("printer",))])))
    assert ips(plans) == ["192.168.150.3"]


def test_dual_stack_nic_reserves_its_ipv6_address_by_name() -> None:
    dual = NetworkSpec.build("lab", "192.168.150.0/24", dhcp_range=("192.168.150.30", "192.168.150.39"),
                             subnet6="fd00:150::/64", dhcp_range6=("fd00:150::100", "fd00:150::1ff"))
    plans = plan_vms([VmRequest("web", (Nic("lab", ip6="auto"),), label="web"),
                      VmRequest("db", (Nic("lab", ip6="fd00:150::2"),), label="db")], snap(state(spec=dual)))
    web, db = plans[0].nics[0], plans[1].nics[0]
    assert str(web.nic.ip6) == "fd00:150::3"  # ::2 is asked for by db
    assert web.reservation6 is not None and (web.reservation6.hostname, web.reservation6.mac) == ("web", None)
    assert str(db.nic.ip6) == "fd00:150::2" and str(db.subnet6) == "fd00:150::1/64"
    taken = HostEntry(1, None, "fd00:150::2", "other", None)
    with pytest.raises(libvm.IpReserved, match=r"^nics\[0\]: "):
        plan_vms([VmRequest("db", (Nic("lab", ip6="fd00:150::2"),), label="db")], snap(state([taken], spec=dual)))
    with pytest.raises(libvm.InvalidSpec) as info:
        plan_vms([VmRequest("x", (Nic("lab", ip6="auto"),))], snap(state(spec=dual)))  # no name to key it by
    assert info.value.field == "nics[0].ip6"
    with pytest.raises(libvm.InvalidSpec, match="no IPv6 subnet"):
        plan_vms([VmRequest("x", (Nic("lab", ip6="auto"),), label="x")], snap(state()))


def test_delete_leaves_dns_names_it_did_not_add(hv: libvm.Hypervisor, lab: libvm.Network) -> None:
    lab.add_dns_host("192.168.150.200", "www")  # the user's own name for the address
    vm = hv.create_vm("z", nics=[Nic("lab", ip="192.168.150.200")], virt_type="qemu", start=False)
    vm.delete()
    assert [(h.ip, h.hostnames) for h in lab.dns_hosts()] == [("192.168.150.200", ("www",))]
    mine = hv.create_vm("y", nics=[Nic("lab", ip="192.168.150.201", dns=True)], virt_type="qemu", start=False)
    assert ("192.168.150.201", ("y",)) in [(h.ip, h.hostnames) for h in lab.dns_hosts()]
    mine.delete()
    assert [h.ip for h in lab.dns_hosts()] == ["192.168.150.200"]  # the one create_vm added is gone


def test_a_name_already_among_an_addresss_dns_names_is_there(lab: libvm.Network) -> None:
    lab.update_dns(libvm._live.ADD, DnsHost("192.168.150.6", ("a1", "a2")), lab.state().flags)
    assert lab.add_dns_host("192.168.150.6", "a1").hostnames == ("a1", "a2")  # not "already resolves to .6"


def test_a_uuid_another_domain_has_is_refused_before_anything(hv: libvm.Hypervisor, lab: libvm.Network) -> None:
    before = lab.reservations()
    with pytest.raises(libvm.AlreadyExists, match="legacy"):
        hv.create_vm("twin", nics=[Nic("lab")], virt_type="qemu", uuid=hv.vm("legacy").handle.UUIDString())
    assert lab.reservations() == before


def test_a_failed_upload_leaves_no_scratch_pool(hv: libvm.Hypervisor, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    before = [p.name for p in hv.pools()]
    with pytest.raises(libvm.LibvmError):  # the test driver has no volume upload
        hv.create_vm("up", nics=[Nic("lab")], virt_type="qemu", kernel=kernel, upload=True, start=False)
    assert [p.name for p in hv.pools()] == before
    assert "up" not in [vm.name for vm in hv.vms()]
