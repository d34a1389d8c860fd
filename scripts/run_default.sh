#!/usr/bin/env bash
# The main job on the embedded default model (sets up .venv first). Extra arguments go to `unicorn demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/unicorn" demo "$@"
