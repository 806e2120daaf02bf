"""Real-stack test helpers: a libvirtd sandbox in a network namespace and a
tiny DHCP test guest.  Needs root and Debian packages (see
:func:`libvm.testing.sandbox.ensure_packages`).

Names are imported lazily, so ``python -m libvm.testing.sandbox`` and
guest-only users do not import the other module (or libvirt) up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libvm.testing.guest import GuestImage, build_guest, console_done, parse_console
    from libvm.testing.sandbox import Sandbox, SandboxError, ensure_packages, netns_exec

_WHERE = {
    "GuestImage": "guest",
    "build_guest": "guest",
    "console_done": "guest",
    "parse_console": "guest",
    "Sandbox": "sandbox",
    "SandboxError": "sandbox",
    "ensure_packages": "sandbox",
    "netns_exec": "sandbox",
}

__all__ = [
    "GuestImage",
    "Sandbox",
    "SandboxError",
    "build_guest",
    "console_done",
    "ensure_packages",
    "netns_exec",
    "parse_console",
]


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(f"libvm.testing.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
