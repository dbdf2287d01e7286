#!/usr/bin/env bash
# Runs the pyarrow + numpy peer of `bdense bench targets` in its own virtualenv.
#   pipeline/bench/targets_pyarrow.sh STORE/NAME N K BATCH
set -euo pipefail
venv="${BDENSE_BENCH_VENV:-$HOME/.cache/bdense-bench-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet pyarrow numpy
fi
exec "$venv/bin/python" "$(dirname "$0")/targets_pyarrow.py" "$@"
