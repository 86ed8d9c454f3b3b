#!/usr/bin/env bash
# The README's test command: on a machine with only python3, set up everything the tests need
# (.venv with research_kit[dev,local]) and run the whole suite: nbdev_test over the notebooks,
# then pytest over tests/. Idempotent: the install is skipped while settings.ini and setup.py
# are unchanged since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.research_kit-install
PIP_NOISE="^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
want=$(cat settings.ini setup.py pyproject.toml | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "== installing research_kit[dev,local] into $VENV (llama-cpp-python builds from source the first time: ~10 min)"
  # pip's own notice about configured package folders that do not exist on this machine is dropped; all else shows
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | { grep -v "$PIP_NOISE" || true; }
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,local]" 2>&1 | { grep -v "$PIP_NOISE" || true; }
  echo "$want" > "$STAMP"
else
  echo "== $VENV is up to date (delete $STAMP to reinstall)"
fi

export PATH="$PWD/$VENV/bin:$PATH"
echo "== nbdev_test (notebooks)"
# nbdev_test runs notebooks in forked workers that exit without atexit handlers, so loky's resource tracker
# (which then removes the sweep notebook's joblib temp folder itself) would warn about a "leaked folder"
PYTHONWARNINGS="ignore:resource_tracker:UserWarning" nbdev_test --do_print --timing
echo "== pytest (tests/)"
pytest tests -ra
