"""A tiny DHCP test guest: a Debian cloud kernel plus a busybox initramfs.

The guest boots (direct kernel boot, ``console=ttyS0``), loads the virtio
network modules, runs ``udhcpc`` on every ``eth*`` NIC in parallel and prints
one line per NIC to the serial console::

    LIBVM-LEASE mac=66:66:66:66:66:0b ip=192.168.150.88
    LIBVM-LEASE mac=66:66:66:66:66:0c ip=none
    LIBVM-DONE

and then sleeps forever, so the lease stays in dnsmasq until the domain is
destroyed (it never renews or releases).  ``libvm.clientid=<value>`` on the
kernel command line makes every NIC send that fixed DHCP client-id (option
61): ``<value>`` is hex digits (colons allowed), e.g. ``ff:00:00:00:01``,
which is sent as raw bytes; anything else is sent as type 0 + the text.

Everything comes from Debian packages fetched with ``apt-get download``
(``linux-image-*-cloud-amd64`` and ``busybox-static``), so no network access
beyond the Debian mirror is needed, and the result is cached.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("libvm.testing")

#: Default cache. Under /var/cache (0755 all the way down) rather than under
#: $HOME because qemu runs as ``libvirt-qemu`` and /root is 0700.
DEFAULT_CACHE_DIR = Path("/var/cache/libvm/guest")
DEFAULT_CMDLINE = "console=ttyS0 panic=-1 quiet"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
#: Modules needed for virtio networking; their dependencies are added from
#: each module's ``.modinfo`` (the .deb ships no modules.dep).
WANTED_MODULES = ("virtio_pci", "virtio_net")
#: Bump when the layout of the build changes without the scripts changing.
FORMAT_VERSION = "1"

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo "LIBVM-BOOT"
for m in $(cat /etc/libvm-modules); do insmod "/lib/modules/$m.ko" || echo "insmod $m failed"; done
ip link set lo up
i=0
while ! ls /sys/class/net | grep -q '^eth' && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
cid=""
for w in $(cat /proc/cmdline); do
  case "$w" in libvm.clientid=*) cid="${w#libvm.clientid=}" ;; esac
done
set --
if [ -n "$cid" ]; then
  hex=$(echo "$cid" | tr -d ':')
  case "$hex" in
    *[!0-9a-fA-F]*) hex="" ;;
  esac
  if [ -z "$hex" ] || [ $(( ${#hex} % 2 )) -ne 0 ]; then
    hex="00$(printf %s "$cid" | hexdump -v -e '/1 "%02x"')"
  fi
  echo "LIBVM-CLIENTID $hex"
  set -- -x "0x3d:$hex"
fi
nics=$(ls /sys/class/net | grep '^eth' | sort)
for n in $nics; do
  ip link set "$n" up
  udhcpc -i "$n" -n -q -t 10 -T 2 -s /etc/udhcpc.script "$@" >"/run/udhcpc.$n.log" 2>&1 &
done
wait
for n in $nics; do
  mac=$(cat "/sys/class/net/$n/address")
  ip=$(cat "/run/lease.$n" 2>/dev/null)
  [ -n "$ip" ] || { ip=none; cat "/run/udhcpc.$n.log"; }
  echo "LIBVM-LEASE mac=$mac ip=$ip"
done
echo "LIBVM-DONE"
while true; do sleep 3600; done
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "$ip" >"/run/lease.$interface" ;;
esac
exit 0
"""

_LEASE_RE = re.compile(r"LIBVM-LEASE mac=([0-9A-Fa-f:]{17}) ip=(\S+)")


class GuestBuildError(RuntimeError):
    """Building the test guest failed."""


@dataclass(frozen=True)
class GuestImage:
    """A bootable guest: use as <kernel>, <initrd> and <cmdline> in domain XML."""

    kernel: Path
    initrd: Path
    cmdline: str = DEFAULT_CMDLINE

    def cmdline_for(self, clientid: str | None = None) -> str:
        """The command line, optionally forcing a DHCP client-id on all NICs."""
        if clientid is None:
            return self.cmdline
        if not clientid or any(c.isspace() for c in clientid):
            raise ValueError(f"client-id must be non-empty without spaces: {clientid!r}")
        return f"{self.cmdline} libvm.clientid={clientid}"


def parse_console(text: str) -> dict[str, str]:
    """Map lower-case MAC -> IP from the guest's ``LIBVM-LEASE`` lines.

    NICs that got no lease are kept with the value ``"none"``; later lines
    for the same MAC win.  Carriage returns from the serial tty are ignored.
    """
    return {m.group(1).lower(): m.group(2) for m in _LEASE_RE.finditer(text)}


def console_done(text: str) -> bool:
    """True once the guest has printed all its lease lines."""
    return "LIBVM-DONE" in text


def build_guest(cache_dir: Path | None = None) -> GuestImage:
    """Return the cached guest, building it first if it is missing.

    Safe against concurrent callers: a lock file serialises builders and the
    result is renamed into place atomically, so a reader never sees a partial
    build.  Needs ``apt-get``, ``dpkg-deb`` and ``cpio``.  The cache key
    covers the scripts and module list, not the kernel version: delete the
    cache directory to pick up a newer kernel.
    """
    base = cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR
    final = base / _build_key()
    image = GuestImage(kernel=final / "vmlinuz", initrd=final / "initrd.img")
    if image.kernel.is_file() and image.initrd.is_file():
        return image
    _mkdirs_traversable(base)
    with _locked(base / ".lock"):
        if image.kernel.is_file() and image.initrd.is_file():
            return image
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
        try:
            _build_into(staging)
            staging.chmod(0o755)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built test guest in %s", final)
    return image


def _mkdirs_traversable(path: Path) -> None:
    # qemu (libvirt-qemu) must traverse every directory: ignore a strict umask.
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        p.chmod(0o755)


def _build_key() -> str:
    h = hashlib.sha256()
    for part in (FORMAT_VERSION, INIT_SCRIPT, UDHCPC_SCRIPT, *WANTED_MODULES):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: list[str], cwd: Path | None = None) -> str:
    log.debug("running %s", argv)
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestBuildError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def resolve_kernel_package() -> str:
    """Name of the real kernel package behind ``linux-image-cloud-amd64``."""
    try:
        out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE])
    except GuestBuildError:
        out = ""
    found = re.search(r"Depends:\s+(linux-image-\S+-cloud-amd64)\b", out)
    if found is None and os.geteuid() == 0:
        log.info("apt lists do not know %s; running apt-get update", KERNEL_META_PACKAGE)
        _run(["apt-get", "update"])
        found = re.search(
            r"Depends:\s+(linux-image-\S+-cloud-amd64)\b",
            _run(["apt-cache", "depends", KERNEL_META_PACKAGE]),
        )
    if found is None:
        raise GuestBuildError(f"cannot resolve {KERNEL_META_PACKAGE}; run 'apt-get update' as root first")
    return found.group(1)


def _build_into(out: Path) -> None:
    kpkg = resolve_kernel_package()
    with tempfile.TemporaryDirectory(prefix="libvm-guest-") as tmp_s:
        tmp = Path(tmp_s)
        log.info("downloading %s and busybox-static", kpkg)
        _run(["apt-get", "download", kpkg, "busybox-static"], cwd=tmp)
        kroot, broot, initroot = tmp / "kernel", tmp / "busybox", tmp / "initramfs"
        _run(["dpkg-deb", "-x", str(next(tmp.glob("linux-image-*.deb"))), str(kroot)])
        _run(["dpkg-deb", "-x", str(next(tmp.glob("busybox-static_*.deb"))), str(broot)])
        vmlinuz = next((kroot / "boot").glob("vmlinuz-*"))
        kver = vmlinuz.name.removeprefix("vmlinuz-")
        for d in ("bin", "etc", "lib/modules"):
            (initroot / d).mkdir(parents=True)
        shutil.copy2(broot / "bin" / "busybox", initroot / "bin" / "busybox")
        mods = _collect_modules(kroot / "lib" / "modules" / kver, initroot / "lib" / "modules")
        _write(initroot / "etc" / "libvm-modules", "\n".join(mods) + "\n", 0o644)
        _write(initroot / "init", INIT_SCRIPT, 0o755)
        _write(initroot / "etc" / "udhcpc.script", UDHCPC_SCRIPT, 0o755)
        _pack_initramfs(initroot, out / "initrd.img")
        shutil.copyfile(vmlinuz, out / "vmlinuz")
    (out / "vmlinuz").chmod(0o644)
    (out / "initrd.img").chmod(0o644)
    info = {"kernel_package": kpkg, "kernel_version": kver, "modules": mods}
    _write(out / "info.json", json.dumps(info, indent=2) + "\n", 0o644)


def _write(path: Path, text: str, mode: int) -> None:
    path.write_text(text)
    path.chmod(mode)


def _collect_modules(moddir: Path, dest: Path) -> list[str]:
    """Copy WANTED_MODULES and their deps (decompressed) to dest; return load order."""
    builtin = {
        Path(line.strip()).name.split(".")[0].replace("-", "_")
        for line in (moddir / "modules.builtin").read_text().splitlines()
        if line.strip()
    }
    files: dict[str, Path] = {}
    for f in moddir.rglob("*.ko*"):
        files.setdefault(f.name.split(".")[0].replace("-", "_"), f)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in builtin:
            return
        if name in visiting:
            raise GuestBuildError(f"module dependency cycle at {name}")
        if name not in files:
            raise GuestBuildError(f"kernel module {name} not found in {moddir}")
        visiting.add(name)
        data = _read_module(files[name])
        for dep in _module_depends(data):
            visit(dep)
        (dest / f"{name}.ko").write_bytes(data)
        order.append(name)

    for wanted in WANTED_MODULES:
        visit(wanted)
    return order


def _read_module(path: Path) -> bytes:
    # busybox insmod cannot be trusted with compressed modules: decompress here.
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return path.read_bytes()


def _module_depends(data: bytes) -> list[str]:
    found = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if found is None:
        return []
    return [d.replace("-", "_") for d in found.group(1).decode().split(",") if d]


def _pack_initramfs(root: Path, out: Path) -> None:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    proc = subprocess.run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
        cwd=root,
        input=("\n".join(names) + "\n").encode(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise GuestBuildError(f"cpio failed: {proc.stderr.decode(errors='replace')}")
    with gzip.open(out, "wb", compresslevel=6) as fh:
        fh.write(proc.stdout)
