"""The public face: everything importable from ``libvm`` and typed."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import libvm


def test_all_lists_every_public_name() -> None:
    public = {name for name, obj in vars(libvm).items()
              if not name.startswith("_") and not inspect.ismodule(obj)} | set(libvm._LAZY)
    assert public - {"annotations"} == set(libvm.__all__) - {"__version__"}
    assert all(getattr(libvm, name) is not None for name in libvm.__all__)
    assert set(libvm.__all__) <= set(dir(libvm))


def test_import_libvm_leaves_the_heavy_parts_for_their_first_use() -> None:
    """``import libvm`` loads its dependencies and the core; seeds, storage and the
    provisioning machinery load when first used (bench/bench_import.py measures the cost)."""
    probe = ("import sys, libvm; lazy = ['pycdlib', 'yaml', 'libvm.cloudinit', 'libvm.storage', 'libvm.provision', "
             "'libvm.plan', 'libvm.cli']; print([m for m in lazy if m in sys.modules]); "
             "libvm.CloudInit; print('libvm.cloudinit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_every_error_is_a_libvm_error() -> None:
    for name in libvm.__all__:
        obj = getattr(libvm, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, libvm.LibvmError), name


def test_conflicts_have_distinct_reason_codes() -> None:
    reasons = [cls.reason for cls in libvm.AddressConflict.__subclasses__()]
    assert len(reasons) == len(set(reasons))


def test_package_is_typed() -> None:
    assert (Path(libvm.__file__).parent / "py.typed").exists()


def test_public_callables_have_docstrings() -> None:
    for name in libvm.__all__:
        obj = getattr(libvm, name)
        if callable(obj):
            assert inspect.getdoc(obj), name


def test_state_and_support_errors_are_public_and_the_boundary_raises_those() -> None:
    from libvm import _live

    assert _live.InvalidState is libvm.InvalidState and _live.Unsupported is libvm.Unsupported
    assert "InvalidState" in libvm.__all__ and "Unsupported" in libvm.__all__


def _imports(tree: ast.AST, found: set[str]) -> set[str]:
    """The libvm modules a module imports at run time (at any depth; not under ``if TYPE_CHECKING``)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.ImportFrom) and child.level == 1:
            found.update([child.module.split(".")[0]] if child.module else [a.name for a in child.names])
        _imports(child, found)
    return found


def test_no_module_imports_another_that_imports_it_back() -> None:
    """One direction per pair: pure modules below live ones, no circle (views <-> domain <-> network was one)."""
    package = Path(libvm.__file__).parent
    graph = {p.stem: _imports(ast.parse(p.read_text()), set()) - {p.stem} for p in package.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in graph.get(start, ()) if nxt in graph)

    circles = sorted(name for name in graph if reaches(name, name, {name}))
    assert circles == []


def test_only_the_live_boundary_imports_libvirt() -> None:
    package = Path(libvm.__file__).parent
    importers = sorted(p.name for p in package.glob("*.py")
                       if any(isinstance(node, (ast.Import, ast.ImportFrom)) and "libvirt" in
                              ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
                              for node in ast.walk(ast.parse(p.read_text()))))
    assert importers == ["_live.py"]


def test_the_types_the_docs_name_are_importable() -> None:
    for name in ("DnsHost", "HostList", "FleetVMList"):
        assert name in libvm.__all__ and inspect.isclass(getattr(libvm, name)), name
