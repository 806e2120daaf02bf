"""How libvm's objects look in Jupyter (HTML tables) and IPython's terminal (aligned text).

IPython asks an object for ``_repr_html_()`` (a notebook) or calls
``_repr_pretty_(printer, cycle)`` (the terminal); plain ``repr()`` is unchanged.
The list types here are ``list`` subclasses that only add those two methods
and :meth:`table`: indexing, ``len``, iteration, ``==`` with a plain list and
pickling behave as for a list. Every value is HTML-escaped.

This module is pure: it renders rows, and imports no live module. The live
objects gather their rows (``VM.rows_of``, ``Network.table``) with one
``leases()`` and one reservations read per network, whatever the number of VMs.
The command line prints its listings through :class:`Table` and :func:`cell` too.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

import netaddr

from .addressing import format_mac
from .errors import LibvmError
from .values import Lease, Reservation, lease_of

if TYPE_CHECKING:  # the items' types, named (as strings) in VMList's and NetworkList's bases only
    from .domain import VM  # noqa: F401
    from .network import Network  # noqa: F401

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

    def text(self, *, empty: str = "(none)") -> str:
        """Aligned columns, the caption on the first line; ``empty`` under the headings when there is no row."""
        widths = [max([len(c), *(len(r[i]) for r in self.rows)]) for i, c in enumerate(self.columns)]
        lines = [self.caption] if self.caption else []
        for row in (self.columns, *self.rows):
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if not self.rows and empty:
            lines.append(empty)
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
        return (self.vm, self.state, cell(self.network), cell(self.mac), *_join_cells(self.reservation, self.lease))


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
        return (self.name, "active" if self.active else "inactive", cell(self.bridge),
                ", ".join(self.subnets) or MISSING, ", ".join(self.dhcp_ranges) or MISSING,
                str(self.reservations), str(self.leases))


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
        rows.append((cell(who), *_join_cells(res, lease)))
    for lease in leases:
        if id(lease) not in shown:
            who = format_mac(lease.mac) if lease.mac is not None else lease.client_id
            rows.append((cell(who), *_join_cells(None, lease)))
    return Table(HOST_COLUMNS, tuple(rows), caption)


def reservation_table(reservations: Iterable[Reservation], caption: str = "") -> Table:
    return Table(RESERVATION_COLUMNS, tuple(
        (cell(r.mac), str(r.ip), cell(r.hostname), cell(r.client_id)) for r in reservations), caption)


def lease_table(leases: Iterable[Lease], caption: str = "") -> Table:
    return Table(LEASE_COLUMNS, tuple(
        (cell(x.mac), str(x.ip), cell(x.hostname), cell(x.expires), cell(x.client_id)) for x in leases), caption)


def _join_cells(res: Reservation | None, lease: Lease | None) -> tuple[str, str, str, str]:
    hostname = (res.hostname if res is not None else None) or (lease.hostname if lease is not None else None)
    return (cell(res.ip if res is not None else None), cell(hostname),
            cell(lease.ip if lease is not None else None), cell(lease.expires if lease is not None else None))


def count(number: int, noun: str) -> str:
    """``1 VM``, ``3 VMs``: a table's caption."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def cell(value: object) -> str:
    """How a table shows a value: :data:`MISSING` for nothing (``None``, ``""``, an empty list),
    a list comma-joined, ``yes``/``no``, a MAC as libvirt writes it, a time in UTC."""
    if value is None or (isinstance(value, (str, list, tuple)) and not value):
        return MISSING
    if isinstance(value, (list, tuple)):
        return ",".join(cell(item) for item in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, netaddr.EUI):
        return format_mac(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


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

    @classmethod
    def rows_of(cls: type[R], items: Sequence[R]) -> list[tuple[str, ...]]:
        """The rows of a list of such objects: each one's :meth:`table` rows, in order.

        A class whose objects share reads when shown together (VMs on one
        network) gathers them itself.
        """
        return [row for item in items for row in item.table().rows]

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


R = TypeVar("R", bound=Rendered)


class RenderedList(list[R], Rendered):
    """A list of rendered objects that renders as one table: a row (or a few) per item."""

    columns: ClassVar[tuple[str, ...]] = ()
    noun: ClassVar[str] = "item"

    def table(self) -> Table:
        rows = type(self[0]).rows_of(self) if self else []
        return Table(self.columns, tuple(rows), count(len(self), self.noun))


class VMList(RenderedList["VM"]):
    """The VMs of :meth:`Hypervisor.vms` and :meth:`Hypervisor.create_vms`: a list that renders as a table,
    one row per NIC (state, MAC, reserved IP, hostname, leased IP and its expiry)."""

    columns = VM_COLUMNS
    noun = "VM"


class NetworkList(RenderedList["Network"]):
    """The networks of :meth:`Hypervisor.networks`: a list that renders as a table, one row per
    network (state, bridge, subnets, DHCP range, reservation and lease counts)."""

    columns = NETWORK_COLUMNS
    noun = "network"


class ReservationList(list[Reservation], Rendered):
    """The reservations of :meth:`Network.reservations`: a list that renders as a table."""

    def table(self) -> Table:
        return reservation_table(self, count(len(self), "reservation"))


class LeaseList(list[Lease], Rendered):
    """The leases of :meth:`Network.leases`: a list that renders as a table."""

    def table(self) -> Table:
        return lease_table(self, count(len(self), "lease"))
