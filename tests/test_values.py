"""libvm.values' shared helpers: the one lease picker and reservation picker, the one bool check."""

from __future__ import annotations

import netaddr
import pytest

from libvm import InvalidSpec, Lease, Reservation
from libvm.values import check_bool, lease_of, reservation_of

MAC = "52:54:00:00:00:01"
OLD = Lease(netaddr.EUI(MAC), netaddr.IPAddress("10.0.0.2"))
RESERVED = Lease(netaddr.EUI(MAC), netaddr.IPAddress("10.0.0.3"))
OTHER = Lease(netaddr.EUI("52:54:00:00:00:02"), netaddr.IPAddress("10.0.0.4"))
V6 = Lease(None, netaddr.IPAddress("fd00::5"), client_id="00:04:aa")


def test_lease_of_prefers_the_lease_on_the_reserved_address() -> None:
    leases = [V6, OTHER, OLD, RESERVED]
    assert lease_of(MAC, netaddr.IPAddress("10.0.0.3"), leases) is RESERVED
    assert lease_of(netaddr.EUI(MAC), netaddr.IPAddress("10.0.0.3"), leases) is RESERVED  # an EUI as well as a string


def test_lease_of_falls_back_to_the_first_lease_of_the_mac() -> None:
    assert lease_of(MAC, None, [V6, OLD, RESERVED]) is OLD
    assert lease_of(MAC, netaddr.IPAddress("10.0.0.99"), [V6, RESERVED, OLD]) is RESERVED


def test_lease_of_without_mac_or_lease_is_none() -> None:
    assert lease_of(None, None, [OLD]) is None
    assert lease_of(MAC, None, [V6, OTHER]) is None
    assert lease_of(MAC, None, iter([])) is None


def test_reservation_of_finds_the_macs_entry() -> None:
    mine = Reservation(MAC, "10.0.0.3", "pc001")
    entries = [Reservation(None, "fd00::5", "pc001"), Reservation("52:54:00:00:00:02", "10.0.0.4"), mine]
    assert reservation_of(MAC.upper(), entries) is mine
    assert reservation_of(netaddr.EUI(MAC), entries) is mine
    assert reservation_of("52:54:00:00:00:09", entries) is None and reservation_of(None, entries) is None


@pytest.mark.parametrize("value", [0, 1, "yes", None, 1.0])
def test_check_bool_refuses_what_is_not_a_bool(value: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        check_bool(value, "flag")
    assert (info.value.field, info.value.value, info.value.reason) == ("flag", value, "True or False")


def test_check_bool_returns_the_bool() -> None:
    assert check_bool(True, "flag") is True and check_bool(False, "flag") is False
