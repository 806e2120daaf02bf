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

#: Bump when the disk layout changes without the guest or the SYSLINUX configuration changing.
DISK_FORMAT_VERSION = "1"
#: The raw FAT filesystem: room for the kernel (~14 MiB) and initramfs (~2 MiB).
DISK_SIZE_MIB = 64
DISK_LABEL = "LIBVMBOOT"
DISK_NAME = "disk.qcow2"


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
    tools = find_tools(DISK_TOOLS)
    build_once(final, disk.is_file, lambda staging: _build_disk(tools, guest.kernel, guest.initrd, staging / DISK_NAME),
               ".build-disk-")
    log.info("built test guest disk image %s", disk)
    return disk


def _disk_key(guest_key: str) -> str:
    h = hashlib.sha256()
    for part in (DISK_FORMAT_VERSION, guest_key, syslinux_config(DEFAULT_CMDLINE), str(DISK_SIZE_MIB), DISK_LABEL):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def find_tools(tools: dict[str, str], what: str = "the disk image") -> dict[str, str]:
    """Map each tool of ``tools`` (tool -> Debian package) to its path, or name the packages to install."""
    # mkfs.fat, mke2fs and sfdisk live in /usr/sbin, which a non-root PATH often lacks.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    found = {tool: shutil.which(tool, path=path) for tool in tools}
    missing = sorted({tools[t] for t, where in found.items() if where is None})
    if missing:
        raise GuestBuildError(
            f"cannot build {what}; install: apt-get install -y --no-install-recommends " + " ".join(missing)
        )
    return {tool: str(where) for tool, where in found.items()}


def syslinux_config(cmdline: str) -> str:
    """SYSLINUX's configuration: boot /vmlinuz with /initrd.img and ``cmdline`` at once."""
    return f"""DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND {cmdline}
"""


def write_boot_fat(tools: dict[str, str], out: Path, kernel: Path, initrd: Path, cmdline: str, *,
                   size_mib: int, label: str = DISK_LABEL, hidden_sectors: int = 0) -> None:
    """A FAT filesystem image at ``out`` holding the kernel, the initramfs and SYSLINUX.

    Built on a plain file (``mkfs.fat``, ``mcopy``, ``syslinux --install``): no
    loop device, no mount.  ``hidden_sectors`` is the partition's start when the
    filesystem is written into a partition (SYSLINUX finds itself from there if
    the MBR does not hand the partition over).
    """
    cfg = out.with_name(out.name + ".syslinux.cfg")
    cfg.write_text(syslinux_config(cmdline))
    try:
        with open(out, "wb") as fh:
            fh.truncate(size_mib * 1024 * 1024)
        run([tools["mkfs.fat"], "-F", "16", "-n", label, "-h", str(hidden_sectors), str(out)])
        for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
            run([tools["mcopy"], "-i", str(out), str(src), f"::/{name}"])
        # syslinux (the mtools flavour) writes ldlinux.sys/.c32 and the boot sector.
        run([tools["syslinux"], "--install", str(out)])
    finally:
        cfg.unlink(missing_ok=True)


def _build_disk(tools: dict[str, str], kernel: Path, initrd: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="libvm-disk-") as tmp_s:
        raw = Path(tmp_s) / "disk.raw"
        write_boot_fat(tools, raw, kernel, initrd, DEFAULT_CMDLINE, size_mib=DISK_SIZE_MIB)
        run([tools["qemu-img"], "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)])
    out.chmod(0o644)
