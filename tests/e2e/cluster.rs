//! `bdense cluster` and `bdense sql --cluster`: a Ballista scheduler and two executors, each
//! a separate `bdense` process on loopback ports, answer the README's queries exactly as
//! `bdense sql` does on the same store (built with the `cluster` feature: .ci/cluster).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bdense_store::synthetic::gaussian_shard;
use bdense_store::{DatasetWriter, Dtype, WriteOptions};
use bdense_tests::{TestDir, synthetic, synthetic_spec};
use serde_json::Value;

use crate::dir;

/// A `bdense cluster ...` process, killed when dropped; its stderr goes to `log`, shown if it
/// ends early.
struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Server {
    /// Starts `bdense cluster ARGS` and waits until it accepts connections on `port`.
    fn start(t: &TestDir, name: &str, args: &[&str], port: u16) -> Server {
        let log = t.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_bdense"))
            .current_dir(t.path())
            .arg("cluster")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start bdense cluster");
        let mut server = Server { child, log };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "{name} ended ({status}) before listening:\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{name}: nothing listens on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A query's JSON answer as rows to compare: in order where the query orders them, else
/// sorted by their text.
fn rows(json: &str, query: &str) -> Vec<Value> {
    let mut rows: Vec<Value> = match json.trim() {
        "" => Vec::new(),
        text => serde_json::from_str(text).unwrap_or_else(|e| panic!("{query}: {e}:\n{json}")),
    };
    if !query.contains("ORDER BY") {
        rows.sort_by_key(Value::to_string);
    }
    rows
}

/// Integers, text and nulls exactly; floats (sums in another order on another process) to
/// 1e-6 relative.
fn agree(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| agree(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| agree(v, w)))
        }
        _ => a == b,
    }
}

/// `store/fmnist`: 48 trajectories on the README's 49-point grid in 3 shards (several files
/// per step to spread), with a NaN in trajectory 2 and trajectory 1 given trajectory 0's seed,
/// so that the README's NaN and duplicate-seed questions have answers to compare.
fn flawed_store(t: &TestDir) {
    let spec = synthetic_spec("fmnist", 48, 49, 16, Dtype::F32);
    let mut writer = DatasetWriter::create(
        &t.join("store/fmnist"),
        spec.dataset_spec(),
        WriteOptions::default(),
    )
    .unwrap();
    for index in 0..3 {
        let mut shard = gaussian_shard(&spec, index);
        if index == 0 {
            shard.seeds[1] = shard.seeds[0];
            // Step 30, row 2, first value: states are [step][row][value].
            shard.states[(30 * 16 + 2) * 16] = f32::NAN;
        }
        writer.write_shard(&shard.data()).unwrap();
    }
}

#[test]
fn cluster_answers_the_readme_queries_as_local_sql() {
    let t = dir();
    flawed_store(&t);

    let port = free_port();
    let scheduler_at = format!("127.0.0.1:{port}");
    let _scheduler = Server::start(
        &t,
        "scheduler",
        &["scheduler", "--bind", &scheduler_at],
        port,
    );
    let _executors: Vec<Server> = (0..2)
        .map(|i| {
            let own = free_port();
            let bind = format!("127.0.0.1:{own}");
            let args = [
                "executor",
                "--scheduler",
                &scheduler_at,
                "--bind",
                &bind,
                "--tasks",
                "2",
            ];
            Server::start(&t, &format!("executor{i}"), &args, own)
        })
        .collect();

    let url = format!("df://127.0.0.1:{port}");
    let mut queries = crate::readme_queries();
    assert!(queries.len() >= 7, "{queries:?}");
    queries.push("SELECT dataset, step, sigma FROM grid ORDER BY step".into());
    queries.push("SELECT dataset, trajectories, snapshot FROM manifest".into());
    for query in &queries {
        let local = t.bdense(["sql", "store", query, "--format", "json"]).ok();
        let remote = t
            .bdense(["sql", "--cluster", &url, "store", query, "--format", "json"])
            .ok();
        let (local, remote) = (rows(&local, query), rows(&remote, query));
        // Every question has an answer here: an empty one would compare nothing.
        assert!(!local.is_empty(), "{query}: no rows");
        assert!(
            local.len() == remote.len() && local.iter().zip(&remote).all(|(a, b)| agree(a, b)),
            "{query}:\nlocal  {local:?}\ncluster {remote:?}"
        );
    }

    // A task failing on an executor comes back as one line naming the cluster.
    let err = t
        .bdense([
            "sql",
            "--cluster",
            &url,
            "store",
            "SELECT traj_id / (traj_id - traj_id) FROM fmnist WHERE step = 1",
        ])
        .fails_with(&format!("{url}: the query failed on the cluster: "));
    assert!(err.contains("DivideByZero"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// With a scheduler but no executor Ballista keeps the job queued: the client says so.
#[test]
fn cluster_without_executors_says_what_it_waits_for() {
    let t = dir();
    synthetic(&t.join("store"), "g", 8, 5, 16, Dtype::F32);
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let _scheduler = Server::start(&t, "scheduler", &["scheduler", "--bind", &at], port);
    let url = format!("df://{at}");
    let log = t.join("client.log");
    let mut client = Server {
        child: Command::new(env!("CARGO_BIN_EXE_bdense"))
            .current_dir(t.path())
            .args(["sql", "--cluster", &url, "store", "SELECT count(*) FROM g"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    let started = Instant::now();
    let note = loop {
        let text = std::fs::read_to_string(&client.log).unwrap();
        if text.contains("still waiting") || started.elapsed() > Duration::from_secs(90) {
            break text;
        }
        assert!(client.child.try_wait().unwrap().is_none(), "ended: {text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        note.starts_with(&format!("{url}: no answer after 10s, still waiting"))
            && note.contains("bdense cluster executor"),
        "{note}"
    );
}

#[test]
fn cluster_errors_name_the_url() {
    let t = dir();
    synthetic(&t.join("store"), "g", 8, 5, 16, Dtype::F32);
    let url = format!("df://127.0.0.1:{}", free_port());
    let err = t
        .bdense(["sql", "--cluster", &url, "store", "SELECT count(*) FROM g"])
        .fails_with(&format!("{url}: cannot reach the Ballista scheduler"));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");

    t.bdense([
        "sql",
        "--cluster",
        "http://127.0.0.1:1",
        "store",
        "SELECT 1",
    ])
    .fails_with("http://127.0.0.1:1: a cluster URL is df://HOST:PORT");
    let at = format!("127.0.0.1:{}", free_port());
    t.bdense(["cluster", "executor", "--scheduler", &at])
        .fails_with(&format!("df://{at}: cannot reach the Ballista scheduler"));
}
