"""The cloud-image flow of the ``libvm`` command, one command per step (as uvtool, kcli and
virt-lightning users expect)::

    libvm pool ensure images /var/lib/libvirt/images/libvm
    libvm volume upload images debian-12-genericcloud-amd64.qcow2 --name debian-12.qcow2
    libvm vm create web1 --image images/debian-12.qcow2 --size 10GiB --ssh-key ~/.ssh/id_ed25519.pub
    libvm vm wait-ssh web1
    libvm vm ssh web1 -- hostname

Pools, volumes, ``vm create --image``, ``vm wait-ssh`` and ``vm ssh``; the rest of the
command line (output, errors, exit codes) is :mod:`libvm.cli`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .cli_output import JsonEncoder, Record
from .cli_output import columns as _columns
from .cli_output import show as _show
from .errors import InvalidSpec
from .values import Disk

if TYPE_CHECKING:
    from .cloudinit import CloudInit
    from .hypervisor import Hypervisor
    from .storage import Pool, Volume

# -- records ----------------------------------------------------------------------


def _pool_record(pool: Pool) -> Record:
    active = pool.active
    return {"name": pool.name, "active": active, "path": pool.path,
            "volumes": len(pool.volumes()) if active else None}


POOL_COLUMNS = _columns("name", "active", "path", "volumes")


def _volume_record(vol: Volume) -> Record:
    info = vol.info()
    return {"pool": vol.pool, "name": info.name, "format": info.format, "capacity": info.capacity,
            "allocation": info.allocation, "path": info.path, "backing": info.backing}


def human(size: int | None) -> str | None:
    """``2.0 GiB``: a size in bytes as people read it."""
    if size is None:
        return None
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


VOLUME_COLUMNS = [
    *_columns("pool", "name", "format"),
    ("capacity", lambda r: human(r["capacity"])),
    ("allocation", lambda r: human(r["allocation"])),
    *_columns("path", "backing"),
]


# -- pools and volumes --------------------------------------------------------------


def pool_list(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm pool list"""
    _show(args, [_pool_record(pool) for pool in hv.pools()], POOL_COLUMNS)


def pool_ensure(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm pool ensure NAME PATH"""
    _show(args, _pool_record(hv.ensure_pool(args.name, args.path)), POOL_COLUMNS)


def pool_delete(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm pool delete NAME [--volumes]"""
    hv.pool(args.name).delete(volumes=args.volumes)
    _done(args, args.name)


def volume_list(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm volume list POOL"""
    _show(args, [_volume_record(vol) for vol in hv.pool(args.pool).volumes()], VOLUME_COLUMNS)


def volume_upload(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm volume upload POOL FILE [--name N] [--format F]: with progress on stderr."""
    name = args.name or Path(args.file).name
    vol = hv.pool(args.pool).upload(name, args.file, fmt=args.format, progress=UploadProgress(name))
    _show(args, _volume_record(vol), VOLUME_COLUMNS)


def volume_delete(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm volume delete POOL NAME [--force]"""
    hv.pool(args.pool).volume(args.name).delete(force=args.force)
    _done(args, f"{args.pool}/{args.name}")


def _done(args: argparse.Namespace, what: str) -> None:
    if args.json:
        print(json.dumps({"name": what, "deleted": True}, indent=2))
    else:
        print(f"deleted {what}")


class UploadProgress:
    """``progress(sent, total)`` for :meth:`Pool.upload`, on stderr: a bar redrawn in place
    on a terminal, else a plain line every 10 % (logs, CI)."""

    WIDTH = 30

    def __init__(self, name: str, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = tty if tty is not None else self.stream.isatty()
        self.started = time.monotonic()
        self.shown = -1

    def __call__(self, sent: int, total: int) -> None:
        fraction = sent / total if total else 1.0
        rate = sent / max(time.monotonic() - self.started, 1e-6)
        done = f"{human(sent)} of {human(total)}, {human(int(rate))}/s"
        if self.tty:
            filled = int(fraction * self.WIDTH)
            end = "\n" if sent >= total else ""
            self._write(f"\r{self.name} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction:4.0%} {done}  {end}")
        elif int(fraction * 10) > self.shown:
            self.shown = int(fraction * 10)
            self._write(f"uploading {self.name}: {fraction:.0%} ({done})\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


# -- the cloud-image VM -------------------------------------------------------------

#: The default user of well-known cloud images, by a word in the image's name (kcli's table).
DEFAULT_USERS = {"debian": "debian", "ubuntu": "ubuntu", "jammy": "ubuntu", "noble": "ubuntu",
                 "focal": "ubuntu", "fedora": "fedora", "centos": "cloud-user", "rhel": "cloud-user",
                 "rocky": "rocky", "alma": "almalinux", "arch": "arch", "opensuse": "opensuse"}


def image_disk(hv: Hypervisor, image: str, size: str | None) -> Disk:
    """``POOL/VOLUME`` as a qcow2 overlay of that volume (``Disk.from_image``)."""
    pool, sep, volume = image.partition("/")
    if not sep or not pool or not volume or "/" in volume:
        raise InvalidSpec("image", image, "POOL/VOLUME, e.g. images/debian-12.qcow2")
    return Disk.from_image(hv.pool(pool).volume(volume), size)


def guess_user(image: str) -> str | None:
    """The default user of the image named ``image``, when its name says which distribution it is."""
    words = re.split(r"[^a-z]+", image.rsplit("/", 1)[-1].lower())
    return next((DEFAULT_USERS[word] for word in words if word in DEFAULT_USERS), None)


def read_ssh_key(path: str) -> tuple[str, str | None]:
    """``(public key, private key path or None)`` from ``--ssh-key FILE``: a ``.pub`` file (its
    private half beside it, if there), or a private key with its ``.pub`` beside it."""
    file = Path(path).expanduser()
    public, private = (file, file.with_suffix("")) if file.suffix == ".pub" else (Path(f"{file}.pub"), file)
    try:
        text = public.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise InvalidSpec("ssh_key", path, f"cannot read the public key {public}: {reason}") from None
    return text, str(private.resolve()) if private.is_file() else None


def cloud_init_of(args: argparse.Namespace) -> CloudInit | None:
    """The seed ``vm create`` asks for: its key, user, cloud-config and ``--static``."""
    from .cloudinit import CloudInit

    if args.image is None:
        if args.ssh_key or args.cloud_config or args.static or args.user or args.size:
            raise InvalidSpec("image", None, "--size, --ssh-key, --cloud-config, --static and --user need "
                                             "--image (the overlay, and the cloud-init seed beside it)")
        return None
    keys, identity = [], None
    if args.ssh_key:
        key, identity = read_ssh_key(args.ssh_key)
        keys.append(key)
    user_data = None
    if args.cloud_config:
        try:
            user_data = Path(args.cloud_config).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidSpec("cloud_config", args.cloud_config, f"cannot read it: {exc}") from None
    ci = CloudInit(ssh_authorized_keys=keys, user_data=user_data, static_network=args.static, user=args.user,
                   ssh_identity=identity)
    guessed = guess_user(args.image) if ci.login_user is None else None
    # The guessed name is given to the seed too: right for that image, and right whatever the image.
    return dataclasses.replace(ci, user=guessed) if guessed else ci


def vm_wait_ssh(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm vm wait-ssh NAME [--timeout S]: the address, once SSH answers with the VM's host key."""
    vm = hv.vm(args.name)
    ip = vm.wait_for_ssh(timeout=args.timeout)
    key = vm.host_key
    if args.json:
        print(json.dumps({"name": args.name, "ip": ip, "host_key": key.fingerprint if key else None},
                         cls=JsonEncoder, indent=2))
    else:
        print(ip)


def vm_ssh(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm vm ssh NAME [--user U] [--key FILE] [-- COMMAND...]: checks the host key, then
    becomes ``ssh`` (its exit status is the command's)."""
    vm = hv.vm(args.name)
    target = vm.ssh_target(user=args.user, key=args.key)
    vm.check_host_key(target)
    # Joined with spaces, as ssh joins its own: the guest's shell reads it (globs, pipes, quotes).
    argv = vm.ssh_argv(" ".join(args.command) if args.command else None, target)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


# -- the parser ------------------------------------------------------------------------


def add_commands(groups: argparse._SubParsersAction[Any], vm_sub: argparse._SubParsersAction[Any],
                 add: Callable[..., argparse.ArgumentParser],
                 common: argparse.ArgumentParser | None = None) -> None:
    """Add ``pool``, ``volume``, and ``vm wait-ssh``/``vm ssh`` to :func:`libvm.cli.build_parser`'s
    parser; ``add(subparsers, name, handler, help)`` makes one command."""
    parents = [common] if common is not None else []  # --uri, --json, --debug between group and command too
    pool = groups.add_parser("pool", parents=parents, help="storage pools",
                             description="storage pools (directories on the daemon's host)")
    pool_sub = pool.add_subparsers(title="commands", required=True, metavar="COMMAND")
    add(pool_sub, "list", pool_list, "list every storage pool")
    p = add(pool_sub, "ensure", pool_ensure, "define, build and start a directory pool, or check the existing one")
    p.add_argument("name", metavar="NAME")
    p.add_argument("path", metavar="PATH", help="an absolute directory on the daemon's host")
    p = add(pool_sub, "delete", pool_delete, "stop and undefine a pool")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--volumes", action="store_true",
                   help="delete its volumes first (else a pool holding any is refused)")

    volume = groups.add_parser("volume", parents=parents, help="volumes: base images, overlays, seeds",
                               description="volumes: base images, overlays, seeds")
    volume_sub = volume.add_subparsers(title="commands", required=True, metavar="COMMAND")
    p = add(volume_sub, "list", volume_list, "list a pool's volumes")
    p.add_argument("pool", metavar="POOL")
    p = add(volume_sub, "upload", volume_upload, "copy a local image into a new volume (progress on stderr)")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("file", metavar="FILE", help="a local qcow2 or raw image (a cloud image)")
    p.add_argument("--name", metavar="N", help="the volume's name (default: FILE's name)")
    p.add_argument("--format", choices=("qcow2", "raw", "iso"), help="default: qcow2 if FILE is one, else raw")
    p = add(volume_sub, "delete", volume_delete, "delete a volume (refused while a VM or an overlay uses it)")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--force", action="store_true", help="even while a VM or an overlay uses it")

    p = add(vm_sub, "wait-ssh", vm_wait_ssh,
            "wait until the guest has its address and SSH answers with its host key; print the address")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds (default: 300)")
    p = add(vm_sub, "ssh", vm_ssh, "log in to the guest (its address, the seed's user and key; host key checked)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--user", help="default: the user the VM was created for")
    p.add_argument("--key", metavar="FILE", help="private key (default: the one given to vm create)")
    p.usage = "libvm vm ssh [-h] [--user USER] [--key FILE] NAME [-- COMMAND ...]"
    p.epilog = "Everything after '--' is the command to run instead of an interactive shell."
    p.set_defaults(command=[])


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``vm ssh NAME [options] -- COMMAND...``: the arguments before the first ``--``, and the
    command after it (``None`` without ``--``). argparse cannot give a positional list that
    follows options after another positional, so the command is cut off first."""
    if "--" not in argv:
        return argv, None
    at = argv.index("--")
    return argv[:at], argv[at + 1:]
