#!/usr/bin/env bash
# Packaging check: build the sdist and, from it, the wheel (python -m build), install the wheel
# into a fresh virtualenv (no system site-packages; pip fetches the dependencies from PyPI) and
# import libvm there, outside the checkout. Runs `libvm --help` when setup.cfg declares entry
# points. Metadata lives in setup.cfg only: pyproject.toml holds build-system and tool config.
# Usage: bash scripts/check-package.sh   (needs .venv with `build`, as scripts/setup-env.sh makes)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

fail() { echo "check-package: $*" >&2; exit 1; }

if grep -q '^\[project' pyproject.toml; then
  fail "pyproject.toml has a [project] table: the metadata is stated in setup.cfg only"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/libvm-package.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== build sdist + wheel"
.venv/bin/python -m build --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log" >&2; fail "python -m build failed"; }
shopt -s nullglob
wheels=("$tmp"/dist/libvm-*.whl)
sdists=("$tmp"/dist/libvm-*.tar.gz)
((${#wheels[@]} == 1)) || fail "expected one wheel, got: ${wheels[*]:-none}"
((${#sdists[@]} == 1)) || fail "expected one sdist, got: ${sdists[*]:-none}"
echo "   $(basename "${sdists[0]}") $(basename "${wheels[0]}")"

# The wheel holds the package and its py.typed, and nothing from tests/ or docs/.
listing=$("$PYTHON" -m zipfile -l "${wheels[0]}")
grep -Eq '^libvm/py\.typed[[:space:]]' <<<"$listing" || fail "the wheel has no libvm/py.typed"
if grep -Eq '^(tests|docs|bench|examples)/' <<<"$listing"; then
  fail "the wheel holds files outside libvm/"
fi

echo "== install the wheel into a fresh venv"
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "${wheels[0]}" >"$tmp/pip.log" 2>&1 \
  || { cat "$tmp/pip.log" >&2; fail "pip install of the wheel failed"; }

# From $tmp, so that the checkout's libvm/ cannot be imported instead of the installed one.
(
  cd "$tmp"
  venv/bin/python - <<'PY'
import pathlib, sys
import libvm
where = pathlib.Path(libvm.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in where.parents, f"libvm imported from {where}"
print(f"   import libvm: {libvm.__version__} from {where.parent}")
PY
)

if grep -q '^\[options.entry_points\]' setup.cfg; then
  echo "== libvm --help"
  [ -x "$tmp/venv/bin/libvm" ] || fail "setup.cfg declares entry points but the wheel installs no 'libvm' command"
  (cd "$tmp" && venv/bin/libvm --help >/dev/null) || fail "libvm --help failed"
  # A real command through the installed wheel, on libvirt's in-process test driver.
  # Output captured first: `| grep -q` under pipefail fails whenever grep exits before libvm
  # finished writing (SIGPIPE, exit 141), a race.
  listed=$(cd "$tmp" && venv/bin/libvm --uri test:///default --json net list) \
    || fail "libvm net list from the wheel failed"
  grep -q '"name": "default"' <<<"$listed" || fail "libvm net list from the wheel did not list 'default': $listed"
else
  echo "   (no [options.entry_points] in setup.cfg yet: libvm --help not checked)"
fi
echo "== package OK"
