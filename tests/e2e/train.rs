//! `bdense train` and `bdense sample`: students from one store, resumable bit for bit.

use crate::{dir, procedural_store as store, weights};

/// B-DENSE students get K = 2; SFD has its one branch (it is refused a --k).
fn train_args(method: &str, out: &str, steps: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train", "store/p", "--method", method, "--n", "4", "--steps", steps, "--batch", "16",
        "--base", "8", "--init", "scratch", "--out", out,
    ]
    .map(String::from)
    .to_vec();
    if method == "bdense" {
        a.extend(["--k", "2"].map(String::from));
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn resumed_training_is_bit_identical() {
    let t = dir();
    store(&t);
    let out = t
        .bdense(train_args(
            "bdense",
            "whole",
            "6",
            &["--checkpoint-every", "3"],
        ))
        .ok();
    assert!(
        out.contains("trained bdense student (N=4, K=2, NFE 3) steps 0..6"),
        "{out}"
    );

    let crashed = t
        .bdense(train_args(
            "bdense",
            "split",
            "6",
            &["--checkpoint-every", "3"],
        ))
        .env("BDENSE_ABORT_AFTER_STEP", "4")
        .output();
    assert!(!crashed.status.success());
    assert!(
        weights(&t.join("split")).starts_with("3 "),
        "the step-3 checkpoint survives"
    );
    let out = t.bdense(["train", "--resume", "split"]).ok();
    assert!(out.contains("steps 3..6"), "{out}");
    assert_eq!(weights(&t.join("split")), weights(&t.join("whole")));
    let log = |run: &str| std::fs::read_to_string(t.join(run).join("log.csv")).unwrap();
    assert_eq!(log("split"), log("whole"), "the log continues exactly");

    t.bdense(train_args("bdense", "whole", "6", &[]))
        .fails_with("a run never overwrites another run's directory");
    t.bdense(["train", "--resume", "whole", "--steps", "3"])
        .fails_with("--steps 3: whole is already at step 6");
    let record = std::fs::read_to_string(t.join("whole/run.json")).unwrap();
    assert!(
        record.contains("\"steps\": 6"),
        "the record keeps its total"
    );
}

#[test]
fn a_short_run_lowers_every_branch_loss_and_samples() {
    let t = dir();
    store(&t);
    t.bdense(train_args(
        "bdense",
        "b",
        "40",
        &["--checkpoint-every", "20", "--lr", "2e-3"],
    ))
    .ok();
    let log = std::fs::read_to_string(t.join("b/log.csv")).unwrap();
    let rows: Vec<Vec<f64>> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 40);
    for branch in [4, 5] {
        let first = rows[..3].iter().map(|r| r[branch]).sum::<f64>() / 3.0;
        let last = rows[rows.len() - 5..]
            .iter()
            .map(|r| r[branch])
            .sum::<f64>()
            / 5.0;
        assert!(
            last < 0.7 * first,
            "branch {} loss {first:.4} -> {last:.4}",
            branch - 3
        );
    }
    let out = t
        .bdense([
            "sample",
            "b",
            "--nfe",
            "3",
            "--count",
            "8",
            "--out",
            "samples",
            "--teacher",
        ])
        .ok();
    assert!(
        out.contains("sampled 8 images") && out.contains("student row above teacher row"),
        "{out}"
    );
    for f in ["grid.png", "student.npy", "teacher.npy"] {
        assert!(t.join("samples").join(f).is_file(), "{f} missing");
    }
    let npy = std::fs::read(t.join("samples/student.npy")).unwrap();
    assert_eq!(&npy[..6], b"\x93NUMPY");
    assert_eq!(npy.len(), 128 + 8 * 256 * 4);
    // Many images are sampled a batch at a time; each still depends only on its own seed.
    t.bdense(["sample", "b", "--count", "300", "--out", "many"])
        .ok();
    let many = std::fs::read(t.join("many/student.npy")).unwrap();
    assert_eq!(many.len(), 128 + 300 * 256 * 4);
    assert_eq!(
        many[128..npy.len()],
        npy[128..],
        "the first 8 images are the same"
    );
    t.bdense(["sample", "b", "--nfe", "2", "--out", "s2"])
        .fails_with("this run's student takes NFE 3");

    // SFD from the same store, same budget.
    let out = t.bdense(train_args("sfd", "s", "6", &[])).ok();
    assert!(
        out.contains("trained sfd student (N=4, K=1, NFE 3)"),
        "{out}"
    );
}

#[test]
fn corrupt_or_foreign_checkpoints_are_named() {
    let t = dir();
    store(&t);
    t.bdense(train_args("bdense", "r", "3", &[])).ok();
    let ckpt = t.join("r/checkpoints/step-000003");
    let model = ckpt.join("model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&model, bytes).unwrap();
    t.bdense(["train", "--resume", "r", "--steps", "6"])
        .fails_with("model.bpk");

    // A sfd checkpoint has one branch: it cannot resume a K = 2 run.
    t.bdense(train_args("sfd", "s", "3", &[])).ok();
    std::fs::remove_dir_all(&ckpt).unwrap();
    std::fs::rename(t.join("s/checkpoints/step-000003"), &ckpt).unwrap();
    t.bdense(["train", "--resume", "r", "--steps", "6"])
        .fails_with("not a checkpoint of this network");
    t.bdense(["train", "--resume", "store"])
        .fails_with("not a bdense run directory");
}

/// Waits until the run's log has `rows` rows (the trainer holds its lock by then).
fn wait_for_rows(run: &std::path::Path, rows: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while std::fs::read_to_string(run.join("log.csv"))
        .map_or(0, |l| l.lines().count().saturating_sub(1))
        < rows
    {
        assert!(std::time::Instant::now() < deadline, "no training progress");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn one_trainer_per_run_and_a_killed_run_always_continues() {
    let t = dir();
    store(&t);
    let never = ["--checkpoint-every", "1000000"];
    let mut first = t
        .bdense(train_args("bdense", "r", "1000000", &never))
        .cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_rows(&t.join("r"), 2);
    let refused = t
        .bdense(["train", "--resume", "r", "--steps", "4"])
        .fails_with("this run is being trained by pid");
    assert!(
        refused.contains(&format!("pid {}", first.id())),
        "{refused}"
    );
    t.bdense(train_args("bdense", "r", "4", &never))
        .fails_with("already holds a run");
    let first_pid = first.id();
    first.kill().unwrap();
    first.wait().unwrap();

    // Killed before its first checkpoint, leaving a half-written one: it continues from step
    // 0 with its recorded config, exactly as a run that was never stopped.
    let stale = t.join("r/checkpoints/.step-000002.tmp-4000000");
    std::fs::create_dir_all(&stale).unwrap();
    let (out, err) = t.bdense(["train", "--resume", "r", "--steps", "4"]).code(0);
    assert!(out.contains("steps 0..4"), "{out}");
    assert!(
        err.contains("no checkpoint yet") && err.contains("removed 1 half-written"),
        "{err}"
    );
    let dead = format!("held by pid {first_pid} on ");
    assert!(
        err.contains(&dead) && err.contains("without releasing"),
        "{err}"
    );
    assert!(!stale.exists());
    t.bdense(train_args("bdense", "whole", "4", &never)).ok();
    assert_eq!(weights(&t.join("r")), weights(&t.join("whole")));
    let log = |run: &str| std::fs::read_to_string(t.join(run).join("log.csv")).unwrap();
    assert_eq!(log("r"), log("whole"), "each step logged once");
}

#[test]
fn run_directories_that_cannot_be_used_say_why() {
    let t = dir();
    store(&t);
    std::fs::create_dir(t.join("notes")).unwrap();
    std::fs::write(t.join("notes/todo.txt"), "mine").unwrap();
    t.bdense(train_args("bdense", "notes", "2", &[]))
        .fails_with("notes is not empty and holds no run");
    std::fs::write(t.join("file"), "").unwrap();
    t.bdense(train_args("bdense", "file/r", "2", &[]))
        .fails_with("--out file/r");
    t.bdense(["train", "--resume", "missing"])
        .fails_with("missing: not a bdense run directory");
    // What a train killed before writing its record leaves: resume names the way out, and the
    // same fresh command takes the directory.
    std::fs::create_dir(t.join("early")).unwrap();
    std::fs::write(t.join("early").join(".lock"), "").unwrap();
    t.bdense(["train", "--resume", "early"])
        .fails_with("holds no run.json, so the `bdense train --out early` that made it stopped");
    t.bdense(train_args("bdense", "early", "2", &[])).ok();
    t.bdense(["train", "--resume", "notes"])
        .fails_with("notes: not a bdense run directory");
}

#[test]
fn a_store_path_with_any_characters_trains() {
    let t = dir();
    let store = "ü %#?";
    t.bdense([
        "generate",
        &format!("{store}/p"),
        "--dataset",
        "procedural",
        "--teacher",
        "gaussian",
        "--grid",
        "13",
        "--count",
        "16",
        "--rows-per-shard",
        "16",
    ])
    .ok();
    let mut args = train_args("sfd", "r", "2", &[]);
    args[1] = format!("{store}/p");
    let out = t.bdense(args).ok();
    assert!(out.contains("steps 0..2"), "{out}");
}

/// A tiny U-Net teacher on procedural images, trained for `steps` steps into `out`.
pub(crate) fn tiny_teacher(t: &bdense_tests::TestDir, out: &str, seed: &str) {
    t.bdense([
        "teacher",
        "train",
        "--dataset",
        "procedural",
        "--limit",
        "64",
        "--steps",
        "2",
        "--batch",
        "8",
        "--base",
        "8",
        "--seed",
        seed,
        "--out",
        out,
    ])
    .ok();
}

#[test]
fn students_of_a_network_teacher_copy_it_by_default_and_refuse_another() {
    let t = dir();
    tiny_teacher(&t, "teacher", "0");
    tiny_teacher(&t, "other", "1");
    t.bdense([
        "generate",
        "store/u",
        "--dataset",
        "procedural",
        "--teacher",
        "unet:teacher",
        "--grid",
        "13",
        "--count",
        "16",
        "--batch",
        "16",
        "--rows-per-shard",
        "16",
    ])
    .ok();
    let student = |init: &[&str], out: &str| {
        let mut a = vec![
            "train", "store/u", "--method", "bdense", "--n", "4", "--k", "4", "--steps", "1",
            "--batch", "4", "--out", out,
        ];
        a.extend(init);
        t.bdense(a)
    };
    // `--init auto` (the default) finds the store's teacher and takes the paper's recipe.
    student(&[], "copied").ok();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("copied/run.json")).unwrap()).unwrap();
    let c = &run["config"];
    assert_eq!(c["init"]["Teacher"], "teacher", "{run}");
    assert_eq!(c["method"]["afs"], true, "{run}");
    assert_eq!(c["optim"]["ema_decay"], 0.0, "{run}");
    assert!(c["optim"]["grad_clip"].is_null(), "{run}");
    assert_eq!(c["optim"]["schedule"]["step-half"]["factor"], 0.1, "{run}");
    // A flag the user gives wins over the recipe.
    student(&["--afs", "false", "--ema", "0.5"], "flags").ok();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("flags/run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["method"]["afs"], false, "{run}");
    assert_eq!(run["config"]["optim"]["ema_decay"], 0.5, "{run}");
    // Another teacher's weights are refused, naming both hashes.
    let hash = |dir: &str| {
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.join(dir).join("teacher.json")).unwrap())
                .unwrap();
        card["weights_hash"].as_str().unwrap().to_string()
    };
    let err = student(&["--init", "teacher:other"], "wrong").fails_with(&hash("other"));
    assert!(err.contains(&hash("teacher")), "{err}");
    // Scratch stays available, with the scratch recipe.
    student(&["--init", "scratch", "--base", "8"], "scratch").ok();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("scratch/run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["init"], "Scratch", "{run}");
    assert_eq!(run["config"]["method"]["afs"], false, "{run}");
}
