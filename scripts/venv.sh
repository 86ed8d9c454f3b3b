# Sourced by scripts/test.sh and scripts/docs.sh: make sure .venv holds research_kit[dev,local], installing it on a
# machine with only python3, and again whenever settings.ini, setup.py or pyproject.toml change (an install stamp).
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.research_kit-install
# pip's notice about configured package folders that do not exist on this machine is dropped; all else shows
PIP_NOISE="^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
want=$(cat settings.ini setup.py pyproject.toml | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "== installing research_kit[dev,local] into $VENV (llama-cpp-python builds from source the first time: ~10 min)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | { grep -v "$PIP_NOISE" || true; }
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,local]" 2>&1 | { grep -v "$PIP_NOISE" || true; }
  echo "$want" > "$STAMP"
else
  echo "== $VENV is up to date (delete $STAMP to reinstall)"
fi
