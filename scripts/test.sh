#!/usr/bin/env bash
# Install what is missing into ./.venv (or the active virtualenv) and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
[ -n "${BASH_VERSION:-}" ] || { echo "error: test.sh needs bash; run it with bash: bash scripts/test.sh ..." >&2; exit 2; }
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_env.sh
source scripts/_env.sh
ensure_env requirements-dev.txt
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec python -m pytest -q "$@"
