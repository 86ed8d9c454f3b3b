#!/usr/bin/env bash
# The README's test command: on a machine with only python3, set up everything the tests need
# (.venv with research_kit[dev,local]) and run the whole suite: every notebook's cells (the docs build),
# then pytest over tests/. Idempotent: the install is skipped while settings.ini and setup.py
# are unchanged since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

export PATH="$PWD/$VENV/bin:$PATH"
echo "== notebooks (every cell runs, as the docs site is built into _docs/; a failing cell fails here, naming it)"
# One execution of the notebooks serves as their test and as the site tests/test_docs.py opens in Chromium.
# Notebooks run in worker processes that exit without atexit handlers, so loky's resource tracker (which then
# removes the sweep notebook's joblib temp folder itself) would warn about a "leaked folder".
PYTHONWARNINGS="ignore:resource_tracker:UserWarning" python scripts/build_docs.py --out _docs
echo "== pytest (tests/)"
RESEARCH_KIT_DOCS_SITE=_docs pytest tests -ra --durations=25
