"""libvm.Fleet on libvirt's test driver: each ``test:///<file>`` URI is its own in-process host.

Every test builds its hosts from :func:`node` (memory, networks, domains), so two URIs are
two independent hypervisors; an unreachable or silent host is a TCP port.
"""

from __future__ import annotations

import _thread
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import netaddr
import pytest

import libvm
from libvm import Disk, Nic
from libvm.fleet import Fleet
from libvm.placement import Claim, HostFacts, NetworkFacts, Policy, PoolFacts, Request, l2_verdicts, place, refusals

GiB = 2**30
DOWN = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1: refused at once

LAB = """<network><name>lab</name><forward mode='nat'/><bridge name='virbr1'/>
  <ip address='192.168.150.1' netmask='255.255.255.0'><dhcp>
    <range start='192.168.150.30' end='192.168.150.39'/>{hosts}
  </dhcp></ip></network>"""
ISOLATED = """<network><name>iso</name><bridge name='virbr7'/>
  <ip address='10.7.0.1' netmask='255.255.255.0'>{dhcp}</ip></network>"""
STOPPED = """<network><name>lab</name><forward mode='nat'/><bridge name='virbr1'/>
  <ip address='192.168.150.1' netmask='255.255.255.0'><dhcp/></ip></network>"""


def node(tmp_path: Path, name: str, memory: int = 8192, networks: Sequence[str] = (LAB.format(hosts=""),),
         domains: Sequence[tuple[str, int, str]] = ()) -> str:
    """A test-driver host: ``memory`` MiB of RAM, these networks, and domains ``(name, MiB, mac)``."""
    doms = "".join(
        f"<domain type='test'><name>{dom}</name><memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices><interface type='network'><mac address='{mac}'/>"
        f"<source network='lab'/></interface></devices></domain>" for dom, mib, mac in domains)
    path = tmp_path / f"{name}.xml"
    path.write_text(f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>"
                    f"<active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>"
                    f"<memory>{memory * 1024}</memory>{''.join(networks)}{doms}</node>")
    return f"test://{path}"


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[libvm.Hypervisor, libvm.Hypervisor]]:
    """Two empty hosts with network 'lab' (the same name and subnet: two NAT islands), 8 and 16 GiB."""
    with libvm.connect(node(tmp_path, "a", 8192)) as a, libvm.connect(node(tmp_path, "b", 16384)) as b:
        yield a, b


def where(vm: libvm.VM) -> str:
    assert vm.hypervisor is not None
    return vm.hypervisor.uri


# -- placement ---------------------------------------------------------------------


def test_spread_takes_the_host_with_the_most_memory_left(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    fleet = Fleet([a, b])
    assert where(fleet.create_vm("v1", memory="1GiB", nics=[Nic("lab")])) == b.uri  # 16 GiB beats 8
    # b keeps more uncommitted memory until 8 GiB are placed there; then a gets one.
    landed = [where(fleet.create_vm(f"w{i}", memory="2GiB", nics=[Nic("lab")])) for i in range(5)]
    assert landed == [b.uri, b.uri, b.uri, b.uri, a.uri]
    assert {vm.name for vm in b.vms()} == {"v1", "w0", "w1", "w2", "w3"}


def test_pack_fills_the_fullest_host_that_still_fits(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    fleet = Fleet([b, a])
    assert where(fleet.create_vm("p1", memory="1GiB", nics=[Nic("lab")], placement="pack")) == a.uri
    landed = [where(fleet.create_vm(f"p{i}", memory="3GiB", placement="pack")) for i in range(2, 5)]
    # a: 8192 - 512 reserve = 7680 MiB allowed; 1 + 3 + 3 GiB fit, the next 3 GiB does not.
    assert landed == [a.uri, a.uri, b.uri]


def test_a_callable_chooses_among_the_eligible_hosts(tmp_path: Path,
                                                     two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    seen: list[tuple[list[str], Request]] = []

    def last(hosts: Sequence[HostFacts], request: Request) -> HostFacts:
        seen.append(([h.uri for h in hosts], request))
        return hosts[-1]

    full = node(tmp_path, "full", 600)  # 88 MiB allowed
    fleet = Fleet([b, a, full, DOWN], timeout=5)
    vm = fleet.create_vm("c1", memory=768, vcpus=2, nics=[Nic("lab")], placement=last)
    assert where(vm) == a.uri
    assert seen[0][0] == [b.uri, a.uri]  # only the eligible: not the full host, not the one down
    assert (seen[0][1].name, seen[0][1].memory, seen[0][1].vcpus, seen[0][1].networks) == ("c1", 768, 2, ("lab",))
    assert where(fleet.create_vm("c2", placement=lambda hosts, request: b.uri)) == b.uri  # a URI will do
    with pytest.raises(libvm.InvalidSpec, match="eligible") as info:
        fleet.create_vm("c3", placement=lambda hosts, request: full)
    assert info.value.field == "placement"
    with pytest.raises(libvm.InvalidSpec):
        fleet.create_vm("c4", placement="random")
    assert {vm.name for vm in fleet.vms()} == {"c1", "c2"}


def test_a_full_host_is_skipped(tmp_path: Path) -> None:
    busy = node(tmp_path, "busy", 4096, domains=[("big", 3584, "52:54:00:00:00:01")])
    idle = node(tmp_path, "idle", 4096)
    fleet = Fleet([busy, idle])
    # pack would choose the fuller host; it has 3584 MiB committed of 4096 - 512 allowed
    assert where(fleet.create_vm("small", memory=1024, nics=[Nic("lab")], placement="pack")) == idle
    with pytest.raises(libvm.NoEligibleHost) as info:
        fleet.create_vm("huge", memory="4GiB")
    assert set(info.value.reasons) == {busy, idle}
    assert "3584 MiB committed + 4096 MiB > 3584 MiB allowed" in str(info.value)
    # a looser policy lets the busy host take it
    loose = Fleet([busy], memory_ratio=1.5, reserve=0)
    assert where(loose.create_vm("fits", memory=1024, placement="pack")) == busy


def test_a_host_without_the_network_or_with_it_stopped_is_skipped(tmp_path: Path) -> None:
    nolab = node(tmp_path, "nolab", 65536, networks=())
    stopped = node(tmp_path, "stopped", 65536, networks=(STOPPED,))
    small = node(tmp_path, "small", 2048)
    with libvm.connect(stopped) as hv:
        hv.network("lab").stop()
        fleet = Fleet([nolab, hv, small])
        assert where(fleet.create_vm("n1", memory=256, nics=[Nic("lab")])) == small
        assert where(fleet.create_vm("n2", memory=256)) == nolab  # no NIC: the biggest host
        with pytest.raises(libvm.NoEligibleHost) as info:
            fleet.create_vm("n3", memory=256, nics=[Nic("other")])
    assert info.value.reasons[nolab] == ["no network 'other'"]
    with libvm.connect(stopped) as hv:
        hv.network("lab").stop()
        with pytest.raises(libvm.NoEligibleHost, match="network 'lab' is not active"):
            Fleet([hv]).create_vm("n4", nics=[Nic("lab")])


def test_the_host_holding_the_base_image_is_preferred_and_pools_must_have_room(
        two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    for hv in (a, b):
        hv.ensure_pool("images", "/var/lib/libvirt/images/fleet")
    a.pool("images").create("base.qcow2", 2 * GiB, "qcow2")
    fleet = Fleet([a, b])
    base = a.pool("images").volume("base.qcow2")
    vm = fleet.create_vm("img1", disks=[Disk.from_image(base)], nics=[Nic("lab")])
    assert where(vm) == a.uri  # b has more memory, but no base image
    assert a.pool("images").has("img1-disk0.qcow2")
    with pytest.raises(libvm.NoEligibleHost, match="bytes of new volumes"):
        fleet.create_vm("img2", disks=[Disk.from_image(base, size="200GiB")])


def test_pure_filters_virt_type_arch_and_pools() -> None:
    policy = Policy()
    host = HostFacts("h", memory_total=4096, guests=frozenset({("x86_64", "qemu")}),
                     networks={"lab": NetworkFacts("lab", True, "nat", (), dhcp=True),
                               "br": NetworkFacts("br", True, "bridge")},
                     pools={"p": PoolFacts("p", True, 10 * GiB, frozenset({"base"}))})
    assert refusals(host, Request("ok", 512, networks=("lab",), disks=(("p", "base", GiB),)), Claim(), policy) == []
    assert refusals(host, Request("kvm", 512, virt_type="kvm"), Claim(), policy) == [
        "libvirt offers no kvm guest of arch x86_64"]
    assert refusals(host, Request("arm", 512, arch="aarch64"), Claim(), policy)
    assert "no libvirt DHCP" in refusals(host, Request("br", 512, networks=("br",)), Claim(), policy)[0]
    assert refusals(host, Request("room", 512, disks=(("p", "base", 6 * GiB),)),
                    Claim(pools={"p": 5 * GiB}), policy) == [
        f"storage pool 'p': {6 * GiB} bytes of new volumes > {5 * GiB} bytes free"]
    assert refusals(host, Request("nobase", 512, disks=(("p", "other", GiB),)), Claim(), policy) == [
        "storage pool 'p' has no base image 'other'"]
    assert refusals(host, Request("nobase", 512, disks=(("p", "other", GiB),)), Claim(), policy,
                    uploadable=frozenset({("p", "other")})) == []
    # claims count like committed memory: 4096 - 512 reserve = 3584 allowed
    assert refusals(host, Request("m", 1024), Claim(memory=3000), policy)
    assert place([host], Request("m", 512), {"h": Claim(memory=3000)}, policy).uri == "h"


def test_a_network_without_a_dhcp_range_is_placed_on(tmp_path: Path) -> None:
    # libvirt serves DHCP for <host> entries alone (dhcp-range=<net>,static), so a range is not needed (F12).
    norange = ISOLATED.format(dhcp="").replace("<bridge", "<forward mode='nat'/><bridge")
    with libvm.connect(node(tmp_path, "a", networks=(norange,))) as a:
        vm = Fleet([a]).create_vm("web1", memory="256MiB", nics=[Nic("iso")])
        assert where(vm) == a.uri
        assert [str(r.ip) for r in a.network("iso").reservations()] == ["10.7.0.2"]
    bridged = NetworkFacts("br", True, "bridge", (netaddr.IPNetwork("10.8.0.0/24"),))
    assert not bridged.serves_dhcp
    assert NetworkFacts("iso", True, "none", (netaddr.IPNetwork("10.8.0.0/24"),)).serves_dhcp
    assert not NetworkFacts("v6", True, "nat", (netaddr.IPNetwork("fd00::/64"),)).serves_dhcp


# -- one ledger: names, MACs, shared networks --------------------------------------


def test_names_are_unique_across_the_fleet(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    a.create_vm("old", nics=[Nic("lab")])  # made outside the fleet
    fleet = Fleet([a, b])
    with pytest.raises(libvm.AlreadyExists, match=f"'old' already exists on {a.uri}"):
        fleet.create_vm("old")  # spread would put it on b
    fleet.create_vm("new")
    with pytest.raises(libvm.AlreadyExists, match="'new' already exists"):
        fleet.create_vm("new", placement=lambda hosts, request: a.uri)
    with pytest.raises(libvm.AlreadyExists, match="two VMs of this call"):
        fleet.create_vms([{"name": "x"}, {"name": "x"}])
    assert sorted(vm.name for vm in fleet.vms()) == ["new", "old"]


def test_a_mac_is_never_on_two_hosts(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    fleet = Fleet([a, b])
    on_a = fleet.create_vm("m1", nics=[Nic("lab", ip="192.168.150.50")], placement=lambda h, r: a.uri)
    on_b = fleet.create_vm("m2", nics=[Nic("lab", ip="192.168.150.50")], placement=lambda h, r: b.uri)
    # the same network name and subnet on both (two NAT islands): libvm alone derives one MAC for both
    assert libvm.generate_mac("lab", "192.168.150.50") == on_a.nics[0].mac
    assert on_a.nics[0].ip == on_b.nics[0].ip
    assert on_a.macs != on_b.macs
    # addresses allocated by each host: both take the first free one, with different MACs
    auto_a = fleet.create_vm("m3", nics=[Nic("lab")], placement=lambda h, r: a.uri)
    auto_b = fleet.create_vm("m4", nics=[Nic("lab")], placement=lambda h, r: b.uri)
    assert auto_a.nics[0].ip == auto_b.nics[0].ip
    assert auto_a.macs != auto_b.macs
    macs = [mac for vm in fleet.vms() for mac in vm.macs]
    assert len(macs) == len(set(macs))


def test_a_given_mac_on_another_host_is_refused_naming_its_owner(
        two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    a.create_vm("owner", nics=[Nic("lab", mac="52:54:00:12:34:56")])
    fleet = Fleet([a, b])
    with pytest.raises(libvm.MacInUse) as info:
        fleet.create_vm("thief", nics=[Nic("lab", mac="52:54:00:12:34:56")], placement=lambda h, r: b.uri)
    assert f"already on domain 'owner' on host {a.uri}" in str(info.value)
    assert info.value.other == f"{a.uri} domain 'owner'"
    assert [vm.name for vm in b.vms()] == []


def test_a_mac_that_appears_on_another_host_meanwhile_undoes_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab2 = LAB.replace("lab", "lab2").replace("192.168.150.", "192.168.151.").format(hosts="")
    with libvm.connect(node(tmp_path, "a", 8192)) as a, libvm.connect(node(tmp_path, "b", 8192, (lab2,))) as b:
        fleet = Fleet([a, b])
        survey = fleet._survey
        derived = libvm.generate_mac("lab2", "192.168.151.2")  # what b derives for its first free address

        def behind_the_fleets_back(*args: Any) -> Any:
            facts = survey(*args)
            a.create_vm("virsh-made", nics=[Nic("lab", mac=derived)])  # after the fleet's reading
            return facts

        monkeypatch.setattr(fleet, "_survey", behind_the_fleets_back)
        with pytest.raises(libvm.MacInUse, match=f"already on domain 'virsh-made' on host {a.uri}"):
            fleet.create_vm("new", nics=[Nic("lab2")])
        assert [vm.name for vm in b.vms()] == [] and b.network("lab2").reservations() == []


def test_a_shared_subnet_needs_one_declared_dhcp_owner(tmp_path: Path) -> None:
    dhcp = ISOLATED.format(dhcp="<dhcp><range start='10.7.0.100' end='10.7.0.200'/></dhcp>")
    one, two_ = node(tmp_path, "one", 4096, networks=(dhcp,)), node(tmp_path, "two", 8192, networks=(dhcp,))
    # isolated (not NAT) and the same subnet on two hosts: one L2 with two DHCP servers, or two islands?
    with pytest.raises(libvm.SubnetOverlap, match="dhcp_owners") as info:
        Fleet([one, two_]).create_vm("s1", nics=[Nic("iso")])
    assert info.value.other == f"{two_} iso"
    assert where(Fleet([one, two_], dhcp_owners={"iso": None}).create_vm("s2", nics=[Nic("iso")])) == two_
    with pytest.raises(libvm.SubnetOverlap, match="two DHCP servers"):
        Fleet([one, two_], dhcp_owners={"iso": one}).create_vm("s3", nics=[Nic("iso")])
    # the declared owner serves the L2; the other host's network runs no DHCP
    served = node(tmp_path, "served", 4096, networks=(dhcp,))
    plain = node(tmp_path, "plain", 8192, networks=(ISOLATED.format(dhcp=""),))
    fleet = Fleet([served, plain], dhcp_owners={"iso": served})
    assert where(fleet.create_vm("s4", nics=[Nic("iso")])) == served  # spread alone would take 'plain'
    with pytest.raises(libvm.InvalidSpec, match="one of the fleet's hosts"):
        Fleet([served], dhcp_owners={"iso": "qemu:///elsewhere"})


def test_pure_l2_rules() -> None:
    def host(uri: str, *nets: NetworkFacts) -> HostFacts:
        return HostFacts(uri, memory_total=4096, networks={n.name: n for n in nets})

    subnet = (netaddr.IPNetwork("10.1.0.1/24"),)
    nat_a, nat_b = (host(u, NetworkFacts("lab", True, "nat", subnet, dhcp=True)) for u in ("a", "b"))
    assert l2_verdicts([nat_a, nat_b], ["lab"], {}) == {"a": {}, "b": {}}  # two NAT islands
    routed = host("b", NetworkFacts("other", True, "route", (netaddr.IPNetwork("10.1.0.0/16"),), dhcp=True))
    with pytest.raises(libvm.SubnetOverlap, match="network 'other' on b") as info:
        l2_verdicts([nat_a, routed], ["lab"], {})  # another name, an overlapping routed subnet
    assert info.value.other == "b other"
    with pytest.raises(libvm.SubnetOverlap, match="two DHCP servers"):
        l2_verdicts([nat_a, nat_b], ["lab"], {"lab": "a"})  # declared one L2, yet b serves DHCP on it
    assert l2_verdicts([nat_a, routed], ["lab"], {"lab": None}) == {"a": {}, "b": {}}  # declared islands
    served = host("b", NetworkFacts("lab", True, "open", subnet, dhcp=False))
    verdicts = l2_verdicts([nat_a, served], ["lab"], {"lab": "a"})
    assert verdicts["a"] == {} and "placed on a" in (verdicts["b"]["lab"] or "")


# -- hosts down or slow --------------------------------------------------------------


def test_a_host_that_is_down_is_reported_and_avoided(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, _ = two
    fleet = Fleet([DOWN, a], timeout=5)
    rows = fleet.hosts()
    assert [row.uri for row in rows] == [DOWN, a.uri]
    assert rows[0].error is not None and "Connection refused" in rows[0].error
    assert rows[1].error is None and rows[1].memory_total == 8192
    assert where(fleet.create_vm("d1", nics=[Nic("lab")])) == a.uri
    listing = fleet.vms()
    assert [vm.name for vm in listing] == ["d1"] and list(listing.errors) == [DOWN]
    text = listing.table().text()
    assert "d1" in text and DOWN in text and "unreachable" in text
    assert DOWN in rows.table().html() and "Connection refused" in rows._repr_html_()
    printed: list[str] = []
    printer = type("Printer", (), {"text": lambda self, text: printed.append(text)})()
    fleet._repr_pretty_(printer, False)  # IPython's terminal: the hosts' table
    assert printed[0].startswith("2 hosts") and "unreachable" in printed[0] and "lab 192.168.150.0/24 nat" in printed[0]
    assert fleet.vm("d1").hypervisor is a
    with pytest.raises(libvm.NotFound, match="not asked"):
        fleet.vm("nope")


def test_a_connection_that_died_is_opened_again(tmp_path: Path) -> None:
    uri = node(tmp_path, "restarts", 4096)
    fleet = Fleet([uri])
    fleet.hypervisor(uri).handle.close()  # as if libvirtd restarted under the fleet
    assert fleet.hosts()[0].error is not None  # this reading fails and drops the dead connection
    assert fleet.hosts()[0].error is None  # the next one connects again
    assert where(fleet.create_vm("after")) == uri


@pytest.fixture
def silent() -> Iterator[str]:
    """A host that accepts the TCP connection and never answers (a hung libvirtd, a dead link)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"qemu+tcp://127.0.0.1:{server.getsockname()[1]}/system"
    server.close()


def test_a_slow_host_costs_the_timeout_once_and_is_not_asked_again_meanwhile(
        two: tuple[libvm.Hypervisor, libvm.Hypervisor], silent: str) -> None:
    a, _ = two
    start = time.monotonic()
    fleet = Fleet([a, silent], timeout=0.5)
    rows = fleet.hosts()
    assert time.monotonic() - start < 5
    assert rows[0].error is None
    assert rows[1].error is not None and "answer" in rows[1].error
    start = time.monotonic()
    assert where(fleet.create_vm("fast", nics=[Nic("lab")])) == a.uri
    assert time.monotonic() - start < 2  # no new wait: its earlier call is still out
    assert "has not answered an earlier call yet" in (fleet.hosts()[1].error or "")


# -- all or nothing across hosts ----------------------------------------------------


@pytest.fixture
def stocked(tmp_path: Path) -> Iterator[tuple[libvm.Hypervisor, libvm.Hypervisor]]:
    """Two hosts with 'lab', a pool 'images' holding base.qcow2; b has .10 reserved for a legacy MAC."""
    b_lab = LAB.format(hosts="<host mac='52:54:00:aa:bb:01' name='legacy' ip='192.168.150.10'/>")
    with libvm.connect(node(tmp_path, "a", 8192)) as a, \
            libvm.connect(node(tmp_path, "b", 8192, networks=(b_lab,))) as b:
        for hv in (a, b):
            hv.ensure_pool("images", "/var/lib/libvirt/images/fleet").create("base.qcow2", GiB, "qcow2")
        a.network("lab").reserve("52:54:00:00:00:77", "192.168.150.77", "kept")  # there before the call
        yield a, b


def state(hv: libvm.Hypervisor) -> tuple[list[str], list[str], list[str], list[str]]:
    net = hv.network("lab")
    return ([vm.name for vm in hv.vms()], sorted(str(r) for r in net.reservations()),
            sorted(str(h.ip) for h in net.dns_hosts()), [v.name for v in hv.pool("images").volumes()])


def specs(base: libvm.Volume) -> list[dict[str, Any]]:
    disk = [Disk.from_image(base)]
    return [
        {"name": "web1", "nics": [Nic("lab", dns=True)], "disks": disk},
        {"name": "web2", "nics": [Nic("lab", ip="192.168.150.60", dns=True)], "disks": disk},
        {"name": "web3", "nics": [Nic("lab", mac="52:54:00:00:00:77")], "disks": disk},  # takes the kept .77
        {"name": "web4", "nics": [Nic("lab", dns=True)], "disks": disk},
    ]


def by_index(a: libvm.Hypervisor, b: libvm.Hypervisor) -> Any:
    """Placement: the first two specs of a call on a, the rest on b."""
    count = iter(range(100))
    return lambda hosts, request: a.uri if next(count) % 4 < 2 else b.uri


def test_create_vms_across_hosts(stocked: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = stocked
    fleet = Fleet([a, b])
    base = a.pool("images").volume("base.qcow2")
    made = fleet.create_vms([*specs(base)[:2], {"name": "web4", "nics": [Nic("lab", dns=True)]}],
                            placement=by_index(a, b))
    assert [(vm.name, where(vm)) for vm in made] == [("web1", a.uri), ("web2", a.uri), ("web4", b.uri)]
    assert [str(h.ip) for h in b.network("lab").dns_hosts()] == [str(made[2].nics[0].ip)]


def test_a_failure_on_one_host_leaves_nothing_on_any(stocked: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = stocked
    before = state(a), state(b)
    fleet = Fleet([a, b])
    base = a.pool("images").volume("base.qcow2")
    failing = specs(base)
    failing[3]["nics"] = [Nic("lab", ip="192.168.150.10")]  # reserved for another MAC on b
    with pytest.raises(libvm.IpReserved, match=r"specs\[3\]"):
        fleet.create_vms(failing, placement=by_index(a, b))
    assert (state(a), state(b)) == before  # a's two VMs, their reservations, DNS entries and overlays are gone
    assert "52:54:00:00:00:77 -> 192.168.150.77 (kept)" in before[0][1]
    # and the fleet forgot its claims: the same call, fixed, goes through
    assert len(fleet.create_vms(specs(base), placement=by_index(a, b))) == 4


def test_ctrl_c_during_create_vms_rolls_back_every_host(stocked: tuple[libvm.Hypervisor, libvm.Hypervisor],
                                                        ctrl_c: None) -> None:
    a, b = stocked
    before = state(a), state(b)
    real = b.create_vms

    def interrupted(*args: Any, **kwargs: Any) -> libvm.VMList:
        made = real(*args, **kwargs)
        _thread.interrupt_main()  # the user's Ctrl-C, while the fleet waits for the hosts
        time.sleep(0.3)
        return made

    b.create_vms = interrupted  # type: ignore[method-assign]
    fleet = Fleet([a, b])
    with pytest.raises(KeyboardInterrupt):
        fleet.create_vms(specs(a.pool("images").volume("base.qcow2")), placement=by_index(a, b))
    assert (state(a), state(b)) == before


def test_threads_placing_at_once_never_overcommit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = [node(tmp_path, "t1", 4096), node(tmp_path, "t2", 4096)]  # 3584 MiB allowed each: three 1 GiB VMs
    fleet = Fleet(hosts)
    callers = 10
    barrier = threading.Barrier(callers)
    survey = fleet._survey

    def everyone_reads_first(*args: Any) -> Any:
        facts = survey(*args)
        barrier.wait(30)  # every thread has read the hosts (all empty) before any places
        return facts

    monkeypatch.setattr(fleet, "_survey", everyone_reads_first)
    outcomes: list[str] = []

    def create(i: int) -> None:
        try:
            outcomes.append(where(fleet.create_vm(f"t{i}", memory="1GiB")))
        except libvm.NoEligibleHost:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == sorted([hosts[0]] * 3 + [hosts[1]] * 3 + ["refused"] * 4)
    monkeypatch.undo()
    assert [row.committed for row in fleet.hosts()] == [3072, 3072]


def test_a_reading_taken_before_a_vm_landed_still_counts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = node(tmp_path, "one", 1536)  # 1024 MiB allowed: one 1 GiB VM
    fleet = Fleet([host])
    both_read, first_done = threading.Barrier(2), threading.Event()
    survey = fleet._survey

    def stale(*args: Any) -> Any:
        facts = survey(*args)
        both_read.wait(30)
        if threading.current_thread().name == "late":
            first_done.wait(30)  # places only after the other VM exists, on a reading without it
        return facts

    monkeypatch.setattr(fleet, "_survey", stale)
    outcomes: dict[str, str] = {}

    def create(name: str) -> None:
        try:
            outcomes[name] = where(fleet.create_vm(name, memory="1GiB"))
        except libvm.NoEligibleHost:
            outcomes[name] = "refused"
        if name == "early":
            first_done.set()

    threads = [threading.Thread(target=create, args=(name,), name=name) for name in ("early", "late")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == {"early": host, "late": "refused"}


# -- images, listings, the CLI ---------------------------------------------------------


def test_a_base_image_is_uploaded_once_per_host(two: tuple[libvm.Hypervisor, libvm.Hypervisor], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    for hv in (a, b):
        hv.ensure_pool("images", "/var/lib/libvirt/images/fleet")
    image = tmp_path / "cloud.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(4092))
    uploads: list[str] = []

    def counted(pool: libvm.Pool, name: str, source: Any, **kwargs: Any) -> libvm.Volume:
        uploads.append(name)  # the test driver has no upload streams: an empty volume stands in
        return pool.create(name, Path(source).stat().st_size, "qcow2")

    monkeypatch.setattr(libvm.Pool, "upload", counted)
    fleet = Fleet([a, b])
    first = fleet.upload_image(image, "images")
    assert set(first) == {a.uri, b.uri} and len(uploads) == 2
    name = first[a.uri].name
    assert name.startswith("cloud-") and name.endswith(".qcow2") and len(name) == len("cloud-.qcow2") + 16
    assert {vol.name for vol in fleet.upload_image(image, "images").values()} == {name}
    assert len(uploads) == 2  # found again by its checksum
    # a host that lost it gets it again when a VM needs it there; a failed call takes it away again
    b.pool("images").volume(name).delete(force=True)
    disk = Disk.from_image(first[a.uri])
    assert where(fleet.create_vm("preferred", disks=[disk])) == a.uri  # b has more memory, a has the image
    with pytest.raises(libvm.InvalidSpec):
        fleet.create_vm("bad", disks=[disk], nics=[Nic("lab", ip="192.168.150.1")], placement=lambda h, r: b.uri)
    assert not b.pool("images").has(name) and len(uploads) == 3  # uploaded for it, removed with it
    vm = fleet.create_vm("fromimg", disks=[disk], placement=lambda h, r: b.uri)
    assert where(vm) == b.uri and b.pool("images").has(name) and len(uploads) == 4


def test_vm_and_delete_vm_find_the_host(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    fleet = Fleet([a, b])
    fleet.create_vm("here", nics=[Nic("lab")], placement=lambda h, r: a.uri)
    assert fleet.vm("here").hypervisor is a
    fleet.delete_vm("here")
    assert [vm.name for vm in a.vms()] == [] and a.network("lab").reservations() == []
    with pytest.raises(libvm.NotFound):
        fleet.vm("here")
    b.create_vm("twice")
    a.create_vm("twice")
    with pytest.raises(libvm.AlreadyExists, match="several hosts"):
        fleet.vm("twice")


def test_fleet_owns_the_connections_it_opened(tmp_path: Path) -> None:
    uri = node(tmp_path, "own", 4096)
    with libvm.connect(uri) as given:
        with Fleet([given, node(tmp_path, "other", 4096)]) as fleet:
            opened = fleet.hypervisor(fleet.uris[1])
        assert opened.closed and not given.closed  # the fleet closes what it opened, not what it was given
    with pytest.raises(libvm.InvalidSpec, match="twice"):
        Fleet([uri, uri])
    with pytest.raises(libvm.InvalidSpec):
        Fleet("test:///default")
    with pytest.raises(libvm.NotFound):
        Fleet([uri]).hypervisor("qemu:///nowhere")


def test_placement_prefers_a_host_where_the_given_address_is_free(
        two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two  # b has more memory: spread would choose it
    b.network("lab").reserve("52:54:00:12:12:12", "192.168.150.20", "taken")
    vm = Fleet([a, b]).create_vm("x", memory=256, nics=[Nic("lab", ip="192.168.150.20")])
    assert where(vm) == a.uri
    with pytest.raises(libvm.IpReserved):  # taken on every host: the host's own error
        Fleet([b]).create_vm("y", memory=256, nics=[Nic("lab", ip="192.168.150.20")])
    # a reservation of the NIC's own MAC does not count against a host
    again = Fleet([a, b]).create_vm("z", memory=256, nics=[Nic("lab", ip="192.168.150.20", mac="52:54:00:12:12:12")])
    assert where(again) == b.uri


def test_a_closed_fleet_refuses_every_call(tmp_path: Path) -> None:
    uri = node(tmp_path, "own", 4096)
    with libvm.connect(uri) as given:
        fleet = Fleet([given, node(tmp_path, "other", 4096)])
        fleet.close()
        calls: list[Callable[[], object]] = [fleet.vms, fleet.hosts, lambda: fleet.hypervisor(uri),
                                             lambda: fleet.create_vm("after-close"), lambda: fleet.vm("x"),
                                             lambda: fleet.delete_vm("x"), lambda: fleet.upload_image(tmp_path, "p")]
        for call in calls:
            with pytest.raises(libvm.ConnectionClosed, match="closed"):
                call()
        fleet.close()  # idempotent
        assert not given.closed and given.vms() == []


def test_fleet_arguments_of_the_wrong_kind_are_invalid_spec(tmp_path: Path) -> None:
    uri = node(tmp_path, "own", 4096)
    for owners, field in ((5, "dhcp_owners"), ("lab", "dhcp_owners"), (["lab"], "dhcp_owners"),
                          ({5: None}, "dhcp_owners key"), ({"a\nb": None}, "dhcp_owners key")):
        with pytest.raises(libvm.InvalidSpec) as info:
            Fleet([uri], dhcp_owners=owners)  # type: ignore[arg-type]
        assert info.value.field == field
    for reserve in (-5, "-5MiB", None):
        with pytest.raises(libvm.InvalidSpec, match="0 or more MiB"):
            Fleet([uri], reserve=reserve)  # type: ignore[arg-type]
    assert Fleet([uri], reserve=0).policy.reserve == 0
    with Fleet([uri]) as fleet:
        for bad in (None, 5):
            with pytest.raises(libvm.InvalidSpec) as info:
                fleet.hypervisor(bad)  # type: ignore[arg-type]
            assert info.value.field == "uri"
        with pytest.raises(libvm.InvalidSpec) as info:
            fleet.upload_image(tmp_path, None)  # type: ignore[arg-type]
        assert info.value.field == "pool"


def test_upload_image_names_the_hosts_without_the_pool(two: tuple[libvm.Hypervisor, libvm.Hypervisor],
                                                      tmp_path: Path) -> None:
    image = tmp_path / "cloud.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(4092))
    with pytest.raises(libvm.NotFound, match=f"no storage pool 'nopool' on {two[0].uri}, {two[1].uri}"):
        Fleet(list(two)).upload_image(image, "nopool")


def test_single_create_vm_errors_do_not_name_specs_0(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    a.create_vm("old")
    fleet = Fleet([a, b])
    with pytest.raises(libvm.AlreadyExists) as exists:
        fleet.create_vm("old")
    assert str(exists.value).startswith("a domain named 'old' already exists")
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):  # as Hypervisor.create_vm
        fleet.create_vm("m", foo=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        a.create_vm("m", foo=1)  # type: ignore[call-arg]
    with pytest.raises(libvm.InvalidSpec) as chosen:
        fleet.create_vm("w3", placement=lambda h, r: h)  # type: ignore[arg-type, return-value]
    assert chosen.value.field == "placement" and "the callable returned a list, not one of" in str(chosen.value)
    assert len(str(chosen.value)) < 400


def test_cli_lists_the_vms_of_several_hosts(two: tuple[libvm.Hypervisor, libvm.Hypervisor], tmp_path: Path) -> None:
    a, b = two

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "libvm", "--uri", a.uri, "--uri", b.uri, "--uri", DOWN, *argv],
                              capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)

    # each test:/// connection is a fresh copy of its file: define the VMs there
    Path(a.uri.removeprefix("test://")).write_text(Path(a.uri.removeprefix("test://")).read_text().replace(
        "</node>", "<domain type='test'><name>on-a</name><memory unit='MiB'>256</memory>"
                   "<os><type arch='x86_64'>hvm</type></os></domain></node>"))
    Path(b.uri.removeprefix("test://")).write_text(Path(b.uri.removeprefix("test://")).read_text().replace(
        "</node>", "<domain type='test'><name>on-b</name><memory unit='MiB'>256</memory>"
                   "<os><type arch='x86_64'>hvm</type></os></domain></node>"))
    text = run("vm", "list")
    assert text.returncode == 6, text.stderr  # a partial listing: one host did not answer
    assert text.stderr.startswith(f"libvm: unreachable: {DOWN}: ") and len(text.stderr.splitlines()) == 1
    lines = text.stdout.splitlines()
    assert lines[0].split()[:2] == ["HOST", "NAME"]
    assert any(line.startswith(a.uri) and "on-a" in line for line in lines)
    assert any(line.startswith(b.uri) and "on-b" in line for line in lines)
    assert any(line.startswith(DOWN) and "Connection refused" in line for line in lines)
    listed = json.loads(run("--json", "vm", "list").stdout)
    assert [(r["host"], r["name"]) for r in listed if r.get("name")] == [(a.uri, "on-a"), (b.uri, "on-b")]
    [down] = [r for r in listed if r["error"]]
    assert (down["host"], down["state"]) == (DOWN, "unreachable") and "Connection refused" in down["error"]
    assert run("net", "list").returncode == 2  # only `vm list` spans hosts


def test_cli_uris_before_and_after_the_command_add_up(two: tuple[libvm.Hypervisor, libvm.Hypervisor]) -> None:
    a, b = two
    root = Path(__file__).parent.parent

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "libvm", *argv], capture_output=True, text=True, timeout=60,
                              cwd=root)

    listed = run("--uri", a.uri, "--json", "vm", "list", "--uri", b.uri)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []  # two hosts, no VMs: each reachable
    lone = run("--uri", a.uri, "vm", "list")
    assert lone.stdout.split()[0] == "NAME"
    assert run("--uri", a.uri, "vm", "list", "--uri", b.uri).stdout.split()[0] == "HOST"
    twice = run("--uri", a.uri, "vm", "list", "--uri", a.uri)
    assert (twice.returncode, twice.stderr) == (2, f"libvm: invalid-spec: --uri {a.uri} is given twice\n")


def test_a_host_that_cannot_be_reached_costs_its_connect_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect that failed is not tried again for RETRY_AFTER seconds: later calls report the same
    error at once instead of waiting for the connect timeout each time."""
    from libvm import survey

    tries: list[str] = []
    real = libvm.connect

    def counting(uri: str) -> libvm.Hypervisor:
        tries.append(uri)
        return real(uri)

    monkeypatch.setattr(survey, "connect", counting)
    with libvm.Fleet([DOWN], timeout=5) as fleet:
        for _ in range(3):
            assert fleet.hosts()[0].error
    assert tries == [DOWN]
