#!/usr/bin/env bash
# S3 on loopback against local disk, in one run: generate, sql (the README's first and last
# queries and a one-step filter) and the branch-target stream, each on both, with ratios.
# The S3 server is moto's (tests/e2e/s3_server.py: one request at a time). The data is the main
# job's (Fashion-MNIST, 784 values per state, the GMM teacher, 49 steps).
#   pipeline/bench/s3_loopback.sh [COUNT]     (B=path/to/bdense built with --features
#   bdense-pipeline/s3, default $CARGO_TARGET_DIR/debug/bdense; BDENSE_PYTHON for the peer)
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
# Whether two CSV answers agree, numbers to 1e-9 relative (a parallel sum's order varies).
agree() {
  python3 - "$1" "$2" <<'PY'
import math, sys
a, b = (open(p).read().splitlines() for p in sys.argv[1:])
def same(p, q):
    try:
        x, y = float(p), float(q)
    except ValueError:
        return p == q
    return x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9 * max(abs(x), abs(y))
ok = len(a) == len(b) and all(
    len(r.split(",")) == len(s.split(",")) and all(map(same, r.split(","), s.split(",")))
    for r, s in zip(a, b))
print("same answer" if ok else "ANSWERS DIFFER")
PY
}

gen=(--dataset fashion-mnist --teacher gmm --grid 49 --count "$count" --fit-limit 1024)
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
  l=$(timed "$B" sql "$work/store" "$q" --format csv); cp "$work/last" "$work/local.csv"
  r=$(timed "$B" sql s3://bench/store "$q" --format csv)
  same=$(agree "$work/local.csv" "$work/last")
  echo "sql \"$q\": local ${l}s, s3 ${r}s, s3/local $(ratio "$l" "$r")x ($same)"
done

for d in "$work/store/g" s3://bench/store/g; do
  echo "bench targets $d:"
  "$B" bench targets "$d" --n 4 --k 4 --batch 64 --repeats 2 --dir "$work/raw" | grep -v '^bench targets done'
done

# The server's own ceiling: every step file of the S3 dataset fetched once with boto3 (one
# request at a time, as moto serves them), to read the stream's S3 figure against.
python3 - "$AWS_ENDPOINT_URL" <<'PY'
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="store/g/")
        for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
start = time.perf_counter()
size = sum(len(s3.get_object(Bucket="bench", Key=k)["Body"].read()) for k in keys)
secs = time.perf_counter() - start
print(f"moto GET ceiling (boto3, {len(keys)} step files, {size / 2**20:.1f} MiB once): "
      f"{size / secs / 1e6:.0f} MB/s")
PY
