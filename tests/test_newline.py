"""A value ending in a newline is refused, or normalised, never stored as given.

Python's ``$`` matches before a final ``\\n``, so a ``^...$`` check let
``"pc001\\n"`` through and libvirt stored it as ``"pc001 "`` (issue 15 §4).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import netaddr
import pytest

import libvm
from libvm import CloudInit, Disk, DomainSpec, InvalidSpec, NetworkSpec, Nic, Reservation, Vnc, cloudinit
from libvm.addressing import check_duid, check_hostname, check_name, parse_ip, parse_mac, parse_memory, parse_subnet
from libvm.storagexml import check_volume_name, parse_size

MAC = "02:00:00:00:00:09"
DUID = "00:01:00:01:2a:2b:2c:2d:66:66:66:66:66:0c"
LIBVM = Path(libvm.__file__).parent

PURE: list[tuple[str, str, Callable[[str], object]]] = [
    # (field, a good value, a call that validates it)
    ("hostname", "pc001", check_hostname),
    ("name", "pc001", check_name),
    ("client_id", DUID, check_duid),
    ("nic.hostname", "pc001", lambda v: Nic("lab", hostname=v)),
    ("nic.network", "lab", lambda v: Nic(v)),
    ("hostname", "pc001", lambda v: Reservation(MAC, "10.0.0.5", v)),
    ("client_id", DUID, lambda v: Reservation(None, "fd00::5", client_id=v)),
    ("disk.path", "/images/a.img", lambda v: Disk(v)),
    ("name", "pc001", lambda v: DomainSpec(v)),
    ("arch", "x86_64", lambda v: DomainSpec("pc001", arch=v)),
    ("kernel", "/boot/vmlinuz", lambda v: DomainSpec("pc001", kernel=v)),
    ("initrd", "/boot/initrd", lambda v: DomainSpec("pc001", kernel="/boot/vmlinuz", initrd=v)),
    ("serial_log", "/tmp/serial.log", lambda v: DomainSpec("pc001", serial_log=v)),
    ("cdroms[0]", "/images/seed.iso", lambda v: DomainSpec("pc001", cdroms=[v])),
    ("uuid", "c7a5fdbd-cdaf-9455-926a-d65c16db1809", lambda v: DomainSpec("pc001", uuid=v)),
    ("name", "lab", lambda v: NetworkSpec.build(v, "10.0.0.0/24")),
    ("bridge", "virbr9", lambda v: NetworkSpec.build("lab", "10.0.0.0/24", bridge=v)),
    ("domain", "lab.example", lambda v: NetworkSpec.build("lab", "10.0.0.0/24", domain=v)),
    ("cloud_init.hostname", "web1", lambda v: CloudInit(hostname=v)),
    ("cloud_init.user_data['hostname']", "web1", lambda v: CloudInit(user_data={"hostname": v})),
    ("instance_id", "c7a5fdbd-cdaf-9455-926a-d65c16db1809", lambda v: cloudinit.meta_data(v, "web1")),
    ("hostname", "web1", lambda v: cloudinit.meta_data("id-1", v)),
    ("hostname", "web1", lambda v: cloudinit.effective_hostname(CloudInit(), v)),
    ("name", "base.qcow2", check_volume_name),
    ("network", "lab", lambda v: libvm.generate_mac(v, "10.0.0.5")),
]


@pytest.mark.parametrize(("field", "good", "check"), PURE, ids=[f"{c[0]}-{i}" for i, c in enumerate(PURE)])
def test_pure_validator_refuses_a_trailing_newline(field: str, good: str, check: Callable[[str], object]) -> None:
    check(good)
    for bad in (good + "\n", good + "\r\n", "\n" + good):
        with pytest.raises(InvalidSpec) as info:
            check(bad)
        assert (info.value.field, info.value.value) == (field, bad)


# Values parsed into a netaddr or int value: the newline is white space around it, and the
# value is the same as without it (parse_ip strips on purpose: an address read from a file).
PARSED: list[tuple[str, Callable[[str], object]]] = [
    (MAC, parse_mac),
    ("10.0.0.5", parse_ip),
    ("10.0.0.0/24", parse_subnet),
    ("fd00::/64", parse_subnet),
    ("256MiB", parse_memory),
    ("10GiB", lambda v: parse_size(v, "size")),
    ("127.0.0.1", lambda v: Vnc(listen=v).listen),
    ("10.0.0.0/24", lambda v: NetworkSpec.build("lab", v, dhcp_range=("10.0.0.30", "10.0.0.39\n"))),
]


@pytest.mark.parametrize(("good", "parse"), PARSED, ids=[f"{c[0]}-{i}" for i, c in enumerate(PARSED)])
def test_parsed_value_with_a_trailing_newline_is_the_same_value(good: str, parse: Callable[[str], object]) -> None:
    assert parse(good + "\n") == parse(good)


@pytest.mark.parametrize("padded", [f" {MAC}", f"{MAC} ", f"\t{MAC}\n", f"\n{MAC}", MAC.upper().replace(":", "-")])
def test_white_space_around_a_mac_is_ignored_as_around_an_ip(padded: str) -> None:
    assert parse_mac(padded) == parse_mac(MAC)
    assert Nic("lab", mac=padded).mac == parse_mac(MAC)
    assert parse_ip(" 10.0.0.5\n") == parse_ip("10.0.0.5")


def test_reserve_refuses_a_hostname_ending_in_a_newline_and_changes_nothing(lab: libvm.Network) -> None:
    before = lab.xml(), lab.xml(inactive=True)
    with pytest.raises(InvalidSpec) as info:
        lab.reserve("66:66:66:66:66:0b", "192.168.150.88", "pc001\n")
    assert (info.value.field, info.value.value) == ("hostname", "pc001\n")
    assert (lab.xml(), lab.xml(inactive=True)) == before
    with pytest.raises(InvalidSpec):
        lab.reserve_many([("66:66:66:66:66:0b", "192.168.150.88", "pc001\n")])
    assert (lab.xml(), lab.xml(inactive=True)) == before


def test_ipv6_reservation_refuses_a_duid_ending_in_a_newline(hv: libvm.Hypervisor) -> None:
    dual = hv.ensure_network("dual", "10.160.0.0/24", subnet6="fd00:160::/64", forward="none")
    before = dual.xml()
    with pytest.raises(InvalidSpec) as info:
        dual.reserve(None, "fd00:160::6", client_id=DUID + "\n")
    assert info.value.field == "client_id"
    assert dual.xml() == before


def test_dns_host_refuses_a_name_ending_in_a_newline(lab: libvm.Network) -> None:
    with pytest.raises(InvalidSpec) as info:
        lab.add_dns_host("192.168.150.88", "pc001\n")
    assert info.value.field == "hostname"
    assert lab.dns_hosts() == []


@pytest.mark.parametrize(("field", "kwargs"), [("bridge", {"bridge": "virbr9\n"}),
                                               ("domain", {"domain": "lab.example\n"})])
def test_ensure_network_refuses_a_value_ending_in_a_newline(
        hv: libvm.Hypervisor, field: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidSpec) as info:
        hv.ensure_network("new", "10.161.0.0/24", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert "new" not in [n.name for n in hv.networks()]


def test_storage_refuses_names_and_paths_ending_in_a_newline(hv: libvm.Hypervisor) -> None:
    with pytest.raises(InvalidSpec) as info:
        hv.ensure_pool("images", "/var/lib/libvirt/images/libvm\n")
    assert info.value.field == "path"
    assert hv.pools() == []
    pool = hv.ensure_pool("images", "/var/lib/libvirt/images/libvm")
    calls: list[Callable[[str], object]] = [
        lambda v: pool.create(v, 2**20, "raw"), pool.volume, pool.has, lambda v: pool.upload_bytes(v, b"x")]
    for call in calls:
        with pytest.raises(InvalidSpec) as info:
            call("seed.iso\n")
        assert info.value.field == "name"
    assert pool.volumes() == []


def _patterns(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, pattern text, multiline?) of every re.compile/match/search/fullmatch with a literal pattern."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "re" and node.args
                and node.func.attr in ("compile", "match", "search", "fullmatch")):
            continue
        first = node.args[0]
        parts = [first] if isinstance(first, ast.Constant) else list(getattr(first, "values", []))
        text = "".join(str(p.value) for p in parts if isinstance(p, ast.Constant))
        multiline = "MULTILINE" in ast.dump(node) or "re.M" in ast.unparse(node)
        found.append((node.lineno, text, multiline))
    return found


MODULES = sorted(p.relative_to(LIBVM).as_posix() for p in LIBVM.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_no_pattern_anchors_with_dollar(module: str) -> None:
    """``$`` without re.MULTILINE accepts a final newline: anchor with fullmatch (or ``\\Z``)."""
    tree = ast.parse((LIBVM / module).read_text())
    bad = [(line, text) for line, text, multiline in _patterns(tree)
           if not multiline and re.search(r"(?<!\\)\$", text)]
    assert bad == []


def test_the_pattern_scan_sees_a_dollar() -> None:
    assert _patterns(ast.parse('import re\nX = re.compile(r"^a$")\n')) == [(2, "^a$", False)]


def test_check_duid_lowercases() -> None:
    assert check_duid(DUID.upper()) == DUID
    assert Reservation(None, "fd00::5", client_id=DUID.upper()).client_id == DUID
    assert netaddr.IPAddress("fd00::5") == Reservation(None, "fd00::5", client_id=DUID).ip


def test_connect_refuses_a_uri_ending_in_a_newline() -> None:
    with pytest.raises(InvalidSpec) as info:
        libvm.connect("test:///default\n")
    assert info.value.field == "uri"
