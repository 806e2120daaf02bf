"""``python -m libvm``: the ``libvm`` command (see :mod:`libvm.cli`)."""

from .cli import main

raise SystemExit(main())
