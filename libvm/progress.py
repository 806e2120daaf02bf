"""Progress of long calls: nothing, a callback ``progress(done, total)``, or a tqdm bar.

Plain threads and callbacks only: nothing here (or in libvm) runs an asyncio
loop, so the calls work inside Jupyter, whose kernel already runs one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import InvalidSpec

#: What ``progress=`` accepts: ``None``/``False`` (silent), ``True`` (a ``tqdm.auto`` bar)
#: or a callable ``progress(done, total)``.
ProgressArg = bool | Callable[[int, int], object] | None


class Progress:
    """One validated ``progress=`` argument; :meth:`run` reports a task's steps to it."""

    def __init__(self, progress: object, field: str = "progress") -> None:
        self._callback: Callable[[int, int], object] | None = None
        self._tqdm: Any = None
        if progress is None or progress is False:
            return
        if progress is True:
            try:
                self._tqdm = importlib.import_module("tqdm.auto").tqdm
            except ImportError as exc:
                raise InvalidSpec(field, progress, "True needs tqdm (pip install 'libvm[progress]' or tqdm); "
                                                   "pass None or a callable progress(done, total) instead") from exc
            return
        if not callable(progress):
            raise InvalidSpec(field, progress, "None, True (a tqdm bar) or a callable progress(done, total)")
        self._callback = progress

    @contextmanager
    def run(self, total: int, description: str, unit: str) -> Iterator[Callable[[], None]]:
        """Yield ``step()``: call it once per item done; a bar is closed when the block ends."""
        done = 0
        bar = self._tqdm(total=total, desc=description, unit=unit) if self._tqdm is not None else None

        def step() -> None:
            nonlocal done
            done += 1
            if bar is not None:
                bar.update(1)
            if self._callback is not None:
                self._callback(done, total)

        try:
            yield step
        finally:
            if bar is not None:
                bar.close()
