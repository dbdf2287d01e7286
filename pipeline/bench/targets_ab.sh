#!/usr/bin/env bash
# Alternating A/B rounds of `bdense bench targets` for several binaries on one dataset:
#   pipeline/bench/targets_ab.sh ROUNDS DATASET BIN [BIN ...]
# Prints, per binary, the median and range of "x raw" and of CPU s per epoch. One process
# moves by 10-25% from the next on a 2-core machine, so binaries are compared round by round
# (docs/perf.md, issue 15 part 4). Pause other work (e.g. `kill -STOP` a training job) first.
set -euo pipefail
rounds=$1 dataset=$2; shift 2
out=$(mktemp)
for _ in $(seq "$rounds"); do
  for bin in "$@"; do
    BDENSE_PYTHON=/bin/false "$bin" bench targets "$dataset" --n 4 --k 4 --batch 64 \
      --repeats 8 --dir "$(mktemp -d)" |
      awk -v b="$bin" '/^bdense TargetStream/ {for (i = 1; i <= NF; i++) { if ($i == "raw") x = $(i-1); if ($i == "CPU") c = $(i-1) } print b, x, c}'
  done
done > "$out"
python3 - "$out" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    b, x, c = line.split()
    d[b].append((float(x.rstrip("x")), float(c)))
for b, v in d.items():
    xs, cs = [a for a, _ in v], [c for _, c in v]
    print(f"{b}: x raw median {statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f}), "
          f"CPU s/epoch median {statistics.median(cs):.3f} ({min(cs):.3f}-{max(cs):.3f})")
PY
rm -f "$out"
