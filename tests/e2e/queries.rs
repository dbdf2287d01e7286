//! `bdense sql` and `bdense targets` as a user runs them.

use bdense_store::Dtype;
use bdense_tests::synthetic;

use crate::{dir, readme_queries};

/// Every statement of the README's SQL block runs as written on a 49-step dataset named as
/// there, and the questions that are not looking for problems have answers.
#[test]
fn the_readme_sql_block_runs_as_written() {
    let t = dir();
    t.bdense(crate::readme_store_args("store/fmnist")).ok();
    let queries = readme_queries();
    assert_eq!(queries.len(), 7, "{queries:?}");
    for query in &queries {
        let out = t.bdense(["sql", "store", query, "--format", "csv"]).ok();
        let rows: Vec<&str> = out.lines().skip(1).collect();
        let problems = query.contains("all_finite") || query.contains("HAVING count(*) > 1");
        assert_eq!(rows.is_empty(), problems, "{query}:\n{out}");
        if query.contains("straightness") {
            // Endpoint displacement over path length: in (0, 1], five trajectories.
            assert_eq!(rows.len(), 5, "{out}");
            for row in rows {
                let s: f64 = row.split(',').nth(1).unwrap().parse().unwrap();
                assert!(s > 0.0 && s <= 1.0 + 1e-9, "{row}");
            }
        }
    }
}

#[test]
fn sql_answers_questions_about_teacher_paths() {
    let t = dir();
    synthetic(&t.join("store"), "g", 32, 9, 16, Dtype::F32);
    let out = t.bdense(["sql", "store", "SELECT step, count(*) AS n, round(avg(l2(x)), 3) AS norm FROM g GROUP BY step ORDER BY step"]).ok();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("| ")).count(),
        10,
        "header + 9 steps:\n{out}"
    );
    assert!(out.contains("| 0    | 32 |"), "{out}");

    let out = t
        .bdense([
            "sql",
            "store",
            "SELECT traj_id, x FROM g WHERE step = 0 ORDER BY traj_id LIMIT 2",
        ])
        .ok();
    assert!(
        out.contains("… (16 values)]"),
        "vectors are abbreviated:\n{out}"
    );

    t.bdense([
        "sql",
        "store",
        "SELECT dataset, steps, teacher, trajectories FROM manifest",
        "--format",
        "csv",
        "--out",
        "m.csv",
    ])
    .ok();
    let csv = std::fs::read_to_string(t.join("m.csv")).unwrap();
    assert_eq!(
        csv.trim(),
        "dataset,steps,teacher,trajectories\ng,9,synthetic-gaussian,32"
    );

    let out = t
        .bdense([
            "sql",
            "store",
            "SELECT x FROM g WHERE step = 8 AND traj_id = 3",
            "--format",
            "json",
        ])
        .ok();
    assert!(out.trim_start().starts_with("[{\"x\":["), "{out}");
}

#[test]
fn sql_errors_say_where_and_what() {
    let t = dir();
    synthetic(&t.join("store"), "g", 8, 5, 16, Dtype::F32);
    t.bdense(["sql", "store", "SELEC 1"])
        .fails_with("Line: 1, Column: 1");
    let err = t
        .bdense(["sql", "store", "SELECT * FROM nope"])
        .fails_with("not found");
    assert!(err.contains("tables in store: g, manifest, grid"), "{err}");
    t.bdense(["sql", "store", "COPY (SELECT 1) TO 'x.csv'"])
        .fails_with("--allow-writes");
    t.bdense(["sql", "store", "CREATE TABLE t AS SELECT 1"])
        .fails_with("read-only");
    assert!(!t.join("x.csv").exists());
    t.bdense([
        "sql",
        "store",
        "COPY (SELECT 1 AS a) TO 'x.csv' STORED AS CSV",
        "--allow-writes",
    ])
    .ok();
    assert!(t.join("x.csv").exists());

    // A damaged shard: the store's message, naming the file, said once (DataFusion wraps it).
    let shard = std::fs::read_dir(t.join("store/g"))
        .unwrap()
        .map(|e| e.unwrap().path().join("shard-00000.parquet"))
        .find(|p| p.is_file())
        .unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    let err = t
        .bdense(["sql", "store", "SELECT avg(sigma) FROM g"])
        .fails_with("shard-00000.parquet");
    assert_eq!(err.matches("shard-00000.parquet").count(), 1, "{err}");
}

#[test]
fn targets_preview_and_write() {
    let t = dir();
    synthetic(&t.join("store"), "g", 40, 13, 16, Dtype::F32);
    let out = t
        .bdense([
            "targets",
            "store/g",
            "--n",
            "4",
            "--k",
            "4",
            "--preview",
            "--batch",
            "8",
        ])
        .ok();
    assert!(
        out.contains("student N=4 (NFE 3), K=4 branches, every 1 grid steps"),
        "{out}"
    );
    assert!(
        out.contains("interval 1: s=") && out.contains("(step 4) -> targets 5@"),
        "{out}"
    );
    assert!(
        out.contains("targets") && out.contains("[[Float32; 16]; 12]"),
        "{out}"
    );

    t.bdense(["targets", "store/g", "--n", "4", "--k", "5"])
        .fails_with("K (N-1) must divide 12");
    let out = t
        .bdense([
            "targets",
            "store/g",
            "--n",
            "3",
            "--k",
            "2",
            "--out",
            "t.parquet",
            "--teacher-forcing",
        ])
        .ok();
    assert!(out.contains("wrote 40 trajectories in 1 batches"), "{out}");
    let out = t.bdense(["sql", ".", "SELECT 1"]).ok();
    assert!(out.contains('1'));
}

#[test]
fn store_paths_with_any_characters_open() {
    let t = dir();
    let store = "ü %#?";
    synthetic(&t.join(store), "g", 16, 5, 16, Dtype::F32);
    let out = t
        .bdense(["sql", store, "SELECT count(*) AS n FROM g WHERE step = 4"])
        .ok();
    assert!(out.contains("| 16 |"), "{out}");
    let out = t
        .bdense(["targets", &format!("{store}/g"), "--n", "3", "--k", "2"])
        .ok();
    assert!(out.contains("first batch"), "{out}");
}

/// `1 + 1 + ... + 1` with `terms` ones.
fn chain(terms: usize, op: &str) -> String {
    vec!["1"; terms].join(op)
}

#[test]
fn deep_expressions_run_or_are_refused_never_abort() {
    let t = dir();
    synthetic(&t.join("store"), "g", 8, 5, 16, Dtype::F32);
    let out = t
        .bdense(["sql", "store", &format!("SELECT {} AS s", chain(500, "+"))])
        .ok();
    assert!(out.contains("| 500 |"), "{out}");
    let ors = vec!["traj_id = 3"; 400].join(" OR ");
    let out = t
        .bdense([
            "sql",
            "store",
            &format!("SELECT count(*) AS n FROM g WHERE {ors}"),
        ])
        .ok();
    assert!(out.contains("| 5 |"), "one trajectory at 5 steps:\n{out}");
    let err = t
        .bdense(["sql", "store", &format!("SELECT {}", chain(20_000, "+"))])
        .fails_with("expression too deeply nested");
    assert!(!err.contains("overflow"), "{err}");
    t.bdense([
        "sql",
        "store",
        &format!("SELECT {}1{}", "(".repeat(300), ")".repeat(300)),
    ])
    .fails_with("recursion limit");
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let t = dir();
    synthetic(&t.join("store"), "g", 64, 9, 16, Dtype::F32);
    for args in [
        vec!["store", "verify", "store/g"],
        vec!["sql", "store", "SELECT traj_id, step FROM g"],
    ] {
        // `bdense ... | head -0`: the reader is gone before the first line is written.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = t.bdense(&args).cmd;
        let out = cmd.stdout(writer).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let quiet = out.status.success() || out.status.signal() == Some(13);
        assert!(
            quiet && !stderr.contains("panicked"),
            "{args:?}: {}\n{stderr}",
            out.status
        );
    }
}
