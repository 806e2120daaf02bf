"""Real-stack test helpers: a libvirtd sandbox in a network namespace, a second
libvirt host reached only over the network (:class:`RemoteHypervisor`, with a
latency :class:`Relay`), and a tiny DHCP test guest (kernel + initramfs, or a bootable disk image) that reads
a NoCloud seed.  Needs root and Debian packages (see
:func:`libvm.testing.sandbox.ensure_packages`).

Names are imported lazily, so ``python -m libvm.testing.sandbox`` and
guest-only users do not import the other module (or libvirt) up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libvm.testing.disk import build_disk_image
    from libvm.testing.guest import GuestImage, SeedReport, build_guest, console_done, parse_console, parse_seed_lines
    from libvm.testing.relay import Relay
    from libvm.testing.remote import RemoteHypervisor, remote_link
    from libvm.testing.sandbox import Sandbox, SandboxError, ensure_packages, netns_exec

_WHERE = {
    "GuestImage": "guest",
    "SeedReport": "guest",
    "build_disk_image": "disk",
    "parse_seed_lines": "guest",
    "build_guest": "guest",
    "console_done": "guest",
    "parse_console": "guest",
    "Relay": "relay",
    "RemoteHypervisor": "remote",
    "remote_link": "remote",
    "Sandbox": "sandbox",
    "SandboxError": "sandbox",
    "ensure_packages": "sandbox",
    "netns_exec": "sandbox",
}

__all__ = [
    "GuestImage",
    "Relay",
    "RemoteHypervisor",
    "Sandbox",
    "SandboxError",
    "SeedReport",
    "build_disk_image",
    "build_guest",
    "console_done",
    "ensure_packages",
    "netns_exec",
    "parse_console",
    "parse_seed_lines",
    "remote_link",
]


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(f"libvm.testing.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
