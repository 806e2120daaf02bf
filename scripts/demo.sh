#!/usr/bin/env bash
# Install what libvm needs (as root), then boot a VM that gets its reserved IP:
# the seed scenario, MAC 66:66:66:66:66:0b bound to 192.168.150.88.
# Usage (as root): bash scripts/demo.sh   (LIBVM_URI=qemu:///system to use a running libvirtd)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
exec .venv/bin/python examples/reserved_ip.py "$@"
