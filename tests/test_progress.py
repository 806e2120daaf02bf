"""``progress=`` of create_vms and hv.wait_for_ips, and hv.wait_for_ips itself (fake leases on the test driver)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import netaddr
import pytest

import libvm
from libvm import Lease, LeaseList, Network, Nic

SPECS = [{"name": f"web{i}", "nics": [Nic("lab")], "start": False} for i in range(3)]


def recorder() -> tuple[list[tuple[int, int]], Callable[[int, int], None]]:
    calls: list[tuple[int, int]] = []
    return calls, lambda done, total: calls.append((done, total))


def lease_everyone(monkeypatch: pytest.MonkeyPatch, hv: libvm.Hypervisor, *, wrong: str | None = None) -> list[str]:
    """Every NIC on 'lab' holds a lease of its reserved address (``wrong``: that MAC holds .99)."""
    calls: list[str] = []
    reserved = {r.mac: r.ip for r in hv.network("lab").reservations()}

    def fake(self: Network) -> LeaseList:
        calls.append(self.name)
        if self.name != "lab":
            return LeaseList()
        return LeaseList(Lease(mac, netaddr.IPAddress("192.168.150.99") if str(mac) == wrong else ip)
                         for mac, ip in reserved.items() if mac is not None)

    monkeypatch.setattr(Network, "leases", fake)
    monkeypatch.setattr(libvm.VM, "running", property(lambda self: True))
    return calls


def test_create_vms_reports_each_vm(hv: libvm.Hypervisor) -> None:
    calls, progress = recorder()
    vms = hv.create_vms(SPECS, progress=progress)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert isinstance(vms, libvm.VMList) and [vm.name for vm in vms] == ["web0", "web1", "web2"]


def test_create_vms_silent_by_default_and_with_false(hv: libvm.Hypervisor, capsys: pytest.CaptureFixture[str]) -> None:
    hv.create_vms(SPECS[:1])
    hv.create_vms(SPECS[1:2], progress=False)
    assert capsys.readouterr() == ("", "")


def test_a_create_vms_that_cannot_be_planned_makes_nothing(hv: libvm.Hypervisor) -> None:
    """The whole call is planned before anything is made: a taken name in the third VM
    fails before the first is created, so no progress is reported."""
    calls, progress = recorder()
    with pytest.raises(libvm.AlreadyExists):
        hv.create_vms([*SPECS[:2], {"name": "legacy"}], progress=progress)
    assert calls == []
    assert [vm.name for vm in hv.vms()] == ["legacy"]


def test_a_progress_callback_that_raises_rolls_back(hv: libvm.Hypervisor) -> None:
    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        hv.create_vms(SPECS, progress=boom)
    assert [vm.name for vm in hv.vms()] == ["legacy"]


@pytest.mark.parametrize("bad", [1, "yes", object()])
def test_bad_progress_refused_before_anything(hv: libvm.Hypervisor, bad: object) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.create_vms(SPECS, progress=bad)  # type: ignore[arg-type]
    assert info.value.field == "progress"
    with pytest.raises(libvm.InvalidSpec, match="progress"):
        hv.wait_for_ips(["legacy"], progress=bad)  # type: ignore[arg-type]
    assert [vm.name for vm in hv.vms()] == ["legacy"]


def test_progress_true_without_tqdm_is_refused_clearly(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto now raises ImportError
    with pytest.raises(libvm.InvalidSpec, match="needs tqdm") as info:
        hv.create_vms(SPECS, progress=True)
    assert info.value.field == "progress"
    assert [vm.name for vm in hv.vms()] == ["legacy"]


def test_progress_true_draws_a_tqdm_bar(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    auto = pytest.importorskip("tqdm.auto")
    out = io.StringIO()
    real = auto.tqdm

    def to_buffer(*args: object, **kwargs: object) -> object:
        return real(*args, file=out, **kwargs)

    monkeypatch.setattr(auto, "tqdm", to_buffer)
    hv.create_vms(SPECS, progress=True)
    assert "creating VMs" in out.getvalue() and "3/3" in out.getvalue()


def test_wait_for_ips_waits_for_all(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    vms = hv.create_vms(SPECS)
    calls = lease_everyone(monkeypatch, hv)
    progress_calls, progress = recorder()
    found = hv.wait_for_ips([*vms, "web0"], timeout=1, progress=progress)
    assert found == {vm.name: {vm.macs[0]: vm.nics[0].ip} for vm in vms}
    assert progress_calls == [(1, 3), (2, 3), (3, 3)]
    assert calls == ["lab"]  # one round, one leases() for the three VMs
    assert vms[0].wait_for_ips(timeout=1) == found["web0"]
    assert str(vms[1].wait_for_ip(timeout=1)) == str(vms[1].nics[0].ip)


def test_wait_for_ips_timeout_names_every_vm_still_waiting(hv: libvm.Hypervisor) -> None:
    vms = hv.create_vms([{**spec, "start": True} for spec in SPECS[:2]])
    calls, progress = recorder()
    with pytest.raises(libvm.WaitTimeout, match=r"'web0': no lease for .*; domain 'web1': no lease for"):
        hv.wait_for_ips(vms, timeout=0.05, poll=0.01, progress=progress)  # the test driver has no leases
    assert calls == []


def test_wait_for_ips_mismatch_raises_at_once(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    vms = hv.create_vms(SPECS[:2])
    lease_everyone(monkeypatch, hv, wrong=vms[1].macs[0])
    with pytest.raises(libvm.AddressMismatch) as info:
        hv.wait_for_ips(vms, timeout=5)
    assert info.value.obtained == "192.168.150.99"


def test_wait_for_ips_refuses_bad_arguments(hv: libvm.Hypervisor) -> None:
    for bad, field in [("legacy", "vms"), (hv.vm("legacy"), "vms"), ([1], "vms[0]")]:
        with pytest.raises(libvm.InvalidSpec) as info:
            hv.wait_for_ips(bad)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(libvm.NotFound):
        hv.wait_for_ips(["nope"])
    with pytest.raises(libvm.InvalidSpec, match="timeout"):
        hv.wait_for_ips(["legacy"], timeout=-1)
    for poll in (0, 0.001, -1, float("inf")):  # 0 would busy-poll libvirt for the whole timeout
        with pytest.raises(libvm.InvalidSpec) as info:
            hv.wait_for_ips(["legacy"], timeout=1, poll=poll)
        assert info.value.field == "poll"


def test_a_stopped_vm_ends_the_wait(hv: libvm.Hypervisor) -> None:
    vms = hv.create_vms(SPECS[:1])  # defined, not started
    with pytest.raises(libvm.LibvmError, match="shut off before all NICs"):
        hv.wait_for_ips(vms, timeout=5)


def test_nothing_in_libvm_runs_an_event_loop() -> None:
    """Jupyter's kernel already runs an asyncio loop: run_until_complete there raises."""
    package = Path(libvm.__file__).parent
    for source in package.rglob("*.py"):
        text = source.read_text()
        assert "run_until_complete" not in text and "asyncio.run(" not in text, source


@pytest.mark.parametrize("poll", [0, 0.001, -1])
def test_a_vm_wait_refuses_a_poll_that_would_busy_wait(hv: libvm.Hypervisor, poll: float) -> None:
    vm = hv.vm("legacy")
    for wait in (vm.wait_for_ip, vm.wait_for_ips, vm.wait_for_ssh):
        with pytest.raises(libvm.InvalidSpec) as info:
            wait(1, poll=poll)
        assert info.value.field == "poll"
