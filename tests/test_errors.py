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
    "HostKeyMismatch": ((), {"domain": "pc001", "address": "10.0.0.5", "expected": "SHA256:aaa",
                             "presented": "SHA256:bbb"}),
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


# -- at(): the same error, placed at a list position ----------------------------------


def test_at_prefixes_an_invalid_specs_field_and_keeps_the_rest() -> None:
    cause = OSError("underneath")
    error = InvalidSpec("ip", "10.0.0.300", "not an IP address")
    error.__cause__ = cause
    placed = error.at("nics[1]")
    assert type(placed) is InvalidSpec
    assert (placed.field, placed.value, placed.reason) == ("nics[1].ip", "10.0.0.300", "not an IP address")
    assert str(placed) == "nics[1].ip='10.0.0.300': not an IP address"
    assert placed.__cause__ is cause
    assert error.field == "ip"  # the original is unchanged
    assert placed.at("specs[0]").field == "specs[0].nics[1].ip"  # positions nest


def test_at_prefixes_every_other_errors_message_and_keeps_class_and_attributes() -> None:
    conflict = errors.IpReserved("10.0.0.5 is already reserved", other="pc001").at("hosts[3]")
    assert type(conflict) is errors.IpReserved
    assert (str(conflict), conflict.other, conflict.reason) == ("hosts[3]: 10.0.0.5 is already reserved", "pc001",
                                                                 "ip-reserved")
    mismatch = errors.NetworkMismatch("lab", "forward", "nat", "none").at("specs[2]")
    assert type(mismatch) is errors.NetworkMismatch
    assert (mismatch.field, mismatch.wanted, mismatch.actual) == ("forward", "nat", "none")
    assert str(mismatch).startswith("specs[2]: network 'lab' exists with forward='none'")
    failure = errors.LibvirtFailure("defining domain 'x': boom", 9).at("nics[0]")
    assert (type(failure), failure.code) == (errors.LibvirtFailure, 9)
    assert str(failure) == "nics[0]: defining domain 'x': boom"


@pytest.mark.parametrize("cls", _classes(), ids=lambda cls: cls.__name__)
def test_every_error_placed_with_at_keeps_its_class_and_pickles(cls: type[errors.LibvmError]) -> None:
    placed = _sample(cls).at("items[7]")
    assert type(placed) is cls
    assert "items[7]" in str(placed)
    copy = pickle.loads(pickle.dumps(placed))
    assert (type(copy), str(copy), vars(copy)) == (cls, str(placed), vars(placed))


def test_relocated_rewrites_the_position_text() -> None:
    def edit(text: str) -> str:
        return text.replace("hosts[2]", "hosts.txt:9")

    assert InvalidSpec("hosts[2].mac", "x", "bad").relocated(edit).field == "hosts.txt:9.mac"
    assert str(errors.MacReserved("hosts[2] (x) clashes", other="y").relocated(edit)) == "hosts.txt:9 (x) clashes"


# -- the classes callers act on ---------------------------------------------------------


def test_libvirt_state_and_support_errors_are_libvirt_failures() -> None:
    assert issubclass(errors.InvalidState, errors.LibvirtFailure)
    assert issubclass(errors.Unsupported, errors.LibvirtFailure)


def test_failures_around_libvirt_are_not_libvirt_failures() -> None:
    for cls in (errors.DnsmasqFailure, errors.LockFailure, errors.SourceChanged, errors.DomainStopped,
                errors.NothingToWaitFor):
        assert not issubclass(cls, errors.LibvirtFailure), cls


def test_domain_stopped_and_nothing_to_wait_for_name_the_domain() -> None:
    stopped = errors.DomainStopped("domain 'a' is shut off", domain="a", state="shut off")
    assert (stopped.domain, stopped.state) == ("a", "shut off")
    assert errors.NothingToWaitFor("no NIC", domain="b").domain == "b"


class _NoRepr:
    """Neither picklable nor representable."""

    def __reduce__(self) -> str:
        raise TypeError("cannot pickle")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _unpicklable_values() -> list[object]:
    def local() -> None: ...
    return [lambda: 1, (x for x in [1]), local, [1, lambda: 2], _NoRepr()]


@pytest.mark.parametrize("cls", _classes(), ids=lambda cls: cls.__name__)
def test_every_error_pickles_whatever_it_carries(cls: type[errors.LibvmError]) -> None:
    for value in _unpicklable_values():
        error = _sample(cls)
        error.extra = value  # type: ignore[attr-defined]
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and str(copy) == str(error)
        assert isinstance(copy.extra, str)  # type: ignore[attr-defined]
        wanted = "<unrepresentable _NoRepr>" if isinstance(value, _NoRepr) else repr(value)
        assert copy.extra == wanted  # type: ignore[attr-defined]
    anything = errors.LibvmError("message", lambda: 3)
    assert pickle.loads(pickle.dumps(anything)).args[0] == "message"


def _raise_unpicklable_invalid_spec() -> None:
    raise InvalidSpec("progress", lambda sent, total: None, "a callable")


def test_invalid_spec_with_an_unpicklable_value_crosses_a_process_pool() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_raise_unpicklable_invalid_spec)
        with pytest.raises(InvalidSpec) as info:
            future.result(timeout=60)
    assert (info.value.field, info.value.reason) == ("progress", "a callable")
    assert info.value.value.startswith("<function _raise_unpicklable_invalid_spec.<locals>.<lambda>")


def test_a_long_value_is_cut_in_the_message_and_kept_whole() -> None:
    name = "x" * 100_000
    error = InvalidSpec("name", name, "longer than 200 bytes")
    assert len(str(error)) < 300 and str(error).endswith("... (100002 characters): longer than 200 bytes")
    assert error.value == name
    moved = error.at("specs[0]")
    assert moved.value == name and len(str(moved)) < 310
    assert pickle.loads(pickle.dumps(error)).value == name


@pytest.mark.parametrize("prefix", [None, 5, "", b"nics"])
@pytest.mark.parametrize("cls", [InvalidSpec, errors.IpReserved], ids=lambda cls: cls.__name__)
def test_at_refuses_a_prefix_that_is_not_a_non_empty_string(cls: type[errors.LibvmError], prefix: Any) -> None:
    with pytest.raises(InvalidSpec) as info:
        _sample(cls).at(prefix)
    assert info.value.field == "prefix"
