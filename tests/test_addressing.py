from __future__ import annotations

import netaddr
import pytest

from libvm import InvalidSpec, NoFreeAddress, generate_mac
from libvm.addressing import (
    check_host_ip,
    check_hostname,
    check_name,
    next_free,
    parse_ip,
    parse_mac,
    parse_subnet,
)

NET = parse_subnet("192.168.150.0/24")


@pytest.mark.parametrize("value", ["66:66:66:66:66:0b", "66-66-66-66-66-0B", "6666.6666.660b"])
def test_mac_forms_normalise(value: str) -> None:
    assert str(parse_mac(value)) == "66:66:66:66:66:0b"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("66:66:66:66:66", "48-bit"),
        ("zz:66:66:66:66:0b", "48-bit"),
        ("01:00:5e:00:00:01", "multicast"),
        ("ff:ff:ff:ff:ff:ff", "multicast"),
        ("00:00:00:00:00:00", "all-zero"),
    ],
)
def test_bad_macs_name_field_and_value(value: str, reason: str) -> None:
    with pytest.raises(InvalidSpec, match=reason) as info:
        parse_mac(value, "nics[0].mac")
    assert info.value.field == "nics[0].mac"
    assert info.value.value == value
    assert value in str(info.value)


@pytest.mark.parametrize("value", ["192.168.150", "192.168.150.256", "192.168.150.1/24", "host", ""])
def test_bad_ips(value: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_ip(value, "ip")
    assert info.value.field == "ip"


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("192.168.151.5", "outside"),
        ("192.168.150.0", "network address"),
        ("192.168.150.255", "broadcast"),
        ("192.168.150.1", "gateway"),
        ("fd00::5", "outside"),
    ],
)
def test_host_ip_rules(ip: str, reason: str) -> None:
    with pytest.raises(InvalidSpec, match=reason):
        check_host_ip(parse_ip(ip), NET)


def test_subnet_forms() -> None:
    assert parse_subnet("10.0.0.0/24").ip == netaddr.IPAddress("10.0.0.1")
    assert parse_subnet("10.0.0.254/24").ip == netaddr.IPAddress("10.0.0.254")
    for bad in ["10.0.0.0", "10.0.0.0/31", "10.0.0.255/24", "nonsense/24"]:
        with pytest.raises(InvalidSpec):
            parse_subnet(bad)


def test_generated_mac_is_deterministic_unicast_local_and_readable() -> None:
    ip = netaddr.IPAddress("192.168.150.88")
    mac = generate_mac("lab", ip)
    assert mac == generate_mac("lab", ip)
    assert mac.words[0] & 0x02 and not mac.words[0] & 0x01
    assert str(mac).endswith(":c0:a8:96:58")
    assert generate_mac("lab", ip) != generate_mac("other", ip)
    assert generate_mac("lab", ip) != generate_mac("lab", ip + 1)
    v6 = generate_mac("lab6", netaddr.IPAddress("fd00::5"))
    assert v6 != generate_mac("lab6", netaddr.IPAddress("fd00::6"))
    parse_mac(str(v6))


def test_hostnames() -> None:
    assert check_hostname("pc001") == "pc001"
    assert check_hostname("pc001.lab.example") == "pc001.lab.example"
    for bad in ["-pc", "pc_1", "a'b<c>", "", "x" * 64]:
        with pytest.raises(InvalidSpec):
            check_hostname(bad)


def test_next_free_skips_gateway_used_and_dynamic_range() -> None:
    used = {netaddr.IPAddress("192.168.150.2")}
    dynamic = [(netaddr.IPAddress("192.168.150.3"), netaddr.IPAddress("192.168.150.39"))]
    assert next_free(NET, used, exclude=dynamic) == netaddr.IPAddress("192.168.150.40")


def test_next_free_pool_and_exhaustion() -> None:
    pool = (netaddr.IPAddress("192.168.150.100"), netaddr.IPAddress("192.168.150.101"))
    assert next_free(NET, [], pool=pool) == netaddr.IPAddress("192.168.150.100")
    with pytest.raises(NoFreeAddress, match=r"192\.168\.150\.100"):
        next_free(NET, [netaddr.IPAddress("192.168.150.100"), netaddr.IPAddress("192.168.150.101")], pool=pool)


def test_generate_mac_takes_a_string_ip_with_the_same_result() -> None:
    assert str(generate_mac("lab", "192.168.150.88")) == "a6:11:c0:a8:96:58"
    assert generate_mac("lab", "192.168.150.88") == generate_mac("lab", netaddr.IPAddress("192.168.150.88"))
    assert str(generate_mac("lab6", "fd00::5")) == "ce:d1:a4:30:e8:4d"


@pytest.mark.parametrize(
    ("network", "ip", "field"),
    [
        ("lab", 5, "ip"),
        ("lab", None, "ip"),
        ("lab", "192.168.150", "ip"),
        ("lab", b"192.168.150.88", "ip"),
        ("", "192.168.150.88", "network"),
        (None, "192.168.150.88", "network"),
        (5, "192.168.150.88", "network"),
        ("a/b", "192.168.150.88", "network"),
    ],
)
def test_generate_mac_refuses_bad_arguments(network: object, ip: object, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        generate_mac(network, ip)  # type: ignore[arg-type]
    assert (info.value.field, info.value.value) == (field, network if field == "network" else ip)


@pytest.mark.parametrize("value", [5, 0x020000000001, None, True, b"66:66:66:66:66:0b", ["66:66:66:66:66:0b"]])
def test_mac_must_be_a_string_or_eui(value: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_mac(value, "nic.mac")
    assert info.value.field == "nic.mac"


@pytest.mark.parametrize("value", [5, None, 3.5, b"10.0.0.0/24", netaddr.IPAddress("10.0.0.1")])
def test_subnet_must_be_a_string_or_ipnetwork(value: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_subnet(value)
    assert info.value.field == "subnet"


@pytest.mark.parametrize("value", ["", " ", "a/b", "tab\there", 5, None])
def test_check_name(value: object) -> None:
    with pytest.raises(InvalidSpec):
        check_name(value, "nic.network")


def test_next_free_steps_over_a_run_of_used_addresses_into_and_out_of_the_range() -> None:
    """A run of reservations that reaches the dynamic range, and one past the pool's end."""
    run = [netaddr.IPAddress(f"192.168.150.{n}") for n in range(2, 12)]
    dynamic = [(netaddr.IPAddress("192.168.150.10"), netaddr.IPAddress("192.168.150.19"))]
    assert next_free(NET, run, exclude=dynamic) == netaddr.IPAddress("192.168.150.20")
    assert next_free(NET, run) == netaddr.IPAddress("192.168.150.12")
    assert next_free(NET, [int(ip) for ip in run]) == netaddr.IPAddress("192.168.150.12")
    pool = (netaddr.IPAddress("192.168.150.5"), netaddr.IPAddress("192.168.150.9"))
    with pytest.raises(NoFreeAddress, match=r"between 192\.168\.150\.5 and 192\.168\.150\.9$"):
        next_free(NET, run, pool=pool)
    with pytest.raises(NoFreeAddress, match=r"outside the dynamic DHCP range 192\.168\.150\.10-192\.168\.150\.19"):
        next_free(NET, run, pool=(pool[0], netaddr.IPAddress("192.168.150.19")), exclude=dynamic)


@pytest.mark.parametrize("value", ["a/b", " ", "x" * 201, "caf\u00e9"])
def test_check_name_for_a_lookup_leaves_names_no_object_can_have_to_not_found(value: str) -> None:
    assert check_name(value, lookup=True) == value  # libvirt answers "not found" for these


@pytest.mark.parametrize("value", ["", "tab\there", "del\x7f", "a\udcffb", 5, None, b"lab"])
def test_check_name_for_a_lookup_refuses_what_libvirt_cannot_be_sent(value: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        check_name(value, "name", lookup=True)
    assert info.value.field == "name"
