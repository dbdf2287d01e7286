//! `bdense generate --workers W --worker I`: W processes commit disjoint shards into one
//! dataset at once (docs/STORE-PROTOCOL.md); the result is a single process's, byte for byte,
//! and a worker killed with SIGKILL is completed by running it again.

use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bdense_tests::{TestCommand, file_hashes};

use crate::dir;

/// Runs `bdense` with the given arguments where a test wants it: in its directory, and with an
/// S3 server's environment for the S3 tests (tests/e2e/s3.rs runs these workers too).
pub(crate) type Run<'a> = &'a dyn Fn(Vec<String>) -> TestCommand;

/// 30 shards of 16 trajectories: each of 3 workers has 10 to commit, so a kill lands mid-run.
pub(crate) fn gen_args(dataset: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "generate",
        dataset,
        "--dataset",
        "procedural",
        "--teacher",
        "gaussian",
        "--grid",
        "9",
        "--count",
        "480",
        "--batch",
        "16",
        "--rows-per-shard",
        "16",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Worker `i` of 3 generating into `dataset`, running.
pub(crate) fn worker(run: Run, dataset: &str, i: u32) -> Child {
    let (w, i) = ("3".to_string(), i.to_string());
    run(gen_args(dataset, &["--workers", &w, "--worker", &i]))
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGKILLs worker 1 of `workers` as soon as it has committed something of its own (shards
/// 1, 4, 7, ..., as `committed` counts), lets the others finish, and returns how it ended.
pub(crate) fn kill_worker_1_once_it_commits(
    mut workers: Vec<Child>,
    committed: &dyn Fn() -> u64,
) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(300);
    while committed() == 0 {
        assert!(Instant::now() < deadline, "worker 1 committed nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut victim = workers.remove(1);
    victim.kill().unwrap();
    let killed = victim.wait().unwrap();
    for (i, child) in [0, 2].into_iter().zip(workers) {
        wait_ok(child, &format!("worker {i}"));
    }
    killed
}

pub(crate) fn wait_ok(mut child: Child, what: &str) {
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{what} failed: {stderr}");
}

/// `store info`'s snapshot hash (dataset name, every file's path and xxh3) of a complete
/// dataset that `store verify` passes.
pub(crate) fn snapshot_and_verify(run: Run, dataset: &str) -> String {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = run(args(&["store", "verify", dataset])).ok();
    assert!(out.contains("verify ok"), "{dataset}: {out}");
    let info = run(args(&["store", "info", dataset])).ok();
    let line = info
        .lines()
        .find(|l| l.starts_with("snapshot"))
        .unwrap_or_else(|| panic!("no snapshot line: {info}"));
    assert!(info.contains("480 of 480 planned"), "{info}");
    line.to_string()
}

#[test]
fn three_concurrent_workers_write_what_one_process_writes() {
    let t = dir();
    let run = |a: Vec<String>| t.bdense(a);
    let started = Instant::now();
    t.bdense(gen_args("one/d", &[])).ok();
    let single = snapshot_and_verify(&run, "one/d");
    let workers: Vec<Child> = (0..3).map(|i| worker(&run, "many/d", i)).collect();
    for (i, child) in workers.into_iter().enumerate() {
        wait_ok(child, &format!("worker {i}"));
    }
    assert_eq!(snapshot_and_verify(&run, "many/d"), single);
    assert_eq!(
        file_hashes(&t.join("many/d")),
        file_hashes(&t.join("one/d"))
    );
    // 30 shards committed by 3 writers: one version each, plus the dataset's creation (a
    // creator that lost the race wrote none). gc keeps the newest 8.
    let versions = std::fs::read_dir(t.join("many/d/_bdense/manifests"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(versions, 31);
    let out = t.bdense(["store", "gc", "many/d", "--grace", "0"]).ok();
    assert!(out.contains("gc done: 23 files"), "{out}");
    assert_eq!(snapshot_and_verify(&run, "many/d"), single);

    // A worker with other arguments does not join.
    t.bdense(gen_args("many/d", &["--seed", "5", "--workers", "3", "--worker", "0"]))
        .fails_with("the dataset exists with other arguments than this worker's (seed: dataset has 0, arguments give 5)");
    t.bdense(gen_args("x/d", &["--workers", "3", "--worker", "3"]))
        .fails_with("--worker 3: need 0 <= I < --workers 3");
    eprintln!(
        "3 workers == 1 process: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_worker_killed_with_sigkill_is_completed_by_running_it_again() {
    let t = dir();
    let run = |a: Vec<String>| t.bdense(a);
    let started = Instant::now();
    t.bdense(gen_args("one/d", &[])).ok();
    let single = snapshot_and_verify(&run, "one/d");

    let workers: Vec<Child> = (0..3).map(|i| worker(&run, "many/d", i)).collect();
    let committed_by_1 = || {
        bdense_store::Dataset::open(&t.join("many/d"))
            .map(|d| d.shards().iter().filter(|s| s.index % 3 == 1).count() as u64)
            .unwrap_or(0)
    };
    let killed = kill_worker_1_once_it_commits(workers, &committed_by_1);
    let at_kill = committed_by_1();
    eprintln!("worker 1 ({killed}) had committed {at_kill} of its 10 shards");
    assert!(!killed.success(), "worker 1 finished before the kill");
    // What it committed is whole; the rest of the dataset is the other workers'.
    let out = t.bdense(["store", "verify", "many/d"]).ok();
    assert!(out.contains("verify ok"), "{out}");

    // Run again, it completes its part: the single process's dataset.
    wait_ok(worker(&run, "many/d", 1), "worker 1, rerun");
    assert_eq!(snapshot_and_verify(&run, "many/d"), single);
    assert_eq!(
        file_hashes(&t.join("many/d")),
        file_hashes(&t.join("one/d"))
    );
    t.bdense(["store", "gc", "many/d", "--grace", "0"]).ok();
    let mut left = Vec::new();
    for step in std::fs::read_dir(t.join("many/d")).unwrap() {
        let step = step.unwrap().path();
        if step.is_dir() && !step.ends_with("_bdense") {
            for f in std::fs::read_dir(&step).unwrap() {
                let name = f.unwrap().file_name().to_string_lossy().into_owned();
                if name.contains(".tmp-") {
                    left.push(name);
                }
            }
        }
    }
    assert!(left.is_empty(), "gc left temporaries: {left:?}");
    assert_eq!(snapshot_and_verify(&run, "many/d"), single);
    eprintln!("kill and rerun: {:.1}s", started.elapsed().as_secs_f64());
}
