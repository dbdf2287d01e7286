//! Stores on S3-compatible object storage, against a real server on loopback: moto's
//! standalone server (PyPI `moto[server]`, `.ci/s3` installs it) started per test by
//! `s3_server.py` on a free port. Every command takes `s3://BUCKET/PREFIX[/NAME]`, configured
//! by the standard AWS environment variables, and gives what it gives on local disk.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use bdense_tests::{TestCommand, TestDir, csv_answers_agree};

use crate::workers::{
    gen_args, kill_worker_1_once_it_commits, snapshot_and_verify, wait_ok, worker,
};
use crate::{dir, weights};

/// A moto server on 127.0.0.1, killed when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
    key: String,
    secret: String,
}

impl S3Server {
    fn start() -> S3Server {
        Self::launch(&[])
    }

    /// A server that checks every request's signature against an IAM user's key.
    fn with_auth() -> S3Server {
        Self::launch(&["--auth"])
    }

    fn launch(args: &[&str]) -> S3Server {
        let python = std::env::var("BDENSE_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/s3_server.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{python}: {e} (pip install 'moto[server]')"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Ok(ready) = serde_json::from_str::<serde_json::Value>(&line) else {
            let _ = child.kill();
            panic!("the S3 server did not start (pip install 'moto[server]'): {line:?}");
        };
        let text = |k: &str, default: &str| ready[k].as_str().unwrap_or(default).to_string();
        S3Server {
            endpoint: format!("http://127.0.0.1:{}", ready["port"]),
            key: text("key", "testing"),
            secret: text("secret", "testing"),
            child,
        }
    }

    /// `cmd` configured for this server (and nothing from the caller's AWS environment).
    fn env(&self, cmd: TestCommand) -> TestCommand {
        let mut cmd = cmd
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true");
        for var in ["AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT"] {
            cmd.cmd.env_remove(var);
        }
        cmd
    }

    fn bdense<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(
        &self,
        t: &TestDir,
        args: I,
    ) -> TestCommand {
        self.env(t.bdense(args))
    }

    /// Runs a boto3 snippet against the server (`s3` is the client); returns its stdout.
    fn boto(&self, code: &str, stdin: &[u8]) -> String {
        let python = std::env::var("BDENSE_PYTHON").unwrap_or_else(|_| "python3".into());
        let program = format!(
            "import boto3, sys\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{}', aws_secret_access_key='{}', region_name='us-east-1')\n{code}",
            self.endpoint, self.key, self.secret
        );
        let mut child = Command::new(python)
            .args(["-c", &program])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn create_bucket(&self, bucket: &str) {
        self.boto(&format!("s3.create_bucket(Bucket='{bucket}')"), b"");
    }

    fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        self.boto(
            &format!("s3.put_object(Bucket='{bucket}', Key='{key}', Body=sys.stdin.buffer.read())"),
            bytes,
        );
    }

    /// Every key under `prefix`, sorted.
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto(
            &format!(
                "p = s3.get_paginator('list_objects_v2')\nfor page in p.paginate(Bucket='{bucket}', Prefix='{prefix}'):\n    for o in page.get('Contents', []): print(o['Key'])"
            ),
            b"",
        );
        let mut keys: Vec<String> = out.lines().map(String::from).collect();
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_workers_into_s3_write_what_one_local_process_writes() {
    let (t, s3) = (dir(), S3Server::start());
    let run = |a: Vec<String>| s3.bdense(&t, a);
    s3.create_bucket("bdense-test");
    t.bdense(gen_args("one/d", &[])).ok();
    let local = snapshot_and_verify(&run, "one/d");
    let url = "s3://bdense-test/stores/many/d";
    let workers: Vec<Child> = (0..3).map(|i| worker(&run, url, i)).collect();
    for (i, child) in workers.into_iter().enumerate() {
        wait_ok(child, &format!("worker {i}"));
    }
    assert_eq!(snapshot_and_verify(&run, url), local);
    // Nothing but data and versions: no temporaries, no locks on object storage.
    let keys = s3.keys("bdense-test", "stores/many/d/");
    let data = keys.iter().filter(|k| k.ends_with(".parquet")).count();
    let versions = keys
        .iter()
        .filter(|k| k.contains("/_bdense/manifests/"))
        .count();
    assert_eq!(
        (data, versions, keys.len()),
        (30 * 9, 31, 30 * 9 + 31),
        "{keys:?}"
    );
    // gc prunes old versions (the newest 8 stay) and keeps a young uncommitted file.
    s3.put(
        "bdense-test",
        "stores/many/d/step=0/shard-00099.parquet",
        b"stray",
    );
    let out = s3.bdense(&t, ["store", "gc", url]).ok();
    assert!(out.contains("gc done: 23 files"), "{out}");
    assert!(out.contains("kept s3://bdense-test/stores/many/d/step=0/shard-00099.parquet: an uncommitted file younger than the grace period"), "{out}");
    let out = s3.bdense(&t, ["store", "gc", url, "--grace", "0"]).ok();
    assert!(out.contains("gc done: 1 files"), "{out}");
    assert_eq!(s3.keys("bdense-test", "stores/many/d/").len(), 30 * 9 + 8);
    assert_eq!(snapshot_and_verify(&run, url), local);
    // `file://` names the local copy.
    let file_url = format!("file://{}", t.join("one/d").display());
    assert_eq!(snapshot_and_verify(&run, &file_url), local);
    let ls = s3
        .bdense(&t, ["store", "ls", "s3://bdense-test/stores/many"])
        .ok();
    assert!(
        ls.contains("1 datasets in s3://bdense-test/stores/many"),
        "{ls}"
    );
}

#[test]
fn an_s3_worker_killed_with_sigkill_is_completed_by_running_it_again() {
    let (t, s3) = (dir(), S3Server::start());
    let run = |a: Vec<String>| s3.bdense(&t, a);
    s3.create_bucket("bdense-test");
    t.bdense(gen_args("one/d", &[])).ok();
    let local = snapshot_and_verify(&run, "one/d");
    let url = "s3://bdense-test/many/d";
    let workers: Vec<Child> = (0..3).map(|i| worker(&run, url, i)).collect();
    // SIGKILL worker 1 once it has committed a shard of its own (1, 4, 7, ...).
    let committed_by_1 = || {
        let out = s3
            .bdense(
                &t,
                [
                    "sql",
                    "s3://bdense-test/many",
                    "SELECT count(*) AS n FROM d WHERE step = 0 AND shard % 3 = 1",
                    "--format",
                    "csv",
                ],
            )
            .output();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let killed = kill_worker_1_once_it_commits(workers, &committed_by_1);
    let at_kill = committed_by_1();
    eprintln!("worker 1 ({killed}) had committed {at_kill} of its 160 trajectories");
    assert!(!killed.success(), "worker 1 finished before the kill");
    let out = s3.bdense(&t, ["store", "verify", url]).ok();
    assert!(out.contains("verify ok"), "{out}");

    wait_ok(worker(&run, url, 1), "worker 1, rerun");
    assert_eq!(snapshot_and_verify(&run, url), local);
}

/// The README's queries, over a local dataset and the same dataset generated into S3.
#[test]
fn sql_over_s3_answers_the_readme_queries_as_over_local_disk() {
    let (t, s3) = (dir(), S3Server::start());
    s3.create_bucket("bdense-test");
    t.bdense(crate::readme_store_args("store/fmnist")).ok();
    s3.bdense(
        &t,
        crate::readme_store_args("s3://bdense-test/store/fmnist"),
    )
    .ok();
    let queries = crate::readme_queries();
    assert_eq!(queries.len(), 7, "{queries:?}");
    let mut answered = 0;
    for query in &queries {
        let answer = |store: &str| s3.bdense(&t, ["sql", store, query, "--format", "csv"]).ok();
        let (local, remote) = (answer("store"), answer("s3://bdense-test/store"));
        assert!(
            csv_answers_agree(&remote, &local, 1e-12),
            "{query}:\n{remote}\nagainst local\n{local}"
        );
        answered += usize::from(local.lines().count() > 1);
    }
    // All but the two that look for problems (NaN, duplicate seeds) have rows.
    assert_eq!(answered, 5);
}

/// `store copy` from local disk to S3 as it is, and back re-encoded: each copy's snapshot
/// (name, files, hashes) is that of the dataset `generate` writes with that compression.
#[test]
fn store_copy_moves_a_dataset_to_s3_and_back_re_encoded() {
    let (t, s3) = (dir(), S3Server::start());
    let run = |a: Vec<String>| s3.bdense(&t, a);
    s3.create_bucket("bdense-test");
    t.bdense(gen_args("one/d", &[])).ok();
    t.bdense(gen_args("plain/d", &["--compression", "none"]))
        .ok();
    let url = "s3://bdense-test/copies/d";
    s3.bdense(&t, ["store", "copy", "one/d", url]).ok();
    assert_eq!(
        snapshot_and_verify(&run, url),
        snapshot_and_verify(&run, "one/d")
    );
    s3.bdense(
        &t,
        ["store", "copy", url, "back/d", "--compression", "none"],
    )
    .ok();
    assert_eq!(
        snapshot_and_verify(&run, "back/d"),
        snapshot_and_verify(&run, "plain/d")
    );
}

fn train_args(dataset: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        dataset,
        "--method",
        "bdense",
        "--n",
        "4",
        "--k",
        "2",
        "--steps",
        "6",
        "--batch",
        "16",
        "--base",
        "8",
        "--init",
        "scratch",
        "--checkpoint-every",
        "3",
        "--out",
        out,
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn training_from_s3_resumes_bit_identically_and_matches_local_disk() {
    let (t, s3) = (dir(), S3Server::start());
    s3.create_bucket("bdense-test");
    let url = "s3://bdense-test/store/p";
    crate::procedural_store(&t);
    s3.bdense(&t, crate::procedural_args(url)).ok();

    t.bdense(train_args("store/p", "local", &[])).ok();
    let out = s3.bdense(&t, train_args(url, "whole", &[])).ok();
    assert!(out.contains("steps 0..6"), "{out}");
    let crashed = s3
        .bdense(&t, train_args(url, "split", &[]))
        .env("BDENSE_ABORT_AFTER_STEP", "4")
        .output();
    assert!(!crashed.status.success());
    assert!(weights(&t.join("split")).starts_with("3 "));
    let out = s3.bdense(&t, ["train", "--resume", "split"]).ok();
    assert!(out.contains("steps 3..6"), "{out}");
    assert_eq!(weights(&t.join("split")), weights(&t.join("whole")));
    assert_eq!(weights(&t.join("whole")), weights(&t.join("local")));
    let record = std::fs::read_to_string(t.join("split/run.json")).unwrap();
    assert!(
        record.contains(&format!("\"dataset\": \"{url}\"")),
        "{record}"
    );
}

/// Each fault gives one line naming the URL at fault, never a panic.
fn one_line_error(cmd: TestCommand, needles: &[&str]) {
    let (_, stderr) = cmd.code(2);
    let stderr = stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
}

#[test]
fn object_store_faults_give_one_line_errors_naming_the_url() {
    let (t, s3) = (dir(), S3Server::start());
    s3.create_bucket("bdense-test");
    let small = |dataset: &str, extra: &[&str]| {
        let mut a: Vec<String> = [
            "generate",
            dataset,
            "--dataset",
            "procedural",
            "--teacher",
            "gaussian",
            "--grid",
            "5",
            "--count",
            "32",
            "--rows-per-shard",
            "8",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // A missing bucket, for a writer, a reader and SQL.
    for cmd in [
        small("s3://no-such-bucket/s/d", &[]),
        ["store", "info", "s3://no-such-bucket/s/d"]
            .map(String::from)
            .to_vec(),
        ["sql", "s3://no-such-bucket/s", "SELECT 1"]
            .map(String::from)
            .to_vec(),
    ] {
        one_line_error(
            s3.bdense(&t, cmd),
            &[
                "s3://no-such-bucket/s",
                "bucket \"no-such-bucket\" does not exist",
            ],
        );
    }
    // An endpoint nothing listens on (a port just freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    one_line_error(
        s3.bdense(&t, ["store", "info", "s3://bdense-test/s/d"])
            .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}")),
        &["s3://bdense-test/s/d", "cannot reach the object store"],
    );
    // A bad URL.
    one_line_error(
        s3.bdense(&t, ["store", "info", "s3://Bad_Bucket/d"]),
        &["s3://Bad_Bucket/d", "bucket name"],
    );

    // A manifest version written by a newer bdense is the snapshot, and says so.
    s3.bdense(&t, small("s3://bdense-test/s/d", &[])).ok();
    let newest = s3
        .keys("bdense-test", "s/d/_bdense/manifests/")
        .pop()
        .unwrap();
    let v: u64 = newest.rsplit('/').next().unwrap()[..20].parse().unwrap();
    let next = format!("s/d/_bdense/manifests/{:020}.json", v + 1);
    s3.put("bdense-test", &next, br#"{"format_version": 99}"#);
    one_line_error(
        s3.bdense(&t, ["store", "info", "s3://bdense-test/s/d"]),
        &[
            &format!("s3://bdense-test/{next}"),
            "newer than this bdense understands",
        ],
    );
    one_line_error(
        s3.bdense(&t, small("s3://bdense-test/s/d", &["--resume"])),
        &[&format!("s3://bdense-test/{next}"), "upgrade bdense"],
    );

    // What a killed worker leaves: some step files of an uncommitted shard, published whole
    // (a PUT is atomic). A rerun adopts those holding its own bytes and completes the
    // dataset; other bytes in the way are an error naming the object, never overwritten.
    t.bdense(small("local/e", &[])).ok();
    s3.bdense(
        &t,
        small("s3://bdense-test/s/e", &["--workers", "2", "--worker", "0"]),
    )
    .ok();
    for step in 0..3 {
        let rel = format!("step={step}/shard-00001.parquet");
        let bytes = std::fs::read(t.join("local/e").join(&rel)).unwrap();
        s3.put("bdense-test", &format!("s/e/{rel}"), &bytes);
    }
    s3.put(
        "bdense-test",
        "s/e/step=0/shard-00003.parquet",
        b"half a shard",
    );
    one_line_error(
        s3.bdense(
            &t,
            small("s3://bdense-test/s/e", &["--workers", "2", "--worker", "1"]),
        ),
        &[
            "s3://bdense-test/s/e/step=0/shard-00003.parquet",
            "an uncommitted file with other content is in the way",
        ],
    );
    assert_eq!(
        s3.boto("print(s3.get_object(Bucket='bdense-test', Key='s/e/step=0/shard-00003.parquet')['Body'].read())", b"").trim(),
        "b'half a shard'"
    );
    let stray = "s3://bdense-test/s/e/step=0/shard-00003.parquet";
    s3.boto(
        "s3.delete_object(Bucket='bdense-test', Key='s/e/step=0/shard-00003.parquet')",
        b"",
    );
    s3.bdense(
        &t,
        small("s3://bdense-test/s/e", &["--workers", "2", "--worker", "1"]),
    )
    .ok();
    let out = s3
        .bdense(&t, ["store", "verify", "s3://bdense-test/s/e"])
        .ok();
    assert!(out.contains("verify ok: 20 files"), "{stray}: {out}");
    let snap = |d: &str| {
        let info = s3.bdense(&t, ["store", "info", d]).ok();
        info.lines()
            .find(|l| l.starts_with("snapshot"))
            .unwrap()
            .to_string()
    };
    assert_eq!(snap("s3://bdense-test/s/e"), snap("local/e"));
}

/// moto checks the key id of every request when `--auth` made it create one. (Its signature
/// check rejects `object_store`'s signed LIST requests even with the right secret, so only an
/// unknown key id is tried here.)
#[test]
fn wrong_credentials_are_refused_in_one_line() {
    let (t, s3) = (dir(), S3Server::with_auth());
    s3.create_bucket("bdense-test");
    one_line_error(
        s3.bdense(&t, ["store", "info", "s3://bdense-test/s/d"])
            .env("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
            .env("AWS_SECRET_ACCESS_KEY", "x"),
        &["s3://bdense-test/s/d", "access denied", "AWS_ACCESS_KEY_ID"],
    );
}

/// On object storage a file's check reads only its footer, so the content hash is owed by
/// the first full read. An object replaced with the same size and footer but another byte in
/// its pages is refused by that hash, naming its URL, by the branch-target stream (`train`)
/// and by SQL, whether the store's reader or DataFusion's scan serves it; never read as data.
#[test]
fn a_replaced_s3_object_with_the_same_size_and_footer_is_refused_by_its_hash() {
    let (t, s3) = (dir(), S3Server::start());
    s3.create_bucket("bdense-test");
    let url = "s3://bdense-test/store/p";
    s3.bdense(&t, crate::procedural_args(url)).ok();
    // Step 0: every layout reads it.
    let key = "store/p/step=0/shard-00000.parquet";
    let hex = s3.boto(
        &format!("print(s3.get_object(Bucket='bdense-test', Key='{key}')['Body'].read().hex())"),
        b"",
    );
    let hex = hex.trim();
    let mut bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    // A third of the way in: a data page, far from the footer at the end.
    let at = bytes.len() / 3;
    let footer = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
    assert!(
        at + footer as usize + 8 < bytes.len(),
        "byte {at} is in the footer"
    );
    bytes[at] ^= 0x10;
    s3.put("bdense-test", key, &bytes);
    let named = format!("s3://bdense-test/{key}");
    let err = s3
        .bdense(&t, train_args(url, "run", &[]))
        .fails_with(&named);
    assert!(err.contains("content hash"), "{err}");
    // Through the store's reader (vectors) and through DataFusion's own scan (ids, seeds).
    for query in [
        "SELECT sum(l2(x)) FROM p",
        "SELECT sum(seed), sum(traj_id) FROM p WHERE step = 0",
    ] {
        let err = s3
            .bdense(&t, ["sql", "s3://bdense-test/store", query])
            .fails_with(&named);
        assert!(err.contains("content hash"), "{query}: {err}");
    }
}
