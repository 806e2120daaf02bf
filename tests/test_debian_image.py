"""The pure parts of libvm.testing.debian: which of the host's apt sources the image is built from.
(The image itself is built and booted by tests/realstack/test_debian.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from libvm.testing.debian import FLAVOURS, host_sources
from libvm.testing.guest import GuestBuildError


def test_host_sources_keep_debian_bookworm_only(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n")
    (tmp_path / "sources.list.d" / "nodesource.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n")
    text = host_sources(tmp_path)
    stanzas = text.split("\n\n")
    assert len(stanzas) == 3, text
    assert stanzas[0] == ("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"
                          "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg")
    assert "Suites: bookworm bookworm-updates\n" in stanzas[1]
    assert "URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security" in stanzas[2]
    assert "nodesource" not in text and "google" not in text and "trixie" not in text


def test_host_sources_without_debian_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb https://deb.nodesource.com/node_20.x nodistro main\n")
    with pytest.raises(GuestBuildError, match="no Debian bookworm"):
        host_sources(tmp_path)


def test_flavours_cover_both_debian_renderers() -> None:
    assert {f.renderer for f in FLAVOURS.values()} == {"eni", "netplan"}


def test_a_build_removes_only_images_unused_for_a_week(tmp_path: Path) -> None:
    from libvm.testing.debian import UNUSED_DAYS, _drop_older

    week_ago = time.time() - UNUSED_DAYS * 86400 - 60
    for name in ("ifupdown-old", "ifupdown-recent", "ifupdown-new", "netplan-old"):
        (tmp_path / name).mkdir()
    for name in ("ifupdown-old", "netplan-old"):
        os.utime(tmp_path / name, (week_ago, week_ago))
    _drop_older(tmp_path, "ifupdown", keep=tmp_path / "ifupdown-new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ifupdown-new", "ifupdown-recent", "netplan-old"]
