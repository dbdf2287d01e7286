"""One SQL query in duckdb over a bdense dataset's committed files: the peer of `bdense bench sql`.

`bdense bench sql` runs this script (embedded in the binary) right after running the same
question in bdense, with a JSON request on stdin:

    {"files": [...], "table": "fmnist", "threads": 2, "repeats": 2, "sql": "SELECT ..."}

`files` are exactly the step files the manifest names (`step` comes from their hive
directories), so both engines read the same bytes. Prints one JSON line: duckdb's version,
the best time of `repeats` runs (the view's creation is not timed) and the rows.
"""
import json
import math
import sys
import time

import duckdb


def plain(v):
    """A cell as JSON: numbers as floats (NaN and infinities as strings), lists flattened."""
    if isinstance(v, (list, tuple)):
        return [plain(e) for e in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    f = float(v)
    return f if math.isfinite(f) else str(f)


def main():
    req = json.load(sys.stdin)
    con = duckdb.connect()
    con.execute(f"SET threads = {int(req['threads'])}")
    con.execute("SET enable_progress_bar = false")
    files = ", ".join("'" + f.replace("'", "''") + "'" for f in req["files"])
    table = req["table"].replace('"', '""')
    con.execute(
        f'CREATE VIEW "{table}" AS SELECT * FROM read_parquet([{files}], hive_partitioning = true)'
    )
    best, rows = float("inf"), None
    for _ in range(int(req["repeats"])):
        t = time.perf_counter()
        rows = con.execute(req["sql"]).fetchall()
        best = min(best, time.perf_counter() - t)
    print(json.dumps({
        "version": duckdb.__version__,
        "seconds": best,
        "rows": [[plain(v) for v in r] for r in rows],
    }))


if __name__ == "__main__":
    main()
