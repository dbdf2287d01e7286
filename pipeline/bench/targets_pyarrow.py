"""The branch-target query written the way a user would without bdense: pyarrow + numpy.

Reads a bdense dataset (its newest manifest under _bdense/manifests/, or an older dataset's
manifest.json, and the step files it names), selects the steps a
student with N timestamps and K branches needs, assembles [B, 1 + K(N-1), D] batches in a
seeded shuffled order, and reports trajectories/s and GB/s of assembled f32.

    python3 targets_pyarrow.py STORE/NAME N K BATCH [REPEATS]

`bdense bench targets` runs this script (embedded in the binary) right after its own stream.
"""
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def layout_steps(points, n, k):
    intervals = points - 1
    if intervals % (k * (n - 1)):
        raise SystemExit(f"K (N-1) = {k * (n - 1)} does not divide {intervals}")
    stride = intervals // (k * (n - 1))
    return [0] + [(i * k + b) * stride for i in range(n - 1) for b in range(1, k + 1)]


def one_epoch(root, manifest, steps, batch, seed):
    count = sum(s["rows"] for s in manifest["shards"])
    dim = manifest["dims"]["c"] * manifest["dims"]["h"] * manifest["dims"]["w"]
    states = np.empty((count, len(steps), dim), dtype=np.float32)
    for shard in manifest["shards"]:
        for slot, step in enumerate(steps):
            entry = next(f for f in shard["files"] if f["step"] == step)
            table = pq.read_table(os.path.join(root, entry["path"]), columns=["traj_id", "x"])
            ids = table.column("traj_id").to_numpy()
            x = table.column("x").combine_chunks()
            values = x.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            states[ids, slot, :] = values.reshape(len(ids), dim)
    order = np.random.default_rng(seed).permutation(count)
    checksum = 0.0
    for start in range(0, count, batch):
        b = states[order[start:start + batch]]  # the batch, contiguous, as a trainer wants it
        checksum += float(b[0, 0, 0])
    return count, dim, checksum


def newest_manifest(root):
    """The committed snapshot: the highest version in _bdense/manifests/ (docs/STORE-PROTOCOL.md)."""
    versions = os.path.join(root, "_bdense", "manifests")
    if os.path.isdir(versions):
        names = sorted(n for n in os.listdir(versions) if n.endswith(".json") and not n.startswith("."))
        if names:
            return os.path.join(versions, names[-1])
    return os.path.join(root, "manifest.json")


def main():
    root, n, k, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    with open(newest_manifest(root)) as f:
        manifest = json.load(f)
    points = len(manifest["grid"]["sigmas"]) - (1 if manifest["grid"]["appends_zero"] else 0)
    steps = layout_steps(points, n, k)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        count, dim, _ = one_epoch(root, manifest, steps, batch, 0)
        best = min(best, time.perf_counter() - t)
    gb = count * len(steps) * dim * 4 / 1e9
    print(f"pyarrow {pa.__version__} + numpy {np.__version__}: {count / best:.0f} traj/s {gb / best:.3f} GB/s ({count} trajectories, {len(steps)} steps, best of {repeats})")
    print(f"seconds {best:.6f}")  # read by `bdense bench targets`


if __name__ == "__main__":
    main()
