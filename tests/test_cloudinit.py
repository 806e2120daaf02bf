"""cloud-init NoCloud seeds: validation, rendering, merging and the ISO read back."""

from __future__ import annotations

import dataclasses
import io
import pickle
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import netaddr
import pycdlib
import pytest
import yaml

import libvm
from libvm import CloudInit, InvalidSpec
from libvm.cloudinit import (
    SeedNic,
    build_seed,
    effective_hostname,
    meta_data,
    network_config,
    render_seed,
    user_data,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb4 me@laptop"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@bastion"
NIC0 = SeedNic("52:54:00:12:34:56", "192.168.150.88", 24, "192.168.150.1")
NIC1 = SeedNic("66:66:66:66:66:0b", "fd00:150::58", 64, "fd00:150::1")


def _config(text: str) -> dict[str, Any]:
    assert text.startswith("#cloud-config\n")
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def _refused(make: Callable[[], object], field: str) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as info:
        make()
    assert info.value.field == field, info.value
    return info.value


# --- CloudInit --------------------------------------------------------------


def test_defaults() -> None:
    ci = CloudInit()
    assert (ci.hostname, ci.ssh_authorized_keys, ci.user_data, ci.static_network) == (None, (), None, False)


def test_keys_from_any_iterable_become_a_stripped_tuple() -> None:
    ci = CloudInit(ssh_authorized_keys=(k for k in [KEY + "\n", "  " + RSA]))
    assert ci.ssh_authorized_keys == (KEY, RSA)
    assert CloudInit(ssh_authorized_keys=[KEY]) == CloudInit(ssh_authorized_keys=(KEY,))


def test_exported_and_frozen_and_picklable() -> None:
    assert libvm.CloudInit is CloudInit
    ci = CloudInit(hostname="pc001", ssh_authorized_keys=[KEY], user_data={"packages": ["htop"]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.hostname = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(ci)) == ci
    assert hash(ci) == hash(CloudInit(hostname="pc001", ssh_authorized_keys=[KEY], user_data={"packages": ["htop"]}))
    assert dataclasses.replace(ci, hostname="pc002").user_data == {"packages": ["htop"]}
    assert "_config" not in repr(ci)


def test_dict_user_data_is_copied() -> None:
    mine: dict[str, Any] = {"packages": ("htop",), "write_files": [{"path": "/etc/x", "content": "1"}]}
    ci = CloudInit(user_data=mine)
    mine["write_files"][0]["content"] = "changed"
    mine["runcmd"] = ["reboot"]
    assert ci.user_data == {"packages": ["htop"], "write_files": [{"path": "/etc/x", "content": "1"}]}
    assert "runcmd" not in _config(user_data(ci, "pc001"))


def test_str_user_data_is_kept_as_given() -> None:
    text = "#cloud-config\n# my comment\npackages: [htop]\n"
    assert CloudInit(user_data=text).user_data == text
    assert CloudInit(user_data="#cloud-config\r\npackages: [htop]\r\n").user_data is not None
    assert _config(user_data(CloudInit(user_data="#cloud-config\n"), "pc001")) == {"hostname": "pc001"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hostname": 5}, "cloud_init.hostname"),
        ({"hostname": ""}, "cloud_init.hostname"),
        ({"hostname": "bad_name"}, "cloud_init.hostname"),
        ({"hostname": "-pc"}, "cloud_init.hostname"),
        ({"hostname": b"pc001"}, "cloud_init.hostname"),
        ({"ssh_authorized_keys": KEY}, "cloud_init.ssh_authorized_keys"),
        ({"ssh_authorized_keys": KEY.encode()}, "cloud_init.ssh_authorized_keys"),
        ({"ssh_authorized_keys": None}, "cloud_init.ssh_authorized_keys"),
        ({"ssh_authorized_keys": 5}, "cloud_init.ssh_authorized_keys"),
        ({"ssh_authorized_keys": {KEY: 1}}, "cloud_init.ssh_authorized_keys"),
        ({"ssh_authorized_keys": [KEY, 5]}, "cloud_init.ssh_authorized_keys[1]"),
        ({"ssh_authorized_keys": [KEY.encode()]}, "cloud_init.ssh_authorized_keys[0]"),
        ({"ssh_authorized_keys": [""]}, "cloud_init.ssh_authorized_keys[0]"),
        ({"ssh_authorized_keys": ["AAAAC3Nza me@x"]}, "cloud_init.ssh_authorized_keys[0]"),
        ({"ssh_authorized_keys": [KEY, f"{KEY}\n{RSA}"]}, "cloud_init.ssh_authorized_keys[1]"),
        ({"ssh_authorized_keys": [f"{KEY}\rx"]}, "cloud_init.ssh_authorized_keys[0]"),
        ({"user_data": 5}, "cloud_init.user_data"),
        ({"user_data": b"#cloud-config\n"}, "cloud_init.user_data"),
        ({"user_data": ["#cloud-config"]}, "cloud_init.user_data"),
        ({"user_data": "packages: [htop]\n"}, "cloud_init.user_data"),
        ({"user_data": " #cloud-config\n"}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config-archive\n- type: text/x-shellscript\n"}, "cloud_init.user_data"),
        ({"user_data": "#!/bin/sh\necho hi\n"}, "cloud_init.user_data"),
        ({"user_data": "#include\nhttp://example.invalid/x\n"}, "cloud_init.user_data"),
        ({"user_data": "## template: jinja\n#cloud-config\n"}, "cloud_init.user_data"),
        ({"user_data": "Content-Type: multipart/mixed; boundary=x\n"}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config\npackages: [htop\n"}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config\n- a list\n"}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config\njust text\n"}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config\nx: !!python/object:os.system ls\n"}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config\nx: \x00\n"}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config\n1: one\n"}, "cloud_init.user_data[1]"),
        ({"user_data": {5: "x"}}, "cloud_init.user_data[5]"),
        ({"user_data": {"x": object()}}, "cloud_init.user_data"),
        ({"user_data": "#cloud-config\nhostname: bad_name\n"}, "cloud_init.user_data['hostname']"),
        ({"user_data": {"hostname": 5}}, "cloud_init.user_data['hostname']"),
        ({"user_data": {"ssh_authorized_keys": KEY}}, "cloud_init.user_data['ssh_authorized_keys']"),
        ({"user_data": {"ssh_authorized_keys": [5]}}, "cloud_init.user_data['ssh_authorized_keys']"),
        ({"static_network": 1}, "cloud_init.static_network"),
        ({"static_network": "yes"}, "cloud_init.static_network"),
        ({"static_network": None}, "cloud_init.static_network"),
    ],
)
def test_bad_cloud_init_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    _refused(lambda: CloudInit(**kwargs), field)


def test_other_user_data_formats_are_refused_by_name() -> None:
    error = _refused(lambda: CloudInit(user_data="#!/bin/bash\ntouch /x\n"), "cloud_init.user_data")
    assert "shell script" in error.reason and "runcmd" in error.reason
    error = _refused(lambda: CloudInit(user_data="#cloud-config\nfoo: [\n"), "cloud_init.user_data")
    assert "not valid YAML" in error.reason and "\n" not in error.reason


# --- meta-data ----------------------------------------------------------------


def test_meta_data() -> None:
    assert meta_data("4d1f0c1e-uuid", "pc001") == "instance-id: 4d1f0c1e-uuid\nlocal-hostname: pc001\n"
    # A value YAML would read as something else stays a string.
    assert yaml.safe_load(meta_data("1e10", "pc001")) == {"instance-id": "1e10", "local-hostname": "pc001"}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((5, "pc001"), "instance_id"),
        (("", "pc001"), "instance_id"),
        ((" ", "pc001"), "instance_id"),
        (("a\nb", "pc001"), "instance_id"),
        (("id", "bad_name"), "hostname"),
        (("id", None), "hostname"),
    ],
)
def test_bad_meta_data(args: tuple[Any, Any], field: str) -> None:
    _refused(lambda: meta_data(*args), field)


# --- user-data merging --------------------------------------------------------


def test_user_data_of_libvm_alone() -> None:
    text = user_data(CloudInit(ssh_authorized_keys=[KEY]), "pc001")
    assert text == f"#cloud-config\nhostname: pc001\nssh_authorized_keys:\n- {KEY}\n"
    assert _config(user_data(CloudInit(), "pc001")) == {"hostname": "pc001"}


def test_hostname_explicit_beats_users_beats_default() -> None:
    mine = {"hostname": "from-user"}
    assert _config(user_data(CloudInit(hostname="explicit", user_data=mine), "dflt"))["hostname"] == "explicit"
    assert _config(user_data(CloudInit(user_data=mine), "dflt"))["hostname"] == "from-user"
    assert _config(user_data(CloudInit(), "dflt"))["hostname"] == "dflt"
    assert effective_hostname(CloudInit(user_data="#cloud-config\nhostname: web\n"), "dflt") == "web"
    _refused(lambda: effective_hostname(CloudInit(), "bad_name"), "hostname")


def test_users_keys_come_first_and_libvm_keys_are_appended_once() -> None:
    ci = CloudInit(ssh_authorized_keys=[KEY, RSA], user_data={"ssh_authorized_keys": [RSA, "ssh-dss AAAA old"]})
    assert _config(user_data(ci, "pc001"))["ssh_authorized_keys"] == [RSA, "ssh-dss AAAA old", KEY]


def test_users_other_keys_are_kept_whole() -> None:
    text = (
        "#cloud-config\n"
        "# comments are lost, the values are not\n"
        "packages: [htop, curl]\n"
        "users:\n  - default\n  - name: ops\n    groups: [wheel]\n"
        "runcmd:\n  - [touch, /tmp/done]\n"
        "write_files:\n  - path: /etc/motd\n    content: |\n      hello\n      world\n"
        "ssh_pwauth: no\n"
        "timezone: '0755'\n"
    )
    merged = _config(user_data(CloudInit(hostname="pc001", ssh_authorized_keys=[KEY], user_data=text), "x"))
    assert merged == {
        "hostname": "pc001",
        "packages": ["htop", "curl"],
        "users": ["default", {"name": "ops", "groups": ["wheel"]}],
        "runcmd": [["touch", "/tmp/done"]],
        "write_files": [{"path": "/etc/motd", "content": "hello\nworld\n"}],
        "ssh_pwauth": False,
        "timezone": "0755",
        "ssh_authorized_keys": [KEY],
    }


@pytest.mark.parametrize(
    "value",
    ["no", "yes", "on", "~", "null", "0755", "1:20", "52:54:00:12:34:56", "1e10", "", " lead", "trail ", "a: b",
     "#not a comment", "- item", "'quoted'", '"dq"', "multi\nline\n", "\t\x07\x7f\x85\u2028\ufeff", "😀 ünïcode",
     "2024-01-01", "x" * 300],
)
def test_values_survive_the_round_trip_through_yaml(value: str) -> None:
    ci = CloudInit(user_data={"write_files": [{"path": "/x", "content": value}]})
    assert _config(user_data(ci, "pc001"))["write_files"][0]["content"] == value


def test_long_key_stays_on_one_line() -> None:
    key = "ssh-rsa " + "A" * 700 + " me@x"
    assert f"- {key}\n" in user_data(CloudInit(ssh_authorized_keys=[key]), "pc001")


# --- network-config ------------------------------------------------------------


def test_network_config_v2() -> None:
    config = yaml.safe_load(network_config([NIC0, NIC1]))
    assert config == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:12:34:56"},
                "set-name": "eth0",
                "addresses": ["192.168.150.88/24"],
                "gateway4": "192.168.150.1",
                "nameservers": {"addresses": ["192.168.150.1"]},
            },
            "eth1": {
                "match": {"macaddress": "66:66:66:66:66:0b"},
                "set-name": "eth1",
                "addresses": ["fd00:150::58/64"],
                "nameservers": {"addresses": ["fd00:150::1"]},
            },
        },
    }


def test_network_config_takes_netaddr_values_and_a_dns_server() -> None:
    nic = SeedNic(netaddr.EUI("52-54-00-AA-BB-CC"), netaddr.IPAddress("fd00::5"), 64,
                  netaddr.IPAddress("fd00::1"), dns="fd00::53")
    eth0 = yaml.safe_load(network_config([nic]))["ethernets"]["eth0"]
    assert eth0["match"] == {"macaddress": "52:54:00:aa:bb:cc"}
    assert eth0["gateway6"] == "fd00::1" and "routes" not in eth0
    assert eth0["nameservers"] == {"addresses": ["fd00::53"]}


@pytest.mark.parametrize(
    ("nics", "field"),
    [
        ([], "nics"),
        (NIC0, "nics"),
        ("eth0", "nics"),
        (None, "nics"),
        ({NIC0}, "nics"),
        ([NIC0, ("52:54:00:00:00:01", "10.0.0.2", 24, "10.0.0.1")], "nics[1]"),
        ([NIC0._replace(mac="zz")], "nics[0].mac"),
        ([NIC0._replace(mac=5)], "nics[0].mac"),
        ([NIC0, NIC1._replace(mac="52:54:00:12:34:56")], "nics[1].mac"),
        ([NIC0._replace(ip="192.168.150.88/24")], "nics[0].ip"),
        ([NIC0._replace(ip=None)], "nics[0].ip"),
        ([NIC0._replace(gateway="nope")], "nics[0].gateway"),
        ([NIC0._replace(gateway="fd00::1")], "nics[0].gateway"),
        ([NIC0._replace(dns="x")], "nics[0].dns"),
        ([NIC0._replace(prefixlen=33)], "nics[0].prefixlen"),
        ([NIC0._replace(prefixlen=-1)], "nics[0].prefixlen"),
        ([NIC0._replace(prefixlen="24")], "nics[0].prefixlen"),  # type: ignore[arg-type]
        ([NIC0._replace(prefixlen=True)], "nics[0].prefixlen"),
        ([NIC1._replace(prefixlen=129)], "nics[0].prefixlen"),
    ],
)
def test_bad_network_config_names_the_field(nics: Any, field: str) -> None:
    _refused(lambda: network_config(nics), field)


@pytest.mark.parametrize(
    ("nic", "field"),
    [
        (NIC0._replace(prefixlen=0), "nics[0].prefixlen"),
        (NIC1._replace(prefixlen=0), "nics[0].prefixlen"),
        (NIC0._replace(gateway="192.168.151.1"), "nics[0].gateway"),       # off-link
        (NIC0._replace(prefixlen=32), "nics[0].gateway"),                  # every gateway is off-link
        (NIC1._replace(gateway="fd00:151::1"), "nics[0].gateway"),
        (NIC0._replace(gateway="192.168.150.88"), "nics[0].gateway"),      # the NIC itself
        (NIC0._replace(gateway="192.168.150.0"), "nics[0].gateway"),
        (NIC0._replace(gateway="192.168.150.255"), "nics[0].gateway"),
        (NIC0._replace(ip="192.168.150.0"), "nics[0].ip"),                 # the network address
        (NIC0._replace(ip="192.168.150.255"), "nics[0].ip"),               # the broadcast address
        (NIC1._replace(ip="fd00:150::"), "nics[0].ip"),
        (SeedNic(NIC0.mac, "169.254.0.5", 16, "169.254.0.1"), "nics[0].ip"),
        (SeedNic(NIC0.mac, "127.0.0.5", 8, "127.0.0.1"), "nics[0].ip"),
    ],
)
def test_network_config_refuses_an_address_the_guest_cannot_use(nic: SeedNic, field: str) -> None:
    _refused(lambda: network_config([NIC1, nic] if field.startswith("nics[1]") else [nic]), field)


def test_network_config_takes_a_link_local_ipv6_gateway() -> None:
    eth0 = yaml.safe_load(network_config([NIC1._replace(gateway="fe80::1")]))["ethernets"]["eth0"]
    assert eth0["addresses"] == ["fd00:150::58/64"]


# --- the ISO -------------------------------------------------------------------


@pytest.fixture
def seed() -> Iterator[pycdlib.PyCdlib]:
    image = build_seed("instance-id: i\nlocal-hostname: pc001\n", "#cloud-config\nhostname: pc001\n",
                       "version: 2\n")
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    yield iso
    iso.close()


def _read(iso: pycdlib.PyCdlib, **path: str) -> str:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue().decode("utf-8")


def test_seed_is_labelled_cidata_with_joliet_and_rock_ridge(seed: pycdlib.PyCdlib) -> None:
    assert seed.pvd.volume_identifier.decode("ascii").rstrip() == "cidata"
    assert seed.has_joliet() and seed.has_rock_ridge()
    assert seed.joliet_vd is not None
    assert seed.joliet_vd.volume_identifier.decode("utf-16-be").rstrip() == "cidata"


def test_seed_holds_the_three_files_by_every_name(seed: pycdlib.PyCdlib) -> None:
    names = {child.rock_ridge.name() for child in seed.list_children(rr_path="/") if not child.is_dot()
             and not child.is_dotdot()}
    assert names == {b"meta-data", b"user-data", b"network-config"}
    expected = {
        "meta-data": ("META_DAT", "instance-id: i\nlocal-hostname: pc001\n"),
        "user-data": ("USER_DAT", "#cloud-config\nhostname: pc001\n"),
        "network-config": ("NETWORK_", "version: 2\n"),
    }
    for name, (iso_name, content) in expected.items():
        assert _read(seed, rr_path=f"/{name}") == content
        assert _read(seed, joliet_path=f"/{name}") == content
        assert _read(seed, iso_path=f"/{iso_name}.;1") == content


def test_seed_without_network_config() -> None:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(build_seed("instance-id: i\n", "#cloud-config\n")))
    try:
        names = {child.rock_ridge.name() for child in iso.list_children(rr_path="/") if not child.is_dot()
                 and not child.is_dotdot()}
        assert names == {b"meta-data", b"user-data"}
    finally:
        iso.close()


def test_seed_keeps_utf8() -> None:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(build_seed("instance-id: i\n", "#cloud-config\nmotd: 'grüß 😀'\n")))
    try:
        assert _read(iso, rr_path="/user-data") == "#cloud-config\nmotd: 'grüß 😀'\n"
    finally:
        iso.close()


@pytest.mark.parametrize(
    ("args", "field"),
    [((b"m", "u"), "meta_data"), (("m", None), "user_data"), (("m", "u", b"n"), "network_config")],
)
def test_bad_seed_documents(args: tuple[Any, ...], field: str) -> None:
    _refused(lambda: build_seed(*args), field)


def _files(image: bytes) -> dict[str, str]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        return {child.rock_ridge.name().decode(): _read(iso, rr_path=f"/{child.rock_ridge.name().decode()}")
                for child in iso.list_children(rr_path="/") if not child.is_dot() and not child.is_dotdot()}
    finally:
        iso.close()


def test_render_seed_with_static_network() -> None:
    ci = CloudInit(ssh_authorized_keys=[KEY], user_data={"packages": ["htop"]}, static_network=True)
    files = _files(render_seed(ci, "uuid-1", "pc001", [NIC0]))
    assert files == {
        "meta-data": meta_data("uuid-1", "pc001"),
        "user-data": user_data(ci, "pc001"),
        "network-config": network_config([NIC0]),
    }


def test_render_seed_with_dhcp_has_no_network_config_and_agrees_on_the_hostname() -> None:
    ci = CloudInit(user_data="#cloud-config\nhostname: web\n")
    files = _files(render_seed(ci, "uuid-1", "pc001", [NIC0]))
    assert set(files) == {"meta-data", "user-data"}
    assert yaml.safe_load(files["meta-data"])["local-hostname"] == "web"
    assert _config(files["user-data"])["hostname"] == "web"


def test_render_seed_refuses_bad_input() -> None:
    _refused(lambda: render_seed({"hostname": "x"}, "id", "pc001"), "cloud_init")  # type: ignore[arg-type]
    _refused(lambda: render_seed(CloudInit(static_network=True), "id", "pc001"), "nics")
    _refused(lambda: render_seed(CloudInit(), "", "pc001"), "instance_id")


@pytest.mark.skipif(shutil.which("isoinfo") is None, reason="isoinfo (genisoimage) is not installed")
def test_isoinfo_reads_the_seed(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    path.write_bytes(render_seed(CloudInit(static_network=True), "uuid-1", "pc001", [NIC0]))
    info = subprocess.run(["isoinfo", "-d", "-i", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: cidata" in info
    assert "Joliet" in info and "Rock Ridge" in info
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(path)], capture_output=True, text=True,
                             check=True).stdout
    assert sorted(listing.split()) == ["/meta-data", "/network-config", "/user-data"]
    user = subprocess.run(["isoinfo", "-J", "-x", "/user-data", "-i", str(path)], capture_output=True,
                          check=True).stdout
    assert user.decode() == user_data(CloudInit(static_network=True), "pc001")
