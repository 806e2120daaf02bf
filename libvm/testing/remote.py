"""A second libvirt host for tests, reachable only over the network.

:class:`RemoteHypervisor` starts ``virtlogd``, ``libvirtd`` and an ``sshd`` in
their own network namespace *and* their own mount namespace, where
``/etc/libvirt`` (a copy of the host's configuration files without its
domains, networks, pools or secrets), ``/var/lib/libvirt``,
``/var/cache/libvirt``, ``/var/log/libvirt`` and the whole of ``/run`` are
directories of the state dir ``/run/libvm-remote/<name>/`` bind-mounted over
the machine's. Its libvirtd therefore has no socket on the machine's
``/run/libvirt``: the test process reaches it only through a veth pair,

* ``qemu+tcp://10.253.7.2/system`` (``listen_tcp``, no authentication: tests only),
* ``qemu+ssh://root@10.253.7.2/system?...`` (OpenSSH; libvirt runs
  ``virt-ssh-helper`` on the far side, inside the namespaces, so it reaches
  *that* daemon's socket), checked against a generated ``known_hosts`` with a
  throw-away client key,
* ``qemu+libssh://root@10.253.7.2/system?...`` (libvirt's libssh client, same key
  and ``known_hosts``),

and through :class:`~libvm.testing.relay.Relay` (:meth:`RemoteHypervisor.relay`)
with added latency and a link that can be cut. Everything else of the
filesystem (guest kernels under /var/cache/libvm, /tmp) is the machine's.

Layout of the state dir (``S``)::

    S/ns/run          -> /run inside (libvirt/, sshd/, and S itself again at S)
    S/ns/etc-libvirt  -> /etc/libvirt      S/ns/var-lib-libvirt   -> /var/lib/libvirt
    S/ns/var-log-libvirt -> /var/log/libvirt  S/ns/var-cache-libvirt -> /var/cache/libvirt
    S/ssh/            host key, client key, authorized_keys, known_hosts, ssh_config, ssh
    S/*.pid, S/*.log, S/*.stderr, S/namespaces

A holder process (``sleep infinity``, started by ``unshare --mount`` inside
``nsenter --net``) keeps the mount namespace; the daemons join it with
``nsenter --target <holder> --mount --net``. The mounts exist only inside it,
so nothing is mounted on the machine and nothing needs unmounting: the
namespace goes with its last process. ``stop()`` ends every process of the
network namespace (found by ``ip netns pids``, and by the namespaces' inodes
recorded in ``S/namespaces`` should the netns be gone), deletes the veth pair
and the netns, and removes ``S/ns`` and ``S/ssh``; logs stay.

Coexistence with :class:`~libvm.testing.Sandbox`: the sandbox only counts
daemons that share its ``/run/libvirt`` as foreign
(:func:`~libvm.testing.sandbox.shares_run_libvirt`), and each side ends only the
processes of its own netns. ``/dev/kvm`` is handled like the sandbox does
(:func:`~libvm.testing.sandbox.grant_kvm`, one machine-wide record, restored by
whichever stops last); guests should use TCG (``virt_type="qemu"``).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from hashlib import sha1
from pathlib import Path
from typing import Literal

from libvm.testing._service import Service, run_action
from libvm.testing.relay import Relay
from libvm.testing.sandbox import (
    KVM_DEVICE,
    KVM_ORIGINAL,
    Sandbox,
    SandboxError,
    alive,
    comm,
    ensure_packages,
    grant_kvm,
    netns_inode,
    terminate,
    wait_for_libvirtd,
    which,
)
from libvm.testing.sandbox import (
    REQUIRED_TOOLS as SANDBOX_TOOLS,
)

log = logging.getLogger("libvm.testing")

STATE_ROOT = Path("/run/libvm-remote")
TCP_PORT = 16509
SSH_PORT = 22
#: tool -> Debian package providing it (on top of the sandbox's).
REQUIRED_TOOLS: dict[str, str] = {
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "virt-ssh-helper": "libvirt-clients",
    "nsenter": "util-linux",
    "unshare": "util-linux",
}
#: The machine's directories the remote daemon gets private copies of (inside its mount namespace).
PRIVATE_DIRS: dict[str, str] = {
    "etc-libvirt": "/etc/libvirt",
    "var-lib-libvirt": "/var/lib/libvirt",
    "var-cache-libvirt": "/var/cache/libvirt",
    "var-log-libvirt": "/var/log/libvirt",
}
#: Settings replaced in the copy of libvirtd.conf: plain TCP without authentication, tests only.
LIBVIRTD_SETTINGS = {"listen_tcp": "1", "listen_tls": "0", "auth_tcp": '"none"', "tcp_port": f'"{TCP_PORT}"'}

Transport = Literal["tcp", "ssh", "libssh"]


def ensure_remote_packages() -> None:
    """Install what the sandbox needs plus OpenSSH (as root), or explain what to install.

    Only sshd's binary is used: the installation starts no sshd on the machine
    (see :func:`~libvm.testing.sandbox.ensure_packages`).
    """
    ensure_packages({**SANDBOX_TOOLS, **REQUIRED_TOOLS})


def _ns_inodes(pid: int) -> tuple[int, int] | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino, os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"{what}: {shlex.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


class RemoteHypervisor(Service):
    """libvirtd + virtlogd + sshd in their own network and mount namespaces; a context manager.

    ``subnet`` (at least a /30) holds the veth pair: the host end is its first
    address (:attr:`client_address`), the daemon's end the second
    (:attr:`address`). It must not overlap any route of the machine.
    """

    def __init__(self, name: str = "libvm-remote", subnet: str = "10.253.7.0/24", timeout: float = 60.0) -> None:
        if not name or len(name) > 40 or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"name must be 1-40 letters, digits, '-' or '_', not {name!r}")
        net = ipaddress.ip_network(subnet)
        if net.version != 4 or net.num_addresses < 4:
            raise ValueError(f"subnet must be an IPv4 network of at least 4 addresses, not {subnet!r}")
        self.name = name
        self.netns = name
        self.subnet = net
        self.timeout = timeout
        self.state_dir = STATE_ROOT / name
        self.client_address = str(net.network_address + 1)
        self.address = str(net.network_address + 2)
        # Interface names are at most 15 characters; the hash keeps them unique per name.
        self.host_veth = "lvr" + sha1(name.encode()).hexdigest()[:8]
        self._holder: subprocess.Popen[bytes] | None = None
        self._relays: list[Relay] = []

    # -- paths and URIs ------------------------------------------------------------------

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def client_key(self) -> Path:
        """The throw-away private key root on the remote side accepts."""
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """``known_hosts`` with the remote sshd's throw-away host key (also under each ssh relay's address)."""
        return self.ssh_dir / "known_hosts"

    @property
    def ssh_command(self) -> Path:
        """``ssh -F <its own ssh_config>``: libvirt's ``command=`` for the ``ssh`` transport."""
        return self.ssh_dir / "ssh"

    def uri(self, transport: Transport = "tcp", host: str | None = None, port: int | None = None) -> str:
        """The ``qemu+<transport>`` URI of the remote daemon at ``host:port`` (default: its veth address)."""
        where = host or self.address
        if port is not None:
            where = f"{where}:{port}"
        if transport == "tcp":
            return f"qemu+tcp://{where}/system"
        if transport == "ssh":
            return f"qemu+ssh://root@{where}/system?command={self.ssh_command}&keyfile={self.client_key}"
        if transport == "libssh":
            return (f"qemu+libssh://root@{where}/system?keyfile={self.client_key}"
                    f"&known_hosts={self.known_hosts}&known_hosts_verify=normal&sshauth=privkey")
        raise ValueError(f"transport must be 'tcp', 'ssh' or 'libssh', not {transport!r}")

    @property
    def tcp_uri(self) -> str:
        return self.uri("tcp")

    @property
    def ssh_uri(self) -> str:
        return self.uri("ssh")

    @property
    def libssh_uri(self) -> str:
        return self.uri("libssh")

    def __repr__(self) -> str:
        return f"<RemoteHypervisor {self.name} at {self.address}{'' if self.running() else ' (stopped)'}>"

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Build the namespaces, the veth pair and the keys; start virtlogd, libvirtd and sshd; wait for both URIs."""
        if os.geteuid() != 0:
            raise SandboxError("the remote hypervisor needs root (namespaces, libvirtd, sshd)")
        ensure_remote_packages()
        self.stop()  # leftovers of a crashed run with the same name
        self._check_subnet_unused()
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)
        try:
            grant_kvm(KVM_DEVICE, KVM_ORIGINAL)
            self._make_dirs()
            self._make_keys()
            self._make_network()
            self._start_holder()
            self._spawn("virtlogd", ["--daemon", "--pid-file", str(self._pidfile("virtlogd"))])
            self._start_libvirtd()
            self._start_sshd()
            self._wait_ssh()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise
        log.info("remote hypervisor %s ready at %s after %.2fs", self.name, self.address, time.monotonic() - started)

    def _check_subnet_unused(self) -> None:
        routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"], "listing routes") or "[]")
        for route in routes:
            dst = route.get("dst", "")
            if dst in ("default", "") or route.get("type", "unicast") not in ("unicast", "local"):
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(dst, strict=False).overlaps(self.subnet):
                    raise SandboxError(f"subnet {self.subnet} overlaps the route {dst} (dev {route.get('dev')}): "
                                       "pick another subnet")

    def _make_dirs(self) -> None:
        ns = self.state_dir / "ns"
        shutil.rmtree(ns, ignore_errors=True)
        for sub in PRIVATE_DIRS:
            (ns / sub).mkdir(parents=True)
        # A copy of the machine's configuration files, without its objects: no domains,
        # networks, storage pools, secrets or hooks.
        etc = ns / "etc-libvirt"
        for item in Path("/etc/libvirt").iterdir():
            if item.is_file():
                shutil.copy2(item, etc / item.name)
        if Path("/etc/libvirt/nwfilter").is_dir():  # libvirt's stock filters, not the machine's objects
            shutil.copytree("/etc/libvirt/nwfilter", etc / "nwfilter", symlinks=True)
        for sub in ("qemu/networks/autostart", "qemu/autostart", "storage/autostart", "secrets", "hooks"):
            (etc / sub).mkdir(parents=True, exist_ok=True)
        (etc / "secrets").chmod(0o700)
        conf = etc / "libvirtd.conf"
        lines = conf.read_text().splitlines() if conf.exists() else []
        kept = [ln for ln in lines if ln.split("=", 1)[0].strip() not in LIBVIRTD_SETTINGS]
        conf.write_text("\n".join([*kept, "# libvm.testing.RemoteHypervisor (tests only):",
                                   *(f"{k} = {v}" for k, v in LIBVIRTD_SETTINGS.items())]) + "\n")
        # The machine's qemu capabilities cache saves the first guest a probe of qemu (seconds);
        # libvirt checks the cache against the qemu binary itself.
        caps = Path("/var/cache/libvirt/qemu/capabilities")
        if caps.is_dir():
            shutil.copytree(caps, ns / "var-cache-libvirt/qemu/capabilities")
        for src, dst in ((Path("/var/cache/libvirt"), ns / "var-cache-libvirt"),
                         (Path("/var/lib/libvirt"), ns / "var-lib-libvirt"),
                         (Path("/var/log/libvirt"), ns / "var-log-libvirt")):
            if src.exists():
                st = src.stat()
                os.chown(dst, st.st_uid, st.st_gid)
                os.chmod(dst, st.st_mode & 0o7777)
        run = ns / "run"
        for sub in ("libvirt", "sshd", "lock"):
            (run / sub).mkdir(parents=True)
        (run / "sshd").chmod(0o755)  # sshd's privilege separation dir
        # The state dir itself, at the same path inside (see _start_holder).
        (run / self.state_dir.relative_to("/run")).mkdir(parents=True)

    def _make_keys(self) -> None:
        d = self.ssh_dir
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(mode=0o700)
        keygen = which("ssh-keygen") or "ssh-keygen"
        for key, comment in (("host_ed25519_key", "libvm-remote host"), ("id_ed25519", "libvm-remote client")):
            _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(d / key)], "ssh-keygen")
        (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
        self._write_known_hosts()
        sshd_config = f"""\
# libvm.testing.RemoteHypervisor {self.name}: root by key only, on the veth address.
Port {SSH_PORT}
ListenAddress {self.address}
HostKey {d / 'host_ed25519_key'}
PidFile {self._pidfile('sshd')}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
LogLevel INFO
"""
        (d / "sshd_config").write_text(sshd_config)
        (d / "ssh_config").write_text(f"""\
Host *
  IdentityFile {self.client_key}
  IdentitiesOnly yes
  UserKnownHostsFile {self.known_hosts}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  BatchMode yes
  ConnectTimeout 20
""")
        ssh = which("ssh") or "/usr/bin/ssh"
        self.ssh_command.write_text(f'#!/bin/sh\nexec {ssh} -F {d / "ssh_config"} "$@"\n')
        self.ssh_command.chmod(0o755)

    def _write_known_hosts(self) -> None:
        key = " ".join((self.ssh_dir / "host_ed25519_key.pub").read_text().split()[:2])
        names = [self.address, *(f"[{r.address[0]}]:{r.port}" for r in self._relays if r.target[1] == SSH_PORT)]
        self.known_hosts.write_text(f"{','.join(names)} {key}\n")

    def _make_network(self) -> None:
        _run(["ip", "netns", "add", self.netns], "creating the netns")
        _run(["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns],
             "creating the veth pair")
        plen = self.subnet.prefixlen
        _run(["ip", "addr", "add", f"{self.client_address}/{plen}", "dev", self.host_veth], "addressing the veth")
        _run(["ip", "link", "set", self.host_veth, "up"], "bringing the veth up")
        for argv in (["ip", "addr", "add", f"{self.address}/{plen}", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
            _run(["ip", "netns", "exec", self.netns, *argv], "configuring the remote side")

    def _start_holder(self) -> None:
        """Create the mount namespace inside the netns and keep it with ``sleep infinity``."""
        s, run = self.state_dir, self.state_dir / "ns" / "run"
        mounts = [
            # A sysfs of the netns: libvirt's bridge code reads /sys/class/net (as ip netns exec does).
            "umount -l /sys",
            "mount -t sysfs -o nosuid,nodev,noexec sysfs /sys",
            *(f"mount --bind {s / 'ns' / sub} {target}" for sub, target in PRIVATE_DIRS.items()),
            # The state dir stays reachable at its own path once /run is covered.
            f"mount --bind {s} {run / s.relative_to('/run')}",
            f"mount --rbind {run} /run",
            f"echo ready > {s / 'holder.ready'}",
            "exec sleep infinity",
        ]
        (s / "holder.ready").unlink(missing_ok=True)
        with open(s / "holder.stderr", "wb") as err:
            self._holder = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--propagation", "private",
                 "sh", "-ec", "\n".join(mounts)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )
        self._pidfile("holder").write_text(f"{self._holder.pid}\n")
        deadline = time.monotonic() + self.timeout
        while not (s / "holder.ready").exists():
            if self._holder.poll() is not None or time.monotonic() > deadline:
                raise SandboxError(f"the mount namespace could not be set up: "
                                   f"{(s / 'holder.stderr').read_text().strip()}")
            time.sleep(0.02)
        inodes = _ns_inodes(self._holder.pid)
        if inodes is None or inodes == _ns_inodes(os.getpid()):
            raise SandboxError("the holder process is not in namespaces of its own")
        (s / "namespaces").write_text(f"{inodes[0]} {inodes[1]}\n")

    def _pidfile(self, daemon: str) -> Path:
        return self.state_dir / f"{daemon}.pid"

    def _holder_pid(self) -> int | None:
        return self._pid("holder", "sleep")

    def _pid(self, name: str, command: str | None = None) -> int | None:
        """PID from our pidfile if it is a live ``command`` (default ``name``) in our namespaces."""
        try:
            pid = int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None
        if comm(pid) != (command or name) or not alive(pid):
            return None
        return pid if _ns_inodes(pid) == self._recorded_inodes() else None

    def _recorded_inodes(self) -> tuple[int, int] | None:
        try:
            mnt, net = (self.state_dir / "namespaces").read_text().split()
        except (OSError, ValueError):
            return None
        return int(mnt), int(net)

    def nsenter(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed to run inside the remote's namespaces (e.g. ``virsh -c qemu:///system``)."""
        holder = self._holder_pid()
        if holder is None:
            raise SandboxError(f"remote hypervisor {self.name} is not running")
        return ["nsenter", f"--target={holder}", "--mount", "--net", "--", *argv]

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the remote's namespaces and capture its output."""
        proc = subprocess.run(self.nsenter(argv), capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise SandboxError(f"{argv} in remote {self.name} failed: {proc.stderr.strip()}")
        return proc

    def _spawn(self, daemon: str, args: list[str], exe: str | None = None) -> int:
        self._pidfile(daemon).unlink(missing_ok=True)
        env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{self.state_dir / (daemon + '.log')}")
        with open(self.state_dir / f"{daemon}.stderr", "ab") as err:
            rc = subprocess.run(self.nsenter([exe or which(daemon) or daemon, *args]), stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err, env=env, check=False).returncode
        if rc != 0:
            raise SandboxError(f"{daemon} failed to start ({rc}); see {self.state_dir}/{daemon}.stderr")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pid = self._pid(daemon)
            if pid is not None:
                return pid
            time.sleep(0.02)
        raise SandboxError(f"{daemon} did not start; see {self.state_dir}")

    def _start_libvirtd(self) -> None:
        started = time.monotonic()
        pid = self._spawn("libvirtd", ["--daemon", "--listen", "--pid-file", str(self._pidfile("libvirtd"))])
        wait_for_libvirtd(pid, self.tcp_uri, lambda: _port_open(self.address, TCP_PORT), started + self.timeout,
                          self.state_dir / "libvirtd.log")

    def _start_sshd(self) -> None:
        sshd = which("sshd") or "/usr/sbin/sshd"  # sshd must be started by its absolute path
        self._spawn("sshd", ["-f", str(self.ssh_dir / "sshd_config"), "-E", str(self.state_dir / "sshd.log")],
                    exe=sshd)

    def _wait_ssh(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not _port_open(self.address, SSH_PORT):
            if time.monotonic() > deadline:
                raise SandboxError(f"sshd does not listen on {self.address}:{SSH_PORT}; see {self.state_dir}")
            time.sleep(0.02)

    def restart_libvirtd(self) -> None:
        """Stop and start the remote libvirtd; guests, dnsmasq and sshd keep running."""
        pid = self._pid("libvirtd")
        if pid is not None:
            terminate([pid])
        self._start_libvirtd()

    # -- relays ------------------------------------------------------------------------------

    def relay(self, transport: Transport = "tcp", delay_ms: float = 25.0) -> Relay:
        """A started :class:`Relay` on 127.0.0.1 to the daemon's TCP or SSH port, ``delay_ms`` each way.

        Its ``uri`` goes through it; for ``ssh``/``libssh`` its address is added to
        :attr:`known_hosts`. The relay stops with :meth:`stop`, or earlier with its own ``stop()``.
        """
        port = TCP_PORT if transport == "tcp" else SSH_PORT
        relay = Relay((self.address, port), delay_ms=delay_ms)
        relay.start()
        relay.uri = self.uri(transport, "127.0.0.1", relay.port)
        self._relays.append(relay)
        if port == SSH_PORT:
            self._write_known_hosts()
        return relay

    # -- stop ----------------------------------------------------------------------------------

    def _our_pids(self) -> list[int]:
        """Every process in our netns, or in both recorded namespaces (should the netns be gone)."""
        pids: set[int] = set()
        if netns_inode(self.netns) is not None:
            out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True,
                                 check=False).stdout
            pids.update(int(x) for x in out.split() if x.isdigit())
        recorded = self._recorded_inodes()
        if recorded is not None and recorded != _ns_inodes(os.getpid()):
            pids.update(int(p.name) for p in Path("/proc").iterdir()
                        if p.name.isdigit() and _ns_inodes(int(p.name)) == recorded)
        pids.discard(os.getpid())
        return sorted(pids)

    def stop(self) -> None:
        """End every process of the remote, delete the veth pair and the netns; idempotent.

        Works from the pidfiles, the netns and the recorded namespace inodes alone, so it
        also cleans up after a crashed run. Logs in the state dir stay.
        """
        for relay in self._relays:
            relay.stop()
        self._relays.clear()
        pid = self._pid("libvirtd")
        if pid is not None:
            terminate([pid])  # first, so it does not restart the dnsmasq we end next
        terminate(self._our_pids())
        if self._holder is not None:
            self._holder.wait(10)  # reap our child
            self._holder = None
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/sys/class/net/{self.host_veth}").exists():
                _run(["ip", "link", "del", self.host_veth], "deleting the veth pair")
        if netns_inode(self.netns) is not None:
            _run(["ip", "netns", "del", self.netns], "deleting the netns")
            log.info("deleted netns %s", self.netns)
        if self.state_dir.exists():
            for sub in ("ns", "ssh"):
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)
            for name in ("holder", "libvirtd", "virtlogd", "sshd"):
                self._pidfile(name).unlink(missing_ok=True)
            for leftover in ("namespaces", "holder.ready"):
                (self.state_dir / leftover).unlink(missing_ok=True)
        Sandbox.restore_kvm()

    def running(self) -> bool:
        return self._pid("libvirtd") is not None

    def leftovers(self) -> list[str]:
        """What of this remote still exists on the machine (empty after :meth:`stop`)."""
        found = [f"process {pid} ({comm(pid)})" for pid in self._our_pids()]
        if netns_inode(self.netns) is not None:
            found.append(f"netns {self.netns}")
        if Path(f"/sys/class/net/{self.host_veth}").exists():
            found.append(f"link {self.host_veth}")
        with open("/proc/self/mountinfo") as mounts:
            found += [f"mount {ln.split()[4]}" for ln in mounts if str(self.state_dir) in ln.split()[4]]
        return found


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def remote_link(
    delay_ms: float = 25.0,
    transport: Transport = "tcp",
    name: str = "libvm-bench-remote",
    subnet: str = "10.253.8.0/24",
) -> Iterator[Relay]:
    """For benchmarks: a fresh remote hypervisor behind a relay; yields the relay (``relay.uri``).

    ``delay_ms`` is added each way, so a libvirt call costs ``2 * delay_ms`` more.
    Everything stops when the block ends.
    """
    with RemoteHypervisor(name, subnet) as remote:
        yield remote.relay(transport, delay_ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libvm.testing.remote")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="libvm-remote")
    parser.add_argument("--subnet", default="10.253.7.0/24")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    remote = RemoteHypervisor(args.name, args.subnet)
    rc = run_action(remote, args.action, SandboxError)
    if rc == 0 and args.action == "up":
        for transport in ("tcp", "ssh", "libssh"):
            print(remote.uri(transport))
    return rc


if __name__ == "__main__":
    sys.exit(main())
