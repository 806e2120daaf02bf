"""Boot the test guest's disk image with qemu directly: no libvirt, no network.

Each boot runs ``qemu-system-x86_64`` (TCG, ``-nic none``) on a throwaway
qcow2 overlay of the cached image, with an optional NoCloud seed ISO made by
``genisoimage``, and reads the serial console from a file.  Marked ``qemu``;
skipped when qemu or the tools are missing, a failure under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvm.testing import build_disk_image, console_done, parse_console, parse_seed_lines
from libvm.testing.disk import DISK_TOOLS

pytestmark = pytest.mark.qemu

IN_CI = os.environ.get("CI", "").lower() == "true"
BOOT_TIMEOUT = 60.0
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILibvmTestKeyOnlyForTests libvm@test"
TOOLS = {**DISK_TOOLS, "qemu-system-x86_64": "qemu-system-x86", "genisoimage": "genisoimage"}


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"qemu boot tests unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"qemu boot tests unavailable: {reason}")


def which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@pytest.fixture(scope="module")
def disk() -> Path:
    """The cached disk image (built on first use)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if which(tool) is None})
    if missing:
        unavailable("missing packages: " + " ".join(missing))
    try:
        return build_disk_image()
    except Exception as exc:
        unavailable(f"disk image could not be built: {exc}")
        raise


@pytest.fixture
def overlay(disk: Path, tmp_path: Path) -> Path:
    """A qcow2 overlay of the image, so the cached base is never written."""
    path = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "qcow2", str(path)],
        check=True,
    )
    return path


def make_seed(directory: Path, user_data: str, meta_data: str) -> Path:
    directory.mkdir()
    (directory / "user-data").write_text(user_data)
    (directory / "meta-data").write_text(meta_data)
    iso = directory / "seed.iso"
    files = ["user-data", "meta-data"]
    subprocess.run(
        ["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock", *files],
        cwd=directory,
        check=True,
    )
    return iso


def boot(overlay: Path, console: Path, seed: Path | None = None) -> str:
    """Boot the overlay until ``LIBVM-DONE``; return the console text. qemu is always killed.

    No ``-kernel``: SeaBIOS boots the disk (its and SYSLINUX's messages go to
    the VGA, which is not shown; the kernel's go to the serial file).
    """
    argv = [
        "qemu-system-x86_64", "-nodefaults", "-accel", "tcg", "-m", "256", "-nic", "none",
        "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-no-reboot",
        # virtio: SeaBIOS reads the kernel from an IDE disk twice as slowly under TCG.
        "-drive", f"file={overlay},format=qcow2,if=virtio",
    ]  # fmt: skip
    if seed is not None:
        # An IDE cdrom, as libvirt attaches a seed on the pc machine.
        argv += ["-drive", f"file={seed},format=raw,if=ide,media=cdrom,readonly=on"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = ""
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            text = console.read_text(errors="replace") if console.exists() else ""
            if console_done(text):
                return text
            time.sleep(0.2)
        text = console.read_text(errors="replace") if console.exists() else ""
        if proc.poll() is not None:
            pytest.fail(f"qemu exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
                        f"\nconsole:\n{text}")
        pytest.fail(f"no LIBVM-DONE within {BOOT_TIMEOUT:.0f} s; console:\n{text}")
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "console.log"


def test_disk_boots_with_seed(overlay: Path, console: Path, tmp_path: Path) -> None:
    seed = make_seed(
        tmp_path / "seed",
        f"#cloud-config\nhostname: web1\nssh_authorized_keys:\n  - {KEY}\n",
        "instance-id: iid-web1\nlocal-hostname: web1-meta\n",
    )
    start = time.monotonic()
    text = boot(overlay, console, seed)
    report = parse_seed_lines(text)
    assert report["seed"] and not report["no_seed"]
    assert report["instance_id"] == "iid-web1"
    assert report["hostname"] == "web1"
    assert report["ssh_keys"] == [KEY]
    assert report["ssh_listening"] and not report["no_ssh"]
    assert report["static"] == {}
    assert parse_console(text) == {}  # no NIC, no lease line
    assert text.rstrip().endswith("LIBVM-DONE"), text
    assert time.monotonic() - start < 30, "boot took longer than 30 s"


def test_disk_boots_with_no_ssh_marker(overlay: Path, console: Path, tmp_path: Path) -> None:
    seed = make_seed(
        tmp_path / "seed",
        f"#cloud-config\nssh_authorized_keys:\n- {KEY}\nlibvm_no_ssh: true\n",
        "instance-id: iid-2\nlocal-hostname: db2\n",
    )
    report = parse_seed_lines(boot(overlay, console, seed))
    assert report["hostname"] == "db2"  # from meta-data: user-data has none
    assert report["ssh_keys"] == [KEY]
    assert report["no_ssh"] and not report["ssh_listening"]


def test_disk_boots_without_seed(overlay: Path, console: Path) -> None:
    report = parse_seed_lines(boot(overlay, console))
    assert report["no_seed"] and not report["seed"]
    assert report["hostname"] is None and report["ssh_keys"] == []
    assert report["ssh_listening"]
