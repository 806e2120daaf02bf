"""The DHCP range limit libvm enforces is libvirt's own, on the real daemon (issue 15 §4.3).

libvm refuses a range whose ends differ above their last 16 bits before
libvirt sees it; these tests hand such ranges to libvirt directly to show that
it refuses exactly those (and takes the largest ones libvm takes). If a libvirt
release lifts the limit, they fail, and libvm's check can follow.
"""

from __future__ import annotations

import contextlib

import libvirt
import pytest

import libvm

NAME = "libvmtest-range"


def _libvirt_takes(uri: str, ip: str, start: str, end: str) -> bool:
    family = " family='ipv6'" if ":" in ip else ""
    xml = (f"<network><name>{NAME}</name><ip{family} address='{ip}' prefix='{64 if family else 8}'>"
           f"<dhcp><range start='{start}' end='{end}'/></dhcp></ip></network>")
    with libvm.connect(uri) as hv:
        try:
            net = hv.handle.networkDefineXML(xml)
        except libvirt.libvirtError as exc:
            assert "too large" in str(exc)
            return False
        with contextlib.suppress(libvirt.libvirtError):
            net.undefine()
        return True


@pytest.mark.parametrize(("ip", "start", "end", "taken"), [
    ("10.0.0.1", "10.0.0.2", "10.0.255.255", True),
    ("10.0.0.1", "10.0.255.250", "10.1.0.5", False),
    ("fd00::1", "fd00::2", "fd00::ffff", True),
    ("fd00::1", "fd00::fff0", "fd00::1:5", False),
])
def test_libvirt_refuses_exactly_the_ranges_libvm_refuses(uri: str, ip: str, start: str, end: str,
                                                          taken: bool) -> None:
    try:
        if ":" in ip:
            libvm.NetworkSpec.build("x", "10.0.0.0/8", subnet6=f"{ip}/64", dhcp_range6=(start, end))
        else:
            libvm.NetworkSpec.build("x", f"{ip}/8", dhcp_range=(start, end))
        libvm_takes = True
    except libvm.InvalidSpec:
        libvm_takes = False
    assert libvm_takes == taken == _libvirt_takes(uri, ip, start, end)
