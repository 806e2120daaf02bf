#!/usr/bin/env bash
# Install everything libvm's test suite needs on Debian/Ubuntu (as root), then run
# the whole suite: ruff, mypy --strict, unit tests (libvirt test driver) and the
# real-stack tests (a private libvirtd + dnsmasq + qemu in a network namespace), then build the
# docs site (warnings are errors) and check the package (scripts/check-package.sh).
# Usage (as root): bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
echo "== ruff"; .venv/bin/ruff check libvm tests examples bench docs/conf.py
echo "== mypy --strict"; .venv/bin/mypy --strict libvm tests examples bench docs/conf.py
echo "== pytest"; .venv/bin/python -m pytest "$@"
echo "== docs (sphinx -W)"
.venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "== package"; bash scripts/check-package.sh
