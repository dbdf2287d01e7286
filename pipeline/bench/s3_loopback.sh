#!/usr/bin/env bash
# S3 on loopback against local disk, in one run: generate, sql (the README's first and last
# queries and a one-step filter) and the branch-target stream, each on both, with ratios.
# The S3 server is moto's (tests/e2e/s3_server.py: one request at a time).
#   pipeline/bench/s3_loopback.sh [COUNT]     (B=path/to/bdense, default $CARGO_TARGET_DIR/debug/bdense)
set -euo pipefail
cd "$(dirname "$0")/../.."
B="${B:-$CARGO_TARGET_DIR/debug/bdense}"
count="${1:-1000}"
work=$(mktemp -d)
python3 tests/e2e/s3_server.py > "$work/server.json" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
until [ -s "$work/server.json" ]; do sleep 0.2; done
port=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['port'])" "$work/server.json")
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=testing \
  AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
python3 -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL', region_name='us-east-1').create_bucket(Bucket='bench')"
echo "moto $(python3 -c 'import moto; print(moto.__version__)') on 127.0.0.1:$port; $count trajectories; $(nproc) cores"

now() { date +%s.%N; }
# Seconds `$@` takes (stdout to $work/last).
timed() { local s; s=$(now); "$@" > "$work/last"; echo "$(now) - $s" | bc; }
ratio() { echo "scale=2; $2 / $1" | bc; }

gen=(--dataset procedural --teacher gmm --grid 49 --count "$count" --fit-limit 1024)
local_s=$(timed "$B" generate "$work/store/g" "${gen[@]}"); local_line=$(cat "$work/last")
s3_s=$(timed "$B" generate s3://bench/store/g "${gen[@]}"); s3_line=$(cat "$work/last")
echo "generate: local ${local_s}s, s3 ${s3_s}s, s3/local $(ratio "$local_s" "$s3_s")x"
echo "  local: $local_line"
echo "  s3:    $s3_line"

queries=(
  "SELECT step, avg(l2(x)) AS norm FROM g GROUP BY step ORDER BY step"
  "SELECT vec_avg(x) FROM g WHERE step = 48"
  "SELECT count(*) FROM g WHERE step = 7 AND traj_id < 10"
)
for q in "${queries[@]}"; do
  l=$(timed "$B" sql "$work/store" "$q" --format csv); la=$(md5sum < "$work/last")
  r=$(timed "$B" sql s3://bench/store "$q" --format csv); ra=$(md5sum < "$work/last")
  same=$([ "$la" = "$ra" ] && echo "same answer" || echo "ANSWERS DIFFER")
  echo "sql \"$q\": local ${l}s, s3 ${r}s, s3/local $(ratio "$l" "$r")x ($same)"
done

for d in "$work/store/g" s3://bench/store/g; do
  echo "bench targets $d:"
  "$B" bench targets "$d" --n 4 --k 4 --batch 64 --repeats 2 --dir "$work/raw" | grep -v '^bench targets done'
done
