"""IPv6 reservations on the real daemon: a dual-stack network, <host name|id ip> entries."""

from __future__ import annotations

import itertools

import pytest

import libvm
from libvm import Reservation
from tests.realstack.conftest import Stack

_nets = itertools.count(1)


def test_dual_stack_reservations(stack: Stack) -> None:
    n = next(_nets)
    net = stack.hv.ensure_network(stack.name(f"v6-{n}"), f"10.214.{n}.0/24", forward="none",
                                  dhcp_range=(f"10.214.{n}.100", f"10.214.{n}.199"),
                                  subnet6=f"fd00:214:{n}::/64",
                                  dhcp_range6=(f"fd00:214:{n}::100", f"fd00:214:{n}::1ff"))
    assert net.active
    net.reserve("02:00:00:00:ee:01", f"10.214.{n}.5", "dual")
    net.reserve(None, f"fd00:214:{n}::5", hostname="dual")
    net.reserve(None, f"fd00:214:{n}::6", client_id="00:01:00:01:2a:2b:2c:2d:02:00:00:00:ee:02")
    dump = stack.virsh("net-dumpxml", "--inactive", net.name)
    assert f"<host name='dual' ip='fd00:214:{n}::5'/>" in dump
    assert f"<host id='00:01:00:01:2a:2b:2c:2d:02:00:00:00:ee:02' ip='fd00:214:{n}::6'/>" in dump
    with pytest.raises(libvm.IpReserved):
        net.reserve(None, f"fd00:214:{n}::5", hostname="other")
    net.stop()
    net.start()
    assert Reservation(None, f"fd00:214:{n}::5", "dual") in net.reservations()
    assert net.release(ip=f"fd00:214:{n}::5") == [Reservation(None, f"fd00:214:{n}::5", "dual")]
    assert f"fd00:214:{n}::5" not in stack.virsh("net-dumpxml", net.name)
