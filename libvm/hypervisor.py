"""The connection to libvirt: the one place that calls ``libvirt.open``."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import netaddr

from . import _live
from ._live import Live, Unsupported, open_connection
from ._log import log
from ._xml import parse as parse_xml
from .addressing import check_name, dns_label, format_mac
from .domain import VM, wait_for_leases
from .domainxml import VIRT_TYPES, DomainSpec, GuestLogin, mac_list
from .errors import (
    AlreadyExists,
    InvalidSpec,
    LibvmError,
    NetworkMismatch,
    NotFound,
    SubnetOverlap,
)
from .network import Network
from .networkxml import MAX_XML_BYTES, NetworkSpec, too_big
from .progress import Progress, ProgressArg
from .reservations import HostLike, parse_hosts, plan_hosts
from .storagexml import pool_xml, read_pool
from .values import Disk, Nic, PathLike, Reservation, Vnc, as_items, check_bool, check_path, check_poll, read_all
from .views import NetworkList, Rendered, Table, VMList

if TYPE_CHECKING:  # loaded on first use: most programs never build a seed or a pool
    from . import provision
    from .cloudinit import CloudInit, SeedNic
    from .storage import Pool


DEFAULT_URI = "qemu:///system"


def connect(uri: str | None = None) -> Hypervisor:
    """Open a libvirt connection.

    ``uri`` defaults to ``$LIBVIRT_DEFAULT_URI``, else ``qemu:///system``. Use
    the result as a context manager to close the connection. Raises
    :class:`InvalidSpec` for a URI that is not a string, :class:`LibvirtFailure`
    if libvirt cannot connect.
    """
    if uri is not None and (not isinstance(uri, str) or not uri.strip() or not uri.isprintable()):
        raise InvalidSpec("uri", uri, "a libvirt URI such as 'qemu:///system'")
    uri = uri or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI
    return Hypervisor(open_connection(uri), uri)


class Hypervisor(Rendered):
    """A libvirt connection: networks, VMs and the rules that keep addresses unique.

    In Jupyter or IPython it shows its networks and VMs as tables (see :mod:`libvm.views`).
    """

    def __init__(self, conn: _live.ConnectionHandle, uri: str) -> None:
        self._live = Live(conn, uri)
        self.uri = uri

    def __repr__(self) -> str:
        return f"<libvm.Hypervisor {self.uri!r}{' (closed)' if self._live.closed else ''}>"

    def tables(self) -> list[Table]:
        """Its networks' table, then its VMs' table (one row per NIC)."""
        networks, vms = self.networks().table(), self.vms().table()
        return [dataclasses.replace(networks, caption=f"{self.uri}: {networks.caption}"),
                dataclasses.replace(vms, caption=f"{self.uri}: {vms.caption}")]

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent). Afterwards every call on this object and
        on the networks and VMs got from it raises :class:`ConnectionClosed`."""
        self._live.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._live.closed

    @property
    def handle(self) -> _live.ConnectionHandle:
        """The underlying ``libvirt.virConnect``, for what libvm does not cover."""
        return self._live.conn

    # -- networks ----------------------------------------------------------------

    def network(self, name: str) -> Network:
        """The existing network ``name``; :class:`NotFound` if there is none."""
        return Network.named(self._live, check_name(name, lookup=True))

    def networks(self) -> NetworkList:
        """Every network, active or not, sorted by name (a list that renders as a table)."""
        return NetworkList(sorted((Network(self._live, n) for n in self._live.networks()), key=lambda n: n.name))

    def ensure_network(
        self,
        name: str,
        subnet: str,
        *,
        dhcp_range: Sequence[str] | None = None,
        forward: str = "nat",
        bridge: str | None = None,
        domain: str | None = None,
        subnet6: str | None = None,
        dhcp_range6: Sequence[str] | None = None,
        hosts: Iterable[HostLike] = (),
    ) -> Network:
        """Define, start and autostart network ``name``, or check the existing one.

        An existing network must have the same subnet, gateway, DHCP range and
        forward mode, else :class:`NetworkMismatch` names the first difference.
        A new subnet that overlaps another network's raises :class:`SubnetOverlap`.

        ``hosts``: DHCP reservations to make, as for :meth:`Network.reserve_many`
        (:class:`Reservation` objects or ``(mac, ip[, hostname])`` tuples),
        checked against each other first. A new network is defined with all
        of them in its one definition: a lab of 1,000 reservations costs one
        define, not 1,000 live updates. On an existing network the ones not
        there yet are added with :meth:`Network.reserve_many` (a conflict
        raises an :class:`AddressConflict` and adds none).
        """
        wanted = NetworkSpec.build(name, subnet, dhcp_range=dhcp_range, forward=forward,
                                   bridge=bridge, domain=domain, subnet6=subnet6, dhcp_range6=dhcp_range6)
        parsed = parse_hosts(hosts, "hosts")
        try:
            existing = self.network(name)
        except NotFound:
            _, new = plan_hosts(name, wanted, [], parsed, allow_dynamic=True)
            return self._define_network(wanted.with_hosts(host for _, host in new))
        _compare(wanted, existing.spec(inactive=existing.persistent))
        if parsed:
            existing.reserve_many(parsed)  # a stopped network takes config-only updates: cheap
        existing.start()
        return existing

    def _define_network(self, wanted: NetworkSpec) -> Network:
        for other in self.networks():
            for ip in other.spec(inactive=other.persistent).ips:
                for mine in wanted.ips:
                    if ip.subnet.version == mine.subnet.version and (
                        mine.subnet.cidr in ip.subnet.cidr or ip.subnet.cidr in mine.subnet.cidr
                    ):
                        raise SubnetOverlap(
                            f"subnet {mine.subnet.cidr} of network {wanted.name!r} overlaps "
                            f"{ip.subnet.cidr} of network {other.name!r}; an address would be ambiguous",
                            other=other.name,
                        )
        xml = wanted.to_xml()
        size = len(xml.encode())
        if size > MAX_XML_BYTES:
            raise InvalidSpec("hosts", f"{len(wanted.reservations())} hosts", too_big(wanted.name, size))
        handle = _live.define(self._live, "network", xml, wanted.name)
        net = Network(self._live, handle)
        try:
            _live.call(handle, "setAutostart", f"starting network {wanted.name!r}", 1)
            _live.call(handle, "create", f"starting network {wanted.name!r}")
        except BaseException:
            net.delete()
            raise
        log.info("defined and started network %s (%s)", wanted.name, wanted.primary.subnet)
        return net

    # -- storage ---------------------------------------------------------------

    def pool(self, name: str) -> Pool:
        """The existing storage pool ``name``; :class:`NotFound` if there is none."""
        from .storage import Pool

        return Pool(self._live, self._live.pool(check_name(name, lookup=True)))

    def pools(self) -> list[Pool]:
        """Every storage pool, active or not, sorted by name."""
        from .storage import Pool

        return sorted((Pool(self._live, p) for p in self._live.pools()), key=lambda p: p.name)

    def ensure_pool(self, name: str, path: str | os.PathLike[str]) -> Pool:
        """Define, build, start and autostart directory pool ``name`` at ``path``, or check the existing one.

        ``path`` is a directory on the daemon's host; libvirt creates it. An
        existing pool must be a directory pool at that path, else
        :class:`AlreadyExists` says how it differs; a stopped one is started.
        Raises :class:`InvalidSpec` for a bad name or path, :class:`LibvirtFailure`
        if libvirt cannot build or start it.
        """
        name = check_name(name)
        target = str(check_path(path, "path"))
        if not os.path.isabs(target):
            raise InvalidSpec("path", target, "an absolute directory path on the daemon's host")
        try:
            pool = self.pool(name)
        except NotFound:
            return self._define_pool(name, target)
        info = read_pool(_live.pool_xml_desc(pool.handle, f"pool {name!r}"))
        if info.type != "dir" or os.path.normpath(info.path or "") != os.path.normpath(target):
            raise AlreadyExists(f"storage pool {name!r} exists as a {info.type} pool at {info.path}, "
                                f"not a dir pool at {target}")
        if not pool.active:
            # build first: a stopped pool whose directory was removed does not start without it.
            _live.call(pool.handle, "build", f"building pool {name!r}", 0)
            _live.pool_start(pool.handle, f"starting pool {name!r}")
        return pool

    def _define_pool(self, name: str, path: str) -> Pool:
        handle = _live.define(self._live, "storage pool", pool_xml(name, path), name)
        try:
            for verb, arg in (("build", 0), ("create", 0), ("setAutostart", 1)):
                _live.call(handle, verb, f"building and starting storage pool {name!r}", arg)
        except BaseException:
            with contextlib.suppress(LibvmError):
                _live.call(handle, "undefine", f"undefining storage pool {name!r}")
            raise
        log.info("defined and started storage pool %s at %s", name, path)
        from .storage import Pool

        return Pool(self._live, handle)

    # -- domains ---------------------------------------------------------------

    def vm(self, name: str) -> VM:
        """The existing domain ``name``; :class:`NotFound` if there is none."""
        return VM(self._live, self._live.domain(check_name(name, lookup=True)))

    def vms(self) -> VMList:
        """Every domain, running or not, sorted by name (a list that renders as a table)."""
        return VMList(sorted((VM(self._live, d) for d in self._live.domains()), key=lambda vm: vm.name))

    def mac_owners(self) -> dict[str, str]:
        """``{mac: domain name}`` for every interface of every domain."""
        return self._live.mac_owners()

    def domain_active(self, name: str) -> bool:
        """Whether domain ``name`` exists and runs."""
        return self._live.domain_running(check_name(name, lookup=True))

    @property
    def kvm_usable(self) -> bool:
        """Whether libvirt offers ``kvm`` domains here (read once per connection)."""
        self._live.conn  # noqa: B018 (raises ConnectionClosed after close())
        return self._live.kvm_usable

    @property
    def is_local(self) -> bool:
        """Whether the daemon runs on this machine (no host in the URI): only then can
        libvm reach its dnsmasq to release leases."""
        self._live.conn  # noqa: B018 (raises ConnectionClosed after close())
        return self._live.is_local

    @property
    def default_virt_type(self) -> str:
        """What ``create_vm(virt_type=None)`` uses: ``$LIBVM_VIRT_TYPE``, else kvm if offered, else qemu.

        Set ``LIBVM_VIRT_TYPE=qemu`` where ``/dev/kvm`` opens but guests do not
        run (some nested virtualisation): libvirt then still offers kvm.
        """
        forced = os.environ.get("LIBVM_VIRT_TYPE")
        if forced:
            if forced not in VIRT_TYPES:
                raise InvalidSpec("LIBVM_VIRT_TYPE", forced, f"one of {', '.join(VIRT_TYPES)}")
            return forced
        return "kvm" if self.kvm_usable else "qemu"

    def create_vm(
        self,
        name: str,
        memory: int | str = 512,
        vcpus: int = 1,
        nics: Iterable[Nic] = (),
        *,
        disks: Iterable[Disk] = (),
        kernel: PathLike | None = None,
        initrd: PathLike | None = None,
        cmdline: str | None = None,
        serial_log: PathLike | None = None,
        graphics: Vnc | None = None,
        virt_type: str | None = None,
        uuid: str | None = None,
        start: bool = True,
        autostart: bool = False,
        allow_dynamic: bool = True,
        pool: tuple[str, str] | None = None,
        cloud_init: CloudInit | None = None,
        firmware: str = "bios",
        upload: bool | None = None,
    ) -> VM:
        """Reserve every NIC's address, define the domain and boot it.

        Parameters:
            name: the domain name (any text without '/' or control characters).
            memory: MiB as an int, or a string such as ``"256MiB"`` or ``"2GiB"``.
            vcpus: number of virtual CPUs (1 or more).
            nics: a list (any iterable) of :class:`Nic`, one per guest interface.
                A NIC without ``ip`` gets the network's next free address:
                outside the dynamic DHCP range first, then inside it (never an
                address reserved or leased), within ``pool`` if given. A NIC
                without ``mac`` gets one derived from its network and IP.
            disks: existing disk images (:class:`Disk`).
            kernel, initrd, cmdline: direct kernel boot. Over a network link
                (``qemu+ssh://``, ``qemu+tcp://``...) a ``kernel`` or ``initrd`` that
                is a file on this machine is uploaded to the hypervisor's scratch
                pool and removed with the VM; see ``upload``.
            upload: ``None`` (default): upload the ``kernel``/``initrd`` files
                of this machine when the hypervisor is remote, as above;
                ``False``: the paths are on the hypervisor (never upload);
                ``True``: upload even to a local daemon.
            serial_log: a file the serial console is written to.
            graphics: :class:`Vnc` or ``None``.
            virt_type: ``"kvm"``, ``"qemu"`` (TCG) or ``None`` for
                :attr:`default_virt_type`, falling back to ``qemu`` with a
                warning if the guest cannot start under kvm.
            uuid: the domain UUID (default: libvirt picks one).
            start: boot the domain after defining it.
            autostart: start the domain with libvirtd.
            allow_dynamic: ``False`` refuses addresses inside the dynamic DHCP
                range, given or allocated (:class:`IpInDhcpRange`).
            pool: ``(first, last)`` addresses automatic allocation picks from.
            firmware: ``"bios"`` (SeaBIOS) or ``"efi"`` (UEFI: libvirt picks an OVMF
                build; :class:`InvalidSpec` if libvirt finds none on the host).
            cloud_init: a :class:`CloudInit` (hostname, SSH keys, your own
                cloud-config, ``static_network``): libvm builds a NoCloud seed
                ISO (volume label ``cidata``), stores it as ``<vm>-seed.iso`` in
                the pool of the first :meth:`Disk.from_image` disk and attaches
                it as a read-only cdrom. Its instance-id is the domain's UUID.
                With ``CloudInit.host_key`` (on when there are SSH keys) the seed
                also carries an ed25519 host key generated here; its public half
                is kept in the domain's metadata (:attr:`VM.host_key`), the
                private half nowhere but in the seed.

        All or nothing: every value is checked and every conflict refused
        before libvirt is changed; if defining or starting fails (or the call is
        interrupted), the domain and the reservations it added are removed
        before the error propagates. If another libvm elsewhere takes an
        allocated address first, the next one is tried. The first NIC on each
        network is reserved under the VM's name as DHCP hostname (so dnsmasq
        resolves it), unless ``Nic.hostname`` says otherwise or the MAC is
        reserved already.

        Raises :class:`InvalidSpec` (bad value, naming the parameter),
        :class:`AlreadyExists` (a domain of that name), an
        :class:`AddressConflict` subclass (:class:`MacInUse`,
        :class:`IpReserved`, :class:`IpLeased`, :class:`SubnetOverlap`, ...),
        :class:`NoFreeAddress`, :class:`NotFound` (a network), or
        :class:`LibvirtFailure` if libvirt fails.
        """
        order = self._order(name, memory, vcpus, nics, disks=disks, kernel=kernel, initrd=initrd, cmdline=cmdline,
                            serial_log=serial_log, graphics=graphics, virt_type=virt_type, uuid=uuid, start=start,
                            autostart=autostart, allow_dynamic=allow_dynamic, pool=pool, cloud_init=cloud_init,
                            firmware=firmware, upload=upload)
        from . import provision

        return provision.Provisioner(self._live).create([order])[0]

    def _order(self, name: str, memory: int | str = 512, vcpus: int = 1, nics: Iterable[Nic] = (), *,
               disks: Iterable[Disk] = (), kernel: PathLike | None = None, initrd: PathLike | None = None,
               cmdline: str | None = None, serial_log: PathLike | None = None, graphics: Vnc | None = None,
               virt_type: str | None = None, uuid: str | None = None, start: bool = True, autostart: bool = False,
               allow_dynamic: bool = True, pool: tuple[str, str] | None = None, cloud_init: CloudInit | None = None,
               firmware: str = "bios", upload: bool | None = None, where: str = "") -> provision.Order:
        """:meth:`create_vm`'s arguments validated into an order (nothing read from libvirt but
        the capabilities)."""
        import uuid as uuidlib

        from . import provision
        from .cloudinit import CloudInit, effective_hostname
        from .plan import VmRequest

        items = as_items(nics, "nics", Nic)
        # Everything but the NICs is validated first; NICs once they have addresses.
        spec = DomainSpec(name, memory, vcpus, (), disks, kernel, initrd, cmdline, serial_log,
                          graphics, "qemu" if virt_type is None else virt_type, uuid=uuid, autostart=autostart)
        for field, flag in (("start", start), ("allow_dynamic", allow_dynamic)):
            check_bool(flag, field)
        if pool is not None and (not isinstance(pool, (tuple, list)) or len(pool) != 2):
            raise InvalidSpec("pool", pool, "a (first, last) pair of addresses")
        spec = dataclasses.replace(spec, firmware=firmware)
        if firmware == "efi":
            self._require_efi(spec)
        if cloud_init is not None and not isinstance(cloud_init, CloudInit):
            raise InvalidSpec("cloud_init", cloud_init, "a libvm.CloudInit or None")
        if cloud_init is not None and cloud_init.static_network and not items:
            raise InvalidSpec("cloud_init.static_network", True, "needs at least one NIC to configure")
        if virt_type is None:
            spec = dataclasses.replace(spec, virt_type=self.default_virt_type)
        seed = None
        hostname = None
        if cloud_init is not None:
            # The name the guest gives itself is the name DHCP and DNS should give it too.
            hostname = effective_hostname(cloud_init, dns_label(spec.name) or "localhost")
            if spec.uuid is None:  # the seed's instance-id: known before the domain exists
                spec = dataclasses.replace(spec, uuid=str(uuidlib.uuid4()))
            spec = dataclasses.replace(spec, static_network=cloud_init.static_network)
            host_key = None
            if cloud_init.wants_host_key:  # the guest's own key, made here: its public half stays with the VM
                from .hostkey import generate

                private, public = generate(f"libvm-{dns_label(spec.name) or 'guest'}")
                host_key = (private, str(public))
            login = GuestLogin(host_key[1] if host_key else None, cloud_init.login_user, cloud_init.ssh_identity)
            spec = dataclasses.replace(spec, login=login)
            seed = _seed_builder(cloud_init, spec, host_key)
        request = VmRequest(spec.name, tuple(items), hostname or dns_label(spec.name), allow_dynamic,
                            pool, where)
        # A kernel or initrd that is a file here, for a hypervisor over a network link: libvm
        # uploads it (a path that is no file here is taken as one on the hypervisor).
        if upload is not None:
            check_bool(upload, "upload")
        wanted = self._live.remote_link if upload is None else upload
        uploads = tuple((field, Path(path)) for field, path in (("kernel", spec.kernel), ("initrd", spec.initrd))
                        if path is not None and wanted and (upload or Path(path).is_file()))
        for field, path in uploads:
            if not path.is_file():
                raise InvalidSpec(field, str(path), "upload=True: a file on this machine")
        return provision.Order(request, spec, start, virt_type is None, seed, uploads)

    def _require_efi(self, spec: DomainSpec) -> None:
        """Refuse ``firmware="efi"`` clearly when libvirt has no UEFI firmware for this guest."""
        try:
            caps = _live.domain_capabilities(self._live, spec.arch, spec.virt_type)
        except Unsupported:
            return  # the driver cannot tell (test:///): let the define decide
        values = {v.text for v in parse_xml(caps, "domain capabilities").iterfind("os/enum[@name='firmware']/value")}
        if "efi" not in values:
            raise InvalidSpec("firmware", "efi", "libvirt finds no UEFI firmware for this guest here "
                                                 "(install the ovmf package on the hypervisor)")

    def create_vms(self, specs: Iterable[Mapping[str, Any]], *, progress: ProgressArg = None) -> VMList:
        """Create several VMs; each mapping holds :meth:`create_vm`'s keyword arguments.

        All or nothing: every mapping's keys are checked first; if one VM
        fails, the ones already created are removed again, with the
        reservations this call added; reservations that existed before the
        call stay. ``progress``: ``None`` (silent), a callable
        ``progress(done, total)`` called after each VM is created, or ``True``
        for a ``tqdm.auto`` bar (needs tqdm). Raises what :meth:`create_vm`
        raises; :class:`InvalidSpec` for a mapping that is not one, names an
        unknown argument, or a bad ``progress``.
        """
        report = Progress(progress)
        items = check_specs(specs)
        orders = []
        for index, kwargs in enumerate(items):
            try:
                orders.append(self._order(**kwargs, where=f"specs[{index}]."))
            except InvalidSpec as exc:
                raise exc.at(f"specs[{index}]") from exc
        with report.run(len(items), "creating VMs", "VM") as step:
            from . import provision

            return VMList(provision.Provisioner(self._live).create(orders, step))

    def wait_for_ips(self, vms: Iterable[VM | str], timeout: float = 120.0, *, poll: float = 0.5,
                     progress: ProgressArg = None) -> dict[str, dict[str, netaddr.IPAddress]]:
        """Wait until every NIC of every VM holds a lease: ``{vm name: {mac: ip}}``.

        :meth:`VM.wait_for_ips` for many VMs at once (VM objects or names),
        sharing one ``timeout`` (seconds) and reading each network's leases
        once per round. ``progress`` as for :meth:`create_vms`, called as each
        VM gets all its addresses. Raises what :meth:`VM.wait_for_ips` raises
        (:class:`AddressMismatch` at once, :class:`WaitTimeout` naming every VM
        still waiting, :class:`LibvmError` for a VM that stopped),
        :class:`InvalidSpec` for bad arguments, :class:`NotFound` for a name.
        """
        report = Progress(progress)
        check_poll(poll)
        if isinstance(vms, (str, bytes, Mapping, VM)) or not isinstance(vms, Iterable):
            raise InvalidSpec("vms", vms, "a list of VMs (or their names)")
        chosen: dict[str, VM] = {}
        for index, item in enumerate(read_all(vms, vms, "vms", "a list of VMs (or their names)")):
            if not isinstance(item, (VM, str)):
                raise InvalidSpec(f"vms[{index}]", item, "a libvm.VM or a domain name")
            vm = self.vm(item) if isinstance(item, str) else item
            chosen.setdefault(vm.name, vm)
        with report.run(len(chosen), "waiting for IPs", "VM") as step:
            return wait_for_leases(list(chosen.values()), timeout, poll, step)

    def gc(self, *, remove: bool = False) -> list[tuple[str, Reservation]]:
        """Reservations whose MAC is on no domain's interface: ``[(network, reservation)]``.

        Lists them; removes them only with ``remove=True``. Never runs by itself.
        """
        check_bool(remove, "remove")
        owners = self.mac_owners()
        orphans = [
            (net.name, res)
            for net in self.networks()
            for res in net.reservations()
            if res.mac is not None and format_mac(res.mac) not in owners
        ]
        if remove:
            for network, res in orphans:
                self.network(network).release(res.mac)
        return orphans

    def unreserved_nics(self) -> list[tuple[str, str, str]]:
        """``(domain, mac, network)`` of every NIC on a libvirt network without a reservation."""
        reserved = {(net.name, format_mac(r.mac)) for net in self.networks()
                    for r in net.reservations() if r.mac is not None}
        return [
            (vm.name, mac, network)
            for vm in self.vms()
            for mac, network in mac_list(vm.xml(inactive=True))
            if network is not None and (network, mac) not in reserved
        ]


def check_specs(specs: object) -> list[dict[str, Any]]:
    """``create_vms``'s mappings, checked against :meth:`Hypervisor.create_vm`'s arguments
    (a list of dicts, each with a ``name``, no unknown argument, no name twice)."""
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Iterable):
        raise InvalidSpec("specs", specs, "a list of dicts of create_vm's arguments")
    items = list(read_all(specs, specs, "specs", "a list of dicts of create_vm's arguments"))
    known = set(inspect.signature(Hypervisor.create_vm).parameters) - {"self"}
    names: dict[str, int] = {}
    for index, kwargs in enumerate(items):
        if not isinstance(kwargs, Mapping):
            raise InvalidSpec(f"specs[{index}]", kwargs, "a dict of create_vm's arguments")
        unknown = sorted(set(kwargs) - known)
        if unknown or "name" not in kwargs:
            raise InvalidSpec(f"specs[{index}]", kwargs,
                              f"unknown argument {unknown[0]!r}" if unknown else "needs a 'name'")
        name = kwargs["name"]
        if not isinstance(name, str) or not name:
            raise InvalidSpec(f"specs[{index}].name", name, "the name of the domain")
        if name in names:
            raise AlreadyExists(f"specs[{index}].name: {name!r} is given to two VMs of this call "
                                f"(specs[{names[name]}])")
        names[name] = index
    return [dict(kwargs) for kwargs in items]


def _seed_builder(ci: CloudInit, spec: DomainSpec, host_key: tuple[str, str] | None = None) -> provision.Seed:
    """``seed(nics) -> ISO bytes`` for ``create_vm``, called once the NICs have addresses.

    ``host_key`` (private, public) lives in this closure only, until it is in the seed.
    """
    from .cloudinit import render_seed

    def seed(nics: Sequence[SeedNic]) -> bytes:
        assert spec.uuid is not None
        return render_seed(ci, spec.uuid, dns_label(spec.name) or "localhost", nics, host_key)
    return seed


def _compare(wanted: NetworkSpec, actual: NetworkSpec) -> None:
    """Raise :class:`NetworkMismatch` at the first setting that differs."""
    checks = [("forward", wanted.forward, actual.forward)]
    if wanted.bridge is not None:
        checks.append(("bridge", wanted.bridge, actual.bridge or ""))
    for want, label in zip(wanted.ips, ("", "6"), strict=False):
        have = next((ip for ip in actual.ips if ip.subnet.version == want.subnet.version), None)
        checks += [
            (f"subnet{label}", str(want.subnet.cidr), str(have.subnet.cidr) if have else "none"),
            (f"gateway{label}", str(want.gateway), str(have.gateway) if have else "none"),
            (f"dhcp_range{label}", _ranges(want.dhcp_ranges), _ranges(have.dhcp_ranges) if have else "none"),
        ]
    for field, want_value, have_value in sorted(checks, key=lambda c: c[0] == "forward"):
        if want_value != have_value:
            raise NetworkMismatch(wanted.name, field, want_value, have_value)


def _ranges(ranges: tuple[tuple[netaddr.IPAddress, netaddr.IPAddress], ...]) -> str:
    return ",".join(f"{a}-{b}" for a, b in ranges) or "none"
