"""libvm: libvirt VMs that get the IP address you chose.

Fix each NIC's MAC, bind it to an IP in the libvirt network's DHCP, let
libvirt start qemu, and prove the guest got the promised address::

    import libvm
    with libvm.connect() as hv:
        hv.ensure_network("lab", "192.168.150.0/24", dhcp_range=("192.168.150.30", "192.168.150.39"))
        vm = hv.create_vm("pc001", memory="256MiB",
                          nics=[libvm.Nic("lab", ip="192.168.150.88", mac="66:66:66:66:66:0b")],
                          kernel="/path/vmlinuz", initrd="/path/initrd", cmdline="console=ttyS0")
        vm.wait_for_ip()
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .addressing import generate_mac
from .domain import VM, VMState
from .domainxml import DomainDoc, DomainSpec, GuestLogin, Interface
from .errors import (
    AddressConflict,
    AddressMismatch,
    AlreadyExists,
    ClientIdShared,
    ConnectionClosed,
    DnsmasqFailure,
    DomainStopped,
    HopFailed,
    HostKeyMismatch,
    HostKeyUnavailable,
    HostnameReserved,
    InUse,
    InvalidSpec,
    InvalidState,
    IpInDhcpRange,
    IpLeased,
    IpReserved,
    LibvirtFailure,
    LibvmError,
    LockFailure,
    MacInUse,
    MacReserved,
    NetworkMismatch,
    NoEligibleHost,
    NoFreeAddress,
    NotFound,
    NothingToWaitFor,
    SourceChanged,
    SubnetOverlap,
    Unsupported,
    WaitTimeout,
)
from .hostkey import HostKey
from .hypervisor import Hypervisor, connect
from .network import Network
from .networkxml import DnsHost, IpSpec, NetworkSpec
from .values import Disk, ImageSource, Lease, Nic, Reservation, Vnc
from .views import LeaseList, NetworkList, ReservationList, Table, VMList

if _TYPE_CHECKING:
    from .cloudinit import CloudInit
    from .fleet import Fleet, FleetVMList
    from .storage import Pool, Volume
    from .survey import HostList

__version__ = "0.1.0"

#: Names loaded on first use (PEP 562): a program that builds no seed and touches no
#: pool never pays for them (pycdlib, PyYAML and the storage layer).
_LAZY = {"CloudInit": "cloudinit", "Pool": "storage", "Volume": "storage",
         "Fleet": "fleet", "FleetVMList": "fleet",  # a fleet of hosts: most programs talk to one
         "HostList": "survey"}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'libvm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__all__ = [
    "VM",
    "AddressConflict",
    "AddressMismatch",
    "AlreadyExists",
    "ClientIdShared",
    "CloudInit",
    "ConnectionClosed",
    "Disk",
    "DnsHost",
    "DnsmasqFailure",
    "DomainDoc",
    "DomainSpec",
    "DomainStopped",
    "Fleet",
    "FleetVMList",
    "GuestLogin",
    "HopFailed",
    "HostKey",
    "HostKeyMismatch",
    "HostKeyUnavailable",
    "HostList",
    "HostnameReserved",
    "Hypervisor",
    "ImageSource",
    "InUse",
    "Interface",
    "InvalidSpec",
    "InvalidState",
    "IpInDhcpRange",
    "IpLeased",
    "IpReserved",
    "IpSpec",
    "Lease",
    "LeaseList",
    "LibvirtFailure",
    "LibvmError",
    "LockFailure",
    "MacInUse",
    "MacReserved",
    "Network",
    "NetworkList",
    "NetworkMismatch",
    "NetworkSpec",
    "Nic",
    "NoEligibleHost",
    "NoFreeAddress",
    "NotFound",
    "NothingToWaitFor",
    "Pool",
    "Reservation",
    "ReservationList",
    "SourceChanged",
    "SubnetOverlap",
    "Table",
    "Unsupported",
    "VMList",
    "VMState",
    "Vnc",
    "Volume",
    "WaitTimeout",
    "__version__",
    "connect",
    "generate_mac",
]
