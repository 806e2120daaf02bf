"""The live boundary and the protections around it, on the test driver."""

from __future__ import annotations

import _thread
import gc
import os
import pickle
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

import libvm
from libvm import Nic, Reservation
from libvm._live import Live
from libvm.domain import VM
from libvm.network import Network
from tests.conftest import DATA, canonical
from tests.test_hypervisor import SEED_NIC, snapshot

DOUBLE = """<network><name>double</name><forward mode='nat'/><bridge name='virbr9'/>
<ip address='192.168.150.129' prefix='25'/></network>"""


def test_lock_file_is_usable_by_every_user(hv: libvm.Hypervisor, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVM_LOCK_DIR", str(tmp_path))
    old = os.umask(0o022)
    try:
        hv.create_vm("locked", nics=[SEED_NIC], virt_type="qemu")
    finally:
        os.umask(old)
    locks = sorted(tmp_path.glob("libvm-*.lock"))
    assert len(locks) == 2  # the create lock and the NIC's network lock (held shared while starting)
    assert [stat.S_IMODE(lock.stat().st_mode) for lock in locks] == [0o666, 0o666]


def test_a_race_lost_inside_libvirt_is_an_address_conflict(hv: libvm.Hypervisor,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Another caller adds the same IP between libvm's read and libvirt's atomic add."""
    lab = hv.network("lab")
    stale = lab.state()
    other = "<host mac='02:00:00:00:00:99' name='rival' ip='192.168.150.88'/>"
    lab.handle.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                      -1, other, libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
    states = iter([stale])
    real_state = Network.state
    monkeypatch.setattr(Network, "state", lambda self, **kw: next(states, None) or real_state(self, **kw))
    with pytest.raises(libvm.IpReserved, match="rival") as info:
        lab.reserve("66:66:66:66:66:0b", "192.168.150.88")
    assert isinstance(info.value.__cause__, libvm.LibvirtFailure)  # libvirt's refusal, kept as the cause
    assert Reservation("66:66:66:66:66:0b", "192.168.150.88") not in lab.reservations()


def test_kvm_start_failure_falls_back_to_qemu(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real way to make a kvm start fail on this driver: fail it the way a host without kvm does."""
    monkeypatch.setenv("LIBVM_VIRT_TYPE", "kvm")
    real_create = libvirt.virDomain.create

    def create(dom: libvirt.virDomain) -> int:
        if "type='kvm'" in dom.XMLDesc(0) or 'type="kvm"' in dom.XMLDesc(0):
            raise libvirt.libvirtError("Could not access KVM kernel module: Permission denied")
        return int(real_create(dom))

    monkeypatch.setattr(libvirt.virDomain, "create", create)
    uuid = "11111111-2222-3333-4444-555555555555"
    vm = hv.create_vm("fallback", nics=[SEED_NIC], uuid=uuid)
    assert vm.running
    assert vm.spec().virt_type == "qemu"
    assert vm.handle.UUIDString() == uuid
    with pytest.raises(libvm.LibvirtFailure, match="KVM"):  # asked for kvm explicitly: no fallback
        hv.create_vm("strict", nics=[Nic("lab", ip="192.168.150.89")], virt_type="kvm")
    assert "strict" not in [v.name for v in hv.vms()]


def test_create_vm_refuses_an_address_two_running_networks_hold(hv: libvm.Hypervisor) -> None:
    hv.handle.networkCreateXML(DOUBLE)  # 192.168.150.128/25 overlaps lab's /24 (made by hand: libvm refuses it)
    before = snapshot(hv)
    with pytest.raises(libvm.SubnetOverlap, match="double") as info:
        hv.create_vm("amb", nics=[Nic("lab", ip="192.168.150.200")], virt_type="qemu")
    assert info.value.other == "double" and info.value.reason == "subnet-overlap"
    assert snapshot(hv) == before
    hv.create_vm("fine", nics=[Nic("lab", ip="192.168.150.100")], virt_type="qemu")  # only in lab's half


def test_ensure_network_starts_an_existing_stopped_network(hv: libvm.Hypervisor) -> None:
    lab = hv.network("lab")
    lab.stop()
    assert not lab.active
    again = hv.ensure_network("lab", "192.168.150.0/24", dhcp_range=("192.168.150.30", "192.168.150.39"))
    assert again.active and lab.active


def test_reason_codes_are_stable() -> None:
    expected = {
        libvm.MacReserved: "mac-reserved", libvm.IpReserved: "ip-reserved",
        libvm.HostnameReserved: "hostname-reserved", libvm.MacInUse: "mac-in-use",
        libvm.IpLeased: "ip-leased", libvm.IpInDhcpRange: "ip-in-dhcp-range",
        libvm.SubnetOverlap: "subnet-overlap", libvm.ClientIdShared: "client-id-shared",
        libvm.AddressConflict: "conflict",
    }
    for cls, reason in expected.items():
        assert cls.reason == reason
        assert cls("x").reason == reason


def test_conflicts_raised_carry_their_reason(lab: libvm.Network) -> None:
    lab.reserve("66:66:66:66:66:0b", "192.168.150.88", "pc001")
    for mac, ip, name, reason in [
        ("66:66:66:66:66:0b", "192.168.150.89", None, "mac-reserved"),
        ("66:66:66:66:66:0c", "192.168.150.88", None, "ip-reserved"),
        ("66:66:66:66:66:0c", "192.168.150.89", "PC001", "hostname-reserved"),
        ("66:66:66:66:66:0c", "192.168.150.31", None, "ip-in-dhcp-range"),
    ]:
        with pytest.raises(libvm.AddressConflict) as info:
            lab.reserve(mac, ip, name, allow_dynamic=False)
        assert info.value.reason == reason


def test_nics_from_a_generator_are_all_used(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("gen", nics=(n for n in [SEED_NIC, Nic("lab", ip="192.168.150.89")]), virt_type="qemu")
    assert [str(n.ip) for n in vm.nics] == ["192.168.150.88", "192.168.150.89"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nics": SEED_NIC}, "nics"),
        ({"nics": "lab"}, "nics"),
        ({"graphics": "vnc"}, "graphics"),
        ({"start": "yes"}, "start"),
        ({"allow_dynamic": 1}, "allow_dynamic"),
        ({"pool": ("192.168.150.50",), "nics": [Nic("lab")]}, "pool"),
        ({"name": 7}, "name"),
        ({"disks": [libvm.Disk(f"/var/lib/d{i}.qcow2") for i in range(2)] + ["x"]}, "disks[2]"),
        ({"disks": [libvm.Disk("/var/lib/d.qcow2"), libvm.Disk("/var/lib/d.qcow2")]}, "disks[1].path"),
        ({"vcpus": 2**31}, "vcpus"),
        ({"memory": "256B"}, "memory"),
        ({"memory": "\uff12\uff15\uff16MiB"}, "memory"),  # full-width digits
        ({"memory": 2**40}, "memory"),
        ({"kernel": ""}, "kernel"),
        ({"virt_type": 0}, "virt_type"),
        ({"virt_type": ""}, "virt_type"),
        ({"pool": "garbage"}, "pool"),
        ({"name": "a\x00b"}, "name"),
    ],
)
def test_create_vm_refuses_bad_types_and_changes_nothing(hv: libvm.Hypervisor, kwargs: dict[str, object],
                                                          field: str) -> None:
    before = snapshot(hv)
    args: dict[str, object] = {"name": "bad", "nics": [SEED_NIC], "virt_type": "qemu"} | kwargs
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.create_vm(**args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert snapshot(hv) == before


def test_create_vms_refuses_unknown_arguments_before_creating_anything(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.InvalidSpec, match="memroy") as info:
        hv.create_vms([{"name": "a", "nics": [SEED_NIC]}, {"name": "b", "memroy": 64}])
    assert info.value.field == "specs[1]"
    assert snapshot(hv) == before


def test_vm_views_agree_with_the_domain_document(hv: libvm.Hypervisor) -> None:
    legacy = hv.vm("legacy")  # NIC 1: lab, virtio, reserved as 'legacy'; NIC 2: default, e1000
    spec = legacy.spec()
    assert [(n.network, n.mac, n.model) for n in legacy.nics] == [(n.network, n.mac, n.model) for n in spec.nics]
    assert [n.model for n in legacy.nics] == ["virtio", "e1000"]
    assert [n.hostname for n in legacy.nics] == ["legacy", None]
    assert legacy.macs == [str(n.mac) for n in spec.nics]


def test_raised_errors_pickle_with_their_fields(hv: libvm.Hypervisor) -> None:
    with pytest.raises(libvm.IpReserved) as info:
        hv.create_vm("x", nics=[Nic("lab", ip="192.168.150.10")], virt_type="qemu")
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is libvm.IpReserved and str(again) == str(info.value) and again.other == info.value.other


def test_reconnect_that_fails_raises_a_libvm_error(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    shutil.copy(DATA / "testnode.xml", node)
    hv = libvm.connect(f"test://{node}")
    node.unlink()
    try:
        with pytest.raises(libvm.LibvirtFailure, match="cannot reconnect"):
            hv._live.reconnect(timeout=0)
    finally:
        hv.close()


def test_rollback_that_cannot_reconnect_keeps_the_original_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon vanished mid-create and does not come back: the caller sees why create_vm failed."""
    node = tmp_path / "node.xml"
    shutil.copy(DATA / "testnode.xml", node)
    with libvm.connect(f"test://{node}") as hv:
        node.unlink()  # a reconnect now fails for real
        monkeypatch.setattr(Live, "alive", lambda self: False)

        def lost(self: VM, *, release: bool = True) -> None:
            raise libvm.LibvirtFailure("Cannot write data: Broken pipe")

        monkeypatch.setattr(VM, "delete", lost)
        with pytest.raises(libvm.LibvmError, match=r"uuid|legacy"):  # the define's error, not the rollback's
            hv.create_vm("clash", nics=[SEED_NIC], uuid="6695eb01-f6a4-8304-79aa-97f2502e193f", virt_type="qemu")


def test_network_xml_with_entities_is_not_expanded(hv: libvm.Hypervisor, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET")
    xml = (f'<!DOCTYPE network [<!ENTITY x SYSTEM "file://{secret}">]>'
           "<network><name>&x;</name><ip address='10.9.9.1' prefix='24'/></network>")
    try:
        spec = libvm.NetworkSpec.from_xml(xml)
    except libvm.InvalidSpec:
        return
    assert "TOPSECRET" not in spec.name
    assert canonical(hv.network("lab").xml())  # the connection is unaffected


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda net: net.free_ip(avoid=None), "avoid"),
        (lambda net: net.free_ip(avoid="192.168.150.2"), "avoid"),
        (lambda net: net.free_ip(avoid=["nope"]), "avoid[0]"),
        (lambda net: net.reserve("66:66:66:66:66:0b", "192.168.150.88", reclaim_stale="no"), "reclaim_stale"),
        (lambda net: net.check("66:66:66:66:66:0b", "192.168.150.88", allow_dynamic=None), "allow_dynamic"),
        (lambda net: net.reserve("66:66:66:66:66:0b", "fd00::1"), "ip"),  # not lab's subnet: blame the IP
        (lambda net: net.xml(inactive="yes"), "inactive"),
        (lambda net: net.release_lease("192.168.150.30"), "lease"),
    ],
)
def test_network_refuses_bad_types_and_changes_nothing(lab: libvm.Network, call: Callable[[Network], object],
                                                       field: str) -> None:
    before = canonical(lab.xml())
    with pytest.raises(libvm.InvalidSpec) as info:
        call(lab)
    assert info.value.field == field
    assert canonical(lab.xml()) == before


def test_free_ip_avoids_given_addresses(lab: libvm.Network) -> None:
    assert str(lab.free_ip(avoid={"192.168.150.2", "192.168.150.3"})) == "192.168.150.4"


def test_ipv6_client_id_must_be_text(hv: libvm.Hypervisor) -> None:
    dual = hv.ensure_network("dual6", "192.168.160.0/24", subnet6="fd00:160::1/64")
    with pytest.raises(libvm.InvalidSpec) as info:
        dual.reserve(None, "fd00:160::5", client_id=123)  # type: ignore[arg-type]
    assert info.value.field == "client_id"


def test_names_with_control_characters_are_refused(hv: libvm.Hypervisor) -> None:
    for call in (lambda: hv.vm("a\x00b"), lambda: hv.network("a\x00b"), lambda: libvm.connect("test:///x\x00")):
        with pytest.raises(libvm.InvalidSpec):
            call()


def test_wait_with_a_huge_poll_interval_still_times_out(hv: libvm.Hypervisor) -> None:
    with pytest.raises(libvm.WaitTimeout):  # the test driver hands out no leases
        hv.vm("legacy").wait_for_ip(timeout=0.05, poll=1e30)
    for bad in (float("nan"), -1, "1", True):
        with pytest.raises(libvm.InvalidSpec):
            hv.vm("legacy").wait_for_ip(timeout=bad)  # type: ignore[arg-type]


def test_create_vms_names_the_spec_that_failed(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.create_vms([{"name": "a", "nics": [SEED_NIC], "virt_type": "qemu"}, {"name": "b", "memory": "x"}])
    assert info.value.field == "specs[1].memory"
    assert snapshot(hv) == before


def test_ctrl_c_during_a_failing_libvirt_call_is_a_keyboard_interrupt(hv: libvm.Hypervisor, ctrl_c: None) -> None:
    """libvirt reports errors through a callback run inside the failing C call. Were it a
    Python function, a Ctrl-C arriving during the call would be raised inside it and come
    out as a SystemError ("returned a result with an exception set"), or be lost."""
    gc.collect()  # a KeyboardInterrupt raised inside some object's __del__ is lost by Python itself:
    gc.disable()  # keep finalizers of earlier tests' objects out of the loop
    try:
        _interrupt_failing_lookups(hv)
    finally:
        gc.enable()


def _interrupt_failing_lookups(hv: libvm.Hypervisor) -> None:
    for _ in range(5):
        timer = threading.Timer(0.02, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                with pytest.raises(libvm.NotFound):
                    hv.vm("nope")  # fails inside libvirt every time
        timer.join()


@pytest.mark.parametrize("name", ["a\udcffb", "x" * 201])
def test_names_libvirt_cannot_store_are_refused_before_anything_changes(hv: libvm.Hypervisor, name: str) -> None:
    before = snapshot(hv)
    calls: list[Callable[[], object]] = [lambda: hv.create_vm(name, nics=[SEED_NIC], virt_type="qemu"),
                                         lambda: hv.ensure_network(name, "10.77.0.0/24"), lambda: Nic(name)]
    if len(name) < 50:  # a lookup of a long name is just NotFound
        calls += [lambda: hv.vm(name), lambda: hv.network(name)]
    for call in calls:
        with pytest.raises(libvm.InvalidSpec):
            call()
    assert snapshot(hv) == before


def test_pool_given_backwards_is_refused(lab: libvm.Network) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        lab.free_ip(pool=("192.168.150.50", "192.168.150.10"))
    assert info.value.field == "pool"


def test_wait_for_ssh_names_the_stage_that_timed_out(hv: libvm.Hypervisor) -> None:
    with pytest.raises(libvm.WaitTimeout, match="stage 1 of 2 \\(DHCP lease\\)"):
        hv.vm("legacy").wait_for_ssh(timeout=0.05)  # the test driver hands out no leases
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.vm("legacy").wait_for_ssh(port=0)
    assert info.value.field == "port"


@pytest.mark.parametrize(
    ("reply", "ready", "seen"),
    [(b"SSH-2.0-OpenSSH_9.2\r\n", True, "SSH-2.0-OpenSSH_9.2"), (b"HTTP/1.1 400\r\n", False, "banner"),
     (b"", False, "without a banner")],
)
def test_ssh_banner_probe(reply: bytes, ready: bool, seen: str) -> None:
    """The stage-2 probe against a server on loopback."""
    import socket

    from libvm.domain import _ssh_banner

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(reply)

        thread = threading.Thread(target=answer)
        thread.start()
        ok, what = _ssh_banner("127.0.0.1", port, 2.0)
        thread.join()
    assert ok is ready and seen in what
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert _ssh_banner("127.0.0.1", port, 1.0) == (False, "connection refused")


def test_shutdown_waits_and_reports_a_graceful_stop(hv: libvm.Hypervisor) -> None:
    legacy = hv.vm("legacy")
    assert legacy.running
    assert legacy.shutdown(timeout=5) is True  # the test driver powers off at once
    assert legacy.state is libvm.VMState.SHUTOFF
    assert legacy.shutdown(timeout=5) is True  # not running: nothing to do
    with pytest.raises(libvm.InvalidSpec):
        legacy.shutdown(timeout=-1)


def test_firmware_choice_is_written_and_read_back() -> None:
    spec = libvm.DomainSpec("uefi", nics=[SEED_NIC], firmware="efi", virt_type="qemu")
    assert 'firmware="efi"' in spec.to_xml()
    assert libvm.DomainSpec.from_xml(spec.to_xml()).firmware == "efi"
    assert libvm.DomainSpec.from_xml(libvm.DomainSpec("bios", virt_type="qemu").to_xml()).firmware == "bios"
    with pytest.raises(libvm.InvalidSpec) as info:
        libvm.DomainSpec("x", firmware="uefi")
    assert info.value.field == "firmware"


def test_libvm_metadata_is_one_element_libvirt_keeps() -> None:
    """libvirt keeps one <metadata> child per namespace: volumes and flags share <libvm:vm>."""
    from lxml import etree

    from libvm.domainxml import METADATA_NS

    spec = libvm.DomainSpec("m", virt_type="qemu", volumes=["/p/m-disk0.qcow2", "/p/m-seed.iso"], static_network=True)
    root = etree.fromstring(spec.to_xml().encode())
    metadata = root.find("metadata")
    assert metadata is not None and [child.tag for child in metadata] == [f"{{{METADATA_NS}}}vm"]
    again = libvm.DomainSpec.from_xml(spec.to_xml())
    assert again.volumes == spec.volumes and again.static_network


def test_the_same_domain_or_network_compares_equal(hv: libvm.Hypervisor) -> None:
    assert hv.vm("legacy") == hv.vm("legacy") and hv.vms() == hv.vms()
    assert hv.network("lab") == hv.network("lab") and hv.network("lab") != hv.network("default")
    assert len({hv.vm("legacy"), hv.vm("legacy")}) == 1
    with libvm.connect(hv.uri) as other:
        assert other.vm("legacy") != hv.vm("legacy")  # another connection (here: another test-driver state)


def _domain_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on libvirt: the names of the domains whose XML is read from now on."""
    reads: list[str] = []
    real = libvirt.virDomain.XMLDesc

    def xml_desc(dom: libvirt.virDomain, flags: int = 0) -> str:
        reads.append(dom.name())
        return str(real(dom, flags))

    monkeypatch.setattr(libvirt.virDomain, "XMLDesc", xml_desc)
    return reads


def _settle(check: Callable[[], bool]) -> None:
    """Wait (up to 5 s) for libvirt's event about a change to reach the index."""
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, "libvirt's event never reached the domain index"
        time.sleep(0.01)


def test_the_macs_on_the_host_cost_no_read_per_domain(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """create_vm needs every MAC on the host: the index reads a domain once, then only
    after libvirt says it changed (the cost of a call does not grow with the host)."""
    for index in range(20):
        hv.create_vm(f"other{index}", nics=[Nic("lab")], virt_type="qemu", start=False)
    time.sleep(0.2)  # the events of those defines arrive; each marks its domain for one more read
    hv.mac_owners()
    reads = _domain_reads(monkeypatch)
    vm = hv.create_vm("new", nics=[Nic("lab")], virt_type="qemu", start=False)
    assert [name for name in reads if name.startswith("other")] == []
    assert hv.mac_owners()[vm.macs[0]] == "new"  # defined meanwhile: read
    time.sleep(0.2)
    hv.mac_owners()  # its define's event may come after that read: one more read, once
    reads.clear()
    hv.mac_owners()
    assert reads == []


def test_a_domain_changed_behind_libvm_is_read_again(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("web", nics=[Nic("lab", ip="192.168.150.20")], virt_type="qemu", start=False)
    old = vm.macs[0]
    assert hv.mac_owners()[old] == "web"
    hv.handle.defineXML(vm.xml(inactive=True).replace(old, "52:54:00:ab:cd:ef"))  # virsh edit, say
    _settle(lambda: "52:54:00:ab:cd:ef" in hv.mac_owners())
    assert old not in hv.mac_owners()
    vm.undefine()
    assert "52:54:00:ab:cd:ef" not in hv.mac_owners()  # the list call sees it gone at once
