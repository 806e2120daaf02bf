"""A real Debian 12 cloud guest as a bootable qcow2 image, built offline from Debian packages.

Two flavours prove both of cloud-init's Debian network renderers:

* ``ifupdown``: cloud-init renders ``/etc/network/interfaces.d`` (ENI) for
  ifupdown + isc-dhcp-client, and resolvconf feeds ``dns-nameservers`` and
  DHCP's DNS servers into ``/etc/resolv.conf``;
* ``netplan``: cloud-init renders ``/etc/netplan``, netplan generates
  systemd-networkd units, and systemd-resolved (``/etc/resolv.conf`` linked to
  its full, non-stub list) takes DNS from networkd.

Both: systemd, the Debian cloud kernel, cloud-init (NoCloud only), openssh-server,
no net-tools.  ``mmdebstrap`` installs the packages into a directory from the
host's own Debian apt sources, without mounting anything into the chroot; the
disk is then assembled in a plain file, with no loop device and no mount: an MBR (``sfdisk`` on the file plus SYSLINUX's
``mbr.bin``), partition 1 a FAT filesystem with SYSLINUX, the kernel and a small
initramfs (``MODULES=list``: virtio_pci, virtio_blk, ext4), partition 2 an ext4
root filesystem made from the directory by ``mke2fs -d`` at its offset.  The raw
file becomes a qcow2 image.

The result is cached under ``/var/cache/libvm/debian/<flavour>-<key>/``, keyed
by the versions apt would install (the whole dependency closure, as
``apt-get --simulate`` resolves it from the host's package lists), the package
set and this module's configuration.  That answer is remembered next to the
images until apt's lists or pinning change, so a second call costs about 0.2 s
(an ``apt-get --simulate`` takes 3 s where apt's package cache is disabled).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from libvm.testing.build import GuestBuildError, locked, mkdirs_traversable, run
from libvm.testing.disk import find_tools, write_boot_fat
from libvm.testing.guest import DEFAULT_CACHE_DIR

log = logging.getLogger("libvm.testing")

#: Default cache, next to the busybox guest's (qemu, as ``libvirt-qemu``, must read it).
DEBIAN_CACHE_DIR = DEFAULT_CACHE_DIR.parent / "debian"
IMAGE_NAME = "disk.qcow2"
#: Bump when the build changes in a way the configuration below does not show.
FORMAT_VERSION = "2"
SUITE = "bookworm"

#: Tool -> Debian package.
DEBIAN_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "sfdisk": "fdisk",
    "mke2fs": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "qemu-img": "qemu-utils",
    "apt-get": "apt",
}
#: SYSLINUX's MBR boot code (syslinux-common): chain-loads the active partition.
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")

#: Packages of every flavour.  The cloud kernel (virtio, no hardware drivers) keeps
#: the image and its initramfs small; cloud-guest-utils' growpart grows the root
#: partition when an overlay is larger than the image.
COMMON_PACKAGES = (
    "systemd-sysv", "udev", "linux-image-cloud-amd64", "initramfs-tools", "zstd",
    "cloud-init", "cloud-guest-utils", "openssh-server", "iproute2", "e2fsprogs", "netbase", "sudo",
)


@dataclass(frozen=True)
class Flavour:
    """One way of bringing the network up: its packages and cloud-init's renderer for it."""

    name: str
    packages: tuple[str, ...]
    renderer: str
    #: Where cloud-init writes the rendered network configuration (checked by the tests).
    network_file: str
    #: What ``/etc/resolv.conf`` links to (the package's own resolver list).
    resolv_conf: str


FLAVOURS = {
    "ifupdown": Flavour("ifupdown", ("ifupdown", "isc-dhcp-client", "resolvconf"), "eni",
                        "/etc/network/interfaces.d/50-cloud-init", "../run/resolvconf/resolv.conf"),
    # systemd-networkd is part of Debian 12's systemd package; systemd-resolved is not.
    "netplan": Flavour("netplan", ("netplan.io", "systemd-resolved"), "netplan",
                       "/etc/netplan/50-cloud-init.yaml", "../run/systemd/resolve/resolv.conf"),
}

#: Partition 1 (FAT, kernel + initramfs + SYSLINUX) starts at 1 MiB, as fdisk aligns it.
BOOT_START_SECTOR = 2048
BOOT_SIZE_MIB = 48
#: Free space left in the root filesystem beyond what the packages use.
ROOT_FREE_MIB = 320
KERNEL_CMDLINE = "root=UUID={uuid} ro console=ttyS0 quiet systemd.firstboot=off"

#: dpkg never unpacks these (docs, man pages, translations): a smaller, faster image.
DPKG_EXCLUDES = """path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""
#: MODULES=dep would look at the build host's devices from inside the chroot; the list
#: names exactly what finds the root filesystem on a virtio disk (ext4 is built in).
INITRAMFS_CONF = "MODULES=list\nCOMPRESS=zstd\n"
INITRAMFS_MODULES = "virtio_pci\nvirtio_blk\next4\n"

#: Only the NoCloud seed is looked for (no network metadata probes at boot), ed25519
#: host keys only (RSA key generation takes seconds under TCG), the C.UTF-8 locale
#: the image already has (cloud-init's default en_US.UTF-8 needs locale-gen, and its
#: update-locale fails without it), and /etc/hosts naming the guest (else sudo
#: complains it cannot resolve its own hostname).
CLOUD_CFG = """datasource_list: [NoCloud, None]
ssh_genkeytypes: [ed25519]
locale: C.UTF-8
manage_etc_hosts: true
system_info:
  network:
    renderers: [{renderer}]
"""
#: Units a short-lived test guest never needs: they only cost boot time under TCG.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "systemd-firstboot.service", "getty@tty1.service",
)


def build_debian_image(flavour: str = "ifupdown", cache_dir: Path | None = None) -> Path:
    """Return the cached qcow2 image of a Debian 12 cloud guest of ``flavour``, building it if missing.

    ``flavour`` is ``"ifupdown"`` or ``"netplan"`` (see :data:`FLAVOURS`).  Never write to
    the image: boot from an overlay (``Disk.from_image``).  Needs root (mmdebstrap
    installs packages into a directory as root), the Debian packages of
    :data:`DEBIAN_TOOLS`, syslinux-common, and the host's Debian apt sources.
    Building takes about a minute; ``<dir>/info.json`` records the packages and times.
    """
    if flavour not in FLAVOURS:
        raise GuestBuildError(f"unknown Debian flavour {flavour!r}: one of {', '.join(FLAVOURS)}")
    spec = FLAVOURS[flavour]
    base = cache_dir if cache_dir is not None else DEBIAN_CACHE_DIR
    tools = find_tools(DEBIAN_TOOLS, "the Debian image")
    if not MBR_BIN.is_file():
        raise GuestBuildError("cannot build the Debian image; install: apt-get install -y syslinux-common")
    sources = host_sources()
    packages = (*COMMON_PACKAGES, *spec.packages)
    if base.is_dir() or os.geteuid() == 0:
        mkdirs_traversable(base)
    final = base / f"{flavour}-{_image_key(spec, packages, sources, base)}"
    image = final / IMAGE_NAME
    if image.is_file():
        _mark_used(final)
        return image
    if os.geteuid() != 0:
        raise GuestBuildError("building the Debian image needs root (mmdebstrap installs packages as root)")
    with locked(base / ".lock"):
        if image.is_file():
            return image
        staging = Path(tempfile.mkdtemp(prefix=f".build-{flavour}-", dir=base))
        try:
            _build(tools, spec, packages, sources, staging)
            staging.chmod(0o755)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _drop_older(base, flavour, keep=final)
    log.info("built the Debian %s image %s", flavour, image)
    return image


def host_sources(apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's apt sources for Debian :data:`SUITE` (and its -updates, -security), deb822.

    Other repositories the host uses (vendors' ``nodistro`` suites...) are left out.
    """
    wanted = {SUITE, f"{SUITE}-updates", f"{SUITE}-security"}
    stanzas: list[str] = []
    lists = apt_dir / "sources.list.d"
    files = [apt_dir / "sources.list", *sorted(lists.glob("*.list")), *sorted(lists.glob("*.sources"))]
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
                suites = set(fields.get("Suites", "").split()) & wanted
                if "deb" in fields.get("Types", "").split() and suites and fields.get("Enabled", "yes") != "no":
                    stanzas.append(_stanza(fields["URIs"], suites, fields.get("Components", "main"),
                                           fields.get("Signed-By")))
            continue
        for line in path.read_text().splitlines():
            found = re.fullmatch(r"deb\s+(?:\[(?P<opts>[^]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s+(?P<comp>.+)",
                                 line.strip())
            if found and found["suite"] in wanted:
                signed = re.search(r"signed-by=(\S+)", found["opts"] or "")
                stanzas.append(_stanza(found["uri"], {found["suite"]}, found["comp"],
                                       signed.group(1) if signed else None))
    if not stanzas:
        raise GuestBuildError(f"the host's apt sources name no Debian {SUITE} repository")
    return "\n".join(stanzas)


def _stanza(uris: str, suites: set[str], components: str, signed_by: str | None) -> str:
    text = f"Types: deb\nURIs: {uris}\nSuites: {' '.join(sorted(suites))}\nComponents: {components}\n"
    return text + (f"Signed-By: {signed_by}\n" if signed_by else "")


def resolved_versions(packages: tuple[str, ...]) -> list[str]:
    """``name=version`` of everything a fresh system with ``packages`` would hold.

    apt resolves it from the host's package lists against an empty dpkg status
    (``?essential`` adds what mmdebstrap installs first); runs ``apt-get update``
    once, as root, if the lists do not know a package.
    """
    argv = ["apt-get", "-o", "Dir::State::status=/dev/null", "--simulate", "install", "?essential", *packages]
    for attempt in (1, 2):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            break
        if attempt == 1 and os.geteuid() == 0:
            log.info("apt's lists cannot resolve the Debian image's packages; running apt-get update")
            run(["apt-get", "update"])
            continue
        raise GuestBuildError(f"apt cannot resolve the Debian image's packages: {proc.stderr.strip()[-1500:]}")
    return sorted(f"{m[0]}={m[1]}" for m in re.findall(r"^Inst (\S+) \((\S+)", proc.stdout, re.MULTILINE))


APT_LISTS = Path("/var/lib/apt/lists")
APT_PREFERENCES = (Path("/etc/apt/preferences"), Path("/etc/apt/preferences.d"))


def _apt_state() -> str:
    """What apt's answer depends on besides the package names: its lists and pinning, by size and time."""
    files = [APT_LISTS, APT_PREFERENCES[0]]
    files += sorted(APT_LISTS.glob("*")) + sorted(APT_PREFERENCES[1].glob("*"))
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return hashlib.sha256(repr(stats).encode()).hexdigest()


def _cached_versions(base: Path, packages: tuple[str, ...]) -> list[str]:
    """:func:`resolved_versions`, remembered in ``base`` until apt's lists or pinning change.

    apt rebuilds its cache for every simulation where the package cache is disabled
    (Debian's docker images do that): 3 s per flavour, for an answer that only
    changes with ``apt-get update``.
    """
    memo = base / f".versions-{hashlib.sha256(repr(packages).encode()).hexdigest()[:16]}.json"
    state = _apt_state()
    try:
        saved = json.loads(memo.read_text())
        if saved["apt_state"] == state:
            return list(saved["versions"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    versions = resolved_versions(packages)
    if os.access(base, os.W_OK):
        memo.write_text(json.dumps({"apt_state": _apt_state(), "versions": versions}))
    return versions


def _image_key(spec: Flavour, packages: tuple[str, ...], sources: str, base: Path) -> str:
    h = hashlib.sha256()
    config = (FORMAT_VERSION, SUITE, repr(spec), sources, DPKG_EXCLUDES, INITRAMFS_CONF, INITRAMFS_MODULES,
              CLOUD_CFG, KERNEL_CMDLINE, *MASKED_UNITS, str(BOOT_SIZE_MIB), str(ROOT_FREE_MIB))
    for part in (*config, *_cached_versions(base, packages)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _build(tools: dict[str, str], spec: Flavour, packages: tuple[str, ...], sources: str, out: Path) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="libvm-debian-", dir=out) as tmp_s:
        tmp = Path(tmp_s)
        root = tmp / "root"
        _bootstrap(tools, spec, packages, sources, tmp, root)
        bootstrapped = time.monotonic()
        _configure(spec, root)
        kernel = _one(root / "boot", "vmlinuz-*")
        initrd = _one(root / "boot", "initrd.img-*")
        manifest = run(["dpkg-query", "--admindir", str(root / "var/lib/dpkg"), "-W", "-f",
                         "${Package}=${Version}\\n"]).split()
        raw = tmp / "disk.raw"
        _assemble(tools, root, kernel, initrd, raw)
        run([tools["qemu-img"], "convert", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(out / IMAGE_NAME)])
        (out / IMAGE_NAME).chmod(0o644)
    info = {
        "flavour": spec.name, "suite": SUITE, "kernel": kernel.name.removeprefix("vmlinuz-"),
        "bootstrap_seconds": round(bootstrapped - started, 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "image_bytes": (out / IMAGE_NAME).stat().st_size, "packages": manifest,
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "info.json").chmod(0o644)


def _bootstrap(tools: dict[str, str], spec: Flavour, packages: tuple[str, ...], sources: str, tmp: Path,
               root: Path) -> None:
    """mmdebstrap the packages into ``root``, with dpkg excludes and the initramfs set up first."""
    files = tmp / "files"
    for rel, text in (
        ("etc/dpkg/dpkg.cfg.d/libvm-excludes", DPKG_EXCLUDES),
        ("etc/initramfs-tools/conf.d/libvm.conf", INITRAMFS_CONF),
        ("etc/initramfs-tools/modules", INITRAMFS_MODULES),
        ("etc/cloud/cloud.cfg.d/99_libvm.cfg", CLOUD_CFG.format(renderer=spec.renderer)),
    ):
        (files / rel).parent.mkdir(parents=True, exist_ok=True)
        (files / rel).write_text(text)
    source_file = tmp / "debian.sources"
    source_file.write_text(sources)
    log.info("mmdebstrap: Debian %s, %s flavour", SUITE, spec.name)
    argv = [
        # --skip=chroot/mount: no /proc, /sys or /dev mounted into the chroot, so the build
        # also works where mounting is not allowed; Debian 12's maintainer scripts do not need them.
        tools["mmdebstrap"], "--mode=root", "--skip=chroot/mount", "--variant=apt", "--format=directory",
        "--aptopt=APT::Install-Recommends \"false\"",
        # Before any package: dpkg's excludes and initramfs-tools' configuration must be in
        # place when dpkg unpacks and when the kernel's postinst builds the initramfs.
        f"--setup-hook=cp -a {shlex.quote(str(files))}/. \"$1\"/",
        "--include=" + ",".join(packages),
        SUITE, str(root), str(source_file),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestBuildError(f"mmdebstrap failed ({proc.returncode}): {proc.stderr.strip()[-3000:]}")


def _configure(spec: Flavour, root: Path) -> None:
    """Make the tree a cloud image: no identity of its own, nothing slow at boot."""
    (root / "etc/machine-id").write_text("")  # empty: each VM makes its own at first boot
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/hostname").write_text("localhost\n")  # cloud-init sets the real one
    (root / "etc/default/locale").write_text("LANG=C.UTF-8\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # cloud-init makes each VM its own host keys
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to(spec.resolv_conf)
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for cache in ("var/cache/apt", "var/lib/apt/lists"):
        for item in (root / cache).glob("*"):
            if item.is_file():
                item.unlink()


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise GuestBuildError(f"expected one {pattern} in {directory}, found {[p.name for p in found]}")
    return found[0]


def _tree_mib(root: Path) -> int:
    used = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in (".", *names):
            used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return used // 2**20 + 1


def _assemble(tools: dict[str, str], root: Path, kernel: Path, initrd: Path, raw: Path) -> None:
    """Write the partitioned disk into the plain file ``raw``: MBR, FAT /boot, ext4 /."""
    root_uuid = str(uuid.uuid4())
    (root / "etc/fstab").write_text(f"UUID={root_uuid} / ext4 rw,discard,errors=remount-ro 0 1\n")
    root_mib = _tree_mib(root) * 5 // 4 + ROOT_FREE_MIB
    boot_start = BOOT_START_SECTOR * 512
    root_start = boot_start + BOOT_SIZE_MIB * 2**20
    with open(raw, "wb") as fh:
        fh.truncate(root_start + root_mib * 2**20)
    table = (f"label: dos\nstart={BOOT_START_SECTOR}, size={BOOT_SIZE_MIB}MiB, type=c, bootable\n"
             f"start={root_start // 512}, type=83\n")
    proc = subprocess.run([tools["sfdisk"], "--no-reread", "--no-tell-kernel", "-q", str(raw)], input=table,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestBuildError(f"sfdisk failed: {proc.stderr.strip()}")
    with open(raw, "r+b") as fh:
        fh.write(MBR_BIN.read_bytes()[:440])  # boot code only: the partition table follows at 446
    fat = raw.with_name("boot.fat")
    write_boot_fat(tools, fat, kernel, initrd, KERNEL_CMDLINE.format(uuid=root_uuid), size_mib=BOOT_SIZE_MIB,
                   label="BOOT", hidden_sectors=BOOT_START_SECTOR)
    with open(fat, "rb") as src, open(raw, "r+b") as dst:
        dst.seek(boot_start)
        shutil.copyfileobj(src, dst, 2**20)
    fat.unlink()
    run([tools["mke2fs"], "-q", "-F", "-t", "ext4", "-L", "root", "-U", root_uuid, "-d", str(root),
          "-E", f"offset={root_start}", str(raw), f"{root_mib}M"])


#: An image of another key (older packages, another checkout's configuration) is removed
#: when a build finds it unused for this long: checkouts sharing the machine's cache keep theirs.
UNUSED_DAYS = 7


def _mark_used(image_dir: Path) -> None:
    if os.access(image_dir, os.W_OK):
        os.utime(image_dir)


def _drop_older(base: Path, flavour: str, keep: Path) -> None:
    """Remove this flavour's images nobody used for :data:`UNUSED_DAYS` (each is about 180 MiB)."""
    cutoff = time.time() - UNUSED_DAYS * 86400
    for old in base.glob(f"{flavour}-*"):
        if old != keep and old.is_dir() and old.stat().st_mtime < cutoff:
            log.info("removing the Debian image %s, unused for %d days", old, UNUSED_DAYS)
            shutil.rmtree(old, ignore_errors=True)
