"""examples/quickstart.ipynb on the test driver, in a real kernel: its cells run and its tables render.

The test driver hands out no leases, so the notebook skips its waiting cells
here; tests/realstack/test_notebook.py runs all of it against a real daemon.
"""

from __future__ import annotations

import sys

import pytest
from lxml import html as lxml_html

from tests.conftest import TEST_URI
from tests.nbrun import QUICKSTART, ROOT, html, lines, run_notebook, stdout

SUBNET = "10.77.7.0/24"


def rows(markup: str) -> list[list[str]]:
    doc = lxml_html.fragment_fromstring(markup, create_parent="div")
    found = [[c.text_content() for c in row.iter("td")] for row in doc.iter("tr")]
    return [row for row in found if row]  # headings have no <td>


@pytest.fixture(scope="module")
def notebook() -> object:
    return run_notebook(QUICKSTART, {"LIBVM_URI": TEST_URI, "LIBVM_SUBNET": SUBNET}, timeout=120)


def test_the_kernel_is_this_interpreter_with_this_libvm(notebook: object) -> None:
    out = stdout(notebook, "setup")
    assert f"python: {sys.executable}\n" in out
    assert f"libvm: {ROOT / 'libvm' / '__init__.py'}\n" in out
    assert "test driver: the waiting cells are skipped" in out


def test_the_vms_get_reserved_addresses_that_the_tables_show(notebook: object) -> None:
    reserved = lines(stdout(notebook, "create"), "reserved")
    assert [r[1] for r in reserved] == ["libvmtest-nb-vm0", "libvmtest-nb-vm1", "libvmtest-nb-vm2"]
    assert reserved[0][3] == "10.77.7.10"  # the address the notebook chose; the others allocated
    assert len({r[3] for r in reserved}) == 3
    expected = [[name, "running", "libvmtest-nb-lab", mac, ip, name, "-", "-"] for _, name, mac, ip in reserved]
    assert rows(html(notebook, "vms")) == expected
    assert [r for r in rows(html(notebook, "after-wait")) if r[0].startswith("libvmtest-nb")] == expected
    assert [r for r in rows(html(notebook, "connect")) if r[0].startswith("libvmtest-nb")] == []  # before
    assert rows(html(notebook, "reservations")) == [[mac, ip, name, "-"] for _, name, mac, ip in reserved]
    network = rows(html(notebook, "network"))
    assert network[0][:2] == ["libvmtest-nb-lab", "active"]
    assert network[0][3:] == [SUBNET, "10.77.7.100-10.77.7.199", "0", "0"]
    assert "<script" not in html(notebook, "vms")


def test_waiting_is_skipped_and_everything_removed(notebook: object) -> None:
    assert stdout(notebook, "wait") == "test driver: no leases to wait for\n"
    assert rows(html(notebook, "leases")) == [["none"]]
    assert stdout(notebook, "cleanup") == "left: [] []\n"
