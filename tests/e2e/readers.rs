//! Other readers open a dataset directory untouched: the default calls of pyarrow, polars and
//! duckdb (`readers.py`) on a fresh `bdense generate` store. Needs `pip install pyarrow polars duckdb` (`.ci/run` installs them);
//! `BDENSE_PYTHON` names another interpreter.

use crate::dir;

#[test]
fn pyarrow_polars_and_duckdb_open_a_fresh_dataset_with_an_integer_step() {
    let t = dir();
    t.bdense([
        "generate",
        "store/r",
        "--dataset",
        "procedural",
        "--teacher",
        "gaussian",
        "--grid",
        "11",
        "--count",
        "40",
        "--rows-per-shard",
        "16",
    ])
    .ok();
    let ds = t.join("store/r");
    // A writer lock sits in `_bdense/` while a writer runs; a dead one's stays until gc.
    // (Not tested: a killed writer's staged file in `_bdense/staging/`, which polars' default
    // directory scan reads, see docs/STORE-PROTOCOL.md.)
    std::fs::write(ds.join("_bdense/writer-999999999-0.lock"), b"").unwrap();
    assert!(ds.join("step=7").is_dir() && !ds.join("step=0007").exists());

    let python = std::env::var("BDENSE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/readers.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&ds)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (install python3 with pyarrow, polars, duckdb)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a reader failed on {} (pip install pyarrow polars duckdb):\n{stdout}{stderr}",
        ds.display()
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let readers: Vec<&str> = lines
        .iter()
        .map(|l| l["reader"].as_str().unwrap())
        .collect();
    assert_eq!(readers, ["pyarrow", "polars", "duckdb"], "{stdout}");
    for l in &lines {
        let (reader, x, step) = (
            &l["reader"],
            l["x_type"].as_str().unwrap(),
            l["step_type"].as_str().unwrap(),
        );
        eprintln!("{reader} {}: x {x}, step {step}", l["version"]);
        // 40 trajectories x 11 steps, the temporary file not counted.
        assert_eq!(l["rows"], 440, "{reader}: {l}");
        assert_eq!(
            l["steps"],
            serde_json::json!((0..11).collect::<Vec<_>>()),
            "{reader}: {l}"
        );
        // 256 f32 per state (the procedural images, 1x16x16). pyarrow and polars restore the fixed-size list from the
        // Arrow schema embedded in the footer; duckdb reads Parquet's LIST as a variable list
        // (FLOAT[]), every one of 256 values.
        let f32_list = match reader.as_str().unwrap() {
            "pyarrow" => x.starts_with("fixed_size_list<item: float") && x.ends_with("[256]"),
            "polars" => x.starts_with("Array(Float32") && x.contains("256"),
            _ => x == "FLOAT[]" || x == "FLOAT[256]",
        };
        assert!(f32_list, "{reader}: x is {x}, not a list of 256 floats");
        assert_eq!(l["x_lengths"], serde_json::json!([256]), "{reader}: {l}");
        let integer = [
            "int8", "int16", "int32", "int64", "Int8", "Int16", "Int32", "Int64", "TINYINT",
            "SMALLINT", "INTEGER", "BIGINT",
        ]
        .contains(&step);
        assert!(integer, "{reader}: step is {step}, not an integer");
    }
}
