"""The test guest's console parsers and the shell functions that read its NoCloud seed.

The shell functions (``SEED_FUNCTIONS``) run here under the host's static
busybox, with every applet on PATH pointing at it, so they meet the same
``sh``/``awk`` as inside the guest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from libvm.testing import parse_console, parse_seed_lines
from libvm.testing.guest import SEED_FUNCTIONS

IN_CI = os.environ.get("CI", "").lower() == "true"

USER_DATA = """#cloud-config
hostname: web1
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoo test@host
  - "ssh-rsa AAAAB3Nza bar@baz"   # quoted, with a comment
users:
- name: x
  groups: [a, b]
libvm_no_ssh: true
"""

META_DATA = """instance-id: iid-web1
local-hostname: 'web1-meta'
"""

NETWORK_CONFIG = """network:
  version: 2
  ethernets:
    nic0:
      match:
        macaddress: "52:54:00:AA:bb:cc"
      set-name: eth0
      addresses:
        - 10.0.0.5/24
      routes:
        - to: 10.1.0.0/16
          via: 10.0.0.254
        - to: default
          via: 10.0.0.1
      nameservers:
        addresses: [10.0.0.1, 9.9.9.9]
    eth1:
      match: {macaddress: '52:54:00:00:00:02'}
      addresses: [192.168.7.9/24]
      gateway4: 192.168.7.1
    eth2:
      dhcp4: true
"""


@pytest.fixture(scope="module")
def busybox_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None:
        if IN_CI:
            pytest.fail("busybox (busybox-static) missing under CI=true", pytrace=False)
        pytest.skip("busybox not installed (apt-get install busybox-static)")
    bindir = tmp_path_factory.mktemp("busybox")
    subprocess.run([busybox, "--install", "-s", str(bindir)], check=True)
    return bindir


def seed_sh(bindir: Path, seed: Path, script: str) -> str:
    """Run ``script`` after sourcing the guest's seed functions, in ``seed``."""
    (seed / "libvm-seed.sh").write_text(SEED_FUNCTIONS)
    proc = subprocess.run(
        [str(bindir / "sh"), "-c", f". ./libvm-seed.sh; {script}"],
        cwd=seed,
        env={"PATH": str(bindir)},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    (tmp_path / "user-data").write_text(USER_DATA)
    (tmp_path / "meta-data").write_text(META_DATA)
    (tmp_path / "network-config").write_text(NETWORK_CONFIG)
    return tmp_path


def test_yflat_flattens_the_yaml_subset(busybox_bin: Path, seed: Path) -> None:
    out = seed_sh(busybox_bin, seed, "yflat user-data").splitlines()
    assert out == [
        "hostname=web1",
        "ssh_authorized_keys.0=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoo test@host",
        "ssh_authorized_keys.1=ssh-rsa AAAAB3Nza bar@baz",
        "users.0.name=x",
        "users.0.groups.0=a",
        "users.0.groups.1=b",
        "libvm_no_ssh=true",
    ]


def test_yget_and_ylist(busybox_bin: Path, seed: Path) -> None:
    script = (
        "yget user-data hostname; yget meta-data local-hostname; yget meta-data instance-id;"
        " ylist user-data ssh_authorized_keys; echo \"[$(yget user-data nothing)]\"; yget absent hostname; echo end"
    )
    assert seed_sh(busybox_bin, seed, script).splitlines() == [
        "web1",
        "web1-meta",
        "iid-web1",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoo test@host",
        "ssh-rsa AAAAB3Nza bar@baz",
        "[]",
        "end",
    ]


def test_netplan_reads_static_ethernets(busybox_bin: Path, seed: Path) -> None:
    assert seed_sh(busybox_bin, seed, "netplan network-config").splitlines() == [
        "nic0 52:54:00:aa:bb:cc 10.0.0.1 10.0.0.1,9.9.9.9 10.0.0.5/24",
        "eth1 52:54:00:00:00:02 192.168.7.1 - 192.168.7.9/24",
    ]


def test_netplan_without_match_or_gateway(busybox_bin: Path, seed: Path) -> None:
    (seed / "network-config").write_text(
        "version: 2\nethernets:\n  eth0:\n    addresses:\n    - 10.9.0.2/16\n    - 10.9.0.3/16\n"
    )
    assert seed_sh(busybox_bin, seed, "netplan network-config").splitlines() == [
        "eth0 - - - 10.9.0.2/16 10.9.0.3/16",
    ]
    assert seed_sh(busybox_bin, seed, "netplan missing-file; echo end") == "end\n"


def test_static_up_configures_the_matching_nic(busybox_bin: Path, seed: Path) -> None:
    # `ip` is a shell function here, checked before anything runs: the host's
    # interfaces must never be touched (busybox sh may prefer its own applets to PATH).
    script = (
        'ip() { echo "ip $*"; }; type ip | grep -q function || exit 99; RESOLV_CONF=./resolv.conf;'
        " netplan network-config >plan;"
        " p=$(plan_for eth0 52:54:00:aa:bb:cc plan); static_up eth0 52:54:00:aa:bb:cc $p;"
        " p=$(plan_for ens9 52:54:00:00:00:02 plan); static_up ens9 52:54:00:00:00:02 $p;"
        " [ -n \"$(plan_for eth1 52:54:00:00:00:09 plan)\" ] || echo eth1 dhcp;"
        " [ -n \"$(plan_for eth2 52:54:00:00:00:03 plan)\" ] || echo eth2 dhcp; cat resolv.conf"
    )
    assert seed_sh(busybox_bin, seed, script).splitlines() == [
        "ip addr add 10.0.0.5/24 dev eth0",
        "ip route add default via 10.0.0.1 dev eth0",
        "LIBVM-STATIC mac=52:54:00:aa:bb:cc ip=10.0.0.5",
        "ip addr add 192.168.7.9/24 dev ens9",  # matched by MAC, whatever the name
        "ip route add default via 192.168.7.1 dev ens9",
        "LIBVM-STATIC mac=52:54:00:00:00:02 ip=192.168.7.9",
        "eth1 dhcp",  # its entry names another MAC
        "eth2 dhcp",  # dhcp4: true, no addresses
        "nameserver 10.0.0.1",
        "nameserver 9.9.9.9",
    ]


CONSOLE = """\x1bc\x1b[?7l\x1b[2JLIBVM-BOOT\r
LIBVM-SEED dev=/dev/sr0 instance-id=iid-web1\r
LIBVM-HOSTNAME web1\r
LIBVM-SSHKEY ssh-ed25519 AAAAC3Nza test@host\r
LIBVM-SSHKEY ssh-rsa AAAAB3Nza bar@baz\r
LIBVM-STATIC mac=52:54:00:AA:BB:CC ip=10.0.0.5\r
LIBVM-LEASE mac=52:54:00:00:00:03 ip=192.168.150.88\r
LIBVM-SSH-LISTENING\r
LIBVM-DONE\r
"""


def test_parse_seed_lines() -> None:
    assert parse_seed_lines(CONSOLE) == {
        "seed": True,
        "no_seed": False,
        "instance_id": "iid-web1",
        "hostname": "web1",
        "ssh_keys": ["ssh-ed25519 AAAAC3Nza test@host", "ssh-rsa AAAAB3Nza bar@baz"],
        "static": {"52:54:00:aa:bb:cc": "10.0.0.5"},
        "ssh_listening": True,
        "no_ssh": False,
    }
    assert parse_console(CONSOLE) == {"52:54:00:00:00:03": "192.168.150.88"}


def test_parse_seed_lines_without_seed() -> None:
    report = parse_seed_lines("LIBVM-BOOT\nLIBVM-NOSEED\nLIBVM-NOSSH\nLIBVM-DONE\n")
    assert report["no_seed"] and report["no_ssh"]
    assert not report["seed"] and not report["ssh_listening"]
    assert report["hostname"] is None and report["instance_id"] is None
    assert report["ssh_keys"] == [] and report["static"] == {}
