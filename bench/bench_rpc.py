"""libvirt RPCs per libvm call, next to raw libvirt-python making the essential calls, on a real daemon.

Counts the messages the client sends to libvirtd (each is one round trip:
free on a local socket, a network delay each over ``qemu+ssh://``) for:

- ``create_vm``: ``hv.create_vm(name, nics=[libvm.Nic(net)], kernel=...,
  start=False)`` (the tiny test guest, defined, not booted; libvm picks the IP
  and the MAC), as a connection's first call. Raw: ``networkLookupByName``,
  ``update`` ADD_LAST (live and persistent), ``defineXML``.
- ``create_vm_warm``: the same on a connection that has read the host's
  domains once already (libvm's domain index, kept fresh by libvirt's events).
- ``delete``: ``vm.delete()`` of that VM (``hv.vm(name)`` is looked up before
  counting). Raw, on a handle looked up before counting: ``isActive`` (destroy
  if running), ``undefine``, ``networkLookupByName``, ``update`` DELETE.
- ``reserve``: ``net.reserve(mac, ip)`` (``hv.network(name)`` before
  counting). Raw: one ``update`` ADD_LAST on a handle looked up before.

Each with 0 and 20 other domains defined on the host (inert: defined, never
started, one NIC on the benchmark's network; removed afterwards). Every
measured call runs in its own Python subprocess started with libvirt's client
log on (``LIBVIRT_LOG_FILTERS=1:rpc.netclient``, ``LIBVIRT_LOG_OUTPUTS``); it
connects and looks up what it needs, notes the log's size, makes the call,
notes the size again. The benchmark then counts the ``RPC_CLIENT_MSG_TX_QUEUE``
lines in between and names their procedures (the ``proc=`` field, numbered as
in libvirt's ``src/remote/remote_protocol.x``). Objects already on the host
(other domains and networks) count too: the header says how many there were.

Prints: operation, other domains, libvm RPCs, raw RPCs, ratio (libvm / raw),
libvm's top procedures; then every procedure of every call. Starts the sandbox
(root; or uses ``$LIBVM_URI``). About ten seconds.
Run: ``sudo .venv/bin/python bench/bench_rpc.py [--others 0,20] [--small]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
from _common import DOMAIN_XML, FLAGS, SECTION, daemon
from _common import cleanup as remove_domains

import libvm
from libvm.testing import GuestImage, build_guest

NETWORK = "libvmtest-bench-rpc"
PREFIX = "libvmtest-rpc-"
SUBNET = "10.219.0.0/16"
DHCP_RANGE = ("10.219.255.200", "10.219.255.250")
TX = re.compile(r"RPC_CLIENT_MSG_TX_QUEUE: .* prog=(\d+) vers=\d+ proc=(\d+) ")
REMOTE_PROGRAM = 0x20008086
KEEPALIVE_PROGRAM = 0x6B656570
#: The remote procedures libvm and the raw calls use (libvirt's remote_protocol.x; the numbers never change).
PROCEDURES = {
    1: "CONNECT_OPEN", 2: "CONNECT_CLOSE", 7: "CONNECT_GET_CAPABILITIES", 9: "DOMAIN_CREATE",
    11: "DOMAIN_DEFINE_XML", 12: "DOMAIN_DESTROY", 14: "DOMAIN_GET_XML_DESC", 15: "DOMAIN_GET_AUTOSTART",
    16: "DOMAIN_GET_INFO", 23: "DOMAIN_LOOKUP_BY_NAME", 24: "DOMAIN_LOOKUP_BY_UUID",
    29: "DOMAIN_SET_AUTOSTART", 35: "DOMAIN_UNDEFINE", 39: "NETWORK_CREATE", 41: "NETWORK_DEFINE_XML",
    42: "NETWORK_DESTROY", 43: "NETWORK_GET_XML_DESC", 44: "NETWORK_GET_AUTOSTART",
    45: "NETWORK_GET_BRIDGE_NAME", 46: "NETWORK_LOOKUP_BY_NAME", 47: "NETWORK_LOOKUP_BY_UUID",
    48: "NETWORK_SET_AUTOSTART", 49: "NETWORK_UNDEFINE", 59: "CONNECT_GET_HOSTNAME",
    60: "CONNECT_SUPPORTS_FEATURE", 66: "AUTH_LIST", 84: "STORAGE_POOL_LOOKUP_BY_NAME",
    97: "STORAGE_VOL_LOOKUP_BY_PATH", 110: "CONNECT_GET_URI", 150: "DOMAIN_IS_ACTIVE",
    151: "DOMAIN_IS_PERSISTENT", 152: "NETWORK_IS_ACTIVE", 153: "NETWORK_IS_PERSISTENT",
    157: "CONNECT_GET_LIB_VERSION", 196: "DOMAIN_CREATE_WITH_FLAGS", 212: "DOMAIN_GET_STATE",
    231: "DOMAIN_UNDEFINE_FLAGS", 234: "DOMAIN_DESTROY_FLAGS", 264: "DOMAIN_SET_METADATA",
    265: "DOMAIN_GET_METADATA", 273: "CONNECT_LIST_ALL_DOMAINS", 281: "CONNECT_LIST_ALL_STORAGE_POOLS",
    282: "STORAGE_POOL_LIST_ALL_VOLUMES", 283: "CONNECT_LIST_ALL_NETWORKS", 291: "NETWORK_UPDATE",
    341: "NETWORK_GET_DHCP_LEASES", 342: "CONNECT_GET_DOMAIN_CAPABILITIES", 350: "DOMAIN_DEFINE_XML_FLAGS",
}
OPERATIONS = ("create_vm", "create_vm_warm", "delete", "reserve")


# ---- inside the measured subprocess -------------------------------------------------------------------------

#: Prepares one measured call from its job: looks up what it needs (not counted), returns the call.
Prepare = Callable[[dict[str, Any]], Callable[[], object]]


def libvm_create(job: dict[str, Any]) -> Callable[[], object]:
    hv = libvm.connect(job["uri"])
    return lambda: hv.create_vm(job["name"], memory="256MiB", nics=[libvm.Nic(NETWORK)], kernel=job["kernel"],
                                initrd=job["initrd"], cmdline=job["cmdline"], virt_type="qemu", start=False)


def libvm_create_warm(job: dict[str, Any]) -> Callable[[], object]:
    """A create_vm that is not the connection's first: the domain index has read the host
    (a long-running program or notebook; the first call of a connection reads each domain once)."""
    hv = libvm.connect(job["uri"])
    hv.mac_owners()
    return lambda: hv.create_vm(job["name"], memory="256MiB", nics=[libvm.Nic(NETWORK)], kernel=job["kernel"],
                                initrd=job["initrd"], cmdline=job["cmdline"], virt_type="qemu", start=False)


def raw_create(job: dict[str, Any]) -> Callable[[], object]:
    conn = libvirt.open(job["uri"])

    def create() -> None:
        net = conn.networkLookupByName(NETWORK)
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, SECTION, -1,
                   f"<host mac='{job['mac']}' name='{job['name']}' ip='{job['ip']}'/>", FLAGS)
        conn.defineXML(DOMAIN_XML.format(name=job["name"], kernel=job["kernel"], initrd=job["initrd"],
                                         cmdline=job["cmdline"], mac=job["mac"], network=NETWORK))
    return create


def libvm_delete(job: dict[str, Any]) -> Callable[[], object]:
    return libvm.connect(job["uri"]).vm(job["name"]).delete


def raw_delete(job: dict[str, Any]) -> Callable[[], object]:
    conn = libvirt.open(job["uri"])
    dom = conn.lookupByName(job["name"])

    def delete() -> None:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.networkLookupByName(NETWORK).update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, SECTION, -1,
                                                 f"<host mac='{job['mac']}' ip='{job['ip']}'/>", FLAGS)
    return delete


def libvm_reserve(job: dict[str, Any]) -> Callable[[], object]:
    net = libvm.connect(job["uri"]).network(NETWORK)
    return lambda: net.reserve(job["mac"], job["ip"])


def raw_reserve(job: dict[str, Any]) -> Callable[[], object]:
    net = libvirt.open(job["uri"]).networkLookupByName(NETWORK)
    return lambda: net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, SECTION, -1,
                              f"<host mac='{job['mac']}' ip='{job['ip']}'/>", FLAGS)


CALLS: dict[tuple[str, str], Prepare] = {
    ("create_vm", "libvm"): libvm_create, ("create_vm", "raw"): raw_create,
    ("create_vm_warm", "libvm"): libvm_create_warm, ("create_vm_warm", "raw"): raw_create,
    ("delete", "libvm"): libvm_delete, ("delete", "raw"): raw_delete,
    ("reserve", "libvm"): libvm_reserve, ("reserve", "raw"): raw_reserve,
}


def child(job: dict[str, Any]) -> None:
    """Make one call; print the client log's byte offsets before and after it."""
    call = CALLS[job["operation"], job["side"]](job)
    log = Path(job["log"])
    before = log.stat().st_size
    call()
    print(json.dumps({"before": before, "after": log.stat().st_size}))


# ---- the benchmark --------------------------------------------------------------------------------------------

def procedure(prog: int, proc: int) -> str:
    if prog == REMOTE_PROGRAM:
        return PROCEDURES.get(proc, f"proc {proc}")
    if prog == KEEPALIVE_PROGRAM:
        return f"keepalive {'PING' if proc == 1 else 'PONG' if proc == 2 else proc}"
    return f"prog {prog:#x} proc {proc}"


def count(job: dict[str, Any], tmp: Path) -> collections.Counter[str]:
    """Run one call in a fresh interpreter with libvirt's client log on: its RPCs by procedure."""
    log = tmp / f"{job['operation']}-{job['side']}-{job['others']}.log"
    log.write_bytes(b"")
    env = dict(os.environ, LIBVIRT_LOG_FILTERS="1:rpc.netclient", LIBVIRT_LOG_OUTPUTS=f"1:file:{log}")
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps({**job, "log": str(log)})],
                          capture_output=True, text=True, env=env, check=False, timeout=300)
    if done.returncode:
        raise RuntimeError(f"{job['side']} {job['operation']} failed: {done.stderr.strip()[-2000:]}")
    span = json.loads(done.stdout.strip().splitlines()[-1])
    text = log.read_bytes()[span["before"]:span["after"]].decode(errors="replace")
    return collections.Counter(procedure(int(m[1]), int(m[2])) for m in TX.finditer(text))


def remove_leftovers(hv: libvm.Hypervisor) -> None:
    """Remove the benchmark's domains and network: also what a crashed run left."""
    remove_domains(hv, PREFIX)
    if NETWORK in {net.name for net in hv.networks()}:
        hv.network(NETWORK).delete()


def others(hv: libvm.Hypervisor, guest: GuestImage, number: int) -> None:
    """Define ``number`` inert domains (never started), each with a NIC on the benchmark's network."""
    for index in range(number):
        hv.handle.defineXML(DOMAIN_XML.format(name=f"{PREFIX}other-{index}", kernel=guest.kernel,
                                              initrd=guest.initrd, cmdline=guest.cmdline,
                                              mac=f"52:54:00:da:00:{index:02x}", network=NETWORK))


def measure(hv: libvm.Hypervisor, uri: str, guest: GuestImage, existing: int, tmp: Path,
            ) -> Iterator[tuple[str, dict[str, collections.Counter[str]]]]:
    """(operation, {side: RPCs by procedure}) with ``existing`` other domains defined."""
    base = {"uri": uri, "others": existing, "kernel": str(guest.kernel), "initrd": str(guest.initrd),
            "cmdline": guest.cmdline}
    net = hv.network(NETWORK)
    raw_vm = {"name": f"{PREFIX}raw", "mac": "52:54:00:db:00:01", "ip": "10.219.1.1"}
    libvm_vm = {"name": f"{PREFIX}libvm"}
    # create then delete per side, so both creations see exactly ``existing`` other domains.
    created = {"libvm": count({**base, **libvm_vm, "operation": "create_vm", "side": "libvm"}, tmp)}
    deleted = {"libvm": count({**base, **libvm_vm, "operation": "delete", "side": "libvm"}, tmp)}
    warm = {"libvm": count({**base, **libvm_vm, "operation": "create_vm_warm", "side": "libvm"}, tmp)}
    count({**base, **libvm_vm, "operation": "delete", "side": "libvm"}, tmp)
    created["raw"] = count({**base, **raw_vm, "operation": "create_vm", "side": "raw"}, tmp)
    deleted["raw"] = count({**base, **raw_vm, "operation": "delete", "side": "raw"}, tmp)
    warm["raw"] = created["raw"]
    yield "create_vm", created
    yield "create_vm_warm", warm
    yield "delete", deleted
    reserved = {}
    for side, (mac, ip) in (("libvm", ("52:54:00:db:01:01", "10.219.2.1")),
                            ("raw", ("52:54:00:db:01:02", "10.219.2.2"))):
        reserved[side] = count({**base, "mac": mac, "ip": ip, "operation": "reserve", "side": side}, tmp)
        net.release(mac)
    yield "reserve", reserved
    if net.reservations():  # every delete and release above must have removed its reservation
        raise RuntimeError(f"reservations left on {NETWORK}: {net.reservations()}")


def top(calls: collections.Counter[str], most: int | None = None) -> str:
    return ", ".join(f"{name} {n}" for name, n in calls.most_common(most))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others", default="0,20", help="other domains defined on the host, per row")
    parser.add_argument("--small", action="store_true", help="0 and 2 other domains (CI)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    steps = [0, 2] if args.small else sorted({int(x) for x in args.others.split(",")})
    if not 0 <= steps[0] <= steps[-1] <= 250:
        parser.error("--others: numbers from 0 to 250")
    guest = build_guest()
    rows: list[tuple[str, int, dict[str, collections.Counter[str]]]] = []
    with daemon() as uri, libvm.connect(uri) as hv, tempfile.TemporaryDirectory(prefix="libvm-rpc-") as name:
        remove_leftovers(hv)
        host = (len(hv.vms()), len(hv.networks()))
        version = hv.handle.getLibVersion()
        hv.ensure_network(NETWORK, SUBNET, dhcp_range=DHCP_RANGE, forward="none")
        try:
            for existing in steps:
                others(hv, guest, existing)
                try:
                    rows += [(op, existing, sides) for op, sides in measure(hv, uri, guest, existing, Path(name))]
                finally:
                    remove_domains(hv, f"{PREFIX}other-")
        finally:
            remove_leftovers(hv)
    rows.sort(key=lambda row: (OPERATIONS.index(row[0]), row[1]))
    print(f"libvirt RPCs (client->daemon messages) per call; libvirt {version // 1_000_000}."
          f"{version // 1000 % 1000}.{version % 1000}, libvm {libvm.__version__}; besides the benchmark's, "
          f"the host held {host[0]} domain(s) and {host[1]} network(s)")
    print(f"{'operation':16} {'others':>6} {'libvm':>6} {'raw':>5} {'ratio':>7}  top procedures (libvm)")
    for op, existing, sides in rows:
        mine, theirs = sum(sides["libvm"].values()), sum(sides["raw"].values())
        print(f"{op:16} {existing:6} {mine:6} {theirs:5} {mine / theirs:6.1f}x  {top(sides['libvm'], 3)}")
    print("where the calls go:")
    for op, existing, sides in rows:
        for side in ("libvm", "raw"):
            print(f"  {op} ({existing} others), {side}: {top(sides[side])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
