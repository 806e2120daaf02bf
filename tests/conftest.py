"""Shared fixtures.

Unit tests run on libvirt's in-process test driver, one fresh node per test
(``test:///…/testnode.xml``: every connection gets its own copy of the state).
Real-stack tests (``tests/realstack/``) get their connection URI from the
``uri`` fixture in ``tests/realstack/conftest.py``.
"""

from __future__ import annotations

import ast
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

import libvm

DATA = Path(__file__).parent / "data"
TEST_URI = f"test://{DATA / 'testnode.xml'}"


@pytest.fixture
def hv() -> Iterator[libvm.Hypervisor]:
    """A fresh test-driver hypervisor with networks 'default' and 'lab' and domain 'legacy'."""
    with libvm.connect(TEST_URI) as conn:
        yield conn


@pytest.fixture
def lab(hv: libvm.Hypervisor) -> libvm.Network:
    """Network 192.168.150.0/24, dynamic range .30-.39, host 'legacy' at .10."""
    return hv.network("lab")


def canonical(xml: str | bytes) -> bytes:
    """XML reduced to a canonical form: compare documents by parsing, not by string."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml, parser)
    return etree.tostring(root, method="c14n2")


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """SIGINT handled by Python (KeyboardInterrupt), as in an interactive program.

    A process started in the background by a non-interactive shell (as CI may
    start the suite) inherits SIGINT *ignored*; Python then installs no handler
    and ``_thread.interrupt_main()`` does nothing.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported outside ``if TYPE_CHECKING:``, at any depth (functions included)."""
    guards = [node for node in ast.walk(tree) if isinstance(node, ast.If)
              and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    skipped = {id(inner) for guard in guards for inner in ast.walk(guard)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names
