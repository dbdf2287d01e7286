#!/bin/bash
# Experiment 3 of docs/results.md: PD against PD + B-DENSE, 3 rounds (16 -> 8 -> 4 -> 2 Euler
# steps) at budgets of 10 and 40 optimiser steps of 16 examples per round, seeds 0, 1, 2.
# One process per seed (a training step keeps about one core busy), all into one --out; the
# last run over every seed reuses their finished rounds and scores (eval.json beside each
# round) and writes the combined table (OUT/pd.md, pd.json, pd.csv).
B=${BDENSE:-bdense}
OUT=${1:-runs/pd3}
args="--from-steps 16 --rounds 3 --budgets 10,40 --batch 16 --out $OUT"
mkdir -p "$OUT"
start=$(date +%s)
for s in 0 1 2; do $B pd $args --seeds $s > "$OUT/seed-$s.log" 2>&1 & done
wait
$B pd $args --seeds 0,1,2
echo "pd seeds done in $(( $(date +%s) - start ))s"
