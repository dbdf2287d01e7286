//! `bdense store ls | info | verify | gc` on synthetic stores, and the crash and full-disk
//! faults of a real generate.

use bdense_store::Dtype;
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

    let out = t.bdense(["store", "verify", "store/gauss"]).ok();
    assert!(out.contains("verify ok: 27 files, 360 rows"), "{out}");

    std::fs::write(t.join("store/gauss/step=0003/shard-00009.parquet"), b"junk").unwrap();
    let out = t.bdense(["store", "gc", "store/gauss"]).ok();
    assert!(
        out.contains("removed") && out.contains("shard-00009") && out.contains("gc done: 1 files"),
        "{out}"
    );
}

#[test]
fn verify_fails_with_a_line_per_problem() {
    let t = dir();
    synthetic(&t.join("store"), "g", 32, 5, 16, Dtype::F32);
    let victim = t.join("store/g/step=0002/shard-00001.parquet");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    std::fs::remove_file(t.join("store/g/step=0004/shard-00000.parquet")).unwrap();
    let (out, _) = t.bdense(["store", "verify", "store/g"]).code(1);
    assert!(
        out.contains("step=0002/shard-00001.parquet: content hash"),
        "{out}"
    );
    assert!(
        out.contains("step=0004/shard-00000.parquet: cannot read"),
        "{out}"
    );
    assert!(out.contains("verify FAILED"), "{out}");
}

#[test]
fn bad_arguments_name_what_is_wrong() {
    let t = dir();
    t.bdense(["store", "info", "nowhere/none"])
        .fails_with("nowhere/none: no dataset here (missing manifest.json)");
    synthetic(&t.join("store"), "g", 8, 5, 16, Dtype::F32);
    std::fs::write(t.join("store/g/manifest.json"), "{\"format_version\": 99}").unwrap();
    t.bdense(["store", "verify", "store/g"])
        .fails_with("manifest.json: manifest has format version 99");
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

    t.bdense(gen_cmd("crash")).fails_with("pass --resume");
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
        stderr.contains("store/full/step=") && stderr.contains("File too large"),
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
