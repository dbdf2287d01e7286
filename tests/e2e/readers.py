"""The three default calls other Parquet readers make on a bdense dataset directory.

Usage: python3 readers.py DATASET_DIR. Prints one JSON object per reader:
{"reader", "version", "rows", "x_type", "step_type", "steps"}; exits 1 when a reader fails,
naming it. The Rust test (readers.rs) judges the values.
"""

import json
import sys

path = sys.argv[1]
failed = False


def report(reader, version, rows, x_type, step_type, steps, x_lengths):
    print(json.dumps({
        "reader": reader,
        "version": version,
        "rows": int(rows),
        "x_type": str(x_type),
        "step_type": str(step_type),
        "steps": sorted(int(s) for s in steps),
        # The distinct lengths of x over all rows.
        "x_lengths": sorted(int(n) for n in x_lengths),
    }))


def attempt(reader, call):
    global failed
    try:
        call()
    except Exception as e:  # noqa: BLE001 - any failure of a reader is the finding
        failed = True
        print(f"{reader} failed on {path}: {type(e).__name__}: {e}", file=sys.stderr)


def with_pyarrow():
    import pyarrow
    import pyarrow.dataset as ds

    d = ds.dataset(path, format="parquet", partitioning="hive")
    table = d.to_table(columns=["x", "step"])
    import pyarrow.compute as pc

    x = table.column("x")
    report("pyarrow", pyarrow.__version__, table.num_rows, d.schema.field("x").type,
           d.schema.field("step").type, set(table.column("step").to_pylist()),
           set(pc.list_value_length(x).to_pylist()))


def with_polars():
    import polars as pl

    # polars reads every file under a bare directory (`_bdense/` too) and refuses mixed
    # extensions, so its form for a dataset is the glob its own error message suggests.
    lf = pl.scan_parquet(path.rstrip("/") + "/**/*.parquet", hive_partitioning=True)
    schema = lf.collect_schema()
    df = lf.select(["x", "step"]).collect()
    lengths = {df["x"].dtype.size} if isinstance(df["x"].dtype, pl.Array) else set(df["x"].list.len())
    report("polars", pl.__version__, df.height, schema["x"], schema["step"],
           set(df["step"].to_list()), lengths)


def with_duckdb():
    import duckdb

    con = duckdb.connect()
    glob = path.rstrip("/") + "/**/*.parquet"
    source = f"read_parquet('{glob}', hive_partitioning=true)"
    rel = con.sql(f"SELECT x, step FROM {source}")
    types = dict(zip(rel.columns, [str(t) for t in rel.types]))
    rows = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
    steps = [r[0] for r in con.execute(f"SELECT DISTINCT step FROM {source}").fetchall()]
    lengths = [r[0] for r in con.execute(f"SELECT DISTINCT len(x) FROM {source}").fetchall()]
    report("duckdb", duckdb.__version__, rows, types["x"], types["step"], set(steps), lengths)


attempt("pyarrow", with_pyarrow)
attempt("polars", with_polars)
attempt("duckdb", with_duckdb)
sys.exit(1 if failed else 0)
