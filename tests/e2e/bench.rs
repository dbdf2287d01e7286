//! `bdense bench sql` and `bdense bench targets` as a user runs them: every question answered
//! by both engines and checked, and a missing peer named rather than failing the benchmark.
//! Only the shape of the report and the agreement of answers are asserted, never a time.

use crate::dir;

/// The README-shaped dataset (49 steps, 8 trajectories) at `store/fmnist`.
fn readme_store(t: &bdense_tests::TestDir) {
    t.bdense(crate::readme_store_args("store/fmnist")).ok();
}

/// The report's rows for the nine questions: (name, the rest of the line).
fn question_rows(out: &str) -> Vec<&str> {
    let start = out
        .lines()
        .position(|l| l.starts_with("query "))
        .unwrap_or_else(|| panic!("no table header:\n{out}"));
    out.lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with("bench sql done"))
        .collect()
}

/// `.ci/run` installs duckdb into `python3` (or `$BDENSE_PYTHON`): each question runs in both
/// engines on the same files and every answer agrees.
#[test]
fn bench_sql_answers_every_question_in_bdense_and_duckdb_alike() {
    let t = dir();
    readme_store(&t);
    let python = std::env::var("BDENSE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = t
        .bdense(["bench", "sql", "store/fmnist", "--repeats", "1"])
        .env("BDENSE_PYTHON", &python)
        .ok();
    assert!(out.contains("against duckdb "), "{out}");
    let rows = question_rows(&out);
    assert_eq!(rows.len(), 9, "{out}");
    for row in &rows {
        assert!(row.contains("  agree ("), "answers differ: {row}\n{out}");
        // bdense, CLI and duckdb seconds and their ratio, just before the verdict (a name
        // such as "NaN or Inf" would parse as numbers too).
        let words: Vec<&str> = row.split_whitespace().collect();
        let verdict = words.iter().position(|&w| w == "agree").unwrap();
        let secs: Vec<f64> = words[verdict - 4..verdict - 1]
            .iter()
            .map(|w| w.parse().unwrap())
            .collect();
        // Printed to the millisecond: a tiny query may show 0.000.
        assert!(secs.iter().all(|&s| s >= 0.0), "{row}");
        assert!(words[verdict - 1].ends_with('x'), "{row}");
    }
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("bench sql done: bdense (in-process) within 1.2x of duckdb on ")
            && last.ends_with(" of 9 queries"),
        "{last}"
    );
}

/// A Python without duckdb: the benchmark says so, still times bdense, and succeeds.
#[test]
fn bench_sql_without_duckdb_names_the_missing_peer() {
    let t = dir();
    readme_store(&t);
    let out = t
        .bdense(["bench", "sql", "store/fmnist", "--repeats", "1"])
        .env("BDENSE_PYTHON", "/bin/false")
        .ok();
    assert!(
        out.contains("duckdb peer skipped: /bin/false cannot import duckdb"),
        "{out}"
    );
    let rows = question_rows(&out);
    assert_eq!(rows.len(), 9, "{out}");
    assert!(rows.iter().all(|r| r.trim_end().ends_with('-')), "{out}");
    assert_eq!(out.lines().last(), Some("bench sql done (bdense only)"));
}

/// The stream and its raw-file ceiling are both measured on the same epochs; a Python
/// without pyarrow leaves a note where the peer's line would be.
#[test]
fn bench_targets_measures_the_stream_against_raw_and_names_a_missing_peer() {
    let t = dir();
    crate::procedural_store(&t);
    let out = t
        .bdense([
            "bench",
            "targets",
            "store/p",
            "--n",
            "3",
            "--k",
            "2",
            "--batch",
            "16",
            "--repeats",
            "2",
            "--dir",
            "scratch",
        ])
        .env("BDENSE_PYTHON", "/bin/false")
        .ok();
    for name in ["raw f32 file, same access pattern", "bdense TargetStream"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line:\n{out}"));
        let rate: f64 = line[name.len()..]
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(rate > 0.0, "{line}");
        assert!(line.ends_with("CPU s/epoch"), "{line}");
    }
    assert!(
        out.contains("pyarrow + numpy peer skipped: /bin/false cannot import pyarrow and numpy"),
        "{out}"
    );
    assert!(
        !t.join("scratch/raw.f32").exists(),
        "the raw copy is removed"
    );
}

/// `bench store` on a small synthetic set (300 trajectories: one full 256-row shard and a
/// short one) prints both raw baselines and, for every layout, its read ratios against each,
/// and leaves no scratch directory behind.
#[test]
fn bench_store_compares_every_layout_with_both_raw_baselines() {
    let t = dir();
    let out = t
        .bdense([
            "bench",
            "store",
            "--count",
            "300",
            "--steps",
            "9",
            "--dim",
            "12",
            "--repeats",
            "1",
            "--dir",
            "scratch",
        ])
        .ok();
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name:?}:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert!(row("raw f32 file (baseline)").len() >= 8, "{out}");
    // name (4 words), write MB/s and x raw ("-"), then its read MB/s
    let fresh = row("  fresh array per shard-step");
    assert!(fresh[6].parse::<f64>().unwrap() > 0.0, "{out}");
    for layout in [
        "f32 zstd-1 + byte-split",
        "f32 uncompressed",
        "f16 zstd-1 + byte-split",
    ] {
        let cells = row(layout);
        // ..., read on cores MB/s, x raw, x fresh, disk/raw
        let numbers: Vec<f64> = cells[cells.len() - 4..]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        assert!(numbers.iter().all(|&v| v > 0.0), "{layout}: {cells:?}");
    }
    assert!(out.contains("bench store done"), "{out}");
    assert!(!t.join("scratch/raw.f32").exists() && !t.join("scratch/ds").exists());
}
