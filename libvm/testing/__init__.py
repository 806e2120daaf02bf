"""Real-stack test helpers: a libvirtd sandbox in a network namespace, a
tiny DHCP test guest (kernel + initramfs, or a bootable disk image) that reads
a NoCloud seed, real Debian 12 cloud images (:func:`build_debian_image`) and
cloud-init's own network renderers (:func:`render_network`).  Needs root and
Debian packages (see :func:`libvm.testing.sandbox.ensure_packages`).

Names are imported lazily, so ``python -m libvm.testing.sandbox`` and
guest-only users do not import the other module (or libvirt) up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libvm.testing.debian import build_debian_image
    from libvm.testing.disk import build_disk_image
    from libvm.testing.guest import GuestImage, SeedReport, build_guest, console_done, parse_console, parse_seed_lines
    from libvm.testing.renderers import cloud_init_tree, render_network
    from libvm.testing.sandbox import Sandbox, SandboxError, ensure_packages, netns_exec

_WHERE = {
    "GuestImage": "guest",
    "SeedReport": "guest",
    "build_debian_image": "debian",
    "build_disk_image": "disk",
    "cloud_init_tree": "renderers",
    "render_network": "renderers",
    "parse_seed_lines": "guest",
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
    "SeedReport",
    "build_debian_image",
    "build_disk_image",
    "build_guest",
    "cloud_init_tree",
    "console_done",
    "ensure_packages",
    "netns_exec",
    "parse_console",
    "parse_seed_lines",
    "render_network",
]


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(f"libvm.testing.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
