"""What the test services (sandbox, remote hypervisor, relay) share: start/stop as a context manager, a CLI verb."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TypeVar

log = logging.getLogger("libvm.testing")

_S = TypeVar("_S", bound="Service")


class Service:
    """``start()`` on entering a ``with`` block, ``stop()`` on leaving it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_action(service: Service, action: str, errors: type[Exception]) -> int:
    """``up``, ``down`` or ``status`` (exit 0 if it runs) from a command line; ``errors`` are logged, exit 1."""
    try:
        if action == "up":
            service.start()
        elif action == "down":
            service.stop()
        else:
            return 0 if service.running() else 1
    except errors as exc:
        log.error("%s", exc)
        return 1
    return 0
