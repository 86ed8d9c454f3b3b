#!/usr/bin/env bash
# The README's test command: on a machine with only python3, set up everything the tests need
# (.venv with research_kit[dev,local]) and run the whole suite: nbdev_test over the notebooks,
# then pytest over tests/. Idempotent: the install is skipped while settings.ini and setup.py
# are unchanged since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

export PATH="$PWD/$VENV/bin:$PATH"
echo "== nbdev_test (notebooks)"
# nbdev_test runs notebooks in forked workers that exit without atexit handlers, so loky's resource tracker
# (which then removes the sweep notebook's joblib temp folder itself) would warn about a "leaked folder"
PYTHONWARNINGS="ignore:resource_tracker:UserWarning" nbdev_test --do_print --timing
echo "== pytest (tests/)"
pytest tests -ra
