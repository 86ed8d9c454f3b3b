#!/usr/bin/env bash
# The README's docs command: build the static docs site from the notebooks into _docs/ (no Quarto).
# On a machine with only python3 it first sets up .venv with research_kit[dev,local], as scripts/test.sh
# does (the same install stamp, so either script skips what the other installed). Every notebook is run
# (two at a time); `bash scripts/docs.sh --no-exec` is a fast build without the examples' outputs.
# Other options: python scripts/build_docs.py --help. Open _docs/index.html, or serve it:
# .venv/bin/python -m http.server -d _docs
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

exec "$VENV/bin/python" scripts/build_docs.py "$@"
