"""How lists, networks, VMs and the hypervisor render in Jupyter (HTML) and IPython (text)."""

from __future__ import annotations

import ast
import datetime as dt
import pickle
from collections.abc import Callable
from pathlib import Path

import netaddr
import pytest
from lxml import html as lxml_html

import libvm
from libvm import Lease, LeaseList, Network, NetworkList, Nic, Reservation, ReservationList, Table, VMList, views
from libvm.views import HOST_COLUMNS, LEASE_COLUMNS, NETWORK_COLUMNS, RESERVATION_COLUMNS, VM_COLUMNS, cell
from tests.conftest import runtime_imports

EVIL = "<script>alert(1)<\\script>&amp;"
EXPIRES = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def cells(markup: str) -> list[list[str]]:
    """Every table row's cell texts (headings included), as a browser would show them."""
    doc = lxml_html.fragment_fromstring(markup, create_parent="div")
    return [[c.text_content() for c in row.iter("th", "td")] for row in doc.iter("tr")]


def pretty(obj: object) -> str:
    ipython = pytest.importorskip("IPython.lib.pretty")
    return str(ipython.pretty(obj))


def fake_leases(monkeypatch: pytest.MonkeyPatch, leases: dict[str, list[Lease]]) -> list[str]:
    """Make ``Network.leases`` return ``leases[network]``; returns the log of calls (network names)."""
    calls: list[str] = []

    def fake(self: Network) -> LeaseList:
        calls.append(self.name)
        return LeaseList(leases.get(self.name, []))

    monkeypatch.setattr(Network, "leases", fake)
    return calls


# -- pure tables -----------------------------------------------------------------


def test_table_escapes_every_value() -> None:
    table = Table(("a&b", "<i>"), ((EVIL, "x"),), caption="<b>cap</b>")
    markup = table.html()
    assert "<script>" not in markup and "<b>" not in markup and "<i>" not in markup
    assert "&lt;script&gt;alert(1)&lt;\\script&gt;&amp;amp;" in markup
    assert cells(markup) == [["a&b", "<i>"], [EVIL, "x"]]
    assert table.text().splitlines() == ["<b>cap</b>", "a&b                             <i>", f"{EVIL}  x"]


def test_empty_table_says_none() -> None:
    table = Table(("a", "b"), ())
    assert cells(table.html()) == [["a", "b"], ["none"]]
    assert table.text().splitlines() == ["a  b", "(none)"]
    assert table.text(empty="").splitlines() == ["a  b"]  # the command line: headings only


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), ("", "-"), ([], "-"), ((), "-"), ("x", "x"), (0, "0"), (True, "yes"), (False, "no"),
    (netaddr.EUI("66-66-66-66-66-0B"), "66:66:66:66:66:0b"), (netaddr.IPAddress("10.0.0.5"), "10.0.0.5"),
    (netaddr.IPNetwork("10.0.0.0/24"), "10.0.0.0/24"),
    (["a", None, netaddr.EUI("02:00:00:00:00:01")], "a,-,02:00:00:00:00:01"),
    (EXPIRES, "2030-01-02 03:04:05"),
    (dt.datetime(2030, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2030-01-02 03:04:05"),
])
def test_cell_shows_every_value_one_way(value: object, shown: str) -> None:
    assert cell(value) == shown


def test_reservation_and_lease_lists_render_their_columns() -> None:
    res = ReservationList([Reservation("66:66:66:66:66:0b", "192.168.150.88", "pc001")])
    assert cells(res._repr_html_()) == [list(RESERVATION_COLUMNS),
                                        ["66:66:66:66:66:0b", "192.168.150.88", "pc001", "-"]]
    leases = LeaseList([Lease(netaddr.EUI("66:66:66:66:66:0b"), netaddr.IPAddress("192.168.150.88"), EVIL, EXPIRES)])
    markup = leases._repr_html_()
    assert "<script>" not in markup
    assert cells(markup) == [list(LEASE_COLUMNS),
                             ["66:66:66:66:66:0b", "192.168.150.88", EVIL, "2030-01-02 03:04:05", "-"]]
    assert "1 lease\n" in pretty(leases) and EVIL in pretty(leases)


# -- list behaviour ----------------------------------------------------------------


def test_lists_still_behave_as_lists(hv: libvm.Hypervisor, lab: libvm.Network) -> None:
    vms = hv.vms()
    assert isinstance(vms, VMList) and isinstance(vms, list)
    assert len(vms) == 1 and vms[0].name == "legacy" and [vm.name for vm in vms] == ["legacy"]
    assert vms == [vms[0]] and [vms[0]] == vms and vms[:1] == list(vms)
    networks = hv.networks()
    assert isinstance(networks, NetworkList) and [n.name for n in networks] == ["default", "lab"]
    reservations = lab.reservations()
    assert isinstance(reservations, ReservationList)
    assert reservations == [Reservation("52:54:00:aa:bb:01", "192.168.150.10", "legacy")]
    assert lab.leases() == [] and isinstance(lab.leases(), LeaseList)
    copy = pickle.loads(pickle.dumps(reservations))
    assert type(copy) is ReservationList and copy == reservations
    leases = LeaseList([Lease(netaddr.EUI("66:66:66:66:66:0b"), netaddr.IPAddress("10.0.0.5"), "a", EXPIRES)])
    assert pickle.loads(pickle.dumps(leases)) == leases
    assert repr(reservations).startswith("[Reservation(")  # plain repr unchanged


# -- live objects ------------------------------------------------------------------


def test_vm_list_shows_a_row_per_nic_with_reservation_and_lease(
        hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    hv.create_vm("pc001", nics=[Nic("lab", ip="192.168.150.88", mac="66:66:66:66:66:0b")], start=False)
    calls = fake_leases(monkeypatch, {"lab": [
        Lease(netaddr.EUI("66:66:66:66:66:0b"), netaddr.IPAddress("192.168.150.88"), "pc001", EXPIRES),
        Lease(netaddr.EUI("02:00:00:00:00:99"), netaddr.IPAddress("192.168.150.31"), "stranger", EXPIRES),
    ]})
    rows = cells(hv.vms()._repr_html_())
    assert rows == [
        list(VM_COLUMNS),
        ["legacy", "running", "lab", "52:54:00:aa:bb:01", "192.168.150.10", "legacy", "-", "-"],
        ["", "", "default", "52:54:00:aa:bb:02", "-", "-", "-", "-"],
        ["pc001", "shut off", "lab", "66:66:66:66:66:0b", "192.168.150.88", "pc001", "192.168.150.88",
         "2030-01-02 03:04:05"],
    ]
    assert sorted(calls) == ["default", "lab"]  # one leases() per network, not per VM or NIC
    text = pretty(hv.vms())
    assert text.splitlines()[0] == "2 VMs"
    assert "pc001" in text and "192.168.150.88" in text and "2030-01-02 03:04:05" in text
    assert cells(hv.vm("pc001")._repr_html_())[1][:5] == ["pc001", "shut off", "lab", "66:66:66:66:66:0b",
                                                         "192.168.150.88"]


def test_leases_are_read_once_per_network_for_many_vms(
        hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    hv.create_vms([{"name": f"web{i}", "nics": [Nic("lab"), Nic("default")], "start": False} for i in range(5)])
    calls = fake_leases(monkeypatch, {})
    hv.vms()._repr_html_()
    assert sorted(calls) == ["default", "lab"]


def test_network_shows_settings_and_hosts(hv: libvm.Hypervisor, lab: libvm.Network,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake_leases(monkeypatch, {"lab": [
        Lease(netaddr.EUI("02:00:00:00:00:99"), netaddr.IPAddress("192.168.150.31"), "stranger", EXPIRES)]})
    tables = [cells(t.html()) for t in lab.tables()]
    assert tables[0] == [list(NETWORK_COLUMNS),
                         ["lab", "active", "virbr1", "192.168.150.0/24", "192.168.150.30-192.168.150.39", "1", "1"]]
    assert tables[1] == [list(HOST_COLUMNS),
                         ["52:54:00:aa:bb:01", "192.168.150.10", "legacy", "-", "-"],
                         ["02:00:00:00:00:99", "-", "stranger", "192.168.150.31", "2030-01-02 03:04:05"]]
    assert cells(lab._repr_html_()) == tables[0] + tables[1]
    text = pretty(lab)
    assert "hosts of network lab" in text and "stranger" in text
    assert cells(hv.networks()._repr_html_())[1][0] == "default"


def test_names_with_markup_are_escaped(hv: libvm.Hypervisor) -> None:
    name = "<script>alert('x')<\\script>&co"
    net = hv.ensure_network(name, "10.77.0.0/24", forward="none")
    hv.create_vm(name, nics=[Nic(name, ip="10.77.0.5")], start=False)
    renders: list[Callable[[], str]] = [hv._repr_html_, hv.vms()._repr_html_, hv.networks()._repr_html_,
                                        net._repr_html_, hv.vm(name)._repr_html_]
    for render in renders:
        markup = render()
        assert "<script>" not in markup and "&co" not in markup.replace("&amp;co", "")
        assert any(name in row for row in cells(markup))


def test_hypervisor_shows_networks_then_vms(hv: libvm.Hypervisor) -> None:
    tables = hv.tables()
    assert [t.columns for t in tables] == [NETWORK_COLUMNS, VM_COLUMNS]
    assert tables[0].caption == f"{hv.uri}: 2 networks" and tables[1].caption == f"{hv.uri}: 1 VM"
    assert pretty(hv).startswith(f"{hv.uri}: 2 networks\nnetwork  state")


def test_a_closed_connection_renders_as_a_message(hv: libvm.Hypervisor) -> None:
    vms, lab = hv.vms(), hv.network("lab")
    hv.close()
    for obj in (hv, vms, lab):
        assert "is closed" in obj._repr_html_()
        assert "is closed" in pretty(obj)


def test_views_imports_no_live_module_at_run_time() -> None:
    """views renders rows: the live objects gather them (VM.rows_of, Network.table), so views
    needs neither libvm.domain nor libvm.network, and they can import views without a circle."""
    tree = ast.parse(Path(views.__file__).read_text())
    imported = runtime_imports(tree)
    assert not {".domain", ".network", "libvm.domain", "libvm.network", "libvirt", "._live"} & set(imported)


def test_network_list_rows_are_its_networks_rows(hv: libvm.Hypervisor) -> None:
    networks = hv.networks()
    assert networks.table().rows == tuple(row for net in networks for row in net.table().rows)
    assert NetworkList().table().rows == () and NetworkList().table().caption == "0 networks"
