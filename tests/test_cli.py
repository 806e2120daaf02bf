"""The ``libvm`` command line (libvm/cli.py).

Most tests run the command as a subprocess (``python -m libvm``), one invocation per
assertion: the test driver gives every connection, so every process, a fresh copy of
``testnode.xml``. Flows that need state across commands (reserve, then conflict; an
orphaned reservation for ``gc``) run the subcommand handlers in this process on the
``hv`` fixture's one connection.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import libvm
from libvm import cli

from .conftest import TEST_URI

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def libvm_cmd(*argv: str, uri: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m libvm [--uri TEST_URI] ARGV`` from the worktree, output captured."""
    command = [sys.executable, "-m", "libvm", *(["--uri", TEST_URI] if uri else []), *argv]
    return subprocess.run(command, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=60)


def json_out(*argv: str) -> Any:
    result = libvm_cmd("--json", *argv)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


# -- help and entry points -----------------------------------------------------------


def test_module_help_lists_the_commands_and_exit_codes() -> None:
    result = libvm_cmd("--help", uri=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: libvm")
    for word in ("net", "vm", "gc", "--uri", "--json", "exit codes", "130"):
        assert word in result.stdout


def test_net_help_lists_its_subcommands() -> None:
    result = libvm_cmd("net", "--help", uri=False)
    assert result.returncode == 0, result.stderr
    for word in ("list", "ensure", "reserve", "release", "reservations", "leases"):
        assert word in result.stdout


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "libvm"
    if not script.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{script} is missing: CI installs the package with 'pip install -e .'")
        pytest.skip(f"{script} is not installed (pip install -e . makes it)")
    result = subprocess.run([str(script), "--uri", TEST_URI, "--json", "vm", "list"], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [vm["name"] for vm in json.loads(result.stdout)] == ["legacy"]


def test_uri_defaults_to_libvirt_default_uri() -> None:
    result = libvm_cmd("--json", "net", "list", uri=False, LIBVIRT_DEFAULT_URI=TEST_URI)
    assert result.returncode == 0, result.stderr
    assert [net["name"] for net in json.loads(result.stdout)] == ["default", "lab"]


def test_global_options_are_accepted_after_the_subcommand() -> None:
    result = subprocess.run([sys.executable, "-m", "libvm", "net", "list", "--json", "--uri", TEST_URI],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[1]["name"] == "lab"


# -- listings, human and JSON ----------------------------------------------------------


def test_net_list() -> None:
    rows = table(libvm_cmd("net", "list").stdout)
    assert rows[0][:3] == ["NAME", "ACTIVE", "PERSISTENT"]
    assert rows[2][:7] == ["lab", "yes", "yes", "nat", "virbr1", "192.168.150.0/24", "192.168.150.30-192.168.150.39"]
    lab = json_out("net", "list")[1]
    assert lab["name"] == "lab"
    assert lab["subnets"] == ["192.168.150.0/24"]
    assert lab["gateways"] == ["192.168.150.1"]
    assert lab["dhcp_ranges"] == [["192.168.150.30", "192.168.150.39"]]
    assert lab["reservations"] == 1


def test_tables_align_columns() -> None:
    header, *rows = libvm_cmd("vm", "create", "a-long-name", "--network", "lab", "--no-start").stdout.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+(?: \S+)*", header)]  # "RESERVED IP" is one
    assert len(starts) == len(cli.VM_COLUMNS)
    for row in rows:
        assert all(row[i] != " " and (i == 0 or row[i - 2:i] == "  ") for i in starts), (header, row)


def test_net_reservations() -> None:
    rows = table(libvm_cmd("net", "reservations", "lab").stdout)
    assert rows == [["NETWORK", "MAC", "IP", "HOSTNAME"], ["lab", "52:54:00:aa:bb:01", "192.168.150.10", "legacy"]]
    assert json_out("net", "reservations", "lab") == [
        {"network": "lab", "mac": "52:54:00:aa:bb:01", "ip": "192.168.150.10", "hostname": "legacy",
         "client_id": None},
    ]


def test_net_leases_are_empty_on_the_test_driver() -> None:
    assert table(libvm_cmd("net", "leases", "lab").stdout) == [
        ["NETWORK", "MAC", "IP", "HOSTNAME", "EXPIRES", "(UTC)", "CLIENT", "ID"],
    ]
    assert json_out("net", "leases", "lab") == []


def test_vm_list() -> None:
    rows = table(libvm_cmd("vm", "list").stdout)
    assert rows[0] == ["NAME", "STATE", "MACS", "NETWORKS", "RESERVED", "IP", "LEASED", "IP", "HOSTNAME"]
    assert rows[1] == ["legacy", "running", "52:54:00:aa:bb:01,52:54:00:aa:bb:02", "lab,default",
                       "192.168.150.10", "-", "legacy"]
    [legacy] = json_out("vm", "list")
    assert legacy["name"] == "legacy"
    assert legacy["state"] == "running"
    assert legacy["macs"] == ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]
    assert legacy["nics"] == [
        {"network": "lab", "mac": "52:54:00:aa:bb:01", "model": "virtio", "ip": "192.168.150.10",
         "hostname": "legacy", "leased_ip": None},
        {"network": "default", "mac": "52:54:00:aa:bb:02", "model": "e1000", "ip": None,
         "hostname": None, "leased_ip": None},
    ]


def test_gc_lists_nothing_when_every_reserved_mac_is_on_a_domain() -> None:
    result = libvm_cmd("gc")
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [["NETWORK", "MAC", "IP", "HOSTNAME", "REMOVED"]]
    assert json_out("gc") == []


# -- results -------------------------------------------------------------------------


def test_vm_create_no_start_prints_the_vm_with_its_reserved_ip() -> None:
    vm = json_out("vm", "create", "pc001", "--network", "lab", "--ip", "192.168.150.88", "--memory", "256MiB",
                  "--virt-type", "qemu", "--no-start")
    assert vm["name"] == "pc001"
    assert vm["state"] == "shut off"
    [nic] = vm["nics"]
    assert nic["ip"] == "192.168.150.88"
    assert nic["mac"] == str(libvm.generate_mac("lab", "192.168.150.88"))
    assert nic["hostname"] == "pc001"


def test_vm_create_allocates_an_address_and_prints_a_table() -> None:
    result = libvm_cmd("vm", "create", "pc002", "--network", "lab", "--mac", "02:00:00:00:00:01", "--no-start")
    assert result.returncode == 0, result.stderr
    assert table(result.stdout)[1] == ["pc002", "shut", "off", "02:00:00:00:00:01", "lab", "192.168.150.2", "-",
                                       "pc002"]


def test_net_ensure_defines_a_network() -> None:
    net = json_out("net", "ensure", "iso", "10.9.0.0/24", "--dhcp-range", "10.9.0.100", "10.9.0.199",
                   "--forward", "none")
    assert net["name"] == "iso"
    assert net["active"] is True
    assert net["forward"] == "none"
    assert net["dhcp_ranges"] == [["10.9.0.100", "10.9.0.199"]]


def test_net_reserve_prints_the_reservation() -> None:
    assert json_out("net", "reserve", "lab", "52:54:00:00:00:09", "192.168.150.88", "--hostname", "pc001") == {
        "network": "lab", "mac": "52:54:00:00:00:09", "ip": "192.168.150.88", "hostname": "pc001",
        "client_id": None,
    }


def test_net_reserve_many_reads_a_file_and_prints_every_reservation(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# lab hosts\n52:54:00:00:01:01 192.168.150.101 web1\n\n"
                     "52:54:00:00:01:02   192.168.150.102   # no name\n52:54:00:aa:bb:01 192.168.150.10\n")
    done = json_out("net", "reserve-many", "lab", str(hosts))
    assert [(r["mac"], r["ip"], r["hostname"]) for r in done] == [
        ("52:54:00:00:01:01", "192.168.150.101", "web1"), ("52:54:00:00:01:02", "192.168.150.102", None),
        ("52:54:00:aa:bb:01", "192.168.150.10", "legacy"),  # there already: kept
    ]


def test_net_reserve_many_reads_stdin() -> None:
    command = [sys.executable, "-m", "libvm", "--uri", TEST_URI, "--json", "net", "reserve-many", "lab", "-"]
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60,
                            input="52:54:00:00:01:01 192.168.150.101\n")
    assert result.returncode == 0, result.stderr
    assert [r["ip"] for r in json.loads(result.stdout)] == ["192.168.150.101"]


def test_net_reserve_many_errors_name_the_line_or_the_host(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("52:54:00:00:01:01 192.168.150.101\n52:54:00:00:01:02\n")
    assert_one_line_error(libvm_cmd("net", "reserve-many", "lab", str(bad)), 2, f"{bad}:2", "got 1 fields")
    clash = tmp_path / "clash.txt"
    clash.write_text("# two hosts, one address\n52:54:00:00:01:01 192.168.150.101\n\n"
                     "52:54:00:00:01:02 192.168.150.101\n")
    assert_one_line_error(libvm_cmd("net", "reserve-many", "lab", str(clash)), 3, f"{clash}:4", f"{clash}:2")
    value = tmp_path / "value.txt"
    value.write_text("\ufeff52:54:00:00:01:01 192.168.150.101\n# bad MAC next\nnot-a-mac 192.168.150.102\n")
    assert_one_line_error(libvm_cmd("net", "reserve-many", "lab", str(value)), 2, f"{value}:3.mac=", "not-a-mac")
    assert_one_line_error(libvm_cmd("net", "reserve-many", "lab", str(tmp_path / "missing")), 2, "cannot read")


def test_net_release_by_ip_prints_what_it_removed() -> None:
    removed = json_out("net", "release", "lab", "--ip", "192.168.150.10")
    assert [(r["mac"], r["ip"]) for r in removed] == [("52:54:00:aa:bb:01", "192.168.150.10")]


def test_vm_delete() -> None:
    result = libvm_cmd("vm", "delete", "legacy")
    assert (result.returncode, result.stdout) == (0, "deleted legacy\n")


# -- errors and exit codes -------------------------------------------------------------


def test_conflict_with_an_existing_reservation_exits_3() -> None:
    result = libvm_cmd("net", "reserve", "lab", "52:54:00:00:00:09", "192.168.150.10")
    assert_one_line_error(result, 3, "ip-reserved", "192.168.150.10", "52:54:00:aa:bb:01")


def test_existing_domain_exits_3() -> None:
    result = libvm_cmd("vm", "create", "legacy", "--network", "lab", "--no-start")
    assert_one_line_error(result, 3, "already-exists", "legacy")


def test_network_mismatch_exits_3() -> None:
    result = libvm_cmd("net", "ensure", "lab", "192.168.150.0/24", "--dhcp-range", "192.168.150.30",
                       "192.168.150.39", "--forward", "none")
    assert_one_line_error(result, 3, "network-mismatch", "forward")


def test_invalid_value_exits_2_naming_the_field() -> None:
    result = libvm_cmd("net", "reserve", "lab", "52:54:00:00:00:09", "192.168.150.300")
    assert_one_line_error(result, 2, "invalid-spec", "ip=", "192.168.150.300", "(IP)")
    result = libvm_cmd("vm", "create", "pc001", "--network", "lab", "--memory", "lots", "--no-start")
    assert_one_line_error(result, 2, "memory=", "(--memory)")
    result = libvm_cmd("vm", "create", "pc001", "--network", "lab", "--ip", "10.0.0.5", "--no-start")
    assert_one_line_error(result, 2, "nics[0].ip=", "(--ip)")
    result = libvm_cmd("net", "ensure", "x", "10.9.0.0/24", "--dhcp-range", "10.9.0.5", "10.10.0.1")
    assert_one_line_error(result, 2, "dhcp_range[1]=", "(--dhcp-range)")


def test_usage_error_exits_2_in_one_line() -> None:
    assert_one_line_error(libvm_cmd("net", "reserve", "lab"), 2, "libvm net reserve: error:", "MAC, IP")
    extra = libvm_cmd("net", "reserve", "lab", "52:54:00:00:00:01", "192.168.150.5", "extra")
    assert_one_line_error(extra, 2, "libvm net reserve: error: unrecognized arguments: extra",
                          "(see 'libvm net reserve --help')")
    assert_one_line_error(libvm_cmd("vm", "wait-ip", "legacy", "--timeout", "soon"), 2, "--timeout")
    assert_one_line_error(libvm_cmd(uri=False), 2, "required")


def test_not_found_exits_4() -> None:
    assert_one_line_error(libvm_cmd("vm", "delete", "nope"), 4, "not-found", "nope")
    assert_one_line_error(libvm_cmd("net", "reservations", "nonet"), 4, "not-found", "nonet")


def test_wait_ip_timeout_exits_5() -> None:
    result = libvm_cmd("vm", "wait-ip", "legacy", "--timeout", "0.1")
    assert_one_line_error(result, 5, "wait-timeout", "legacy")


def test_libvirt_failure_exits_6() -> None:
    result = libvm_cmd("net", "list", uri=False, LIBVIRT_DEFAULT_URI="nosuchdriver:///x")
    assert_one_line_error(result, 6, "libvirt-failure", "cannot connect")
    # libxml2's own "I/O warning : failed to load external entity" line is silenced
    missing = libvm_cmd("net", "list", uri=False, LIBVIRT_DEFAULT_URI="test:///nonexistent.xml")
    assert_one_line_error(missing, 6, "libvm: libvirt-failure: cannot connect")


def test_cli_values_name_their_option_and_say_what_is_wrong() -> None:
    ipv6 = libvm_cmd("net", "reserve", "lab", "52:54:00:00:00:01", "fd00::5")
    assert_one_line_error(ipv6, 2, "ip='fd00::5'", "IPv4 address for a MAC", "(IP)")
    assert "mac=None" not in ipv6.stderr
    memory = libvm_cmd("vm", "create", "x", "--network", "lab", "--memory", "-5", "--no-start")
    assert_one_line_error(memory, 2, "memory='-5': from 16 MiB to", "(--memory)")
    disk = libvm_cmd("vm", "create", "s1", "--network", "lab", "--disk", "/a.img", "--disk", "/a.img", "--no-start")
    assert_one_line_error(disk, 2, "same image as disks[0] (--disk)")


def test_debug_shows_the_traceback() -> None:
    result = libvm_cmd("--debug", "vm", "delete", "nope")
    assert result.returncode == 4
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1] == "libvm: not-found: no domain named 'nope'"


def test_main_returns_the_exit_code() -> None:
    assert cli.main(["--uri", TEST_URI, "vm", "delete", "nope"]) == 4
    assert cli.main(["--help"]) == 0
    assert cli.main(["bogus"]) == 2


def test_exit_codes_by_error_class() -> None:
    assert cli.exit_code(libvm.InvalidSpec("ip", "x", "bad")) == 2
    assert cli.exit_code(libvm.MacInUse("m", other="vm")) == 3
    assert cli.exit_code(libvm.NetworkMismatch("lab", "forward", "none", "nat")) == 3
    assert cli.exit_code(libvm.NotFound("x")) == 4
    assert cli.exit_code(libvm.WaitTimeout("x")) == 5
    assert cli.exit_code(libvm.LibvirtFailure("x")) == 6
    assert cli.exit_code(libvm.NoFreeAddress("x")) == 6


def test_json_encoder_writes_addresses_and_times() -> None:
    import datetime as dt

    import netaddr

    value = {"mac": netaddr.EUI("52-54-00-AA-BB-01"), "ip": netaddr.IPAddress("10.0.0.1"),
             "net": netaddr.IPNetwork("10.0.0.1/24"), "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
             "path": Path("/x")}
    assert json.loads(json.dumps(value, cls=cli.JsonEncoder)) == {
        "mac": "52:54:00:aa:bb:01", "ip": "10.0.0.1", "net": "10.0.0.0/24", "at": "2026-01-02T03:04:05+00:00",
        "path": "/x",
    }


# -- flows across commands on one connection ---------------------------------------------


def invoke(hv: libvm.Hypervisor, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run one subcommand's handler on ``hv`` (state shared across calls); its stdout."""
    args = cli.build_parser().parse_args(list(argv))
    args.handler(hv, args)
    return capsys.readouterr().out


def test_reserve_then_conflicting_reserve(hv: libvm.Hypervisor, capsys: pytest.CaptureFixture[str]) -> None:
    invoke(hv, capsys, "net", "reserve", "lab", "52:54:00:00:00:09", "192.168.150.88")
    with pytest.raises(libvm.MacReserved) as caught:
        invoke(hv, capsys, "net", "reserve", "lab", "52:54:00:00:00:09", "192.168.150.89")
    assert cli.exit_code(caught.value) == 3


def test_gc_lists_then_removes_an_orphaned_reservation(hv: libvm.Hypervisor,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    invoke(hv, capsys, "net", "reserve", "lab", "52:54:00:00:00:09", "192.168.150.88")
    assert table(invoke(hv, capsys, "gc"))[1] == ["lab", "52:54:00:00:00:09", "192.168.150.88", "-", "no"]
    [orphan] = json.loads(invoke(hv, capsys, "--json", "gc", "--remove"))
    assert (orphan["mac"], orphan["removed"]) == ("52:54:00:00:00:09", True)
    assert json.loads(invoke(hv, capsys, "--json", "gc")) == []


def test_create_list_delete(hv: libvm.Hypervisor, capsys: pytest.CaptureFixture[str]) -> None:
    invoke(hv, capsys, "vm", "create", "pc001", "--network", "lab", "--ip", "192.168.150.88", "--no-start")
    names = [vm["name"] for vm in json.loads(invoke(hv, capsys, "vm", "list", "--json"))]
    assert names == ["legacy", "pc001"]
    invoke(hv, capsys, "vm", "delete", "pc001")
    assert hv.network("lab").reservation_for(libvm.generate_mac("lab", "192.168.150.88")) is None
    assert [vm.name for vm in hv.vms()] == ["legacy"]


def test_ctrl_c_exits_130_and_a_bug_exits_1(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(hv: libvm.Hypervisor, args: object) -> None:
        raise KeyboardInterrupt

    def buggy(hv: libvm.Hypervisor, args: object) -> None:
        raise TypeError("oops")

    monkeypatch.setattr(cli, "net_list", interrupted)
    assert cli.main(["--uri", TEST_URI, "net", "list"]) == 130
    assert capsys.readouterr().err == "libvm: interrupted\n"
    monkeypatch.setattr(cli, "net_list", buggy)
    assert cli.main(["--uri", TEST_URI, "net", "list"]) == 1
    assert capsys.readouterr().err == "libvm: internal error: TypeError: oops\n"


def test_vm_list_reads_each_network_once_and_each_domain_once(
        hv: libvm.Hypervisor, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(3):
        hv.create_vm(f"pc{index}", nics=[libvm.Nic("lab"), libvm.Nic("default")], virt_type="qemu", start=False)
    leases, xmls = libvm.Network.leases, libvm.VM.xml
    calls: list[str] = []

    def counted_leases(self: libvm.Network) -> libvm.LeaseList:
        calls.append(f"leases {self.name}")
        return leases(self)

    def counted_xml(self: libvm.VM, inactive: bool = False) -> str:
        calls.append(f"xml {self.name}")
        return xmls(self, inactive)

    monkeypatch.setattr(libvm.Network, "leases", counted_leases)
    monkeypatch.setattr(libvm.VM, "xml", counted_xml)
    records = json.loads(invoke(hv, capsys, "--json", "vm", "list"))
    assert sorted(calls) == ["leases default", "leases lab", "xml legacy", "xml pc0", "xml pc1", "xml pc2"]
    assert [nic["ip"] is not None for nic in records[1]["nics"]] == [True, True]  # both reserved by create_vm


@pytest.mark.parametrize("argv", [["net", "--json", "list"], ["net", "list", "--json"], ["--json", "net", "list"]])
def test_global_options_go_anywhere_between_the_words(argv: list[str]) -> None:
    """docs/cli.md: --uri, --json and --debug before the group, between group and command, or after it."""
    result = libvm_cmd(*argv[:1], "--uri", TEST_URI, *argv[1:], uri=False)
    assert result.returncode == 0, result.stderr
    assert {n["name"] for n in json.loads(result.stdout)} >= {"default", "lab"}
