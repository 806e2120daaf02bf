"""Files changed in a pool's directory behind libvirt's back, on the real daemon (issue 15 §4.6).

libvirt lists a directory pool's files as of its last refresh. libvm refreshes
before it looks a name up or takes one, so a removed file is gone and a file
copied in by hand is there for every call alike, and ``Pool.delete`` goes on
past a volume whose file vanished.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import libvm

POOL = "libvmtest-edges"
POOL_DIR = "/var/lib/libvirt/images/libvmtest-edges"


@pytest.fixture
def pool(uri: str) -> Iterator[libvm.Pool]:
    with libvm.connect(uri) as hv:
        if not hv.is_local:
            pytest.skip("the test changes the pool's directory by hand: the daemon must run on this host")
        if POOL in [p.name for p in hv.pools()]:
            hv.pool(POOL).delete(volumes=True)  # left by an interrupted run
        yield hv.ensure_pool(POOL, POOL_DIR)
        if POOL in [p.name for p in hv.pools()]:
            hv.pool(POOL).delete(volumes=True)
    directory = Path(POOL_DIR)
    if directory.is_dir():
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()


def test_every_call_sees_files_changed_by_hand(pool: libvm.Pool) -> None:
    gone = pool.upload_bytes("gone.raw", b"g" * 4096)
    os.remove(gone.path)
    assert not pool.has("gone.raw")
    with pytest.raises(libvm.NotFound):
        pool.volume("gone.raw")
    assert [v.name for v in pool.volumes()] == []
    Path(POOL_DIR, "byhand.raw").write_bytes(b"h" * 4096)
    assert pool.has("byhand.raw") and pool.volume("byhand.raw").capacity == 4096
    with pytest.raises(libvm.AlreadyExists):
        pool.upload_bytes("byhand.raw", b"x")


def test_pool_delete_goes_on_past_a_file_removed_by_hand(uri: str, pool: libvm.Pool) -> None:
    pool.upload_bytes("kept.raw", b"k" * 4096)
    removed = pool.upload_bytes("removed.raw", b"r" * 4096)
    os.remove(removed.path)
    pool.delete(volumes=True)
    with libvm.connect(uri) as hv:
        assert POOL not in [p.name for p in hv.pools()]
    assert not Path(POOL_DIR).exists()  # kept.raw deleted, then the empty directory
