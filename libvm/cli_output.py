"""How the ``libvm`` command prints: JSON or aligned tables (shared by :mod:`libvm.cli` and
:mod:`libvm.cli_cloud`, so neither imports the other)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import netaddr

from .addressing import format_mac
from .views import Table, cell

Record = dict[str, Any]
Column = tuple[str, Callable[[Record], object]]


# -- output -----------------------------------------------------------------------


class JsonEncoder(json.JSONEncoder):
    """JSON for libvm's values: addresses and paths as strings, times in ISO 8601."""

    def default(self, o: object) -> object:
        if isinstance(o, netaddr.EUI):
            return format_mac(o)
        if isinstance(o, netaddr.IPNetwork):
            return str(o.cidr)
        if isinstance(o, (netaddr.IPAddress, Path)):
            return str(o)
        if isinstance(o, dt.datetime):
            return o.isoformat()
        return super().default(o)


def print_table(columns: Sequence[Column], records: Sequence[Record]) -> None:
    """Print ``records`` as aligned columns under upper-case headers (``-`` for nothing), as
    :class:`libvm.Table` renders them; only the headers when there is none."""
    table = Table(tuple(header.upper() for header, _ in columns),
                  tuple(tuple(cell(get(record)) for _, get in columns) for record in records))
    print(table.text(empty=""))


def show(args: argparse.Namespace, data: Record | list[Record], columns: Sequence[Column]) -> None:
    """A listing (a list) or a result (one record), as JSON or as a table."""
    if args.json:
        print(json.dumps(data, cls=JsonEncoder, indent=2))
    else:
        print_table(columns, data if isinstance(data, list) else [data])


def columns(*keys: str) -> list[Column]:
    """A column per record key, headed by the key (``client_id`` as ``client id``)."""
    return [(key.replace("_", " "), operator.itemgetter(key)) for key in keys]


