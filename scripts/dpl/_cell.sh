#!/usr/bin/env bash
# One grid cell, as tools/grid.py runs it (built by `cell` in _lib.sh; not meant to be typed):
#   bash scripts/dpl/_cell.sh FUNCTION ARGS... -- [KEY VALUE ...]
# runs the _lib.sh function FUNCTION ARGS with the overrides KEY VALUE ... (sequentially).
[ -n "${BASH_VERSION:-}" ] || { echo "error: _cell.sh needs bash; run it with bash" >&2; exit 2; }
source "$(dirname "$0")/_lib.sh"
call=()
while [[ $# -gt 0 && "$1" != -- ]]; do call+=("$1"); shift; done
if [[ $# -eq 0 || ${#call[@]} -eq 0 ]]; then sed -n '2,4p' "$0" >&2; exit 2; fi
shift
OPTS=("$@")
"${call[@]}"
