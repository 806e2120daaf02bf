#!/usr/bin/env bash
# Install everything libvm's test suite needs on Debian/Ubuntu (as root), then run
# the whole suite: ruff, mypy --strict, unit tests (libvirt test driver) and the
# real-stack tests (a private libvirtd + dnsmasq + qemu in a network namespace).
# Usage (as root): bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
echo "== ruff"; .venv/bin/ruff check libvm tests examples bench
echo "== mypy --strict"; .venv/bin/mypy --strict libvm tests examples bench
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
