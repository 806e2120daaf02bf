"""Every ```python block in README.md and docs/ runs, against libvirt's test driver.

The blocks of one file run in order in one namespace, like a reader typing them into one
interpreter: a later block may use ``net`` or ``vm`` from an earlier one. The namespace starts
with ``libvm`` and ``hv``, an open :class:`libvm.Hypervisor` (the pages say "``hv`` is a
Hypervisor"); a block that closes its own ``hv`` (``with libvm.connect() as hv:``) gets that one
back afterwards. Each file gets its own copy of ``tests/data/docsnode.xml`` (a host as libvirt
installs it: the stock ``default`` network, and one domain made by virsh), reached through
``$LIBVIRT_DEFAULT_URI``; ``"qemu:///system"`` in a block is replaced with that URI.

A block that cannot run here (it waits for a real guest's DHCP lease, or needs files) is marked
in the page, on the line right before its fence::

    <!-- docs-test: skip (needs a real daemon: the guest must get a DHCP lease) -->

Those are counted, listed and capped by ``test_skips_are_few_and_explained``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import libvm

ROOT = Path(__file__).resolve().parent.parent
DOCS_URI = f"test://{Path(__file__).resolve().parent / 'data' / 'docsnode.xml'}"
PAGES = sorted(
    [ROOT / "README.md", *(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
)
SKIP = re.compile(r"^<!-- docs-test: skip \((?P<reason>[^)]+)\) -->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
# The honest list is short: raise this only with a reason in the page.
MAX_SKIPS = 10  # testing.md's remote hypervisor and remote.md need a remote libvirtd (root, namespaces)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason, if marked


def blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, with their skip markers."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            if SKIP.match(lines[i]) and not (i + 1 < len(lines) and lines[i + 1].startswith("```python")):
                raise AssertionError(f"{path}:{i + 1}: a docs-test marker must be right before a ```python fence")
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not FENCE.match(lines[end]):
            end += 1
        if fence["lang"] == "python":
            marker = SKIP.match(lines[i - 1]) if i else None
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Block(path, i + 1, code, marker["reason"] if marker else None))
        i = end + 1
    return found


def test_pages_have_runnable_samples() -> None:
    """The extractor sees the pages' samples (guards against a fence syntax change)."""
    every = [b for p in PAGES for b in blocks(p)]
    assert len(every) >= 20
    assert sum(b.skip is None for b in every) >= 15


def test_skips_are_few_and_explained() -> None:
    skipped = [b for p in PAGES for b in blocks(p) if b.skip]
    listing = "\n".join(f"{b.path.relative_to(ROOT)}:{b.line}: {b.skip}" for b in skipped)
    print(f"{len(skipped)} doc samples skipped:\n{listing}")
    assert len(skipped) <= MAX_SKIPS, listing
    assert all(len(b.skip or "") >= 10 for b in skipped), listing


RUNNABLE_PAGES = [p for p in PAGES if any(b.skip is None for b in blocks(p))]


@pytest.mark.parametrize("path", RUNNABLE_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE_PAGES])
def test_samples_run(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", DOCS_URI)
    # cloud-init.md reads ~/.ssh/id_ed25519.pub.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDocs docs@test\n")
    runnable = [b for b in blocks(path) if b.skip is None]
    with libvm.connect() as hv:
        namespace: dict[str, Any] = {"__name__": "__docs__", "libvm": libvm, "hv": hv}
        for block in runnable:
            code = compile(block.code.replace("qemu:///system", DOCS_URI), f"{block.path}:{block.line}", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                raise AssertionError(
                    f"the sample at {block.path.relative_to(ROOT)}:{block.line} raised {exc!r}"
                ) from exc
            current = namespace.get("hv")
            if isinstance(current, libvm.Hypervisor) and current.closed:
                namespace["hv"] = hv


def test_api_reference_documents_every_public_name() -> None:
    page = (ROOT / "docs" / "api-reference.md").read_text()
    documented = set(re.findall(r"^\.\. auto(?:class|function|exception|data):: (\w+)$", page, re.M))
    public = {name for name in libvm.__all__ if not name.startswith("__")}
    assert documented == public
