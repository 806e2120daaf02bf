"""Run a notebook from a clean kernel, the way CI does, and read its outputs.

The kernel is this interpreter (``sys.executable -m ipykernel_launcher``),
declared as kernel ``python3`` in a private kernel-spec directory: a
``python3`` spec installed elsewhere on the machine (another Python, without
libvm) cannot be picked by mistake. It imports libvm from this checkout.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.ipynb"


def run_notebook(path: Path, env: Mapping[str, str], timeout: int = 600) -> Any:
    """Execute every cell of ``path`` with ``env`` added to the kernel's environment; the executed notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="libvm-kernels-") as specs:
        spec = Path(specs) / "python3"
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (libvm tests)",
            "language": "python",
        }))
        manager = KernelManager(kernel_name="python3",
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[specs]))
        client = nbclient.NotebookClient(notebook, km=manager, kernel_name="python3", timeout=timeout,
                                         resources={"metadata": {"path": str(path.parent)}})
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        client.execute(env={**os.environ, "PYTHONPATH": pythonpath, **env})
    return notebook


def cell(notebook: Any, tag: str) -> Any:
    """The cell tagged ``tag``."""
    found = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"no single cell tagged {tag!r}"
    return found[0]


def stdout(notebook: Any, tag: str) -> str:
    """What the cell printed."""
    return "".join(o.get("text", "") for o in cell(notebook, tag).outputs
                   if o.output_type == "stream" and o.name == "stdout")


def html(notebook: Any, tag: str) -> str:
    """The HTML the cell displayed (its result and ``display()`` calls)."""
    return "".join(str(o.data.get("text/html", "")) for o in cell(notebook, tag).outputs
                   if o.output_type in ("execute_result", "display_data"))


def lines(text: str, word: str) -> list[list[str]]:
    """The printed lines starting with ``word``, split into words (``reserved NAME MAC IP``)."""
    return [line.split() for line in text.splitlines() if line.startswith(f"{word} ")]
