//! `bdense cluster` and `bdense sql --cluster`: a Ballista scheduler and two executors, each
//! a separate `bdense` process on loopback ports, answer the README's queries exactly as
//! `bdense sql` does on the same store (built with the `cluster` feature: .ci/cluster).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bdense_store::Dtype;
use bdense_tests::{TestDir, synthetic};

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

/// The statements of the README's SQL example block, each without its comment lines.
fn readme_queries() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let section = &text[text
        .find("### SQL over teacher paths")
        .expect("SQL section")..];
    let block = &section[section.find("```sql\n").expect("sql block") + 7..];
    let block = &block[..block.find("```").unwrap()];
    block
        .split(';')
        .map(|q| {
            q.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string()
        })
        .filter(|q| !q.is_empty())
        .collect()
}

/// A query's CSV answer as rows to compare: in order where the query orders them, else sorted.
fn rows(csv: &str, query: &str) -> Vec<String> {
    let mut rows: Vec<String> = csv.lines().map(str::to_string).collect();
    if !query.contains("ORDER BY") {
        rows.sort();
    }
    rows
}

#[test]
fn cluster_answers_the_readme_queries_as_local_sql() {
    let t = dir();
    // 49 grid points (the README's `step = 48`), 3 shards: several files per step to spread.
    synthetic(&t.join("store"), "fmnist", 48, 49, 16, Dtype::F32);

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
    let mut queries = readme_queries();
    assert!(queries.len() >= 7, "{queries:?}");
    queries.push("SELECT dataset, step, sigma FROM grid ORDER BY step".into());
    queries.push("SELECT dataset, trajectories, snapshot FROM manifest".into());
    for query in &queries {
        let local = t.bdense(["sql", "store", query, "--format", "csv"]).ok();
        let remote = t
            .bdense(["sql", "--cluster", &url, "store", query, "--format", "csv"])
            .ok();
        assert!(
            local.lines().count() > 1 || !query.contains("ORDER BY"),
            "{query}:\n{local}"
        );
        assert_eq!(rows(&remote, query), rows(&local, query), "{query}");
    }
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
