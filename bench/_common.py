"""What the benchmarks share: the daemon they run on, ``--help``, their arguments and their cleanup.

The raw libvirt-python constants are here too: the benchmarks compare libvm with
raw ``virNetworkUpdate`` calls, so they use libvirt directly (``libvm`` itself
keeps libvirt behind ``libvm/_live.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import libvirt

import libvm

#: A raw DHCP host update, live and persistent, as ``virsh net-update ... --live --config`` makes it.
FLAGS = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
SECTION = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
ADD = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST

#: The tiny test guest as raw libvirt-python defines it: the devices libvm's XML has, one NIC.
DOMAIN_XML = """<domain type="qemu">
  <name>{name}</name>
  <memory unit="MiB">256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64">hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type="network">
      <mac address="{mac}"/>
      <source network="{network}"/>
      <model type="virtio"/>
    </interface>
    <serial type="pty"><target port="0"/></serial>
    <memballoon model="virtio"/>
  </devices>
</domain>"""


@contextlib.contextmanager
def daemon() -> Iterator[str]:
    """The URI to measure on: ``$LIBVM_URI``, else a sandboxed libvirtd (root) for the block."""
    if os.environ.get("LIBVM_URI"):
        yield os.environ["LIBVM_URI"]
        return
    from libvm.testing import Sandbox

    with Sandbox(netns="libvm-bench") as box:
        yield box.uri


def wants_help(doc: str | None) -> bool:
    """Print ``doc`` (the benchmark's docstring) if the first argument is ``-h`` or ``--help``; say so."""
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(doc)
        return True
    return False


def size(most: int, default: int = 20) -> int:
    """The number of VMs: the first argument (1 to ``most``), else ``default``."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else default
    if not 1 <= count <= most:
        sys.exit(f"N must be 1 to {most}")
    return count


def cleanup(hv: libvm.Hypervisor, prefix: str) -> None:
    """Destroy and undefine a benchmark's domains (named ``prefix...``), releasing their reservations and leases."""
    for vm in hv.vms():
        if vm.name.startswith(prefix):
            vm.delete()
