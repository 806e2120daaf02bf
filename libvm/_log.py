"""libvm's logger (``logging.getLogger("libvm")``), made on first use.

The ``logging`` package costs about 3 ms to import, a fifth of what ``import libvm``
adds to its dependencies' own import (see ``bench/bench_import.py``); a program
that never logs through libvm never pays it.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """Stands in for ``logging.getLogger(name)`` until a method of it is used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        return getattr(logging.getLogger(self._name), attr)


log = LazyLogger("libvm")
