"""Storage pools, base images and the volumes create_vm makes, on the test driver."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

import libvm
from libvm import Disk, Nic, _live, storage
from tests.conftest import TEST_URI
from tests.test_hypervisor import LEGACY_UUID, SEED_NIC

GiB = 2**30


def volumes(pool: libvm.Pool) -> list[str]:
    return [v.name for v in pool.volumes()]


@pytest.fixture
def pool(hv: libvm.Hypervisor) -> libvm.Pool:
    return hv.ensure_pool("images", "/var/lib/libvirt/images/libvm")


@pytest.fixture
def base(pool: libvm.Pool) -> libvm.Volume:
    return pool.create("base.qcow2", 2 * GiB, "qcow2")


def test_ensure_pool_defines_once_and_checks_the_existing_one(hv: libvm.Hypervisor, pool: libvm.Pool) -> None:
    assert pool.active and pool.path == "/var/lib/libvirt/images/libvm"
    assert hv.ensure_pool("images", "/var/lib/libvirt/images/libvm/").name == "images"  # same dir
    with pytest.raises(libvm.AlreadyExists, match="/var/lib/other"):
        hv.ensure_pool("images", "/var/lib/other")
    pool.handle.destroy()
    assert hv.ensure_pool("images", "/var/lib/libvirt/images/libvm").active  # a stopped pool is started
    for bad, field in [("rel/dir", "path"), (5, "path"), ("", "path")]:
        with pytest.raises(libvm.InvalidSpec) as info:
            hv.ensure_pool("other", bad)  # type: ignore[arg-type]
        assert info.value.field == field


def test_overlay_is_made_named_after_the_vm_and_removed_only_with_storage(
        hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume) -> None:
    vm = hv.create_vm("web1", disks=[Disk.from_image(base, size="10GiB")], nics=[SEED_NIC], virt_type="qemu")
    overlay = pool.volume("web1-disk0.qcow2").info()
    assert (overlay.format, overlay.capacity, overlay.backing) == ("qcow2", 10 * GiB, base.path)
    assert [str(d.path) for d in vm.spec().disks] == [overlay.path]
    assert vm.spec().volumes == (overlay.path,)
    vm.delete()
    assert volumes(pool) == ["base.qcow2", "web1-disk0.qcow2"]  # plain delete() keeps storage
    vm2 = hv.create_vm("web2", disks=[Disk.from_image(base)], nics=[SEED_NIC], virt_type="qemu")
    assert pool.volume("web2-disk0.qcow2").capacity == 2 * GiB  # default: the base's size
    vm2.delete(storage=True)
    assert volumes(pool) == ["base.qcow2", "web1-disk0.qcow2"]  # its own overlay only, never the base


def test_clone_is_a_full_copy(hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume) -> None:
    hv.create_vm("c1", disks=[Disk.from_image(base, size=3 * GiB, clone=True)], nics=[SEED_NIC], virt_type="qemu")
    copy = pool.volume("c1-disk0.qcow2").info()
    assert copy.backing is None and copy.capacity == 3 * GiB


def snapshot(hv: libvm.Hypervisor, pool: libvm.Pool) -> tuple[list[str], list[str], list[libvm.Reservation]]:
    return (sorted(v.name for v in hv.vms()), volumes(pool), hv.network("lab").reservations())


@pytest.mark.parametrize(
    ("disk", "error", "field"),
    [
        (lambda b: Disk.from_image(b, size="1GiB"), libvm.InvalidSpec, "disks[0].size"),
        (lambda b: Disk.from_image(_Ref("images", "nope.qcow2")), libvm.InvalidSpec, "disks[0].base"),
        (lambda b: Disk.from_image(_Ref("nopool", "base.qcow2")), libvm.NotFound, None),
    ],
)
def test_refused_volumes_change_nothing(hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume,
                                        disk: object, error: type[Exception], field: str | None) -> None:
    before = snapshot(hv, pool)
    with pytest.raises(error) as info:
        hv.create_vm("web1", disks=[disk(base)], nics=[SEED_NIC], virt_type="qemu")  # type: ignore[operator]
    if field is not None:
        assert info.value.field == field  # type: ignore[attr-defined]
    assert snapshot(hv, pool) == before


def test_a_taken_volume_name_is_refused_before_anything_changes(hv: libvm.Hypervisor, pool: libvm.Pool,
                                                                base: libvm.Volume) -> None:
    pool.create("web1-disk0.qcow2", GiB, "qcow2")
    before = snapshot(hv, pool)
    with pytest.raises(libvm.AlreadyExists, match=r"web1-disk0\.qcow2"):
        hv.create_vm("web1", disks=[Disk.from_image(base)], nics=[SEED_NIC], virt_type="qemu")
    assert snapshot(hv, pool) == before


def test_rollback_removes_the_volumes_it_made(hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume) -> None:
    before = snapshot(hv, pool)
    with pytest.raises(libvm.LibvmError, match="legacy"):  # the define fails after the overlay exists
        hv.create_vm("clash", disks=[Disk.from_image(base), Disk.from_image(base)], nics=[SEED_NIC],
                     uuid=LEGACY_UUID, virt_type="qemu")
    assert snapshot(hv, pool) == before


def test_disk_from_image_bad_input() -> None:
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: Disk.from_image("base.qcow2"), "disk.base"),  # type: ignore[arg-type]
        (lambda: Disk.from_image(_Ref("p", "b"), size="lots"), "disk.size"),
        (lambda: Disk.from_image(_Ref("p", "b"), size=0), "disk.size"),
        (lambda: Disk.from_image(_Ref("p", "b"), clone="yes"), "disk.clone"),  # type: ignore[arg-type]
        (lambda: Disk(), "disk.path"),
    ]
    for call, field in calls:
        with pytest.raises(libvm.InvalidSpec) as info:
            call()
        assert info.value.field == field


def test_upload_that_fails_leaves_no_volume(pool: libvm.Pool, tmp_path: object) -> None:
    with pytest.raises(libvm.LibvirtFailure):  # the test driver has no upload streams
        pool.upload_bytes("seed.iso", b"cidata")
    assert volumes(pool) == []
    with pytest.raises(libvm.InvalidSpec) as info:
        pool.upload("x.qcow2", "/nonexistent/image.qcow2")
    assert info.value.field == "source"


def test_unmanaged_nic_disks_keep_working(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("plain", disks=[Disk("/var/lib/libvirt/images/plain.qcow2")], nics=[Nic("lab")],
                      virt_type="qemu")
    assert vm.spec().volumes == ()
    vm.delete(storage=True)  # nothing of its own to remove; the path is not libvm's


class _Ref:
    def __init__(self, pool: str, name: str) -> None:
        self.pool, self.name = pool, name


def test_cloud_init_needs_an_image_disk_and_changes_nothing_when_refused(
        hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume) -> None:
    ci = libvm.CloudInit(hostname="web1", ssh_authorized_keys=["ssh-ed25519 AAAAC3Nza me@host"])
    before = snapshot(hv, pool)
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.create_vm("web1", nics=[SEED_NIC], cloud_init=ci, virt_type="qemu")
    assert info.value.field == "cloud_init"
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.create_vm("web1", nics=[SEED_NIC], cloud_init={"hostname": "x"}, virt_type="qemu")  # type: ignore[arg-type]
    assert info.value.field == "cloud_init"
    # The test driver cannot upload (no streams): the seed step fails after the overlay
    # and the reservation exist, and the rollback removes both.
    with pytest.raises(libvm.LibvirtFailure, match="seed"):
        hv.create_vm("web1", disks=[Disk.from_image(base)], nics=[SEED_NIC], cloud_init=ci, virt_type="qemu")
    assert snapshot(hv, pool) == before


def test_a_base_or_a_disk_in_use_is_not_deleted(hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume) -> None:
    vm = hv.create_vm("web1", disks=[Disk.from_image(base)], nics=[SEED_NIC], virt_type="qemu")
    overlay = pool.volume("web1-disk0.qcow2")
    with pytest.raises(libvm.InUse, match="web1"):
        overlay.delete()  # a disk of domain web1
    vm.delete(release=False)
    with pytest.raises(libvm.InUse, match="base of overlay"):
        base.delete()  # web1-disk0.qcow2 is backed by it
    with pytest.raises(libvm.InUse, match="still holds"):
        pool.delete()
    assert volumes(pool) == ["base.qcow2", "web1-disk0.qcow2"]
    overlay.delete()
    base.delete()
    pool.delete()
    assert "images" not in [p.name for p in hv.pools()]


def test_pool_delete_with_its_volumes_refuses_while_a_domain_uses_one(
        hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume) -> None:
    hv.create_vm("web1", disks=[Disk.from_image(base)], nics=[SEED_NIC], virt_type="qemu")
    with pytest.raises(libvm.InUse, match="web1"):
        pool.delete(volumes=True)
    assert volumes(pool) == ["base.qcow2", "web1-disk0.qcow2"]
    hv.vm("web1").delete()
    pool.delete(volumes=True)  # overlays first, then their base
    assert "images" not in [p.name for p in hv.pools()]


def test_pool_create_and_clone_check_their_arguments(pool: libvm.Pool, base: libvm.Volume) -> None:
    assert pool.create("b.qcow2", "64MiB", "qcow2").capacity == 64 * 2**20
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: pool.create("c.qcow2", -5, "qcow2"), "capacity"),
        (lambda: pool.create("c.qcow2", 1.5, "qcow2"), "capacity"),  # type: ignore[arg-type]
        (lambda: pool.create("c.vmdk", GiB, "vmdk"), "fmt"),
        (lambda: pool.create("c.qcow2", GiB, "qcow2", backing="/x"), "backing"),  # type: ignore[arg-type]
        (lambda: pool.create("c.raw", GiB, "raw", backing=base), "fmt"),
        (lambda: pool.clone("c.qcow2", "base.qcow2"), "source"),  # type: ignore[arg-type]
        (lambda: pool.clone("c.qcow2", base, capacity=1), "capacity"),
        (lambda: pool.create("../c", GiB, "raw"), "name"),
    ]
    for call, field in calls:
        with pytest.raises(libvm.InvalidSpec) as info:
            call()
        assert info.value.field == field
    assert volumes(pool) == ["b.qcow2", "base.qcow2"]


def test_dns_name_outside_the_network_is_refused(hv: libvm.Hypervisor) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.network("lab").add_dns_host("1.2.3.4", "x")
    assert info.value.field == "ip"


def test_pools_and_volumes_compare_by_connection_and_name(hv: libvm.Hypervisor, pool: libvm.Pool,
                                                          base: libvm.Volume) -> None:
    assert hv.pool("images") == pool and hash(hv.pool("images")) == hash(pool)
    assert pool.volume("base.qcow2") == base and hash(pool.volume("base.qcow2")) == hash(base)
    assert len({pool, hv.pool("images"), *hv.pools()}) == 1
    assert len({base, *pool.volumes()}) == 1
    assert base != pool.create("other.raw", 2**20, "raw") and pool != base
    with libvm.connect(TEST_URI) as other:
        twin = other.ensure_pool("images", "/var/lib/libvirt/images/libvm")
        assert twin != pool and twin.create("base.qcow2", GiB, "qcow2") != base  # another connection


@pytest.mark.parametrize("data", [None, "cidata", 5, ["c"]])
def test_upload_bytes_refuses_what_is_not_bytes(pool: libvm.Pool, data: object) -> None:
    with pytest.raises(libvm.InvalidSpec) as info:
        pool.upload_bytes("seed.iso", data)  # type: ignore[arg-type]
    assert (info.value.field, info.value.value) == ("data", data)
    assert volumes(pool) == []


def test_a_missing_volume_keeps_libvirts_error_as_cause(pool: libvm.Pool) -> None:
    with pytest.raises(libvm.NotFound, match=r"no volume named 'nope\.qcow2' in pool 'images'") as info:
        pool.volume("nope.qcow2")
    assert isinstance(info.value.__cause__, libvirt.libvirtError)


def test_pool_delete_goes_on_past_a_volume_removed_behind_its_back(
        hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume, monkeypatch: pytest.MonkeyPatch) -> None:
    pool.create("web1-disk0.qcow2", GiB, "qcow2", backing=base)
    listed = libvm.Pool.volumes

    def listing_then_gone(self: libvm.Pool) -> list[libvm.Volume]:
        found = listed(self)
        found[0].handle.delete(0)  # removed after libvm listed it (a file removed by hand, a second caller)
        return found

    monkeypatch.setattr(libvm.Pool, "volumes", listing_then_gone)
    pool.delete(volumes=True)
    assert "images" not in [p.name for p in hv.pools()]  # not a silent no-op: the pool is gone


def test_lookups_and_creates_refresh_the_pool_first(pool: libvm.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    refreshed: list[str] = []
    real = _live.pool_refresh

    def counting(handle: _live.PoolHandle, what: str) -> None:
        refreshed.append(what)
        real(handle, what)

    monkeypatch.setattr(storage, "pool_refresh", counting)
    calls: list[Callable[[], object]] = [
        pool.volumes, lambda: pool.has("a.raw"), lambda: pool.create("a.raw", 2**20, "raw"),
        lambda: pool.volume("a.raw")]
    for call in calls:
        before = len(refreshed)
        call()
        assert len(refreshed) > before


def test_a_refresh_that_fails_does_not_stop_a_lookup(pool: libvm.Pool, base: libvm.Volume,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(handle: object, what: str) -> None:
        raise libvm.LibvirtFailure(f"{what}: pool 'images' has asynchronous jobs running.")

    monkeypatch.setattr(storage, "pool_refresh", busy)
    assert pool.volume("base.qcow2") == base and pool.has("base.qcow2")
    with pytest.raises(libvm.LibvirtFailure, match="asynchronous"):
        pool.refresh()  # asked for by name: its failure is the caller's


def test_storage_makes_every_libvirt_call_through_the_live_boundary() -> None:
    tree = ast.parse(Path(storage.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert "libvirt" not in imported


def test_a_stopped_pool_is_deleted_too(hv: libvm.Hypervisor, pool: libvm.Pool, base: libvm.Volume) -> None:
    pool.handle.destroy()
    with pytest.raises(libvm.InUse, match=r"base\.qcow2"):
        pool.delete()  # libvirt lists only a running pool's volumes: started to look
    pool.handle.destroy()
    pool.delete(volumes=True)
    assert hv.pools() == []
    empty = hv.ensure_pool("empty", "/var/lib/libvirt/images/empty")
    empty.handle.destroy()
    empty.delete()
    assert hv.pools() == []


def test_a_sparse_file_is_read_as_holes_and_data(tmp_path: Path) -> None:
    """Pool.upload sends a raw image's holes as holes (libvirt's sparse stream), not as zeros."""
    from libvm.storage import CHUNK, _file_chunks, _has_holes

    image = tmp_path / "sparse.raw"
    size = 3 * CHUNK
    with open(image, "wb") as out:
        out.truncate(size)
        out.seek(CHUNK)
        out.write(b"x" * 4096)
    seen: list[int] = []
    chunks = list(_file_chunks(image, size, lambda sent, total: seen.append(sent), holes=True))
    assert _has_holes(image, size)
    assert sum(c if isinstance(c, int) else len(c) for c in chunks) == size
    data = [c for c in chunks if isinstance(c, bytes)]
    assert b"".join(data).count(b"x") == 4096 and len(b"".join(data)) < CHUNK + 4096 + 4096  # the data, not 12 MiB
    assert isinstance(chunks[0], int) and chunks[0] >= CHUNK - 4096  # the leading hole, as its length
    assert seen[-1] == size
    dense = list(_file_chunks(image, size, None))
    assert all(isinstance(c, bytes) for c in dense) and sum(len(c) for c in dense if isinstance(c, bytes)) == size


def test_an_upload_target_is_a_sparse_volume() -> None:
    """Without <allocation>, libvirt's dir pool allocates a raw volume's whole capacity: an upload's
    holes would be written out anyway (tests/realstack/test_remote_libvm.py measures the file)."""
    from lxml import etree

    from libvm.storagexml import volume_xml

    assert etree.fromstring(volume_xml("a.raw", 2**30, "raw", allocation=0)).findtext("allocation") == "0"
    assert etree.fromstring(volume_xml("a.raw", 2**30, "raw")).find("allocation") is None
