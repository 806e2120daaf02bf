"""A tiny DHCP test guest: a Debian cloud kernel plus a busybox initramfs.

The guest boots (direct kernel boot, ``console=ttyS0``, or from the disk image
of :mod:`libvm.testing.disk`), loads the virtio network modules, runs
``udhcpc`` on every ``eth*`` NIC in parallel and prints one line per NIC to
the serial console::

    LIBVM-LEASE mac=66:66:66:66:66:0b ip=192.168.150.88
    LIBVM-LEASE mac=66:66:66:66:66:0c ip=none
    LIBVM-DONE

and then sleeps forever, so the lease stays in dnsmasq until the domain is
destroyed (it never renews or releases).  ``libvm.clientid=<value>`` on the
kernel command line makes every NIC send that fixed DHCP client-id (option
61): ``<value>`` is hex digits (colons allowed), e.g. ``ff:00:00:00:01``,
which is sent as raw bytes; anything else is sent as type 0 + the text.

Before the network, it looks for a NoCloud seed (an iso9660 filesystem
labelled ``cidata``: IDE/SCSI cdrom or virtio disk) and prints what it read::

    LIBVM-SEED dev=/dev/sr0 instance-id=iid-web1     (or LIBVM-NOSEED)
    LIBVM-HOSTNAME web1                              (user-data hostname, else local-hostname)
    LIBVM-SSHKEY ssh-ed25519 AAAA... me@host         (one per ssh_authorized_keys item)
    LIBVM-STATIC mac=52:54:00:aa:bb:cc ip=10.0.0.5   (a NIC set up from network-config, no DHCP)

After the network it answers TCP port 22 with the banner ``SSH-2.0-libvmtest``
and prints ``LIBVM-SSH-LISTENING`` once its own probe got it, or
``LIBVM-NOSSH`` if user-data has the top-level line ``libvm_no_ssh: true``.

Everything comes from Debian packages fetched with ``apt-get download``
(``linux-image-*-cloud-amd64`` and ``busybox-static``), so no network access
beyond the Debian mirror is needed, and the result is cached.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from libvm.testing.build import GuestBuildError as GuestBuildError  # raised here too: importable from here
from libvm.testing.build import build_once, mkdirs_traversable, run

log = logging.getLogger("libvm.testing")

#: Default cache. Under /var/cache (0755 all the way down) rather than under
#: $HOME because qemu runs as ``libvirt-qemu`` and /root is 0700.
DEFAULT_CACHE_DIR = Path("/var/cache/libvm/guest")
DEFAULT_CMDLINE = "console=ttyS0 panic=-1 quiet"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
#: Modules for virtio networking and for reading a NoCloud seed: the IDE cdrom
#: libvirt attaches on the ``pc`` machine, a virtio disk or SCSI cdrom, iso9660.
#: The cloud kernel has no ahci, so a SATA cdrom (q35's default) is not read.
#: Dependencies are added from each module's ``.modinfo`` (the .deb ships no
#: modules.dep).
WANTED_MODULES = (
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "ata_piix",
    "sr_mod",
    "isofs",
)
#: Bump when the layout of the build changes without the scripts changing.
FORMAT_VERSION = "2"

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo "LIBVM-BOOT"
# insmod returns once the module's asynchronous probes (ATA ports, SCSI scans) are done.
for m in $(cat /etc/libvm-modules); do insmod "/lib/modules/$m.ko" || echo "insmod $m failed"; done
ip link set lo up
. /etc/libvm-seed.sh
mkdir -p /run/seed
seed=""
nossh=""
dev=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
# busybox's findfs takes an ISO's Joliet label and does not trim the UCS-2 spaces
# some writers (pycdlib) pad it with; read the primary descriptor's label like blkid.
if [ -z "$dev" ]; then
  for d in /dev/sr* /dev/vd* /dev/sd* /dev/hd*; do
    [ -b "$d" ] || continue
    label=$(dd if="$d" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' \000')
    case "$label" in cidata|CIDATA) dev=$d; break ;; esac
  done
fi
if [ -n "$dev" ] && mount -t iso9660 -o ro "$dev" /run/seed; then
  seed=/run/seed
  echo "LIBVM-SEED dev=$dev instance-id=$(yget "$seed/meta-data" instance-id)"
  name=$(yget "$seed/user-data" hostname)
  [ -n "$name" ] || name=$(yget "$seed/meta-data" local-hostname)
  if [ -n "$name" ]; then
    hostname "$name"
    echo "LIBVM-HOSTNAME $name"
  fi
  mkdir -p /root/.ssh
  ylist "$seed/user-data" ssh_authorized_keys >/root/.ssh/authorized_keys
  while IFS= read -r key; do echo "LIBVM-SSHKEY $key"; done </root/.ssh/authorized_keys
  case "$(yget "$seed/user-data" libvm_no_ssh)" in true|True|TRUE|yes|Yes) nossh=1 ;; esac
  netplan "$seed/network-config" >/run/netplan
else
  echo "LIBVM-NOSEED"
fi
# Wait for one eth* per PCI Ethernet controller (none: no wait at all).
want=$(cat /sys/bus/pci/devices/*/class 2>/dev/null | grep -c '^0x0200')
i=0
while [ "$(ls /sys/class/net | grep -c '^eth')" -lt "$want" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ "$want" -eq 0 ] || sleep 0.5
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
nics=""
for n in $(ls /sys/class/net | grep '^eth' | sort); do
  ip link set "$n" up
  mac=$(cat "/sys/class/net/$n/address")
  plan=$(plan_for "$n" "$mac" /run/netplan)
  if [ -n "$plan" ]; then
    # shellcheck disable=SC2086
    static_up "$n" "$mac" $plan
    continue
  fi
  nics="$nics $n"
  udhcpc -i "$n" -n -q -t 10 -T 2 -s /etc/udhcpc.script "$@" >"/run/udhcpc.$n.log" 2>&1 &
done
wait
for n in $nics; do
  mac=$(cat "/sys/class/net/$n/address")
  ip=$(cat "/run/lease.$n" 2>/dev/null)
  [ -n "$ip" ] || { ip=none; cat "/run/udhcpc.$n.log"; }
  echo "LIBVM-LEASE mac=$mac ip=$ip"
done
if [ -n "$nossh" ]; then
  echo "LIBVM-NOSSH"
else
  nc -ll -p 22 -e /etc/libvm-sshd </dev/null >/dev/null 2>&1 &
  i=0
  banner=""
  while [ $i -lt 50 ]; do
    banner=$(echo SSH-2.0-probe | timeout 2 nc 127.0.0.1 22 2>/dev/null | head -n 1 | tr -d '\r')
    [ "$banner" = SSH-2.0-libvmtest ] && break
    sleep 0.1
    i=$((i + 1))
  done
  if [ "$banner" = SSH-2.0-libvmtest ]; then echo "LIBVM-SSH-LISTENING"; else echo "LIBVM-SSH-FAILED"; fi
fi
echo "LIBVM-DONE"
while true; do sleep 3600; done
"""

#: Sourced by /init; also run on the host by the unit tests (busybox sh).
SEED_FUNCTIONS = r"""# Shell functions of the test guest for reading a NoCloud seed (sourced by /init).
# yflat FILE: flatten the YAML subset cloud-init seeds use into "a.b.0.c=value"
# lines: block mappings and lists by indentation, flow [..] and {..} one level deep.
yflat() {
  awk -v q="'" '
function unq(s) {
  sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s)
  if (length(s) >= 2 && (substr(s, 1, 1) == "\"" || substr(s, 1, 1) == q) && substr(s, length(s)) == substr(s, 1, 1))
    s = substr(s, 2, length(s) - 2)
  return s
}
function path(  i, s) { s = ""; for (i = 1; i <= d; i++) s = s (i > 1 ? "." : "") nm[i]; return s }
function emit(p, v,  n, a, i, j) {
  v = unq(v)
  if (v ~ /^\[.*\]$/) {
    n = split(substr(v, 2, length(v) - 2), a, ",")
    for (i = 1; i <= n; i++) if (unq(a[i]) != "") print p "." (i - 1) "=" unq(a[i])
  } else if (v ~ /^\{.*\}$/) {
    n = split(substr(v, 2, length(v) - 2), a, ",")
    for (i = 1; i <= n; i++) {
      j = index(a[i], ":")
      if (j) print p "." unq(substr(a[i], 1, j - 1)) "=" unq(substr(a[i], j + 1))
    }
  } else print p "=" v
}
{
  sub(/\r$/, "")
  if ($0 ~ /^[ \t]*(#|$)/ || $0 ~ /^(---|\.\.\.)/) next
  sub(/[ \t]+#.*$/, "")
  match($0, /^ */); ind = RLENGTH; s = substr($0, ind + 1)
  while (s ~ /^-( |$)/) {
    while (d > 0 && (in_[d] > ind || (in_[d] == ind && it[d]))) d--
    p = path(); n = cnt[p]++
    d++; nm[d] = n; in_[d] = ind; it[d] = 1
    s = substr(s, 2); match(s, /^ */); ind += 1 + RLENGTH; s = substr(s, RLENGTH + 1)
  }
  if (s ~ /^["a-zA-Z0-9_.\/-]+:( |$)/) {
    j = index(s, ":"); k = unq(substr(s, 1, j - 1)); v = substr(s, j + 1)
    while (d > 0 && in_[d] >= ind) d--
    d++; nm[d] = k; in_[d] = ind; it[d] = 0
    if (unq(v) != "") emit(path(), v)
  } else if (s != "") emit(path(), s)
}' "$1"
}
# yget FILE KEY: the value of KEY (a flattened path), empty if absent.
yget() { [ -f "$1" ] && yflat "$1" | awk -v k="$2=" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }'; }
# ylist FILE KEY: the items of the list KEY, one a line.
ylist() {
  [ -f "$1" ] && yflat "$1" | awk -v k="$2." '
index($0, k) == 1 { r = substr($0, length(k) + 1); if (r ~ /^[0-9]+=/) print substr(r, index(r, "=") + 1) }'
}
# netplan FILE: one line per ethernet of a v2 network-config:
# "ID MAC|- GATEWAY|- DNS,..|- ADDRESS/PREFIX...", ethernets without addresses left out.
netplan() {
  [ -f "$1" ] && yflat "$1" | awk '
{
  e = index($0, "="); k = substr($0, 1, e - 1); v = substr($0, e + 1)
  sub(/^network\./, "", k)
  if (k !~ /^ethernets\.[^.]+\./) next
  split(k, p, "."); id = p[2]; r = substr(k, length(id) + 12)
  if (!(id in seen)) { seen[id] = 1; ids[++n] = id }
  if (r == "match.macaddress") mac[id] = tolower(v)
  else if (r ~ /^addresses\.[0-9]+$/) addr[id] = addr[id] " " v
  else if (r == "gateway4") gw[id] = v
  else if (r ~ /^routes\.[0-9]+\.to$/) rto[id, p[4]] = v
  else if (r ~ /^routes\.[0-9]+\.via$/) rvia[id, p[4]] = v
  else if (r ~ /^nameservers\.addresses\.[0-9]+$/) dns[id] = dns[id] (dns[id] == "" ? "" : ",") v
}
END {
  for (i = 1; i <= n; i++) {
    id = ids[i]
    if (addr[id] == "") continue
    g = gw[id]
    for (j = 0; g == "" && (id, j) in rvia; j++)
      if (rto[id, j] == "default" || rto[id, j] == "0.0.0.0/0") g = rvia[id, j]
    print id, (mac[id] == "" ? "-" : mac[id]), (g == "" ? "-" : g), (dns[id] == "" ? "-" : dns[id]) addr[id]
  }
}'
}
# plan_for IFACE MAC NETPLAN: the netplan line for this NIC (by MAC, else by name).
plan_for() {
  [ -f "$3" ] && awk -v n="$1" -v m="$2" '$2 == m || ($2 == "-" && $1 == n) { print; exit }' "$3"
}
# static_up IFACE MAC ID MAC GATEWAY DNS ADDRESS...: configure a NIC from its netplan line.
static_up() {
  _n=$1 _mac=$2 _gw=$5 _dns=$6
  shift 6
  for _a in "$@"; do ip addr add "$_a" dev "$_n" || echo "ip addr add $_a dev $_n failed"; done
  [ "$_gw" = - ] || ip route add default via "$_gw" dev "$_n" || echo "default route via $_gw failed"
  if [ "$_dns" != - ]; then
    for _d in $(echo "$_dns" | tr , ' '); do echo "nameserver $_d"; done >>"${RESOLV_CONF:-/etc/resolv.conf}"
  fi
  echo "LIBVM-STATIC mac=$_mac ip=${1%/*}"
}
"""

#: Answers each TCP connection on port 22 (``nc -ll -e``) with an SSH banner.
SSHD_SCRIPT = r"""#!/bin/sh
printf 'SSH-2.0-libvmtest\r\n'
# Read the client's banner before closing, so the close does not reset the connection.
read -t 10 line
exit 0
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
_STATIC_RE = re.compile(r"LIBVM-STATIC mac=([0-9A-Fa-f:]{17}) ip=(\S*)")
_HOSTNAME_RE = re.compile(r"^LIBVM-HOSTNAME (.+?)\r?$", re.MULTILINE)
_SSHKEY_RE = re.compile(r"^LIBVM-SSHKEY (.+?)\r?$", re.MULTILINE)
_SEED_RE = re.compile(r"^LIBVM-SEED dev=(\S*) instance-id=(.*?)\r?$", re.MULTILINE)


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


class SeedReport(TypedDict):
    """What the guest printed about its NoCloud seed (see :func:`parse_seed_lines`)."""

    seed: bool
    """A ``cidata`` filesystem was found and mounted (``LIBVM-SEED``)."""
    no_seed: bool
    """The guest found no seed (``LIBVM-NOSEED``)."""
    instance_id: str | None
    hostname: str | None
    ssh_keys: list[str]
    static: dict[str, str]
    """Lower-case MAC -> IP (no prefix length) of NICs configured from network-config."""
    ssh_listening: bool
    """Port 22 answered the guest's own probe with the banner (``LIBVM-SSH-LISTENING``)."""
    no_ssh: bool
    """user-data said ``libvm_no_ssh: true`` (``LIBVM-NOSSH``)."""


def parse_seed_lines(text: str) -> SeedReport:
    """Read the seed-related lines of the guest's console.

    The last ``LIBVM-HOSTNAME`` wins; ``LIBVM-SSHKEY`` lines are kept in
    order; later ``LIBVM-STATIC`` lines for the same MAC win.
    """
    seed = _SEED_RE.search(text)
    hostnames = _HOSTNAME_RE.findall(text)
    lines = {line.strip() for line in text.splitlines()}
    return SeedReport(
        seed=seed is not None,
        no_seed="LIBVM-NOSEED" in lines,
        instance_id=seed.group(2) if seed else None,
        hostname=hostnames[-1] if hostnames else None,
        ssh_keys=_SSHKEY_RE.findall(text),
        static={m.group(1).lower(): m.group(2) for m in _STATIC_RE.finditer(text)},
        ssh_listening="LIBVM-SSH-LISTENING" in lines,
        no_ssh="LIBVM-NOSSH" in lines,
    )


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

    def built() -> bool:
        return image.kernel.is_file() and image.initrd.is_file()

    if built():
        return image
    mkdirs_traversable(base)
    build_once(final, built, _build_into, ".build-")
    log.info("built test guest in %s", final)
    return image


def _build_key() -> str:
    h = hashlib.sha256()
    for part in (FORMAT_VERSION, INIT_SCRIPT, UDHCPC_SCRIPT, SEED_FUNCTIONS, SSHD_SCRIPT, *WANTED_MODULES):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def resolve_kernel_package() -> str:
    """Name of the real kernel package behind ``linux-image-cloud-amd64``."""
    try:
        out = run(["apt-cache", "depends", KERNEL_META_PACKAGE])
    except GuestBuildError:
        out = ""
    found = re.search(r"Depends:\s+(linux-image-\S+-cloud-amd64)\b", out)
    if found is None and os.geteuid() == 0:
        log.info("apt lists do not know %s; running apt-get update", KERNEL_META_PACKAGE)
        run(["apt-get", "update"])
        found = re.search(
            r"Depends:\s+(linux-image-\S+-cloud-amd64)\b",
            run(["apt-cache", "depends", KERNEL_META_PACKAGE]),
        )
    if found is None:
        raise GuestBuildError(f"cannot resolve {KERNEL_META_PACKAGE}; run 'apt-get update' as root first")
    return found.group(1)


def _build_into(out: Path) -> None:
    kpkg = resolve_kernel_package()
    with tempfile.TemporaryDirectory(prefix="libvm-guest-") as tmp_s:
        tmp = Path(tmp_s)
        log.info("downloading %s and busybox-static", kpkg)
        run(["apt-get", "download", kpkg, "busybox-static"], cwd=tmp)
        kroot, broot, initroot = tmp / "kernel", tmp / "busybox", tmp / "initramfs"
        run(["dpkg-deb", "-x", str(next(tmp.glob("linux-image-*.deb"))), str(kroot)])
        run(["dpkg-deb", "-x", str(next(tmp.glob("busybox-static_*.deb"))), str(broot)])
        vmlinuz = next((kroot / "boot").glob("vmlinuz-*"))
        kver = vmlinuz.name.removeprefix("vmlinuz-")
        for d in ("bin", "etc", "lib/modules"):
            (initroot / d).mkdir(parents=True)
        shutil.copy2(broot / "bin" / "busybox", initroot / "bin" / "busybox")
        mods = _collect_modules(kroot / "lib" / "modules" / kver, initroot / "lib" / "modules")
        _write(initroot / "etc" / "libvm-modules", "\n".join(mods) + "\n", 0o644)
        _write(initroot / "init", INIT_SCRIPT, 0o755)
        _write(initroot / "etc" / "udhcpc.script", UDHCPC_SCRIPT, 0o755)
        _write(initroot / "etc" / "libvm-seed.sh", SEED_FUNCTIONS, 0o644)
        _write(initroot / "etc" / "libvm-sshd", SSHD_SCRIPT, 0o755)
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
