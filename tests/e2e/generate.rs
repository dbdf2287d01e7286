//! `bdense generate` and `bdense teacher train`: real teachers into the store, independent of
//! batch size and shard layout.

use bdense_tests::file_hashes;

use crate::dir;

fn gen_args(name: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "generate",
        name,
        "--dataset",
        "procedural",
        "--teacher",
        "gmm",
        "--grid",
        "9",
        "--count",
        "48",
        "--rows-per-shard",
        "16",
        "--fit-limit",
        "512",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn batch_size_and_shard_layout_do_not_change_trajectories() {
    let t = dir();
    let out = t.bdense(gen_args("store/b64", &["--batch", "64"])).ok();
    assert!(
        out.contains("generated 48 trajectories x 9 steps (3 shards"),
        "{out}"
    );
    assert!(out.contains("traj/s") && out.contains("writing"), "{out}");
    t.bdense(gen_args("store/b7", &["--batch", "7"])).ok();
    assert_eq!(
        file_hashes(&t.join("store/b7")),
        file_hashes(&t.join("store/b64"))
    );

    // Three processes, one shard each, filling one dataset.
    for i in 0..3 {
        let shard = format!("{i}/3");
        let mut args = gen_args("store/split", &["--batch", "5", "--shard", &shard]);
        if i > 0 {
            args.push("--resume".into());
        }
        t.bdense(args).ok();
    }
    assert_eq!(
        file_hashes(&t.join("store/split")),
        file_hashes(&t.join("store/b64"))
    );
    let out = t.bdense(["store", "verify", "store/split"]).ok();
    assert!(out.contains("verify ok"), "{out}");
}

#[test]
fn resume_refuses_a_different_teacher_or_grid() {
    let t = dir();
    t.bdense(gen_args("store/d", &["--shard", "0/3"])).ok();
    let mut other = gen_args("store/d", &["--resume"]);
    other[5] = "gaussian".into();
    t.bdense(other).fails_with("cannot resume: teacher");
    let mut grid = gen_args("store/d", &["--resume"]);
    grid[7] = "13".into();
    t.bdense(grid)
        .fails_with("grid: dataset has 9, arguments give 13");
}

#[test]
fn f16_and_denoised_columns_round_trip_through_verify() {
    let t = dir();
    t.bdense(gen_args(
        "store/h",
        &["--dtype", "f16", "--denoised", "--solver", "heun"],
    ))
    .ok();
    let out = t.bdense(["store", "info", "store/h"]).ok();
    assert!(
        out.contains("f16, with denoised") && out.contains("heun (order 2)"),
        "{out}"
    );
    assert!(
        t.bdense(["store", "verify", "store/h"])
            .ok()
            .contains("verify ok")
    );
}

/// `--compression none` writes the same states as the default zstd, PLAIN and uncompressed:
/// every state of one dataset is at distance 0 from its twin in the other, through SQL. So
/// does `store copy` of the zstd dataset, whose files are then those `generate` wrote.
#[test]
fn uncompressed_datasets_hold_the_same_states() {
    let t = dir();
    // The default 49-point grid, as a user generates.
    let args = |name: &str, extra: &[&str]| {
        let mut a = gen_args(name, extra);
        a[7] = "49".into();
        a
    };
    t.bdense(args("store/z", &[])).ok();
    t.bdense(args("store/n", &["--compression", "none"])).ok();
    t.bdense(args("store/z9", &["--compression", "zstd:9"]))
        .ok();
    let out = t
        .bdense([
            "store",
            "copy",
            "store/z",
            "store/p",
            "--compression",
            "none",
        ])
        .ok();
    assert!(
        out.contains("copied 3 shards of store/z into store/p"),
        "{out}"
    );
    for name in ["store/n", "store/z9", "store/p"] {
        assert!(
            t.bdense(["store", "verify", name])
                .ok()
                .contains("verify ok")
        );
    }
    let files = |name: &str| file_hashes(&t.join(name)).len();
    assert_eq!(files("store/n"), files("store/z"));
    assert_eq!(
        file_hashes(&t.join("store/p")),
        file_hashes(&t.join("store/n"))
    );
    let bytes = |name: &str| {
        bdense_store::Dataset::open(&t.join(name))
            .unwrap()
            .manifest()
            .bytes()
    };
    assert!(
        bytes("store/n") > bytes("store/z"),
        "none must not compress"
    );
    for twin in ["n", "z9", "p"] {
        let out = t
            .bdense([
                "sql".to_string(),
                "store".to_string(),
                format!(
                    "SELECT count(*) AS pairs, max(l2_dist(a.x, b.x)) AS d FROM z a JOIN {twin} b \
                     ON a.traj_id = b.traj_id AND a.step = b.step"
                ),
                "--format".to_string(),
                "csv".to_string(),
            ])
            .ok();
        assert!(out.contains("2352,0.0"), "{twin}: {out}");
    }
    t.bdense(gen_args("store/x", &["--compression", "lz4"]))
        .fails_with("lz4: expected zstd, zstd:LEVEL or none");
    t.bdense(gen_args("store/x", &["--compression", "zstd:30"]))
        .fails_with("the level must be 1 to 22");
}

#[test]
fn bad_generate_arguments_are_named() {
    let t = dir();
    t.bdense(gen_args("store/x", &["--solver", "rk45"]))
        .fails_with("unknown solver \"rk45\"");
    t.bdense(gen_args("store/x", &["--shard", "3/3"]))
        .fails_with("--shard 3/3");
    let mut bad = gen_args("store/x", &[]);
    bad[3] = "idx:/nonexistent".into();
    t.bdense(bad)
        .fails_with("/nonexistent/train-images-idx3-ubyte.gz: file not found");
}

#[test]
fn unet_teacher_trains_resumes_and_generates() {
    let t = dir();
    let train = |steps: &str, extra: &[&str]| {
        let mut a: Vec<String> = [
            "teacher",
            "train",
            "--dataset",
            "procedural",
            "--out",
            "teacher",
            "--steps",
            steps,
            "--batch",
            "16",
            "--base",
            "8",
            "--checkpoint-every",
            "4",
            "--limit",
            "256",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = t.bdense(train("8", &[])).ok();
    assert!(
        out.contains("trained unet teacher for 8 steps") && out.contains("images/s"),
        "{out}"
    );
    t.bdense(train("8", &[]))
        .fails_with("already holds a teacher run");
    let out = t.bdense(train("12", &["--resume"])).ok();
    assert!(out.contains("for 12 steps"), "{out}");
    let log = std::fs::read_to_string(t.join("teacher/log.csv")).unwrap();
    assert_eq!(
        log.lines().count(),
        13,
        "one header and a row per step:\n{log}"
    );

    // One worker solving whole shards, and two workers sharing each shard's batches, write
    // the same files.
    let generate = |name: &str, batch: &str, workers: &str| {
        t.bdense([
            "generate",
            name,
            "--teacher",
            "unet:teacher",
            "--dataset",
            "procedural",
            "--grid",
            "5",
            "--count",
            "8",
            "--rows-per-shard",
            "8",
            "--batch",
            batch,
        ])
        .env("BDENSE_WORKERS", workers)
        .ok()
    };
    let out = generate("store/u", "64", "1");
    assert!(out.contains("generated 8 trajectories x 5 steps"), "{out}");
    generate("store/u2", "3", "2");
    assert_eq!(
        file_hashes(&t.join("store/u2")),
        file_hashes(&t.join("store/u"))
    );
    let info = t.bdense(["store", "info", "store/u"]).ok();
    assert!(info.contains("teacher      unet (checkpoint"), "{info}");
}

/// Finding 2: a generate interrupted on the default 49-point grid resumes (the grid read back
/// from the manifest's JSON equals the one the arguments give) to the same files as an
/// uninterrupted run.
#[test]
fn resume_after_a_crash_on_the_default_grid() {
    let t = dir();
    let args = |name: &str, extra: &[&str]| {
        let mut a: Vec<String> = [
            "generate",
            name,
            "--dataset",
            "procedural",
            "--teacher",
            "gmm",
            "--count",
            "64",
            "--batch",
            "16",
            "--rows-per-shard",
            "16",
            "--fit-limit",
            "512",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    t.bdense(args("store/whole", &[])).ok();
    let crashed = t
        .bdense(args("store/d", &["--abort-after-shards", "1"]))
        .output();
    assert!(!crashed.status.success());
    let out = t.bdense(args("store/d", &["--resume"])).ok();
    assert!(
        out.contains("generated 48 trajectories x 49 steps"),
        "{out}"
    );
    assert_eq!(
        file_hashes(&t.join("store/d")),
        file_hashes(&t.join("store/whole"))
    );
    // A real change of the grid is still refused.
    t.bdense(args("store/d", &["--resume", "--sigma-max", "79"]))
        .fails_with("sigma_max: dataset has 80, arguments give 79");
}

/// Findings 10 and 11: nonsense grid parameters and reserved names are refused before anything
/// is written, each with its own message naming the argument or path (not "pass --resume").
#[test]
fn generate_arguments_are_checked_with_their_own_message() {
    let t = dir();
    for (extra, needle) in [
        (vec!["--sigma-max", "NaN"], "sigma-max"),
        (vec!["--sigma-min", "0"], "sigma-min"),
        (vec!["--sigma-min", "90"], "sigma-min"),
        (vec!["--rho", "0"], "rho"),
        (vec!["--grid", "70000"], "70000"),
    ] {
        let mut args = gen_args("store/x", &[]);
        if extra[0] == "--grid" {
            args[7] = extra[1].into(); // gen_args already gives --grid
        } else {
            args.extend(extra.iter().map(|s| s.to_string()));
        }
        let stderr = t.bdense(args).fails_with(needle);
        assert!(!stderr.contains("pass --resume"), "{stderr}");
        assert!(!t.join("store/x").exists(), "{extra:?} wrote something");
    }
    for reserved in ["store/grid", "store/manifest"] {
        t.bdense(gen_args(reserved, &[]))
            .fails_with("reserved table name");
    }
    std::fs::write(t.join("afile"), "x").unwrap();
    let stderr = t.bdense(gen_args("afile/d", &[])).fails_with("afile");
    assert!(!stderr.contains("pass --resume"), "{stderr}");
    t.bdense(gen_args("store/none", &["--resume"]))
        .fails_with("store/none: no dataset here");
}

/// Finding 8: a count whose shards do not fit is refused at once, not allocated or wrapped.
#[test]
fn huge_counts_are_refused_not_allocated() {
    let t = dir();
    for count in ["10000000000000", "18446744073709551615"] {
        let mut args = gen_args("store/big", &[]);
        args[9] = count.into();
        let (_, stderr) = t.bdense(args).code(2);
        assert!(stderr.contains("--count"), "{stderr}");
        assert!(!stderr.contains("generated 0"), "{stderr}");
    }
    // A shard is generated in memory: one of 65536 x 100 steps x 256 values (6.25 GiB) is
    // refused before anything is allocated or written.
    let mut args = gen_args("store/big", &[]);
    args[7] = "100".into();
    args[9] = "100000".into();
    args[11] = "65536".into();
    t.bdense(args).fails_with("lower --rows-per-shard");
    assert!(!t.join("store/big").exists());
}
