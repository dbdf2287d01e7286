#!/usr/bin/env bash
# Packs a `bdense teacher train` run into a shippable teacher directory:
#   models/package-teacher.sh RUN_DIR models/fashion-mnist-unet [--state-only]
# The teacher a generator loads (teacher.json, model.bpk), the training record (config.json,
# log.csv) and the newest checkpoint as ONE file (checkpoint.tar, replaced each time), so a
# later session resumes training with:
#   mkdir -p RUN && cp DEST/config.json DEST/log.csv RUN/ && tar -xf DEST/checkpoint.tar -C RUN
#   bdense teacher train --resume --out RUN ...(the command in DEST/provenance.json)
# With --state-only, only the training state moves on (checkpoint.tar, log.csv): the shipped
# weights, and every result measured with them, stay as they are.
set -euo pipefail
run=$1 dest=$2 state_only=${3:-}
mkdir -p "$dest"
latest=$(ls -d "$run"/checkpoints/step-* | sort | tail -1)
step=$(basename "$latest")
if [ "$state_only" != --state-only ]; then
  # The card and weights written with that checkpoint (the run rewrites both at each one).
  cp "$run/teacher.json" "$run/model.bpk" "$run/config.json" "$dest/"
  card_steps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["steps"])' "$dest/teacher.json")
  if [ "$card_steps" -ne "$((10#${step#step-}))" ]; then
    echo "the run wrote step $card_steps while packing $step: run this again" >&2; exit 1
  fi
fi
# Only the rows up to the checkpoint: a resumed run rewrites the rest.
awk -F, -v last="${step#step-}" 'NR == 1 || $1 + 0 <= last + 0' "$run/log.csv" > "$dest/log.csv"
tar -C "$run" -cf "$dest/checkpoint.tar.tmp" "checkpoints/$step"
mv "$dest/checkpoint.tar.tmp" "$dest/checkpoint.tar"
echo "packed $run at $step into $dest ($(du -sh "$dest" | cut -f1))${state_only:+, weights unchanged}"
