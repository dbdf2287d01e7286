//! `bdense store ls | info | verify | gc` on synthetic stores, and the crash and full-disk
//! faults of a real generate.

use bdense_store::Dtype;
use bdense_store::manifest::Manifest;
use bdense_tests::{file_hashes, synthetic};

use crate::dir;

#[test]
fn ls_info_verify_gc_on_a_synthetic_store() {
    let t = dir();
    synthetic(&t.join("store"), "gauss", 40, 9, 16, Dtype::F32);
    synthetic(&t.join("store"), "half", 8, 5, 16, Dtype::F16);

    let out = t.bdense(["store", "ls", "store"]).ok();
    assert!(
        out.contains("gauss") && out.contains("40/40") && out.contains("half"),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("2 datasets in store"),
        "{out}"
    );

    let out = t.bdense(["store", "info", "store/gauss"]).ok();
    for needle in [
        "1x4x4",
        "f32",
        "9 steps",
        "40 of 40 planned, 3 shards of 16",
        "synthetic-gaussian",
        "per trajectory",
    ] {
        assert!(out.contains(needle), "info lacks {needle:?}:\n{out}");
    }

    assert!(
        out.contains("manifest only; run `bdense store verify` to check the files"),
        "info says it did not read the data:\n{out}"
    );

    let out = t.bdense(["store", "verify", "store/gauss"]).ok();
    assert!(out.contains("verify ok: 27 files, 360 rows"), "{out}");

    std::fs::write(t.join("store/gauss/step=3/shard-00009.parquet"), b"junk").unwrap();
    let out = t.bdense(["store", "gc", "store/gauss"]).ok();
    assert!(
        out.contains("gc done: 0 files") && out.contains("younger than the grace period"),
        "a fresh file of an unknown writer waits out the grace period:\n{out}"
    );
    let out = t
        .bdense(["store", "gc", "store/gauss", "--grace", "0"])
        .ok();
    assert!(
        out.contains("removed") && out.contains("shard-00009") && out.contains("gc done: 1 files"),
        "{out}"
    );
}

/// Finding 5: `store info` reads no data but notices a missing or truncated file by its size.
#[test]
fn info_names_a_missing_or_resized_file() {
    let t = dir();
    synthetic(&t.join("store"), "g", 32, 5, 16, Dtype::F32);
    std::fs::remove_file(t.join("store/g/step=4/shard-00000.parquet")).unwrap();
    t.bdense(["store", "info", "store/g"])
        .fails_with("step=4/shard-00000.parquet: cannot read");
    synthetic(&t.join("store"), "h", 32, 5, 16, Dtype::F32);
    let victim = t.join("store/h/step=1/shard-00001.parquet");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes.push(0);
    std::fs::write(&victim, bytes).unwrap();
    t.bdense(["store", "info", "store/h"])
        .fails_with("step=1/shard-00001.parquet: size");
}

#[test]
fn verify_fails_with_a_line_per_problem() {
    let t = dir();
    synthetic(&t.join("store"), "g", 32, 5, 16, Dtype::F32);
    let victim = t.join("store/g/step=2/shard-00001.parquet");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    std::fs::remove_file(t.join("store/g/step=4/shard-00000.parquet")).unwrap();
    let (out, _) = t.bdense(["store", "verify", "store/g"]).code(1);
    assert!(
        out.contains("step=2/shard-00001.parquet: content hash"),
        "{out}"
    );
    assert!(
        out.contains("step=4/shard-00000.parquet: cannot read"),
        "{out}"
    );
    assert!(out.contains("verify FAILED"), "{out}");
}

#[test]
fn bad_arguments_name_what_is_wrong() {
    let t = dir();
    t.bdense(["store", "info", "nowhere/none"])
        .fails_with("nowhere/none: no dataset here (no manifest in _bdense/manifests/)");
    synthetic(&t.join("store"), "g", 8, 5, 16, Dtype::F32);
    std::fs::write(
        Manifest::path(&t.join("store/g")),
        "{\"format_version\": 99}",
    )
    .unwrap();
    let stderr = t
        .bdense(["store", "verify", "store/g"])
        .fails_with(".json: manifest has format version 99");
    assert!(stderr.contains("store/g/_bdense/manifests/"), "{stderr}");
}

/// Finding 1: generate never writes into a directory of other files (here the store root),
/// and gc refuses a directory without a manifest and deletes nothing it did not create.
#[test]
fn generate_and_gc_never_touch_files_that_are_not_a_datasets() {
    let t = dir();
    synthetic(&t.join("store"), "a", 16, 5, 16, Dtype::F32);
    synthetic(&t.join("store"), "b", 16, 5, 16, Dtype::F32);
    std::fs::write(t.join("store/README"), "mine").unwrap();
    std::fs::create_dir_all(t.join("store/notes")).unwrap();
    std::fs::write(t.join("store/notes/todo.txt"), "mine too").unwrap();
    let before = (
        file_hashes(&t.join("store/a")),
        file_hashes(&t.join("store/b")),
    );
    let mut args: Vec<String> = ["generate", "store"].map(String::from).to_vec();
    args.extend(GEN.iter().map(|s| s.to_string()));
    args.extend(["--count", "16"].map(String::from));
    t.bdense(&args)
        .fails_with("store: holds files but no dataset");
    t.bdense(["store", "gc", "store", "--grace", "0"])
        .fails_with("store: no dataset here");
    t.bdense(["store", "gc", "store/notes", "--grace", "0"])
        .fails_with("no dataset here");

    // Inside a dataset, gc deletes only the store's own names.
    std::fs::write(t.join("store/a/my-notes.txt"), "keep").unwrap();
    std::fs::write(t.join("store/a/step=2/plot.png"), "keep").unwrap();
    std::fs::create_dir_all(t.join("store/a/extra")).unwrap();
    std::fs::write(t.join("store/a/extra/shard-00007.parquet"), "keep").unwrap();
    let out = t.bdense(["store", "gc", "store/a", "--grace", "0"]).ok();
    assert!(out.contains("gc done: 0 files"), "{out}");
    for kept in [
        "store/README",
        "store/notes/todo.txt",
        "store/a/my-notes.txt",
        "store/a/step=2/plot.png",
        "store/a/extra/shard-00007.parquet",
    ] {
        assert!(t.join(kept).is_file(), "{kept} was deleted");
    }
    assert_eq!(
        (
            file_hashes(&t.join("store/a")),
            file_hashes(&t.join("store/b"))
        ),
        before
    );
    let out = t.bdense(["store", "verify", "store/b"]).ok();
    assert!(out.contains("verify ok"), "{out}");
}

/// Finding 6: a manifest cannot make a reader open files outside its dataset, or hang on a
/// device; a shard listed twice is refused.
#[test]
fn manifest_paths_stay_inside_the_dataset() {
    let t = dir();
    synthetic(&t.join("store"), "g", 16, 5, 16, Dtype::F32);
    let manifest = Manifest::path(&t.join("store/g"));
    let original = std::fs::read_to_string(&manifest).unwrap();
    for evil in [
        "../../../../etc/passwd",
        "/etc/hostname",
        "/dev/zero",
        "step=1/../../a",
    ] {
        let edited = original.replace("step=1/shard-00000.parquet", evil);
        std::fs::write(&manifest, edited).unwrap();
        let stderr = t
            .bdense(["store", "verify", "store/g"])
            .fails_with("_bdense/manifests/");
        assert!(stderr.contains("file path"), "{evil}: {stderr}");
    }
    // A symlink inside the dataset is not followed either.
    std::fs::write(&manifest, &original).unwrap();
    let victim = t.join("store/g/step=1/shard-00000.parquet");
    std::fs::remove_file(&victim).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &victim).unwrap();
    let (out, _) = t.bdense(["store", "verify", "store/g"]).code(1);
    assert!(
        out.contains("step=1/shard-00000.parquet: cannot read")
            && out.contains("not a regular file"),
        "{out}"
    );
    t.bdense(["sql", "store", "SELECT count(*) FROM g"])
        .fails_with("step=1/shard-00000.parquet");

    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    let first = m["shards"][0].clone();
    m["shards"].as_array_mut().unwrap().push(first);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    t.bdense(["store", "verify", "store/g"])
        .fails_with("shard indices must be unique");
}

/// Finding 5: one damaged shard is an error naming the file from sql, targets and train, not
/// numbers that are silently wrong.
#[test]
fn a_damaged_shard_fails_sql_targets_and_train_by_name() {
    let t = dir();
    crate::procedural_store(&t);
    // Flip one bit inside the data pages (not the footer): decoding may well succeed.
    let victim = t.join("store/p/step=6/shard-00001.parquet");
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let name = "step=6/shard-00001.parquet";
    t.bdense(["sql", "store", "SELECT sum(l2(x)) FROM p"])
        .fails_with(name);
    // Files the query does not read stay usable.
    t.bdense(["sql", "store", "SELECT count(*) FROM p WHERE shard = 0"])
        .ok();
    t.bdense(["targets", "store/p", "--n", "4", "--k", "2"])
        .fails_with(name);
    t.bdense([
        "train", "store/p", "--method", "bdense", "--n", "4", "--k", "2", "--steps", "2",
        "--batch", "16", "--base", "8", "--init", "scratch", "--out", "run",
    ])
    .fails_with(name);
}

const GEN: [&str; 12] = [
    "--dataset",
    "procedural",
    "--teacher",
    "gmm",
    "--solver",
    "dpmpp3m",
    "--grid",
    "9",
    "--rows-per-shard",
    "16",
    "--fit-limit",
    "512",
];

#[test]
fn generate_killed_mid_run_resumes_to_the_same_dataset() {
    let t = dir();
    let gen_cmd = |name: &str| {
        let mut args = vec!["generate".to_string(), format!("store/{name}")];
        args.extend(GEN.iter().map(|s| s.to_string()));
        args.extend(["--count", "80"].map(String::from));
        args
    };
    t.bdense(gen_cmd("whole")).ok();

    // SIGABRT after two committed shards: nothing is cleaned up, exactly like a kill.
    let mut crash = gen_cmd("crash");
    crash.extend(["--abort-after-shards", "2"].map(String::from));
    let out = t.bdense(crash).output();
    assert!(!out.status.success());
    let out = t.bdense(["store", "verify", "store/crash"]).ok();
    assert!(
        out.contains("verify ok: 18 files, 288 rows"),
        "last snapshot is whole: {out}"
    );

    t.bdense(gen_cmd("crash"))
        .fails_with("store/crash exists: pass --resume");
    let mut resume = gen_cmd("crash");
    resume.push("--resume".into());
    let out = t.bdense(resume).ok();
    assert!(out.contains("generated 48 trajectories"), "{out}");
    assert_eq!(
        file_hashes(&t.join("store/crash")),
        file_hashes(&t.join("store/whole"))
    );
}

#[test]
fn sigkill_mid_write_leaves_a_readable_snapshot() {
    use std::time::{Duration, Instant};
    let t = dir();
    let mut args = vec!["generate".to_string(), "store/k".into()];
    args.extend(GEN.iter().map(|s| s.to_string()));
    args.extend(["--count", "4000", "--batch", "16"].map(String::from));
    let mut child = t
        .bdense(&args)
        .cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for at least one committed shard, then kill while later shards are in flight.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = bdense_store::Dataset::open(&t.join("store/k"))
            .map(|d| d.shards().len())
            .unwrap_or(0);
        if committed >= 2 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = t.bdense(["store", "verify", "store/k"]).ok();
    assert!(before.contains("verify ok"), "{before}");
    let ds = bdense_store::Dataset::open(&t.join("store/k")).unwrap();
    assert!(ds.shards().len() >= 2 && ds.manifest().trajectories() < 4000);
}

#[test]
fn a_full_disk_is_an_error_naming_the_file_and_keeps_the_snapshot() {
    // RLIMIT_FSIZE makes a write past 4 KiB fail with EFBIG, as a full disk fails with ENOSPC;
    // SIGXFSZ is ignored so the write returns the error instead of killing the process.
    let t = dir();
    let gen_cmd = |extra: &[&str]| {
        let mut args: Vec<String> = ["generate", "store/full"].map(String::from).to_vec();
        args.extend(GEN.iter().map(|s| s.to_string()));
        args.extend(["--count", "80"].iter().chain(extra).map(|s| s.to_string()));
        args
    };
    t.bdense(gen_cmd(&["--shard", "0/2"])).ok();
    let before = file_hashes(&t.join("store/full"));
    let out = std::process::Command::new("bash")
        .current_dir(t.path())
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 4; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_bdense"))
        .args(gen_cmd(&["--resume"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("store/full/_bdense/staging/.step-") && stderr.contains("File too large"),
        "{stderr}"
    );
    let out = t.bdense(["store", "verify", "store/full"]).ok();
    assert!(out.contains("verify ok: 27 files, 432 rows"), "{out}");
    assert_eq!(
        file_hashes(&t.join("store/full")),
        before,
        "committed files changed"
    );
    // With space again, the same command completes the dataset.
    t.bdense(gen_cmd(&["--resume"])).ok();
    assert_eq!(
        bdense_store::Dataset::open(&t.join("store/full"))
            .unwrap()
            .manifest()
            .trajectories(),
        80
    );
}

/// Finding 3: gc run over and over while generate writes deletes none of the writer's staged
/// files (it holds a writer lock), so generate completes and the dataset verifies.
#[test]
fn gc_during_generate_keeps_the_writers_files() {
    use std::time::{Duration, Instant};
    let t = dir();
    let mut args = vec!["generate".to_string(), "store/k".into()];
    args.extend(GEN.iter().map(|s| s.to_string()));
    args.extend(["--count", "320", "--batch", "16"].map(String::from));
    let mut child = t
        .bdense(&args)
        .cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut runs = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "generate did not finish");
        if bdense_store::Dataset::open(&t.join("store/k")).is_ok() {
            t.bdense(["store", "gc", "store/k", "--grace", "0"]).ok();
            runs += 1;
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "generate failed during gc: {stderr}");
    assert!(runs >= 3, "gc ran only {runs} times during generate");
    let out = t.bdense(["store", "verify", "store/k"]).ok();
    assert!(out.contains("verify ok"), "{out}");
}

/// A build without the `s3` feature (the default) still parses `s3://` and says how to get it,
/// in one line, for every kind of command: a writer, a reader and SQL.
#[cfg(not(feature = "s3"))]
#[test]
fn s3_urls_in_a_build_without_s3_say_how_to_build_it() {
    let t = dir();
    for args in [
        vec![
            "generate",
            "s3://bucket/store/g",
            "--teacher",
            "gaussian",
            "--count",
            "8",
        ],
        vec!["store", "info", "s3://bucket/store/g"],
        vec!["sql", "s3://bucket/store", "SELECT count(*) FROM g"],
    ] {
        let (_, stderr) = t.bdense(&args).code(2);
        let stderr = stderr.trim();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("s3://bucket"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--features bdense-pipeline/s3"),
            "{args:?}: {stderr}"
        );
    }
}
