"""The test guest as a bootable disk image, standing in for a cloud image.

The image holds the same kernel and initramfs as :func:`build_guest`, on a
FAT filesystem covering the whole disk (a "superfloppy": no partition table)
with SYSLINUX in its boot sector, so SeaBIOS boots it like any disk, without
``<kernel>``.  It is built on a plain file with ``mkfs.fat``, ``mcopy`` and
``syslinux --install``: no loop device, no mount, no root needed.  The raw
file is then converted to qcow2, to be used as the base of qcow2 overlays.

The guest reads a NoCloud seed (an iso9660 filesystem labelled ``cidata``)
as described in :mod:`libvm.testing.guest`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from libvm.testing.build import GuestBuildError, build_once, run
from libvm.testing.guest import DEFAULT_CACHE_DIR, DEFAULT_CMDLINE, build_guest

log = logging.getLogger("libvm.testing")

#: Bump when the disk layout changes without the guest or SYSLINUX_CFG changing.
DISK_FORMAT_VERSION = "1"
#: The raw FAT filesystem: room for the kernel (~14 MiB) and initramfs (~2 MiB).
DISK_SIZE_MIB = 64
DISK_LABEL = "LIBVMBOOT"
DISK_NAME = "disk.qcow2"

SYSLINUX_CFG = f"""DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND {DEFAULT_CMDLINE}
"""

#: Tool -> Debian package, for error messages (mirrors the sandbox's REQUIRED_TOOLS).
DISK_TOOLS = {"mkfs.fat": "dosfstools", "mcopy": "mtools", "syslinux": "syslinux", "qemu-img": "qemu-utils"}


def build_disk_image(cache_dir: Path | None = None) -> Path:
    """Return the cached qcow2 disk image of the test guest, building it if missing.

    The image is ``<cache>/disk-<key>/disk.qcow2`` (world-readable, for
    qemu running as ``libvirt-qemu``); ``<key>`` covers the guest's own key,
    the SYSLINUX configuration and :data:`DISK_FORMAT_VERSION`.  Never write
    to it: boot from an overlay (``qemu-img create -f qcow2 -b BASE -F qcow2``).
    Needs what :func:`build_guest` needs plus ``mkfs.fat`` (dosfstools),
    ``mcopy`` (mtools), ``syslinux`` (syslinux; its installer carries
    ldlinux itself, a superfloppy needs no mbr.bin from syslinux-common) and
    ``qemu-img`` (qemu-utils).
    """
    base = cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR
    guest = build_guest(base)
    final = base / f"disk-{_disk_key(guest.kernel.parent.name)}"
    disk = final / DISK_NAME
    if disk.is_file():
        return disk
    tools = _find_tools()
    build_once(final, disk.is_file, lambda staging: _build_disk(tools, guest.kernel, guest.initrd, staging / DISK_NAME),
               ".build-disk-")
    log.info("built test guest disk image %s", disk)
    return disk


def _disk_key(guest_key: str) -> str:
    h = hashlib.sha256()
    for part in (DISK_FORMAT_VERSION, guest_key, SYSLINUX_CFG, str(DISK_SIZE_MIB), DISK_LABEL):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _find_tools() -> dict[str, str]:
    # mkfs.fat lives in /usr/sbin, which a non-root PATH often lacks.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    found = {tool: shutil.which(tool, path=path) for tool in DISK_TOOLS}
    missing = sorted({DISK_TOOLS[t] for t, where in found.items() if where is None})
    if missing:
        raise GuestBuildError(
            "cannot build the disk image; install: apt-get install -y --no-install-recommends "
            + " ".join(missing)
        )
    return {tool: str(where) for tool, where in found.items()}


def _build_disk(tools: dict[str, str], kernel: Path, initrd: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="libvm-disk-") as tmp_s:
        tmp = Path(tmp_s)
        raw = tmp / "disk.raw"
        cfg = tmp / "syslinux.cfg"
        cfg.write_text(SYSLINUX_CFG)
        with open(raw, "wb") as fh:
            fh.truncate(DISK_SIZE_MIB * 1024 * 1024)
        run([tools["mkfs.fat"], "-F", "16", "-n", DISK_LABEL, str(raw)])
        for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
            run([tools["mcopy"], "-i", str(raw), str(src), f"::/{name}"])
        # syslinux (the mtools flavour) writes ldlinux.sys/.c32 and the boot sector.
        run([tools["syslinux"], "--install", str(raw)])
        run([tools["qemu-img"], "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)])
    out.chmod(0o644)
