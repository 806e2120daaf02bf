"""The ``libvm`` command: libvm's API for shells and people with virsh habits.

One function per subcommand; each gets the open :class:`Hypervisor` and the parsed
arguments, and prints either a table or (``--json``) JSON. Errors become one line on
stderr and an exit code per kind of error (see ``docs/cli.md``)::

    libvm net reserve lab 52:54:00:12:34:56 192.168.150.88 --hostname pc001
    libvm vm create pc001 --network lab --ip 192.168.150.88 --disk /images/pc001.qcow2
    libvm --json vm wait-ip pc001 --timeout 60
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import logging
import operator
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .cli_output import Column, JsonEncoder, Record, print_table
from .cli_output import columns as _columns
from .cli_output import show as _show
from .domain import VM, NicFacts
from .errors import AddressConflict, AlreadyExists, HostKeyMismatch, InvalidSpec, LibvmError, NotFound, WaitTimeout
from .hypervisor import Hypervisor, connect
from .network import Network
from .values import Disk, Lease, Nic, Reservation

__all__ = ["EXIT_CODES", "JsonEncoder", "build_parser", "exit_code", "main", "print_table"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_INVALID = 2
EXIT_CONFLICT = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5
EXIT_LIBVIRT = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_BUG: "unexpected error (a bug in libvm: please report it with --debug's traceback)",
    EXIT_INVALID: "invalid input: a usage error or InvalidSpec",
    EXIT_CONFLICT: "conflict: AddressConflict (MAC, IP, hostname, subnet), AlreadyExists or HostKeyMismatch",
    EXIT_NOT_FOUND: "not found: NotFound (network, domain)",
    EXIT_TIMEOUT: "timeout: WaitTimeout",
    EXIT_LIBVIRT: "libvirt failure: LibvirtFailure and every other LibvmError",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_BROKEN_PIPE: "the reader of the output went away (`libvm vm list | head -1`), silently",
}

Handler = Callable[[Hypervisor, argparse.Namespace], None]


# -- records: what the commands print ----------------------------------------------


def _network_record(net: Network) -> Record:
    spec = net.spec()
    return {
        "name": net.name,
        "active": net.active,
        "persistent": net.persistent,
        "forward": spec.forward,
        "bridge": spec.bridge,
        "subnets": [ip.subnet.cidr for ip in spec.ips],
        "gateways": [ip.gateway for ip in spec.ips],
        "dhcp_ranges": [[start, end] for ip in spec.ips for start, end in ip.dhcp_ranges],
        "reservations": len(net.reservations()),
    }


NETWORK_COLUMNS: list[Column] = [
    *_columns("name", "active", "persistent", "forward", "bridge"),
    ("subnet", operator.itemgetter("subnets")),
    ("dhcp range", lambda r: [f"{start}-{end}" for start, end in r["dhcp_ranges"]]),
    *_columns("reservations"),
]


def _reservation_record(network: str, res: Reservation) -> Record:
    return {"network": network, "mac": res.mac, "ip": res.ip, "hostname": res.hostname, "client_id": res.client_id}


RESERVATION_COLUMNS: list[Column] = [
    *_columns("network"),
    ("mac", lambda r: r["mac"] if r["mac"] is not None else r["client_id"]),
    *_columns("ip", "hostname"),
]


def _lease_record(network: str, lease: Lease) -> Record:
    return {"network": network, "mac": lease.mac, "ip": lease.ip, "hostname": lease.hostname,
            "expires": lease.expires, "client_id": lease.client_id}


LEASE_COLUMNS: list[Column] = [
    *_columns("network", "mac", "ip", "hostname"),
    ("expires (utc)", operator.itemgetter("expires")),
    *_columns("client_id"),
]


def _vm_record(vm: VM, facts: NicFacts) -> Record:
    """The VM and its NICs on libvirt networks, from one reading of its definition."""
    state, interfaces = vm.state, vm.document().interfaces
    nics = []
    for interface in interfaces:
        if interface.network is None:
            continue
        reservation, lease = facts.of(vm, interface)
        nics.append({"network": interface.network, "mac": interface.mac, "model": interface.model or "virtio",
                     "ip": reservation.ip if reservation else None,
                     "hostname": reservation.hostname if reservation else None,
                     "leased_ip": lease.ip if lease else None})
    return {"name": vm.name, "state": str(state), "macs": [interface.mac for interface in interfaces], "nics": nics}


def _created_record(vm: VM) -> Record:
    """:func:`_vm_record`, with the host key libvm gave the guest and its login user."""
    login = vm.login
    key = vm.host_key
    return {**_vm_record(vm, NicFacts()), "host_key": key.fingerprint if key else None, "user": login.user}


def _of_nics(key: str) -> Callable[[Record], object]:
    """Every NIC's ``key`` that is set."""
    return lambda r: [nic[key] for nic in r["nics"] if nic[key] is not None]


VM_COLUMNS: list[Column] = [
    *_columns("name", "state", "macs"),
    ("networks", _of_nics("network")),
    ("reserved ip", _of_nics("ip")),
    ("leased ip", _of_nics("leased_ip")),
    ("hostname", _of_nics("hostname")),
]


# -- subcommands -----------------------------------------------------------------


def net_list(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm net list"""
    _show(args, [_network_record(net) for net in hv.networks()], NETWORK_COLUMNS)


def net_ensure(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm net ensure NAME SUBNET [--dhcp-range A B] [--forward MODE]"""
    net = hv.ensure_network(args.name, args.subnet, dhcp_range=args.dhcp_range, forward=args.forward)
    _show(args, _network_record(net), NETWORK_COLUMNS)


def net_reserve(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm net reserve NET MAC IP [--hostname H]"""
    if ":" in args.ip:  # libvirt binds IPv6 to a hostname or DUID, not to the MAC this command takes
        raise InvalidSpec("ip", args.ip, "'net reserve' reserves an IPv4 address for a MAC; an IPv6 address is "
                          "bound to a hostname or DHCPv6 DUID, which the command line does not offer: "
                          "use Network.reserve(None, ip, hostname) from Python, or Nic(ip6=...)")
    res = hv.network(args.network).reserve(args.mac, args.ip, args.hostname)
    _show(args, _reservation_record(args.network, res), RESERVATION_COLUMNS)


def net_reserve_many(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm net reserve-many NET FILE [--no-restart]: one host per line, ``MAC IP [HOSTNAME]``."""
    lines, hosts = _host_lines(args.file)
    try:
        done = hv.network(args.network).reserve_many(hosts, restart_idle=not args.no_restart)
    except (InvalidSpec, AddressConflict) as exc:  # hosts[i] is line lines[i] of the file: say so
        raise exc.relocated(lambda text: _at_line(text, args.file, lines)) from exc
    _show(args, [_reservation_record(args.network, res) for res in done], RESERVATION_COLUMNS)


def _at_line(text: str, path: str, lines: list[int]) -> str:
    """``text`` with each ``hosts[i]`` replaced by the file position it came from."""
    return re.sub(r"hosts\[(\d+)\]", lambda m: f"{path}:{lines[int(m.group(1))]}", text)


def _host_lines(path: str) -> tuple[list[int], list[tuple[str, ...]]]:
    """``MAC IP [HOSTNAME]`` per line of ``path`` (``-``: standard input), with their line numbers.

    ``#`` comments and blank lines are skipped; a UTF-8 byte order mark is ignored.
    """
    if not path:
        raise InvalidSpec("file", path, "a file path, or - for standard input")
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec("file", path, f"cannot read it: {exc}") from None
    lines, hosts = [], []
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        fields = tuple(line.split("#", 1)[0].split())
        if not fields:
            continue
        if len(fields) not in (2, 3):
            shown = line.strip() if len(line.strip()) <= 120 else line.strip()[:120] + "..."
            raise InvalidSpec(f"{path}:{number}", shown, f"expected MAC IP [HOSTNAME], got {len(fields)} fields")
        lines.append(number)
        hosts.append(fields)
    return lines, hosts


def net_release(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm net release NET (MAC | --ip IP): prints what was removed (nothing the second time)."""
    removed = hv.network(args.network).release(args.mac, ip=args.ip)
    _show(args, [_reservation_record(args.network, res) for res in removed], RESERVATION_COLUMNS)


def net_reservations(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm net reservations NET"""
    net = hv.network(args.network)
    _show(args, [_reservation_record(net.name, res) for res in net.reservations()], RESERVATION_COLUMNS)


def net_leases(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm net leases NET"""
    net = hv.network(args.network)
    _show(args, [_lease_record(net.name, lease) for lease in net.leases()], LEASE_COLUMNS)


def vm_list(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm vm list"""
    facts = NicFacts()
    _show(args, [_vm_record(vm, facts) for vm in hv.vms()], VM_COLUMNS)


def fleet_vm_list(uris: list[str], args: argparse.Namespace) -> int:
    """libvm --uri A --uri B vm list: every host's domains with a host column (libvm.Fleet).

    A host that did not answer is a row with its error (``"error"`` in JSON), never a
    failure of the others; the exit code is then EXIT_LIBVIRT, so a script can tell
    a partial listing from a whole one.
    """
    from .fleet import Fleet

    with Fleet(uris) as fleet:
        listing = fleet.vms()
        facts = NicFacts()
        records = [{"host": vm.hypervisor.uri, **_vm_record(vm, facts), "error": None}
                   for vm in listing if vm.hypervisor is not None]
        records += [{"host": uri, "name": None, "state": "unreachable", "macs": [], "nics": [], "error": error}
                    for uri, error in listing.errors.items()]
        _show(args, records, [("host", lambda r: r["host"]), *VM_COLUMNS, ("error", lambda r: r["error"] or "")])
    for uri, error in listing.errors.items():
        print(f"libvm: unreachable: {uri}: {' '.join(str(error).split())}", file=sys.stderr)
    return EXIT_LIBVIRT if listing.errors else EXIT_OK


def vm_create(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm vm create NAME [--network NET] [--image POOL/VOL --ssh-key FILE ...]: one NIC, its address reserved."""
    from .cli_cloud import cloud_init_of, image_disk

    cloud_init = cloud_init_of(args)
    image = [image_disk(hv, args.image, args.size)] if args.image else []
    vm = hv.create_vm(
        args.name,
        memory=args.memory,
        vcpus=args.vcpus,
        nics=[Nic(args.network, ip=args.ip, mac=args.mac)],
        disks=[*image, *(Disk(path, format=args.disk_format) for path in args.disk)],
        cloud_init=cloud_init,
        kernel=args.kernel,
        initrd=args.initrd,
        cmdline=args.cmdline,
        virt_type=args.virt_type,
        start=args.start,
    )
    _show(args, _created_record(vm), VM_COLUMNS)
    if cloud_init is not None and not args.json and vm.host_key is not None:
        print(f"host key {vm.host_key.fingerprint} (libvm vm ssh checks it)", file=sys.stderr)


def vm_wait_ip(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm vm wait-ip NAME [--timeout S]: the first NIC's address, once leased."""
    ip = hv.vm(args.name).wait_for_ip(timeout=args.timeout)
    if args.json:
        print(json.dumps({"name": args.name, "ip": ip}, cls=JsonEncoder, indent=2))
    else:
        print(ip)


def vm_delete(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm vm delete NAME [--storage]: destroy, undefine, release its reservations and leases."""
    hv.vm(args.name).delete(storage=args.storage)
    if args.json:
        print(json.dumps({"name": args.name, "deleted": True}, indent=2))
    else:
        print(f"deleted {args.name}")


def gc(hv: Hypervisor, args: argparse.Namespace) -> None:
    """libvm gc [--remove]: reservations whose MAC is on no domain."""
    orphans = hv.gc(remove=args.remove)
    records = [{**_reservation_record(network, res), "removed": args.remove} for network, res in orphans]
    _show(args, records, [*RESERVATION_COLUMNS, ("removed", lambda r: r["removed"])])
    if orphans and not args.remove and not args.json:
        print(f"{len(orphans)} reservation(s) of MACs on no domain; 'libvm gc --remove' releases them",
              file=sys.stderr)


# -- the parser ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (exit code 2, like every invalid input)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _global_options(*, defaults: bool) -> _Parser:
    """--uri, --json, --debug: accepted before the subcommand and after it.

    The subcommands' copies default to SUPPRESS, so they do not reset an option given
    before the subcommand; argparse shares action objects between a parent and its
    children, hence one copy per role. A subparser fills a namespace of its own and
    copies it over the parent's (argparse, 3.11), so an ``append`` after the command
    would replace the URIs given before it: those go to ``uri_after`` and
    :func:`_uris` joins both.
    """
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    options = _Parser(add_help=False)
    options.add_argument("--uri", action="append", default=default(None), dest="uri" if defaults else "uri_after",
                         help="libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system); "
                              "repeat it for 'vm list' across several hosts")
    options.add_argument("--json", action="store_true", default=default(False),
                         help="print JSON instead of a table")
    options.add_argument("--debug", action="store_true", default=default(False),
                         help="show tracebacks and libvm's log on stderr")
    return options


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each leaf parser sets ``handler`` to its subcommand."""
    common = _global_options(defaults=False)
    exit_codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = _Parser(prog="libvm", parents=[_global_options(defaults=True)],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="libvirt VMs that get the IP address you chose (fixed MAC + DHCP reservation).",
                     epilog=f"exit codes:\n{exit_codes}")
    groups = parser.add_subparsers(title="commands", metavar="{net,pool,volume,vm,gc}", required=True)

    def command(sub: argparse._SubParsersAction[_Parser], name: str, handler: Handler,
                help_text: str) -> argparse.ArgumentParser:
        leaf = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        leaf.set_defaults(handler=handler, command_parser=leaf)
        return leaf

    net = groups.add_parser("net", parents=[common], help="networks, DHCP reservations and leases",
                            description="networks, DHCP reservations and leases")
    net_sub = net.add_subparsers(title="commands", required=True, metavar="COMMAND")
    command(net_sub, "list", net_list, "list every network")
    p = command(net_sub, "ensure", net_ensure, "define and start a network, or check the existing one")
    p.add_argument("name", metavar="NAME")
    p.add_argument("subnet", metavar="SUBNET", help="CIDR, e.g. 192.168.150.0/24 (gateway .1)")
    p.add_argument("--dhcp-range", nargs=2, metavar=("START", "END"), help="the dynamic DHCP range")
    p.add_argument("--forward", default="nat", choices=("nat", "route", "open", "none"),
                   help="forward mode (default: nat; none: isolated)")
    p = command(net_sub, "reserve", net_reserve, "bind MAC to IP in the network's DHCP")
    p.add_argument("network", metavar="NET")
    p.add_argument("mac", metavar="MAC")
    p.add_argument("ip", metavar="IP")
    p.add_argument("--hostname", help="DHCP and DNS name of the host")
    p = command(net_sub, "reserve-many", net_reserve_many,
                "reserve many hosts at once, all or nothing (errors name FILE:LINE)")
    p.add_argument("network", metavar="NET")
    p.add_argument("file", metavar="FILE", help="one host per line: MAC IP [HOSTNAME]; '#' comments; - for stdin")
    p.add_argument("--no-restart", action="store_true",
                   help="never restart an idle network (one live update per host instead)")
    p = command(net_sub, "release", net_release, "remove the reservations of MAC, of IP, or of that pair")
    p.add_argument("network", metavar="NET")
    p.add_argument("mac", metavar="MAC", nargs="?")
    p.add_argument("--ip", help="release by address")
    p = command(net_sub, "reservations", net_reservations, "list the network's DHCP reservations")
    p.add_argument("network", metavar="NET")
    p = command(net_sub, "leases", net_leases, "list the leases dnsmasq handed out")
    p.add_argument("network", metavar="NET")

    vm = groups.add_parser("vm", parents=[common], help="domains", description="domains")
    vm_sub = vm.add_subparsers(title="commands", required=True, metavar="COMMAND")
    command(vm_sub, "list", vm_list, "list every domain with its MACs and addresses")
    p = command(vm_sub, "create", vm_create, "reserve an address, define the domain and boot it")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--network", default="default", metavar="NET",
                   help="the network of the (one) NIC (default: default, libvirt's stock network)")
    p.add_argument("--ip", help="the NIC's address (default: the network's lowest free one)")
    p.add_argument("--mac", help="the NIC's MAC (default: derived from network and IP)")
    p.add_argument("--memory", default="512", metavar="M", help="MiB, or e.g. 256MiB, 1G (default: 512)")
    p.add_argument("--vcpus", type=int, default=1, metavar="N", help="virtual CPUs (default: 1)")
    p.add_argument("--disk", action="append", default=[], metavar="PATH",
                   help="an existing image on the daemon's host (repeat for more disks)")
    p.add_argument("--disk-format", default="qcow2", choices=("qcow2", "raw"),
                   help="format of every --disk (default: qcow2)")
    p.add_argument("--kernel", metavar="PATH", help="direct kernel boot")
    p.add_argument("--initrd", metavar="PATH")
    p.add_argument("--cmdline", metavar="TEXT", help="kernel command line")
    p.add_argument("--virt-type", choices=("kvm", "qemu"),
                   help="default: $LIBVM_VIRT_TYPE, else kvm if libvirt offers it")
    p.add_argument("--no-start", dest="start", action="store_false", help="define the domain, do not boot it")
    cloud = p.add_argument_group("cloud image", "boot a qcow2 overlay of a volume, with a cloud-init seed")
    cloud.add_argument("--image", metavar="POOL/VOL", help="the base image volume (see 'libvm volume upload')")
    cloud.add_argument("--size", metavar="S", help="the overlay's virtual size, e.g. 10GiB (default: the image's)")
    cloud.add_argument("--ssh-key", metavar="FILE",
                       help="a public key (.pub; its private half beside it is what 'vm ssh' uses) or a private key "
                            "with its .pub beside it; the guest also gets a host key of libvm's")
    cloud.add_argument("--user", help="the login user the seed names (default: the image's usual one, by its "
                                      "name: debian, ubuntu, fedora...)")
    cloud.add_argument("--cloud-config", metavar="FILE", help="your own #cloud-config user-data, merged")
    cloud.add_argument("--static", action="store_true",
                       help="write the reserved address into the guest (no DHCP)")
    p = command(vm_sub, "wait-ip", vm_wait_ip, "wait until the guest holds its reserved address; print it")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds (default: 120)")
    from .cli_cloud import add_commands

    add_commands(groups, vm_sub, command, common)
    p = command(vm_sub, "delete", vm_delete, "destroy and undefine; release its reservations and leases")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--storage", action="store_true", help="also the volumes libvm created for it")

    p = command(groups, "gc", gc, "list reservations whose MAC is on no domain")
    p.add_argument("--remove", action="store_true", help="release them")
    return parser


# -- errors and main -------------------------------------------------------------


def exit_code(error: LibvmError) -> int:
    """The documented exit code of ``error``."""
    if isinstance(error, InvalidSpec):
        return EXIT_INVALID
    if isinstance(error, (AddressConflict, AlreadyExists, HostKeyMismatch)):
        return EXIT_CONFLICT
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, WaitTimeout):
        return EXIT_TIMEOUT
    return EXIT_LIBVIRT


def _kind(error: BaseException) -> str:
    """``ip-reserved`` for a conflict (its stable reason code), else ``not-found``, ``wait-timeout``..."""
    if isinstance(error, AddressConflict):
        return error.reason
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(error).__name__).lower()


def _option(args: argparse.Namespace, error: LibvmError) -> str:
    """`` (--ip)``: the command-line argument an ``InvalidSpec`` field came from, if known.

    The API names its parameters (``nic.ip``, ``nics[0].mac``, ``dhcp_range``); the
    user typed ``--ip``, ``MAC`` or ``--dhcp-range``.
    """
    if not isinstance(error, InvalidSpec) or "command_parser" not in args:
        return ""
    dest = re.sub(r"^nics?(\[0\])?\.|\[\d+\]$", "", re.sub(r"^disks\[\d+\](\.path)?$", "disk", error.field))
    for action in args.command_parser._actions:
        if action.dest == dest and action.dest != "help":
            name = action.option_strings[0] if action.option_strings else action.metavar
            return f" ({name})" if isinstance(name, str) else ""
    return ""


def _fail(args: argparse.Namespace, error: BaseException, what: str, code: int) -> int:
    if args.debug:
        traceback.print_exception(type(error), error, error.__traceback__)
    # One line whatever libvirt's message holds, so `2>>log` stays one line per failure.
    hint = _option(args, error) if isinstance(error, LibvmError) else ""
    message = " ".join(str(error).split())
    print(f"libvm: {what}{': ' if message else ''}{message}{hint}", file=sys.stderr)
    return code


@functools.cache  # once per process: each call would open /dev/null again
def _quiet_libxml2() -> None:
    """Send libxml2's generic errors to /dev/null, so an error stays one line on stderr.

    libvirt parses a test driver's file with the system libxml2, whose default
    handler prints "I/O warning : failed to load external entity ..." on stderr
    before libvirt reports the same failure (which libvm turns into its one line).
    The command line only: a library must not change its process's handlers.
    """
    try:
        xml2 = ctypes.CDLL("libxml2.so.2")  # libvirt's copy, already loaded; lxml has its own
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        sink = libc.fopen(os.devnull.encode(), b"w")
    except (OSError, AttributeError):  # no system libxml2 (nothing to silence)
        return
    if sink:
        # A NULL handler is libxml2's default one, which writes to the context, a FILE*;
        # per thread, hence the default for new threads too.
        xml2.xmlSetGenericErrorFunc(ctypes.c_void_p(sink), None)
        xml2.xmlThrDefSetGenericErrorFunc(ctypes.c_void_p(sink), None)


def _uris(args: argparse.Namespace) -> list[str | None]:
    """Every --uri, those before the command first; ``[None]`` (the default URI) for none."""
    given: list[str | None] = [*(args.uri or ()), *getattr(args, "uri_after", ())]
    return given or [None]


def _parse(argv: list[str]) -> argparse.Namespace:
    """The parsed command line; ``vm ssh``'s remote command (after ``--``) is set aside first.
    Arguments nobody takes are the command's own usage error, as a missing one is."""
    from .cli_cloud import split_command, vm_ssh

    head, remote = split_command(argv)
    if remote is not None:
        args, extra = build_parser().parse_known_args(head)
        if args.handler is vm_ssh and not extra:
            args.command = remote
            return args
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_INVALID
    _quiet_libxml2()
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(levelname)s: %(message)s")
    uris = _uris(args)
    if len(set(uris)) < len(uris):
        twice = next(uri for uri in uris if uris.count(uri) > 1)
        print(f"libvm: invalid-spec: --uri {twice} is given twice", file=sys.stderr)
        return EXIT_INVALID
    if len(uris) > 1 and args.handler is not vm_list:
        print("libvm: error: only 'vm list' takes several --uri (see 'libvm --help')", file=sys.stderr)
        return EXIT_INVALID
    try:
        if len(uris) > 1:
            code = fleet_vm_list([uri for uri in uris if uri is not None], args)
            sys.stdout.flush()
            return code
        else:
            with connect(uris[0]) as hv:
                args.handler(hv, args)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush again at exit; write the rest to nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt as error:
        return _fail(args, error, "interrupted", EXIT_INTERRUPTED)
    except LibvmError as error:
        return _fail(args, error, _kind(error), exit_code(error))
    except Exception as error:  # a bug: still one line, the traceback with --debug
        return _fail(args, error, f"internal error: {type(error).__name__}", EXIT_BUG)
    return EXIT_OK
