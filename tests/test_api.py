"""The public face: everything importable from ``libvm`` and typed."""

from __future__ import annotations

import inspect
from pathlib import Path

import libvm


def test_all_lists_every_public_name() -> None:
    public = {name for name, obj in vars(libvm).items()
              if not name.startswith("_") and not inspect.ismodule(obj)}
    assert public - {"annotations"} == set(libvm.__all__) - {"__version__"}


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
