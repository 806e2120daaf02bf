"""Many reservations at once (:meth:`Network.reserve_many`): all or nothing, and fast.

libvirt 9.0 re-applies a network's firewall rules on every live update (about
0.28 s each: ``strace`` shows 24 ``iptables`` runs, then a SIGHUP to
dnsmasq); a config-only update costs about 2.5 ms. So an idle network (no
guest attached) takes its new hosts in its persistent definition and is
restarted once; otherwise each host is one live-and-persistent update.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import _live
from .errors import AddressConflict, LibvmError
from .reservations import CONFIG, LIVE, HostLike, NetworkState, check_size, host_key, parse_hosts, plan_hosts
from .values import Reservation, check_bool
from .views import ReservationList

if TYPE_CHECKING:  # network.py calls this module: no import back at run time
    from .network import Network

log = logging.getLogger("libvm")


def reserve_many(net: Network, hosts: Iterable[HostLike], *, allow_dynamic: bool, reclaim_stale: bool,
                 restart_idle: bool) -> ReservationList:
    """:meth:`Network.reserve_many` (see there)."""
    for flag, value in (("allow_dynamic", allow_dynamic), ("reclaim_stale", reclaim_stale),
                        ("restart_idle", restart_idle)):
        check_bool(value, flag)
    state = net.state()
    everything, new = plan_hosts(net.name, state.spec, state.hosts, parse_hosts(hosts, "hosts"), allow_dynamic,
                                 state.dns)
    if not new:
        return ReservationList(everything)
    check_size(net.name, state.views, [wanted for _, wanted in new])
    leases = net.leases()
    stale = [(lease, wanted) for _, wanted in new if wanted.mac is not None
             for lease in net.blocking_leases(wanted, reclaim_stale, leases)]
    for lease, wanted in stale:
        net.reclaim(lease, wanted)
    # Noted *before* each update: a Ctrl-C just after libvirt answered is rolled back too.
    attempted: list[Reservation] = []
    # Running and persistent, the two definitions identical, and no guest attached.
    restarting = (restart_idle and len(new) > 1 and len(state.views) == 1 and state.active and state.persistent
                  and not _live.network_ports(net.handle, net.name))
    try:
        for position, wanted in new:
            attempted.append(wanted)
            _add(net, state, position, wanted, CONFIG if restarting else None)
        if restarting:
            _apply_by_restart(net, state, [wanted for _, wanted in new])
    except BaseException:
        with _live.sigint_deferred():
            _roll_back(net, attempted, restarting)
        raise
    log.info("reserved %d hosts on network %s", len(new), net.name)
    return ReservationList(everything)


def _add(net: Network, state: NetworkState, position: int, wanted: Reservation, flags: int | None) -> None:
    """Add ``hosts[position]``; a clash only libvirt saw (a race) names its position."""
    try:
        net.update_host(state, _live.ADD, wanted, "reserving", flags)
    except AddressConflict as exc:
        raise exc.at(f"hosts[{position}]") from exc.__cause__


def _roll_back(net: Network, attempted: list[Reservation], restarting: bool) -> None:
    """Remove exactly the entries of ``attempted`` still in a definition; start a network a
    failed restart left stopped."""
    ours = {host_key(wanted) for wanted in attempted}
    state = net.state()
    for entry, flags in state.hosts.items():
        if (entry.mac, entry.ip, entry.name, entry.id) in ours:
            try:
                net.update_host(state, _live.DELETE, entry.reservation(), "rolling back", flags)
            except LibvmError as exc:
                log.warning("could not roll back %s on network %s: %s", entry.reservation(), net.name, exc)
    if restarting and not net.active:
        try:
            net.start()
        except LibvmError as exc:
            log.warning("could not start network %s again: %s", net.name, exc)


def _apply_by_restart(net: Network, state: NetworkState, hosts: list[Reservation]) -> None:
    """Make ``hosts`` (added to the persistent definition) live: restart the idle network once.

    Under the network's exclusive lock, so no libvm guest starts on it
    meanwhile. If a guest attached since :func:`reserve_many` looked, the
    restart would cut it off: the hosts are then made live one by one.
    """
    with net.exclusive():
        if _live.network_ports(net.handle, net.name):
            for wanted in hosts:
                net.update_host(state, _live.ADD, wanted, "reserving", LIVE)
            return
        _live.call(net.handle, "destroy", f"restarting network {net.name!r}")
        _live.call(net.handle, "create", f"restarting network {net.name!r}")
