"""Sphinx configuration for libvm's documentation site.

Build: ``.venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html``
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring

DOCS = Path(__file__).resolve().parent
# The checkout's libvm, not whichever libvm the virtualenv has installed.
sys.path.insert(0, str(DOCS.parent))

import libvm  # noqa: E402

project = "libvm"
author = "libvm contributors"
copyright = "libvm contributors"
version = release = libvm.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# The existing pages link to each other's sections GitHub-style (api.md#cloud-images-...).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Docstrings say :class:`NotFound`; resolve such names against the module being documented,
# and show `libvm.Nic` as `Nic`.
python_use_unqualified_type_names = True
nitpicky = False

html_theme = "furo"
html_title = f"libvm {release}"


# The docstrings use Google-style "Parameters:" sections. sphinx.ext.napoleon itself would also
# read a property's "Whether ...: ..." first line as "type: description", so its parser is applied
# to callables and classes only.
_GOOGLE: Any = Config(napoleon_use_param=True, napoleon_use_rtype=True)


def _google_sections(app: Any, what: Any, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what in {"function", "method", "class", "exception"}:
        lines[:] = GoogleDocstring(lines, _GOOGLE, app, what, name, obj, options).lines()


def _cli_reference(app: Any, docname: str, source: list[str]) -> None:
    """Fill cli-reference.md with the help of every command, from argparse itself."""
    if docname != "cli-reference":
        return
    import argparse
    import os

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: make the page reproducible
    from libvm.cli import build_parser

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
        title = " ".join(words)
        out = [f"## `{title}`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out += walk(sub, [*words, name])
        return out

    source[0] += "\n" + "\n".join(walk(build_parser(), ["libvm"]))


def setup(app: Any) -> None:
    app.connect("source-read", _cli_reference)
    app.connect("autodoc-process-docstring", _google_sections)
