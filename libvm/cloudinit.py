"""cloud-init NoCloud seeds: what a guest should configure at first boot, as an ISO.

Pure code (PyYAML, netaddr, pycdlib): nothing here talks to libvirt. A seed is
an ISO9660 image labelled ``cidata`` holding ``meta-data``, ``user-data`` and,
for static addressing, ``network-config``; cloud-init's NoCloud datasource
finds it by that label on any attached disk or CD-ROM. See docs/cloud-init.md.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import netaddr

from .addressing import IpLike, MacLike, check_hostname, check_usable_subnet, parse_ip, parse_mac
from .errors import InvalidSpec
from .values import check_path

__all__ = [
    "CLOUD_CONFIG_HEADER",
    "SEED_LABEL",
    "CloudInit",
    "SeedNic",
    "build_seed",
    "effective_hostname",
    "host_key_config",
    "meta_data",
    "network_config",
    "render_seed",
    "user_data",
]

CLOUD_CONFIG_HEADER = "#cloud-config"
#: The volume label cloud-init's NoCloud datasource looks for.
SEED_LABEL = "cidata"
SSH_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")
#: cloud-config keys that decide the guest's SSH host keys: CloudInit(host_key=True) refuses them.
_HOST_KEY_KEYS = ("ssh_keys", "ssh_genkeytypes", "ssh_deletekeys")
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")

# Headers of the user-data formats cloud-init knows besides #cloud-config. They
# cannot be merged with libvm's hostname and keys, so they are refused by name.
_OTHER_FORMATS = {
    "#!": "a shell script",
    "#include": "an #include list",
    "#cloud-boothook": "a boothook",
    "#part-handler": "a part handler",
    "#cloud-config-archive": "a cloud-config archive",
    "#cloud-config-jsonp": "a JSON patch",
    "## template:": "a jinja template",
    "content-type:": "a MIME multipart message",
    "mime-version:": "a MIME multipart message",
}


def _dump(data: Mapping[str, Any]) -> str:
    import yaml  # here, not at the top: keeps `import libvm` fast
    # PyYAML is what cloud-init reads these files with (yaml.safe_load), so
    # safe_dump's quoting is exactly what it needs: "no", "0755" or a MAC such
    # as 52:54:00:12:34:56 (a base-60 integer in YAML 1.1) stay strings. A huge
    # width keeps a long ssh key on one line instead of folding it.
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True, width=2**31 - 1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_user_data(value: object) -> dict[str, Any]:
    """The user's cloud-config as plain YAML types, or :class:`InvalidSpec`."""
    import yaml  # here, not at the top: keeps `import libvm` fast
    field_ = "cloud_init.user_data"
    if isinstance(value, str):
        head = value.lstrip().lower()
        for header, what in _OTHER_FORMATS.items():
            if head.startswith(header):
                raise InvalidSpec(field_, value, f"{what}; libvm merges only '{CLOUD_CONFIG_HEADER}' user-data "
                                  "with its hostname and keys (run commands with the runcmd key instead)")
        first_line = value.split("\n", 1)[0].rstrip()
        if first_line != CLOUD_CONFIG_HEADER:
            raise InvalidSpec(field_, value, f"cloud-config YAML whose first line is '{CLOUD_CONFIG_HEADER}'")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InvalidSpec(field_, value, f"not valid YAML: {_one_line(str(exc))}") from None
        if parsed is None:
            parsed = {}
    elif isinstance(value, Mapping):
        try:
            # The round trip checks that every value is plain YAML and takes a
            # deep copy, so a later change to the caller's dict changes nothing here.
            parsed = yaml.safe_load(_dump(value))
        except yaml.YAMLError as exc:
            raise InvalidSpec(field_, value, f"holds a value YAML cannot represent: {_one_line(str(exc))}") from None
    else:
        raise InvalidSpec(field_, value, f"a '{CLOUD_CONFIG_HEADER}' YAML string or a dict")
    if not isinstance(parsed, dict):
        raise InvalidSpec(field_, value, "cloud-config must be a mapping of keys to values")
    for key in parsed:
        if not isinstance(key, str):
            raise InvalidSpec(f"{field_}[{key!r}]", key, "cloud-config's top-level keys are strings")
    if "hostname" in parsed:
        check_hostname(parsed["hostname"], f"{field_}['hostname']")
    keys = parsed.get("ssh_authorized_keys")
    if "ssh_authorized_keys" in parsed and (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)):
        raise InvalidSpec(f"{field_}['ssh_authorized_keys']", keys, "a list of public key strings")
    return parsed


def _check_keys(value: object) -> tuple[str, ...]:
    field_ = "cloud_init.ssh_authorized_keys"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidSpec(field_, value, "a list of public key strings, not a single key")
    keys = []
    for index, key in enumerate(value):
        if not isinstance(key, str):
            raise InvalidSpec(f"{field_}[{index}]", key, "a public key string")
        # A key read from a .pub file ends with a newline: that one is dropped.
        key = key.strip()
        if "\n" in key or "\r" in key or not key.startswith(SSH_KEY_PREFIXES):
            raise InvalidSpec(f"{field_}[{index}]", key, "one line of an OpenSSH public key, starting with "
                              + ", ".join(f"'{p}'" for p in SSH_KEY_PREFIXES))
        keys.append(key)
    return tuple(keys)


@dataclass(frozen=True)
class CloudInit:
    """What cloud-init should set up in the guest at first boot.

    ``hostname`` defaults to the VM's name (see :func:`effective_hostname`).
    ``ssh_authorized_keys`` go to the distribution's default user. ``user_data``
    is your own cloud-config, a ``#cloud-config`` YAML string or a dict, merged
    with libvm's (see :func:`user_data`). ``static_network=True`` writes each
    NIC's reserved address into the guest (network-config v2) instead of
    letting it ask DHCP.

    ``host_key``: give the guest an SSH host key libvm generates at
    ``create_vm`` (cloud-config ``ssh_keys``; the guest makes none of its own)
    and keep its public half with the VM, so :meth:`VM.wait_for_ssh` and
    :meth:`VM.ssh` check it instead of trusting the first key they see.
    ``None`` (default): on when there are ``ssh_authorized_keys`` (here or in
    ``user_data``) and ``user_data`` sets no ``ssh_keys`` of its own.
    ``user``: the login user, cloud-init's default user under that name
    (cloud-config ``user: {name: ...}``; default: the image's own, e.g.
    ``debian``). ``ssh_identity``: the path of the private key that logs in,
    recorded with the VM for :meth:`VM.ssh` (never read by libvm).
    """

    hostname: str | None = None
    ssh_authorized_keys: tuple[str, ...] = ()
    user_data: str | Mapping[str, Any] | None = field(default=None, hash=False)
    static_network: bool = False
    host_key: bool | None = None
    user: str | None = None
    ssh_identity: str | None = None
    _config: dict[str, Any] = field(init=False, repr=False, compare=False, hash=False)

    def __init__(
        self,
        hostname: str | None = None,
        ssh_authorized_keys: Iterable[str] = (),
        user_data: str | Mapping[str, Any] | None = None,
        static_network: bool = False,
        host_key: bool | None = None,
        user: str | None = None,
        ssh_identity: str | os.PathLike[str] | None = None,
    ) -> None:
        if hostname is not None:
            check_hostname(hostname, "cloud_init.hostname")
        keys = _check_keys(ssh_authorized_keys)
        config = {} if user_data is None else _parse_user_data(user_data)
        if not isinstance(static_network, bool):
            raise InvalidSpec("cloud_init.static_network", static_network, "True or False")
        object.__setattr__(self, "hostname", hostname)
        object.__setattr__(self, "ssh_authorized_keys", keys)
        # A dict is kept as its plain-YAML copy (tuples become lists): what renders.
        object.__setattr__(self, "user_data", user_data if not isinstance(user_data, Mapping) else config)
        object.__setattr__(self, "static_network", static_network)
        object.__setattr__(self, "_config", config)
        self._set_login(host_key, user, ssh_identity)

    def _set_login(self, host_key: object, user: object, identity: object) -> None:
        if host_key is not None and not isinstance(host_key, bool):
            raise InvalidSpec("cloud_init.host_key", host_key, "True, False or None (on when there are ssh keys)")
        if host_key and any(key in self._config for key in _HOST_KEY_KEYS):
            raise InvalidSpec("cloud_init.host_key", host_key,
                              "the user-data sets the guest's host keys itself (ssh_keys, ssh_genkeytypes, "
                              "ssh_deletekeys): pass host_key=False, or leave those keys out")
        if user is not None:
            if not isinstance(user, str) or not _USER_NAME.fullmatch(user):
                raise InvalidSpec("cloud_init.user", user, "a user name: lower-case letters, digits, '_', '-', "
                                                           "'.', starting with a letter or '_', at most 32")
            if "user" in self._config:
                raise InvalidSpec("cloud_init.user", user, "the user-data names the default user already ('user:')")
        if identity is not None:
            identity = str(check_path(identity, "cloud_init.ssh_identity"))
        object.__setattr__(self, "host_key", host_key)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "ssh_identity", identity)

    @property
    def wants_host_key(self) -> bool:
        """Whether ``create_vm`` gives the guest a host key of libvm's (see ``host_key``)."""
        if self.host_key is not None:
            return self.host_key
        if any(key in self._config for key in _HOST_KEY_KEYS):
            return False
        return bool(self.ssh_authorized_keys or self._config.get("ssh_authorized_keys"))

    @property
    def login_user(self) -> str | None:
        """The user to log in as: ``user``, else the user-data's ``user`` (its name), else
        ``None`` (the image's default user, which libvm cannot know)."""
        if self.user is not None:
            return self.user
        own = self._config.get("user")
        if isinstance(own, dict):
            own = own.get("name")
        return own if isinstance(own, str) and _USER_NAME.fullmatch(own) else None


class SeedNic(NamedTuple):
    """One guest NIC's static addressing for :func:`network_config`.

    ``dns`` defaults to ``gateway``: libvirt's dnsmasq answers DNS on the
    network's own address. ``gateway=None`` gives no default route (an
    isolated network, where libvirt's DHCP gives none either); ``dns`` must
    then be given. ``ip6``/``prefixlen6``/``gateway6``: the NIC's IPv6
    address too (dual stack).
    """

    mac: MacLike
    ip: IpLike
    prefixlen: int
    gateway: IpLike | None
    dns: IpLike | None = None
    ip6: IpLike | None = None
    prefixlen6: int | None = None
    gateway6: IpLike | None = None


def effective_hostname(ci: CloudInit, default_hostname: str) -> str:
    """The guest's hostname: ``ci.hostname``, else the user-data's, else ``default_hostname``.

    Pass the result to :func:`meta_data` so ``local-hostname`` agrees with user-data.
    """
    if ci.hostname is not None:
        return ci.hostname
    own = ci._config.get("hostname")
    if isinstance(own, str):
        return own
    return check_hostname(default_hostname, "hostname")


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud ``meta-data``: the instance id and ``local-hostname``.

    cloud-init runs its once-per-instance modules again whenever the instance
    id changes, so give one that is stable for the life of the VM (its UUID).
    """
    # Not splitlines(): "id\n" is one line to it, and the newline would end up in the seed.
    if not isinstance(instance_id, str) or not instance_id.strip() or not instance_id.isprintable():
        raise InvalidSpec("instance_id", instance_id, "a non-empty single-line string (the domain's UUID)")
    check_hostname(hostname, "hostname")
    return _dump({"instance-id": instance_id, "local-hostname": hostname})


def user_data(ci: CloudInit, default_hostname: str, host_key: tuple[str, str] | None = None) -> str:
    """NoCloud ``user-data``: libvm's hostname and keys merged into the user's cloud-config.

    Every key of ``ci.user_data`` is kept as given, except that ``hostname`` is
    :func:`effective_hostname` and ``ci.ssh_authorized_keys`` are appended to
    the user's own ``ssh_authorized_keys`` list (a key in both appears once).
    ``ci.user`` becomes ``user: {name: ...}``. ``host_key``: ``(private, public)``
    ed25519 host key for the guest (:func:`host_key_config`).
    """
    config: dict[str, Any] = {"hostname": effective_hostname(ci, default_hostname)}
    config.update((key, value) for key, value in ci._config.items() if key != "hostname")
    keys = list(config.get("ssh_authorized_keys", []))
    keys += [key for key in ci.ssh_authorized_keys if key not in keys]
    if keys:
        config["ssh_authorized_keys"] = keys
    if ci.user is not None:
        config["user"] = {"name": ci.user}
    if host_key is not None:
        config.update(host_key_config(*host_key))
    return f"{CLOUD_CONFIG_HEADER}\n{_dump(config)}"


def host_key_config(private: str, public: str) -> dict[str, Any]:
    """The cloud-config that gives the guest exactly this ed25519 host key and no other.

    ``ssh_deletekeys`` removes keys the image may carry, ``ssh_genkeytypes: []``
    stops cloud-init from making new ones; the guest's sshd then presents only this key.
    """
    if not isinstance(private, str) or "PRIVATE KEY" not in private:
        raise InvalidSpec("host_key", "<private key>", "an OpenSSH private key")
    if not isinstance(public, str) or not public.startswith("ssh-ed25519 "):
        raise InvalidSpec("host_key", public, "an ssh-ed25519 public key")
    return {"ssh_keys": {"ed25519_private": private, "ed25519_public": public.strip()},
            "ssh_deletekeys": True, "ssh_genkeytypes": []}


def network_config(nics: Sequence[SeedNic]) -> str:
    """NoCloud ``network-config`` (version 2) giving each NIC its address statically.

    NICs are matched by MAC and named ``eth0``, ``eth1``... in order; only the
    first gets the default route.
    """
    if isinstance(nics, (str, bytes, SeedNic)) or not isinstance(nics, Sequence) or not nics:
        raise InvalidSpec("nics", nics, "a non-empty list of libvm.cloudinit.SeedNic")
    ethernets: dict[str, Any] = {}
    seen: set[netaddr.EUI] = set()
    for index, nic in enumerate(nics):
        where = f"nics[{index}]"
        if not isinstance(nic, SeedNic):
            raise InvalidSpec(where, nic, "a libvm.cloudinit.SeedNic")
        mac = parse_mac(nic.mac, f"{where}.mac")
        if mac in seen:
            raise InvalidSpec(f"{where}.mac", nic.mac, "two NICs with the same MAC")
        seen.add(mac)
        ip, prefixlen, gateway = _static(nic.ip, nic.prefixlen, nic.gateway, nic, where, "")
        if gateway is None and nic.dns is None:
            raise InvalidSpec(f"{where}.dns", None, "give the DNS server when there is no gateway")
        dns = gateway if nic.dns is None else parse_ip(nic.dns, f"{where}.dns")
        addresses = [f"{ip}/{prefixlen}"]
        gateway6 = None
        if nic.ip6 is not None:
            ip6, prefixlen6, gateway6 = _static(nic.ip6, nic.prefixlen6, nic.gateway6, nic, where, "6")
            if ip6.version != 6:
                raise InvalidSpec(f"{where}.ip6", nic.ip6, "an IPv6 address")
            addresses.append(f"{ip6}/{prefixlen6}")
        name = f"eth{index}"
        entry: dict[str, Any] = {
            "match": {"macaddress": str(netaddr.EUI(mac, dialect=netaddr.mac_unix_expanded))},
            "set-name": name,
            "addresses": addresses,
        }
        if index == 0 and gateway6 is not None:
            entry["gateway6"] = str(gateway6)
        if index == 0 and gateway is not None:
            # gateway4/gateway6, not a "routes: [{to: 0.0.0.0/0, via: GW}]" item:
            # cloud-init 22.4's ENI renderer (Debian's ifupdown) turns such a route
            # into "post-up route add default gw GW || true", which needs net-tools
            # (absent from minimal images: the guest silently has no default route),
            # while gatewayN becomes a native "gateway GW" there, [Route] Gateway= for
            # networkd, GATEWAY= for sysconfig and stays gatewayN for netplan
            # (deprecated there since 0.103 but accepted, with a warning).
            entry[f"gateway{ip.version}"] = str(gateway)
        entry["nameservers"] = {"addresses": [str(dns)]}
        ethernets[name] = entry
    return _dump({"version": 2, "ethernets": ethernets})


def _static(ip_: IpLike, prefixlen: object, gateway_: IpLike | None, nic: SeedNic, where: str,
            family: str) -> tuple[netaddr.IPAddress, int, netaddr.IPAddress | None]:
    """One family's ``(ip, prefixlen, gateway)`` of a :class:`SeedNic`, checked (``family``: "" or "6")."""
    ip = parse_ip(ip_, f"{where}.ip{family}")
    width = 32 if ip.version == 4 else 128
    if isinstance(prefixlen, bool) or not isinstance(prefixlen, int) or not 1 <= prefixlen <= width:
        raise InvalidSpec(f"{where}.prefixlen{family}", prefixlen, f"an integer from 1 to {width}")
    if gateway_ is None:
        _check_static_address(ip, prefixlen, None, nic, where)
        return ip, prefixlen, None
    gateway = parse_ip(gateway_, f"{where}.gateway{family}")
    if gateway.version != ip.version:
        raise InvalidSpec(f"{where}.gateway{family}", gateway_, f"an IPv{ip.version} address, as the NIC's IP is")
    _check_static_address(ip, prefixlen, gateway, nic, where)
    return ip, prefixlen, gateway


def _check_static_address(ip: netaddr.IPAddress, prefixlen: int, gateway: netaddr.IPAddress | None, nic: SeedNic,
                          where: str) -> None:
    """Refuse an address the guest could not hold, or a gateway it could not reach, in ``ip/prefixlen``.

    netplan and cloud-init write any of these without complaint; the guest then has
    no route out (an off-link gateway) or an address the kernel treats as the subnet's own.
    """
    subnet = netaddr.IPNetwork(f"{ip}/{prefixlen}")
    check_usable_subnet(subnet, f"{where}.ip", nic.ip)
    if gateway is None:
        if ip == subnet.network or (ip.version == 4 and ip == subnet.broadcast):
            raise InvalidSpec(f"{where}.ip", str(ip), f"is the network or broadcast address of {subnet.cidr}")
        return
    if gateway == ip:
        raise InvalidSpec(f"{where}.gateway", nic.gateway, "is the NIC's own address")
    # fe80::/10 is on every IPv6 link: a router's link-local address is a fine gateway.
    if gateway not in subnet and not (gateway.version == 6 and gateway.is_link_local()):
        raise InvalidSpec(f"{where}.gateway", nic.gateway,
                          f"off-link: outside {subnet.cidr}, the NIC's subnet, so the guest cannot reach it")
    for address, name in ((ip, "ip"), (gateway, "gateway")):
        if address == subnet.network or (address.version == 4 and address == subnet.broadcast):
            raise InvalidSpec(f"{where}.{name}", getattr(nic, name),
                              f"is the network or broadcast address of {subnet.cidr}")


def _check_doc(value: object, field_: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidSpec(field_, value, "a string")
    return value.encode("utf-8")


def build_seed(meta: str, user: str, network: str | None = None) -> bytes:
    """An ISO9660 image labelled ``cidata`` holding the NoCloud files, built in memory.

    ``meta`` becomes ``meta-data``, ``user`` ``user-data`` and ``network`` (if
    given) ``network-config``; Rock Ridge and Joliet carry those names, the
    plain ISO9660 8.3 names are ``META_DAT``, ``USER_DAT`` and ``NETWORK_``.
    """
    import pycdlib  # here, not at the top: keeps `import libvm` fast
    files = [("/META_DAT.;1", "meta-data", _check_doc(meta, "meta_data")),
             ("/USER_DAT.;1", "user-data", _check_doc(user, "user_data"))]
    if network is not None:
        files.append(("/NETWORK_.;1", "network-config", _check_doc(network, "network_config")))
    iso = pycdlib.PyCdlib()
    iso.new(vol_ident=SEED_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for iso_path, name, data in files:
            iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def render_seed(ci: CloudInit, instance_id: str, default_hostname: str, nics: Sequence[SeedNic] = (),
                host_key: tuple[str, str] | None = None) -> bytes:
    """The whole seed ISO for one VM: :func:`meta_data`, :func:`user_data` and,
    with ``ci.static_network``, :func:`network_config` of ``nics``, in :func:`build_seed`.

    Without ``static_network`` there is no network-config: the guest's default
    (DHCP on the first NIC) gets the address libvm reserved.
    """
    if not isinstance(ci, CloudInit):
        raise InvalidSpec("cloud_init", ci, "a libvm.CloudInit")
    hostname = effective_hostname(ci, default_hostname)
    network = network_config(nics) if ci.static_network else None
    return build_seed(meta_data(instance_id, hostname), user_data(ci, default_hostname, host_key), network)
