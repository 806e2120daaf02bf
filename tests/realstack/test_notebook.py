"""examples/quickstart.ipynb end to end on the real daemon, from a clean kernel.

The kernel is this interpreter (see tests/nbrun.py) and gets the daemon's URI
as ``LIBVM_URI``. Beyond "it ran": the addresses the notebook reserved are the
ones its guests leased, in what it printed and in the tables it displayed.
"""

from __future__ import annotations

import sys

from lxml import html as lxml_html

from tests.nbrun import QUICKSTART, html, lines, run_notebook, stdout
from tests.realstack.conftest import PREFIX, Stack, next_subnet


def rows(markup: str) -> list[list[str]]:
    doc = lxml_html.fragment_fromstring(markup, create_parent="div")
    found = [[c.text_content() for c in row.iter("td")] for row in doc.iter("tr")]
    return [row for row in found if row]  # headings have no <td>


def test_quickstart_notebook(stack: Stack) -> None:
    base = next_subnet()
    notebook = run_notebook(QUICKSTART, {"LIBVM_URI": stack.uri, "LIBVM_SUBNET": f"{base}.0/24"}, timeout=600)

    setup = stdout(notebook, "setup")
    assert f"python: {sys.executable}\n" in setup and "(real daemon)" in setup

    reserved = lines(stdout(notebook, "create"), "reserved")  # reserved NAME MAC IP
    assert [r[1] for r in reserved] == [f"{PREFIX}nb-vm{i}" for i in range(3)]
    assert reserved[0][3] == f"{base}.10"
    assert len({r[3] for r in reserved}) == 3

    # What wait_for_ips returned, as the notebook printed it: each guest holds its reserved address.
    leased = lines(stdout(notebook, "wait"), "leased")
    assert sorted(r[1:] for r in leased) == sorted(r[1:] for r in reserved)

    # The VM table after the wait: reserved IP and leased IP side by side, with an expiry.
    table = {r[0]: r for r in rows(html(notebook, "after-wait")) if r[0].startswith(f"{PREFIX}nb-")}
    assert sorted(table) == [r[1] for r in reserved]
    for _, name, mac, ip in reserved:
        row = table[name]
        assert row[1] == "running" and row[2] == f"{PREFIX}nb-lab" and row[3] == mac
        assert row[4] == ip and row[6] == ip, row  # reserved IP, leased IP
        assert row[7] != "-", row  # the lease's expiry

    # The lease table of the network and the table shown before the wait.
    lease_rows = {(r[0], r[1]) for r in rows(html(notebook, "leases"))}
    assert {(mac, ip) for _, _, mac, ip in reserved} <= lease_rows
    before = {r[0]: r for r in rows(html(notebook, "vms"))}
    assert all(before[name][4] == ip for _, name, _, ip in reserved)
    assert [[mac, ip, name, "-"] for _, name, mac, ip in reserved] == rows(html(notebook, "reservations"))

    # The notebook removed what it made.
    assert stdout(notebook, "cleanup") == "left: [] []\n"
    assert not [vm.name for vm in stack.hv.vms() if vm.name.startswith(f"{PREFIX}nb-")]
    assert not [n.name for n in stack.hv.networks() if n.name.startswith(f"{PREFIX}nb-")]
