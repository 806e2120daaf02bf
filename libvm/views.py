"""How libvm's objects look in Jupyter (HTML tables) and IPython's terminal (aligned text).

IPython asks an object for ``_repr_html_()`` (a notebook) or calls
``_repr_pretty_(printer, cycle)`` (the terminal); plain ``repr()`` is unchanged.
The list types here are ``list`` subclasses that only add those two methods
and :meth:`table`: indexing, ``len``, iteration, ``==`` with a plain list and
pickling behave as for a list. Every value is HTML-escaped.

This module is pure: it renders rows. The live modules gather them
(``libvm.domain.nic_rows``, ``libvm.network.network_rows``) with one
``leases()`` and one reservations read per network, whatever the number of VMs.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import netaddr

from .addressing import format_mac
from .errors import LibvmError
from .values import Lease, Reservation

if TYPE_CHECKING:
    from .domain import VM
    from .network import Network

#: What a table shows for a value that is not there.
MISSING = "-"

VM_COLUMNS = ("VM", "state", "network", "MAC", "reserved IP", "hostname", "leased IP", "lease expires (UTC)")
HOST_COLUMNS = ("MAC", "reserved IP", "hostname", "leased IP", "lease expires (UTC)")
NETWORK_COLUMNS = ("network", "state", "bridge", "subnets", "DHCP range", "reservations", "leases")
RESERVATION_COLUMNS = ("MAC", "IP", "hostname", "client id")
LEASE_COLUMNS = ("MAC", "IP", "hostname", "expires (UTC)", "client id")


class Printer(Protocol):
    """The part of IPython's ``RepresentationPrinter`` libvm uses."""

    def text(self, obj: str) -> None: ...


@dataclass(frozen=True)
class Table:
    """Rows of text under named columns; :meth:`html` and :meth:`text` render them."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def html(self) -> str:
        """A ``<table>``; every caption, heading and cell is HTML-escaped."""
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        if not self.rows:
            body = f'<tr><td colspan="{len(self.columns)}"><i>none</i></td></tr>'
        caption = f"<caption>{esc(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="libvm">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def text(self) -> str:
        """Aligned columns, the caption on the first line."""
        widths = [max([len(c), *(len(r[i]) for r in self.rows)]) for i, c in enumerate(self.columns)]
        lines = [self.caption] if self.caption else []
        for row in (self.columns, *self.rows):
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if not self.rows:
            lines.append("(none)")
        return "\n".join(lines)


@dataclass(frozen=True)
class NicRow:
    """One NIC of a VM as the VM tables show it (the first NIC carries the VM's name and state)."""

    vm: str
    state: str
    network: str | None
    mac: str | None
    reservation: Reservation | None
    lease: Lease | None

    def cells(self) -> tuple[str, ...]:
        return (self.vm, self.state, _text(self.network), _text(self.mac), *_join_cells(self.reservation, self.lease))


@dataclass(frozen=True)
class NetworkRow:
    """One network as the network tables show it."""

    name: str
    active: bool
    bridge: str | None
    subnets: tuple[str, ...]
    dhcp_ranges: tuple[str, ...]
    reservations: int
    leases: int

    def cells(self) -> tuple[str, ...]:
        return (self.name, "active" if self.active else "inactive", _text(self.bridge),
                ", ".join(self.subnets) or MISSING, ", ".join(self.dhcp_ranges) or MISSING,
                str(self.reservations), str(self.leases))


def lease_of(mac: str | None, reserved: netaddr.IPAddress | None, leases: Iterable[Lease]) -> Lease | None:
    """``mac``'s lease: the one on its reserved address if it holds several."""
    if mac is None:
        return None
    mine = [x for x in leases if x.mac is not None and format_mac(x.mac) == mac]
    preferred = [x for x in mine if reserved is not None and x.ip == reserved] or mine
    return preferred[0] if preferred else None


def reservation_of(mac: str | None, reservations: Iterable[Reservation]) -> Reservation | None:
    if mac is None:
        return None
    return next((r for r in reservations if r.mac is not None and format_mac(r.mac) == mac), None)


def vm_table(rows: Sequence[NicRow], caption: str = "") -> Table:
    return Table(VM_COLUMNS, tuple(row.cells() for row in rows), caption)


def network_table(rows: Sequence[NetworkRow], caption: str = "") -> Table:
    return Table(NETWORK_COLUMNS, tuple(row.cells() for row in rows), caption)


def host_table(reservations: Sequence[Reservation], leases: Sequence[Lease], caption: str = "") -> Table:
    """Reservations joined with their leases, then the leases nobody reserved (dynamic clients)."""
    rows = []
    shown: set[int] = set()
    for res in reservations:
        mac = format_mac(res.mac) if res.mac is not None else None
        lease = lease_of(mac, res.ip, leases)
        if lease is not None:
            shown.add(id(lease))
        who = mac or res.client_id
        rows.append((_text(who), *_join_cells(res, lease)))
    for lease in leases:
        if id(lease) not in shown:
            who = format_mac(lease.mac) if lease.mac is not None else lease.client_id
            rows.append((_text(who), *_join_cells(None, lease)))
    return Table(HOST_COLUMNS, tuple(rows), caption)


def reservation_table(reservations: Iterable[Reservation], caption: str = "") -> Table:
    return Table(RESERVATION_COLUMNS, tuple(
        (_text(format_mac(r.mac) if r.mac is not None else None), str(r.ip), _text(r.hostname), _text(r.client_id))
        for r in reservations), caption)


def lease_table(leases: Iterable[Lease], caption: str = "") -> Table:
    return Table(LEASE_COLUMNS, tuple(
        (_text(format_mac(x.mac) if x.mac is not None else None), str(x.ip), _text(x.hostname),
         _when(x.expires), _text(x.client_id))
        for x in leases), caption)


def _join_cells(res: Reservation | None, lease: Lease | None) -> tuple[str, str, str, str]:
    hostname = (res.hostname if res is not None else None) or (lease.hostname if lease is not None else None)
    return (_text(res.ip if res is not None else None), _text(hostname),
            _text(lease.ip if lease is not None else None), _when(lease.expires if lease is not None else None))


def _text(value: object) -> str:
    return MISSING if value is None or value == "" else str(value)


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return MISSING
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class Rendered:
    """Mixin: ``_repr_html_`` and ``_repr_pretty_`` from :meth:`table`.

    A failure to read libvirt (closed connection, domain gone) is shown, not
    raised: a notebook cell's output should not turn into a traceback.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # IPython's pretty printer uses the first class of the MRO that defines
        # _repr_pretty_ or __repr__, or that it knows (list): a mixin further
        # down is never reached, so every subclass gets the method itself.
        if "_repr_pretty_" not in cls.__dict__:
            setattr(cls, "_repr_pretty_", Rendered._repr_pretty_)  # noqa: B010

    def table(self) -> Table:
        raise NotImplementedError

    def tables(self) -> list[Table]:
        """What the object shows: its :meth:`table`, for most."""
        return [self.table()]

    def _repr_html_(self) -> str:
        try:
            return "".join(t.html() for t in self.tables())
        except LibvmError as exc:
            return f"<p><code>{html.escape(repr(self))}</code>: {html.escape(str(exc))}</p>"

    def _repr_pretty_(self, p: Printer, cycle: bool) -> None:
        if cycle:
            p.text(f"{type(self).__name__}(...)")
            return
        try:
            p.text("\n\n".join(t.text() for t in self.tables()))
        except LibvmError as exc:
            p.text(f"{self!r}: {exc}")


class VMList(list["VM"], Rendered):
    """The VMs of :meth:`Hypervisor.vms` and :meth:`Hypervisor.create_vms`: a list that renders as a table."""

    def table(self) -> Table:
        """One row per NIC: state, MAC, reserved IP, hostname, leased IP and its expiry."""
        from .domain import nic_rows  # here: domain imports this module

        return vm_table(nic_rows(self), f"{len(self)} VM{'' if len(self) == 1 else 's'}")


class NetworkList(list["Network"], Rendered):
    """The networks of :meth:`Hypervisor.networks`: a list that renders as a table."""

    def table(self) -> Table:
        """One row per network: state, bridge, subnets, DHCP range, reservation and lease counts."""
        from .network import network_rows  # here: network imports this module

        return network_table(network_rows(self), f"{len(self)} network{'' if len(self) == 1 else 's'}")


class ReservationList(list[Reservation], Rendered):
    """The reservations of :meth:`Network.reservations`: a list that renders as a table."""

    def table(self) -> Table:
        return reservation_table(self, f"{len(self)} reservation{'' if len(self) == 1 else 's'}")


class LeaseList(list[Lease], Rendered):
    """The leases of :meth:`Network.leases`: a list that renders as a table."""

    def table(self) -> Table:
        return lease_table(self, f"{len(self)} lease{'' if len(self) == 1 else 's'}")
