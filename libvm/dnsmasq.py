"""Talking to the dnsmasq that libvirt runs for a network.

libvirt has no API to drop a DHCP lease. dnsmasq keeps a lease for its MAC
(or client-id) until it expires and will not hand a reserved address to a new
MAC while the old lease lasts: the guest silently gets a dynamic address
instead (dnsmasq 2.89, libvirt 9.0). ``dhcp_release`` (dnsmasq-utils) sends
the DHCPRELEASE the old guest never sent. It must run in the network
namespace of the bridge, which is the namespace of libvirtd's dnsmasq.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from .errors import DnsmasqFailure
from .ssh import SshTarget

log = logging.getLogger("libvm")

PID_DIR = Path("/run/libvirt/network")
#: Where libvirt's lease helper keeps each bridge's leases (``<bridge>.status``, JSON).
STATUS_DIR = Path("/var/lib/libvirt/dnsmasq")


def dnsmasq_pid(network: str) -> int | None:
    """PID of the dnsmasq libvirt started for ``network`` (local daemon only)."""
    try:
        return int((PID_DIR / f"{network}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _netns_prefix(pid: int) -> list[str]:
    """``nsenter`` into ``pid``'s network namespace, if it is not ours."""
    try:
        same = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError as exc:
        raise DnsmasqFailure(f"cannot see dnsmasq pid {pid}'s network namespace: {exc}") from exc
    return [] if same else ["nsenter", f"--net=/proc/{pid}/ns/net"]


def release(network: str, bridge: str, ip: str, mac: str, client_id: str | None) -> None:
    """Drop dnsmasq's lease of ``ip`` for ``mac`` on ``network`` now.

    Raises :class:`DnsmasqFailure` when it cannot (remote daemon, not root,
    dnsmasq-utils missing): the caller then refuses rather than hand out an
    address dnsmasq will not honour.
    """
    pid = dnsmasq_pid(network)
    if pid is None:
        raise DnsmasqFailure(
            f"cannot release {ip}'s lease on network {network!r}: no local dnsmasq pidfile "
            f"under {PID_DIR} (remote daemon or network not running)"
        )
    tool = shutil.which("dhcp_release")
    if tool is None:
        raise DnsmasqFailure(
            f"cannot release {ip}'s lease on network {network!r}: dhcp_release not found "
            f"(install dnsmasq-utils)"
        )
    argv = [*_netns_prefix(pid), tool, bridge, ip, mac]
    if client_id:
        argv.append(client_id)
    log.info("releasing lease %s of %s on %s", ip, mac, network)
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DnsmasqFailure(f"dhcp_release of {ip} on {network!r} failed: {exc}") from exc


def release_over_ssh(target: SshTarget, network: str, bridge: str, ip: str, mac: str, client_id: str | None,
                     timeout: float = 30.0) -> None:
    """:func:`release` on the hypervisor ``target`` names, through its SSH (the ``qemu+ssh`` URI's
    user, host, port and key), in the network namespace of the network's dnsmasq there.

    Needs root there (``dhcp_release`` sends from the DHCP client port) and dnsmasq-utils.
    Raises :class:`DnsmasqFailure` saying what failed.
    """
    import shlex

    args = [bridge, ip, mac, *([client_id] if client_id else [])]
    pidfile = shlex.quote(str(PID_DIR / f"{network}.pid"))
    script = (f"pid=$(cat {pidfile}) || exit 3; command -v dhcp_release >/dev/null || exit 4; "
              f"exec nsenter --net=/proc/$pid/ns/net dhcp_release {shlex.join(args)}")
    argv = target.argv(["sh", "-c", script])
    log.info("releasing lease %s of %s on %s through ssh %s", ip, mac, network, target.destination)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DnsmasqFailure(f"dhcp_release of {ip} on {network!r} through ssh {target.destination} failed: "
                             f"{exc}") from exc
    if done.returncode != 0:
        why = {3: f"no dnsmasq pidfile {PID_DIR}/{network}.pid there (network not running?)",
               4: "dhcp_release is not installed there (install dnsmasq-utils)",
               255: f"ssh failed: {done.stderr.strip()[-300:]}"}.get(done.returncode, done.stderr.strip()[-300:])
        raise DnsmasqFailure(f"dhcp_release of {ip} on {network!r} through ssh {target.destination} failed: {why}")
