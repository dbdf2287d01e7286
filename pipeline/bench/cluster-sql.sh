#!/usr/bin/env bash
# The README's SQL questions on STORE, each once with `bdense sql` (local) and once with
# `bdense sql --cluster` against a scheduler and two executors (2 tasks each) started here on
# loopback ports; wall time of each command, process start included, and whether the two
# answers are the same CSV text (the e2e test compares them properly: unordered rows, floats
# summed in another order).
# Usage: pipeline/bench/cluster-sql.sh BDENSE STORE  (BDENSE built with the cluster feature;
# STORE holds `fmnist` on a 49-point grid, as the README's queries assume).
set -euo pipefail
bin=$(realpath "$1")
store=$(realpath "$2")
readme="$(dirname "$0")/../../README.md"
port=${PORT:-50250}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

"$bin" cluster scheduler --bind "127.0.0.1:$port" 2>"$work/scheduler.log" &
pids+=($!)
sleep 1
for i in 1 2; do
  "$bin" cluster executor --scheduler "127.0.0.1:$port" --bind "127.0.0.1:$((port + i))" \
    --tasks 2 2>"$work/executor$i.log" &
  pids+=($!)
done
sleep 2

# The statements of the README's ```sql block, one per line, comments dropped.
awk '/^```sql$/ {on = 1; next} on && /^```$/ {exit} on && !/^--/' "$readme" \
  | tr '\n' ' ' | tr ';' '\n' | sed 's/  */ /g; s/^ //; /^$/d' >"$work/queries"

seconds() { # wall seconds of "$@", output to $work/out
  local start
  start=$(date +%s%N)
  "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; return 1; }
  awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'
}

printf '%-8s %-9s %-8s %s\n' local_s cluster_s same_csv query
while IFS= read -r query; do
  local_s=$(seconds "$bin" sql "$store" "$query" --format csv)
  cp "$work/out" "$work/local"
  cluster_s=$(seconds "$bin" sql --cluster "df://127.0.0.1:$port" "$store" "$query" --format csv)
  same=$(cmp -s "$work/out" "$work/local" && echo yes || echo no)
  printf '%-8s %-9s %-8s %s\n' "$local_s" "$cluster_s" "$same" "${query:0:70}"
done <"$work/queries"
