"""cloud-init's own network renderers, run on libvm's ``network-config`` without a guest.

cloud-init is not on PyPI in a usable form, so Debian's ``cloud-init`` package and
the Python libraries it needs that the host lacks are fetched with ``apt-get
download`` and unpacked with ``dpkg-deb -x`` into a cache directory (no root
needed, nothing installed).  :func:`render_network` then runs ``cloud-init devel
net-convert`` from there under the host's ``/usr/bin/python3`` (the interpreter
the package is built for) and returns the files the renderer wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from libvm.testing.build import GuestBuildError, locked, run
from libvm.testing.guest import DEFAULT_CACHE_DIR

#: Renderer -> the distro cloud-init renders it for (``net-convert -D``): sysconfig and
#: NetworkManager keyfiles are what RHEL-family guests use.
RENDERERS = {
    "eni": "debian",
    "netplan": "ubuntu",
    "networkd": "debian",
    "sysconfig": "rhel",
    "network-manager": "fedora",
}
SYSTEM_PYTHON = "/usr/bin/python3"
SITE = Path("usr/lib/python3/dist-packages")


def default_cache_dir() -> Path:
    """``/var/cache/libvm/cloud-init`` for root, else ``$XDG_CACHE_HOME/libvm/cloud-init``."""
    if os.geteuid() == 0:
        return DEFAULT_CACHE_DIR.parent / "cloud-init"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "libvm" / "cloud-init"


def cloud_init_tree(cache_dir: Path | None = None) -> Path:
    """The unpacked cloud-init package of the host's apt lists, fetched on first use.

    Returns the directory whose ``usr/lib/python3/dist-packages`` holds ``cloudinit``
    and the libraries it imports that the host's Python lacks.  Keyed by
    cloud-init's candidate version: a new Debian point release fetches it again.
    """
    version = _candidate("cloud-init")
    base = cache_dir if cache_dir is not None else default_cache_dir()
    final = base / f"cloud-init-{version.replace(':', '_')}"
    if (final / SITE / "cloudinit").is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    with locked(base / ".lock"):
        if (final / SITE / "cloudinit").is_dir():
            return final
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=base))
        try:
            debs = staging / "debs"
            debs.mkdir()
            run(["apt-get", "download", f"cloud-init={version}", *_missing_python_deps()], cwd=debs)
            for deb in sorted(debs.glob("*.deb")):
                run(["dpkg-deb", "-x", str(deb), str(staging / "tree")])
            os.rename(staging / "tree", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _candidate(package: str) -> str:
    found = re.search(r"Candidate:\s*(\S+)", run(["apt-cache", "policy", package]))
    if found is None or found.group(1) == "(none)":
        raise GuestBuildError(f"apt knows no {package} package; run 'apt-get update' first")
    return found.group(1)


def _missing_python_deps() -> list[str]:
    """cloud-init's python3-* dependencies (recursively) that the host has not installed."""
    out = run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                "--no-breaks", "--no-replaces", "--no-enhances", "cloud-init"])
    wanted = sorted(set(re.findall(r"^\s*\|?Depends: (python3-[a-z0-9.+-]+)$", out, re.MULTILINE)))
    status = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *wanted],
                            capture_output=True, text=True, check=False).stdout
    installed = {line.split()[0] for line in status.splitlines() if line.endswith(" installed")}
    return [pkg for pkg in wanted if pkg not in installed]


def render_network(network_config: str, renderer: str, cache_dir: Path | None = None) -> dict[str, str]:
    """The files cloud-init's ``renderer`` writes for ``network_config`` (a network-config YAML).

    Returns ``{path relative to the guest's root: text}``, e.g.
    ``{"etc/network/interfaces.d/50-cloud-init": "..."}``.  ``renderer`` is a key of
    :data:`RENDERERS`.
    """
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}: one of {', '.join(RENDERERS)}")
    tree = cloud_init_tree(cache_dir)
    with tempfile.TemporaryDirectory(prefix="libvm-render-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "network-config").write_text(network_config)
        argv = [SYSTEM_PYTHON, "-m", "cloudinit.cmd.main", "devel", "net-convert", "-p", str(tmp / "network-config"),
                "-k", "yaml", "-d", str(tmp / "out"), "-D", RENDERERS[renderer], "-O", renderer]
        env = dict(os.environ, PYTHONPATH=str(tree / SITE))
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=120)
        if proc.returncode != 0:
            raise GuestBuildError(f"cloud-init net-convert -O {renderer} failed: {proc.stderr.strip()[-2000:]}")
        out = tmp / "out"
        return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}
