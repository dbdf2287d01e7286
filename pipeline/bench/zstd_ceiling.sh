#!/usr/bin/env bash
# zstd's own decompression speed on a store's state vectors, as the store writes them
# (byte-stream split, zstd level 1): the ceiling any reader of the store meets.
#   pipeline/bench/zstd_ceiling.sh DATASET [STEP]
# Needs the `zstd` command line tool and a Python with pyarrow and numpy ($BDENSE_PYTHON).
set -euo pipefail
dataset=$1 step=${2:-24}
python=${BDENSE_PYTHON:-python3}
file=$(mktemp)
"$python" - "$dataset" "$step" "$file" <<'PY'
import glob, sys
import numpy as np, pyarrow.parquet as pq
dataset, step, out = sys.argv[1:]
path = sorted(glob.glob(f"{dataset}/step={step}/*.parquet"))[0]
x = pq.read_table(path, columns=["x"]).column("x").combine_chunks().values.to_numpy()
x = np.asarray(x, dtype="<f4")
open(out, "wb").write(x.view(np.uint8).reshape(-1, 4).T.copy().tobytes())
print(f"{path}: {x.size * 4} bytes of x, byte-stream split")
PY
zstd --version
zstd -b1 -e1 "$file" 2>&1 | tr '\r' '\n' | grep 'MB/s' | tail -1
rm -f "$file"
