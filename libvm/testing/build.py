"""How the test artefacts are built: run a tool, and build into a cache once.

Shared by :mod:`libvm.testing.guest` (kernel + initramfs) and
:mod:`libvm.testing.disk` (the bootable disk image). A build goes to a
staging directory beside its final place and is renamed into place, under a
lock file, so concurrent callers build once and a reader never sees half a
build.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("libvm.testing")


class GuestBuildError(RuntimeError):
    """Building the test guest (or its disk image) failed."""


def run(argv: list[str], cwd: Path | None = None) -> str:
    """Run ``argv``; its standard output, or :class:`GuestBuildError` with its standard error."""
    log.debug("running %s", argv)
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestBuildError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) while the block runs."""
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mkdirs_traversable(path: Path) -> None:
    """``mkdir -p path``, every new directory 0755 whatever the umask: qemu (``libvirt-qemu``)
    must traverse them all to read the guest."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        p.chmod(0o755)


def build_once(final: Path, done: Callable[[], bool], build: Callable[[Path], None], prefix: str) -> None:
    """Make the directory ``final`` with ``build(staging)`` unless ``done()`` says it is there.

    Under the lock file ``final.parent/.lock``; ``staging`` is a fresh directory
    named ``prefix...`` in ``final.parent``, made world-readable (0755) and then
    renamed to ``final``; it is removed if the build fails.
    """
    base = final.parent
    with locked(base / ".lock"):
        if done():
            return
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        try:
            build(staging)
            staging.chmod(0o755)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
