"""libvm's ``network-config`` through cloud-init's own renderers: every guest network stack
gets the address, the default gateway and the DNS server (docs/cloud-init.md).

cloud-init comes from Debian's package (``libvm.testing.renderers``: ``apt-get download``,
unpacked into a cache, run with the host's ``/usr/bin/python3``).  Without apt or that
Python the tests are skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from libvm.cloudinit import SeedNic, network_config
from libvm.testing.renderers import RENDERERS, cloud_init_tree, render_network

IN_CI = os.environ.get("CI", "").lower() == "true"

V4 = [SeedNic("52:54:00:12:34:56", "192.168.150.88", 24, "192.168.150.1"),
      SeedNic("52:54:00:12:34:57", "10.1.0.5", 16, "10.1.0.1", dns="10.1.0.53")]
V6 = [SeedNic("52:54:00:12:34:58", "fd00:150::58", 64, "fd00:150::1")]


@pytest.fixture(scope="module")
def cloud_init() -> None:
    try:
        cloud_init_tree()
        if not os.access("/usr/bin/python3", os.X_OK):
            raise RuntimeError("no /usr/bin/python3 to run Debian's cloud-init with")
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"cloud-init's renderers are unavailable under CI=true: {exc}", pytrace=False)
        pytest.skip(f"cloud-init's renderers are unavailable: {exc}")


def rendered(nics: list[SeedNic], renderer: str) -> dict[str, str]:
    """The renderer's files, comments dropped."""
    files = render_network(network_config(nics), renderer)
    return {path: "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", ";")))
            for path, text in files.items()}


def stanzas(text: str) -> dict[str, list[str]]:
    """ifupdown's ``iface NAME ...`` stanzas: name -> option lines."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        head = re.match(r"iface (\S+) ", line)
        if head:
            current = found.setdefault(head.group(1), [line.strip()])
        elif line.startswith((" ", "\t")) and line.strip():
            current.append(line.strip())
        elif line.strip():
            current = []
    return found


def ini(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of an INI-like file (systemd units, NetworkManager keyfiles, ifcfg)."""
    section, out = "", []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, value = line.split("=", 1)
            out.append((section, key.strip(), value.strip().strip('"')))
    return out


pytestmark = pytest.mark.usefixtures("cloud_init")


def test_eni_has_native_gateway_and_dns_and_no_net_tools_route() -> None:
    files = rendered(V4, "eni")
    text = files["etc/network/interfaces.d/50-cloud-init"]
    eth = stanzas(text)
    assert eth["eth0"][0] == "iface eth0 inet static"
    assert {"address 192.168.150.88/24", "gateway 192.168.150.1", "dns-nameservers 192.168.150.1"} <= set(eth["eth0"])
    assert "address 10.1.0.5/16" in eth["eth1"] and "dns-nameservers 10.1.0.53" in eth["eth1"]
    assert not any(o.startswith("gateway") for o in eth["eth1"])  # one default route, on the first NIC
    # A "routes: [{to: 0.0.0.0/0}]" item became "post-up route add default gw ... || true": net-tools.
    assert "route add" not in text and "post-up" not in text


def test_netplan_keeps_gateway_and_nameservers() -> None:
    files = rendered(V4, "netplan")
    eths = yaml.safe_load(files["etc/netplan/50-cloud-init.yaml"])["network"]["ethernets"]
    assert eths["eth0"]["addresses"] == ["192.168.150.88/24"]
    assert eths["eth0"]["gateway4"] == "192.168.150.1"
    assert eths["eth0"]["nameservers"]["addresses"] == ["192.168.150.1"]
    assert eths["eth0"]["match"] == {"macaddress": "52:54:00:12:34:56"}
    assert "gateway4" not in eths["eth1"] and "routes" not in eths["eth1"]
    assert eths["eth1"]["nameservers"]["addresses"] == ["10.1.0.53"]


def test_networkd_has_address_gateway_route_and_dns() -> None:
    files = rendered(V4, "networkd")
    eth0 = ini(files["etc/systemd/network/10-cloud-init-eth0.network"])
    assert ("Address", "Address", "192.168.150.88/24") in eth0
    assert ("Route", "Gateway", "192.168.150.1") in eth0
    assert ("Network", "DNS", "192.168.150.1") in eth0
    assert ("Match", "MACAddress", "52:54:00:12:34:56") in eth0
    eth1 = ini(files["etc/systemd/network/10-cloud-init-eth1.network"])
    assert ("Network", "DNS", "10.1.0.53") in eth1 and not any(k == "Gateway" for _s, k, _v in eth1)


def test_sysconfig_has_gateway_and_dns() -> None:
    files = rendered(V4, "sysconfig")
    eth0 = {k: v for _s, k, v in ini(files["etc/sysconfig/network-scripts/ifcfg-eth0"])}
    assert (eth0["IPADDR"], eth0["NETMASK"], eth0["GATEWAY"], eth0["DNS1"]) == (
        "192.168.150.88", "255.255.255.0", "192.168.150.1", "192.168.150.1")
    assert eth0["DEFROUTE"] == "yes" and eth0["BOOTPROTO"] == "none"
    eth1 = {k: v for _s, k, v in ini(files["etc/sysconfig/network-scripts/ifcfg-eth1"])}
    assert "GATEWAY" not in eth1 and eth1["DNS1"] == "10.1.0.53"
    assert "nameserver 192.168.150.1" in files["etc/resolv.conf"]


def test_network_manager_has_gateway_and_dns() -> None:
    files = rendered(V4, "network-manager")
    eth0 = ini(files["etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection"])
    assert ("ipv4", "method", "manual") in eth0
    assert ("ipv4", "address1", "192.168.150.88/24") in eth0 and ("ipv4", "gateway", "192.168.150.1") in eth0
    assert ("ipv4", "dns", "192.168.150.1;") in eth0


@pytest.mark.parametrize("renderer", sorted(RENDERERS))
def test_ipv6_gateway_and_dns_rendered(renderer: str) -> None:
    text = "\n".join(rendered(V6, renderer).values())
    assert "fd00:150::58" in text
    gateway = {
        "eni": "gateway fd00:150::1",
        "netplan": "gateway6: fd00:150::1",
        "networkd": "Gateway=fd00:150::1",
        "sysconfig": "IPV6_DEFAULTGW=fd00:150::1",
        "network-manager": "gateway=fd00:150::1",
    }[renderer]
    assert gateway in text, text
    assert re.search(r"(dns-nameservers |DNS1?=|DNS=|dns=|- )fd00:150::1\b", text), text
