"""A real libvirt stack confined to a network namespace, for tests.

``Sandbox`` creates a netns, and inside it (``ip netns exec``) starts
``virtlogd`` and ``libvirtd``.  Everything libvirt creates for networks and
guests (bridges, taps, dnsmasq, iptables rules) therefore lives in that netns
and vanishes with it; the host's network is never touched.  The control
socket ``/run/libvirt/libvirt-sock`` is on the shared filesystem, so
``libvirt.open("qemu:///system")`` works from the host namespace.

Why this works without systemd and without editing /etc:

* ``ip netns exec`` also gives the daemon a private mount namespace with a
  fresh sysfs for the netns, so libvirt's bridge handling via
  /sys/class/net sees the netns' devices.  That sysfs has no cgroup mounts,
  so libvirt runs guests without cgroups (it skips them when none are
  mounted) - fine for tests.
* iptables (nft backend) works per netns, so libvirt 9.0's iptables firewall
  backend only changes the sandbox's own tables.
* Without systemd there is no socket activation: virtlogd must run before
  libvirtd (qemu's stdout/stderr go through it, ``stdio_handler="logd"``).
* qemu runs as ``libvirt-qemu``; libvirt chowns kernel/initrd/serial files
  for the run (``dynamic_ownership``), but every parent directory must be
  traversable by that user: keep test files under /var/cache, /var/lib or
  /tmp, never under /root (0700).
* ``/dev/kvm`` gets the ownership udev would give it while the sandbox runs
  (see :meth:`Sandbox.grant_kvm`); the original owner and mode come back on
  :meth:`Sandbox.stop`.
* Daemon logs (warnings and up) go to ``/run/libvm-sandbox/<netns>/``
  via ``LIBVIRT_LOG_OUTPUTS``; nothing under /etc is written.

libvirt's persistent state (/etc/libvirt/qemu, /var/lib/libvirt) is the
machine's: objects a test defines outlive the sandbox unless undefined.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt

from libvm.testing._service import Service, run_action

log = logging.getLogger("libvm.testing")

URI = "qemu:///system"
LIBVIRT_SOCK = Path("/run/libvirt/libvirt-sock")
STATE_ROOT = Path("/run/libvm-sandbox")
DAEMONS = ("libvirtd", "virtlogd")
#: Other daemons that would own /run/libvirt/libvirt-sock or the qemu driver.
FOREIGN_DAEMONS = ("libvirtd", "virtqemud", "virtnetworkd", "virtproxyd")
#: tool -> Debian package providing it.
REQUIRED_TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
    "dhcp_release": "dnsmasq-utils",
    "iptables": "iptables",
    "cpio": "cpio",
    "busybox": "busybox-static",
    # build_disk_image: the test guest as a bootable disk.
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
}


KVM_DEVICE = Path("/dev/kvm")
#: The owner, group and mode /dev/kvm had before the first sandbox changed it
#: (machine-wide, not per netns): restored by ``stop()``, even after a crash.
KVM_ORIGINAL = STATE_ROOT / "kvm.original"


class SandboxError(RuntimeError):
    """The sandbox cannot be set up or torn down."""


def which(tool: str) -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(tool, path=path)


def missing_packages(tools: dict[str, str] | None = None) -> list[str]:
    """Debian packages whose tools (default :data:`REQUIRED_TOOLS`) are missing; busybox must be the static one."""
    pkgs = {pkg for tool, pkg in (tools or REQUIRED_TOOLS).items() if which(tool) is None}
    if which("dpkg-query") is not None:
        query = ["dpkg-query", "-W", "-f=${Status}", "busybox-static"]
        status = subprocess.run(query, capture_output=True, text=True, check=False).stdout
        if "install ok installed" not in status:
            pkgs.add("busybox-static")
    return sorted(pkgs)


def ensure_packages(tools: dict[str, str] | None = None) -> None:
    """Install missing Debian packages (as root), or explain what to install.

    The installation starts no service of the machine: Debian's
    libvirt-daemon-system would start a libvirtd the sandbox then refuses to
    run beside, openssh-server an sshd.
    """
    pkgs = missing_packages(tools)
    if not pkgs:
        return
    if os.geteuid() != 0:
        raise SandboxError("missing tools; as root run: apt-get install -y --no-install-recommends " + " ".join(pkgs))
    log.info("installing %s", " ".join(pkgs))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _no_service_starts():
        for argv in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *pkgs],
        ):
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SandboxError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-2000:]}")
    still = missing_packages(tools)
    if still:
        raise SandboxError(f"still missing after install: {' '.join(still)}")


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """A ``policy-rc.d`` that forbids starting services (exit 101), unless the machine has one."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# libvm.testing: no service starts while packages install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def netns_exec(
    netns: str, argv: list[str], check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run argv inside the network namespace and capture its output."""
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if check and proc.returncode != 0:
        raise SandboxError(f"{argv} in netns {netns} failed: {proc.stderr.strip()}")
    return proc


def netns_inode(netns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino
    except FileNotFoundError:
        return None


def _pid_netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _running(names: tuple[str, ...]) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and comm(int(p.name)) in names and alive(int(p.name))
    ]


def _run_libvirt_key(root: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"{root}/run/libvirt")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def shares_run_libvirt(pid: int) -> bool:
    """Whether process ``pid`` sees the same /run/libvirt as we do.

    A daemon in its own mount namespace with a private /run/libvirt (such as
    :class:`libvm.testing.RemoteHypervisor`'s) owns no socket of ours, so it
    neither blocks a sandbox nor serves as its virtlogd. ``/proc/<pid>/root``
    resolves the path through that process's mounts.
    """
    return _run_libvirt_key(f"/proc/{pid}/root") == _run_libvirt_key("")


def wait_for_libvirtd(pid: int, uri: str, listening: Callable[[], bool], deadline: float, logfile: Path) -> None:
    """Wait until libvirtd ``pid`` is ``listening()`` and answers on ``uri``; fail at once if it exits."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        if not alive(pid):
            raise SandboxError(f"libvirtd exited; see {logfile}")
        if listening():
            conn = libvirt.open(uri)
            try:
                log.info("libvirtd %d answers on %s after %.2fs", conn.getLibVersion(), uri, time.monotonic() - started)
            finally:
                conn.close()
            return
        time.sleep(0.05)
    raise SandboxError(f"libvirtd did not answer on {uri} in time; see {logfile}")


def terminate(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL the given PIDs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in pids if alive(p)]
        for pid in live:
            log.debug("sending %s to %d (%s)", sig.name, pid, comm(pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    if left:
        raise SandboxError(f"processes would not die: {left}")


class Sandbox(Service):
    """libvirtd + virtlogd inside network namespace ``netns``; a context manager."""

    def __init__(self, netns: str = "libvm-test", timeout: float = 60.0) -> None:
        self.netns = netns
        self.uri = URI
        self.timeout = timeout
        self.state_dir = STATE_ROOT / netns

    def _pidfile(self, daemon: str) -> Path:
        return self.state_dir / f"{daemon}.pid"

    def _pid(self, daemon: str) -> int | None:
        """PID from our pidfile, if it is a live ``daemon`` inside our netns."""
        try:
            pid = int(self._pidfile(daemon).read_text().strip())
        except (OSError, ValueError):
            return None
        ino = netns_inode(self.netns)
        if comm(pid) != daemon or not alive(pid) or ino is None:
            return None
        return pid if _pid_netns_inode(pid) == ino else None

    def _netns_pids(self) -> list[int]:
        if netns_inode(self.netns) is None:
            return []
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False).stdout
        return [int(x) for x in out.split() if x.isdigit()]

    def start(self) -> None:
        """Create the netns, start virtlogd and libvirtd in it, wait for libvirtd."""
        if os.geteuid() != 0:
            raise SandboxError("the libvirt sandbox needs root (network namespaces, libvirtd)")
        ensure_packages()
        self.stop()  # leftovers of a crashed run with the same netns name
        foreign = [pid for pid in _running(FOREIGN_DAEMONS) if shares_run_libvirt(pid)]
        if foreign:
            raise SandboxError(
                f"a libvirt daemon not started by this sandbox is running (PIDs {foreign}); "
                "stop it, or point the tests at it with LIBVM_TEST_URI"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.grant_kvm()
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        try:
            netns_exec(self.netns, ["ip", "link", "set", "lo", "up"])
            if any(shares_run_libvirt(pid) for pid in _running(("virtlogd",))):
                log.info("reusing the virtlogd already running on this machine")
            else:
                self._spawn("virtlogd")
            self._start_libvirtd()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def _spawn(self, daemon: str) -> int:
        pidfile = self._pidfile(daemon)
        pidfile.unlink(missing_ok=True)
        logfile = self.state_dir / f"{daemon}.log"
        env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{logfile}")
        exe = which(daemon) or daemon
        # stdio to a file, not a pipe: a daemon holding a pipe open would hang us.
        with open(self.state_dir / f"{daemon}.stderr", "ab") as err:
            rc = subprocess.run(
                ["ip", "netns", "exec", self.netns, exe, "--daemon", "--pid-file", str(pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=env,
                check=False,
            ).returncode
        if rc != 0:
            raise SandboxError(f"{daemon} failed to start ({rc}); see {self.state_dir}")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pid = self._pid(daemon)
            if pid is not None:
                log.info("%s running in netns %s as PID %d", daemon, self.netns, pid)
                return pid
            time.sleep(0.1)
        raise SandboxError(f"{daemon} did not start; see {logfile}")

    def _start_libvirtd(self) -> None:
        started = time.monotonic()
        pid = self._spawn("libvirtd")
        wait_for_libvirtd(pid, self.uri, self._socket_answers, started + self.timeout, self.state_dir / "libvirtd.log")

    @staticmethod
    def _socket_answers() -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(LIBVIRT_SOCK))
            except OSError:
                return False
        return True

    def restart_libvirtd(self) -> None:
        """Stop and start libvirtd in the same netns; guests and dnsmasq keep running."""
        pid = self._pid("libvirtd")
        if pid is not None:
            terminate([pid])
        self._start_libvirtd()

    def stop(self) -> None:
        """Kill our daemons and everything else in our netns, then delete it.

        Idempotent and stateless (uses the pidfiles and the netns), so it also
        cleans up after a crashed run.  Defined libvirt objects are not touched.
        """
        pid = self._pid("libvirtd")
        if pid is not None:
            terminate([pid])
        # qemu and dnsmasq outlive libvirtd; the netns holds only our processes.
        terminate(self._netns_pids())
        vl = self._pid("virtlogd")
        if vl is not None:
            terminate([vl])
        if netns_inode(self.netns) is not None:
            subprocess.run(["ip", "netns", "del", self.netns], check=True, capture_output=True)
            log.info("deleted netns %s", self.netns)
        for daemon in DAEMONS:
            self._pidfile(daemon).unlink(missing_ok=True)
        self.restore_kvm()

    def running(self) -> bool:
        return self._pid("libvirtd") is not None

    @staticmethod
    def grant_kvm() -> None:
        """Give /dev/kvm the ownership udev would (``root:kvm 0660``), remembering the original.

        A machine without udev has /dev/kvm as ``root:root 0600``. libvirt 9.0
        probes qemu's capabilities with kvm available, then validates its cache
        for the ``libvirt-qemu`` user (``virQEMUCapsKVMUsable``), who cannot open
        the device: "KVM was enabled when probing ..., but it is not available
        now", so it throws the cache away and re-probes qemu (seconds) on every
        call that needs capabilities, and concurrent defines queue for minutes.
        With udev's ownership both views agree and the cache holds.

        Why change the device rather than hide it from the daemon: libvirt
        gives every guest a private /dev and cannot carry a bind mount over
        /dev/kvm into it ("Unable to move ... mount to /dev/kvm"), and with
        udev's ownership the sandbox behaves like a stock Debian host. kvm is
        then offered, so guests that must run under TCG say ``virt_type="qemu"``.
        """
        grant_kvm(KVM_DEVICE, KVM_ORIGINAL)

    @staticmethod
    def restore_kvm() -> None:
        """Put /dev/kvm back as :meth:`grant_kvm` found it, once no libvirtd runs any more."""
        if not _running(("libvirtd",)):
            restore_kvm(KVM_DEVICE, KVM_ORIGINAL)


def grant_kvm(device: Path, record: Path, group: str = "kvm") -> None:
    """``chgrp group device; chmod g+rw device``, first saving owner, group and mode in ``record``.

    A record left by an earlier run (one that crashed before restoring) is
    kept: it holds the machine's real original.
    """
    if not device.exists():
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return  # no such group: qemu's user cannot be given access the udev way
    st = device.stat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_gid == gid and mode & 0o060 == 0o060:
        return
    if not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{st.st_uid} {st.st_gid} {mode:o}\n")
    os.chown(device, st.st_uid, gid)
    os.chmod(device, mode | 0o060)
    log.info("%s set to group %s, mode %o (restored on stop)", device, group, mode | 0o060)


def restore_kvm(device: Path, record: Path) -> None:
    """Undo :func:`grant_kvm` from ``record`` and remove the record (idempotent)."""
    if not record.exists():
        return
    uid, gid, mode = record.read_text().split()
    if device.exists():
        os.chown(device, int(uid), int(gid))
        os.chmod(device, int(mode, 8))
        log.info("%s restored to %s:%s %s", device, uid, gid, mode)
    record.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libvm.testing.sandbox")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--netns", default="libvm-test")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_action(Sandbox(args.netns), args.action, SandboxError)


if __name__ == "__main__":
    sys.exit(main())
