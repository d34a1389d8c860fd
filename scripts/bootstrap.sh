#!/usr/bin/env bash
# Creates (or refreshes) .venv at the repo root with everything the project and its tests need.
# Idempotent: re-installs only when pyproject.toml changed since the last successful run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.unicorn-bootstrap"
want="$(cat pyproject.toml setup.py scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[bootstrap] setting up $venv (about a minute on a fresh machine)" >&2
python3 -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip >/dev/null 2>&1 || true
# The CPU wheel first (a local file here): the project's own `torch>=2.4` is then already satisfied.
$pip install -q "torch==2.13.0" numpy
UNICORN_NO_CUDA_EXT=1 $pip install -q -e ".[dev]"
echo "$want" > "$stamp"
echo "[bootstrap] done" >&2
