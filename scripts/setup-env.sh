# Sourced by scripts/test.sh and scripts/demo.sh: installs the system packages
# (apt) and a virtualenv .venv with libvm, its test tools and the docs tools (pip). Idempotent.
APT_PACKAGES=(
  libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base dnsmasq-utils
  iptables cpio busybox-static libvirt-dev pkg-config gcc python3-venv python3-dev
  iproute2 util-linux xz-utils seabios ipxe-qemu
  dosfstools mtools syslinux  # the test guest's disk image (libvm.testing.disk)
  mmdebstrap fdisk syslinux-common e2fsprogs  # the Debian 12 guest images (libvm.testing.debian):
                              # packages into a directory, sfdisk and mbr.bin for the MBR, mke2fs -d
  openssh-client              # ssh-keygen: guests' host keys (create_vm); ssh: wait_for_ssh's key check, vm.ssh, the Debian tests
  genisoimage                 # tests only: NoCloud seed ISOs in tests/test_guest_disk.py
  virtinst                    # bench only: the virt-install column of bench/bench_create.py
  openssh-server openssh-client  # tests only: qemu+ssh to libvm.testing.RemoteHypervisor (never started as a service)
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "libvm: missing packages: ${missing[*]}; run this script as root (sudo)" >&2
    exit 2
  fi
  echo "== apt-get install ${missing[*]}"
  apt-get update -qq
  # No package may start a service of the machine (openssh-server would start its sshd):
  # Debian's policy-rc.d answer 101 forbids it, for the installation only.
  policy=/usr/sbin/policy-rc.d own_policy=
  [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { [ -z "$own_policy" ] || rm -f "$policy"; exit 2; }
  [ -z "$own_policy" ] || rm -f "$policy"
fi
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.libvm-installed
if [ ! -e "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== pip install -e .[test,docs]"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,docs]" >.venv/pip.log 2>&1 \
    || { cat .venv/pip.log >&2; echo "libvm: pip install failed" >&2; exit 2; }
  touch "$stamp"
fi
.venv/bin/python -c "import libvirt, lxml, netaddr, libvm" || { echo "libvm: installing the virtualenv failed" >&2; exit 2; }
