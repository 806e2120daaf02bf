"""The exception hierarchy: every error survives pickling (process pools)."""

from __future__ import annotations

import inspect
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from libvm import errors
from libvm.errors import InvalidSpec

# Representative constructor arguments for the classes with their own __init__;
# every other class takes one message.
SAMPLES: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "InvalidSpec": (("nics[0].mac", ["a", 1], "not a 48-bit MAC address"), {}),
    "NetworkMismatch": (("lab", "forward", "nat", "none"), {}),
    "LibvirtFailure": (("defining domain 'x': boom",), {"code": 9}),
    "AddressMismatch": (("02:00:00:00:00:01", "10.0.0.5", "10.0.0.77"), {}),
    "NoEligibleHost": (("web1", {"qemu+ssh://hv1/system": ["no network 'lab'"]}), {}),
}
ADDRESS_CONFLICT_KWARGS = {"other": "pc001"}


def _classes() -> list[type[errors.LibvmError]]:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(inspect.isclass(cls) and issubclass(cls, errors.LibvmError) for cls in classes)
    return classes


def _sample(cls: type[errors.LibvmError]) -> errors.LibvmError:
    if cls.__name__ in SAMPLES:
        args, kwargs = SAMPLES[cls.__name__]
        return cls(*args, **kwargs)
    if issubclass(cls, errors.AddressConflict):
        return cls(f"{cls.__name__} happened", **ADDRESS_CONFLICT_KWARGS)
    return cls(f"{cls.__name__} happened")


@pytest.mark.parametrize("cls", _classes(), ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_its_attributes(cls: type[errors.LibvmError]) -> None:
    error = _sample(cls)
    error.context = "set by a caller"  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)
    assert getattr(copy, "reason", None) == getattr(error, "reason", None)


def test_invalid_spec_keeps_field_value_reason() -> None:
    copy = pickle.loads(pickle.dumps(InvalidSpec("f", 1, "r")))
    assert (copy.field, copy.value, copy.reason, str(copy)) == ("f", 1, "r", "f=1: r")


def _raise_invalid_spec(value: int) -> None:
    raise InvalidSpec("vcpus", value, "a positive integer")


def test_invalid_spec_crosses_a_process_pool() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_raise_invalid_spec, 0)
        with pytest.raises(InvalidSpec) as info:
            future.result(timeout=60)
    assert (info.value.field, info.value.value, info.value.reason) == ("vcpus", 0, "a positive integer")
