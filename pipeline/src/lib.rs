//! The stages wired together, and the command line that runs them.

pub mod cli;
pub mod cluster;
pub mod commands;
pub mod evaluation;
pub mod generation;
pub mod images;
pub mod parallel;
pub mod pd_store;
pub mod plots;
pub mod progress;
pub mod run;
pub mod teacher_source;

use std::process::ExitCode;

use cli::{BenchCommand, Cli, ClusterCommand, Command, StoreCommand, TeacherCommand};

/// Runs one command; `Ok(code)` carries non-zero exits that are not errors (a failed verify).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    dispatch(cli.command)
}

/// Runs one parsed command: the single place that knows which module serves which command
/// (the demo composes commands through it, so no command module imports another).
pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Store(StoreCommand::Ls(a)) => commands::store::ls(&a),
        Command::Store(StoreCommand::Info(a)) => commands::store::info(&a),
        Command::Store(StoreCommand::Verify(a)) => commands::store::verify(&a),
        Command::Store(StoreCommand::Gc(a)) => commands::store::gc(&a),
        Command::Store(StoreCommand::Upgrade(a)) => commands::store::upgrade(&a),
        Command::Store(StoreCommand::Copy(a)) => commands::store::copy(&a),
        Command::Generate(a) => commands::generate::run(&a),
        Command::Sql(a) => commands::sql::run(&a),
        Command::Cluster(ClusterCommand::Scheduler(a)) => cluster::scheduler(&a),
        Command::Cluster(ClusterCommand::Executor(a)) => cluster::executor(&a),
        Command::Targets(a) => commands::targets::run(&a),
        Command::Teacher(TeacherCommand::Train(a)) => commands::teacher::train(&a),
        Command::Teacher(TeacherCommand::Eval(a)) => commands::teacher::eval(&a),
        Command::Train(a) => commands::train::run(&a),
        Command::Sample(a) => commands::sample::run(&a),
        Command::Eval(a) => commands::eval::run(&a),
        Command::Report(a) => commands::report::run(&a),
        Command::Demo(a) => commands::demo::run(&a),
        Command::Sweep(a) => commands::sweep::run(&a),
        Command::Fid(a) => commands::fid::run(&a),
        Command::Pd(a) => commands::pd::run(&a),
        Command::Bench(BenchCommand::Store(a)) => commands::bench::store(&a),
        Command::Bench(BenchCommand::Targets(a)) => commands::bench::targets(&a),
        Command::Bench(BenchCommand::Train(a)) => commands::bench::train(&a),
        Command::Bench(BenchCommand::Sql(a)) => commands::bench_sql::sql(&a),
    }
}

/// An error and its causes on one line, each said once. Library errors often print their
/// source in their own message already, or wrap it in a prefix (`External error: ...`,
/// `Parquet error: Parquet error: ...`), so anyhow's `{:#}` would repeat one chain per layer.
pub fn describe_error(error: &anyhow::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in error.chain() {
        let message = cause.to_string();
        let message = message.trim();
        let repeats = said.iter().any(|s| s.contains(message))
            || said
                .last()
                .is_some_and(|last| message.ends_with(last.as_str()));
        if !message.is_empty() && !repeats {
            said.push(message.to_string());
        }
    }
    let text = said.join(": ");
    // A layer that repeats its own prefix: "Parquet error: Parquet error: ...".
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`bdense sql ... | head -1`) panics;
/// with the default action the process ends quietly as `cat` or `grep` do.
#[cfg(unix)]
pub fn restore_sigpipe() {
    // Declared here rather than through the libc crate, which this package does not use.
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13; // the same number on Linux and the BSDs/macOS
    const SIG_DFL: usize = 0;
    // SAFETY: installs the default disposition before any thread exists; no handler runs.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

#[cfg(not(unix))]
pub fn restore_sigpipe() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let root = std::io::Error::other("disk on fire");
        let wrapped = anyhow::Error::new(root)
            .context("reading x.parquet: disk on fire")
            .context("query failed");
        assert_eq!(
            describe_error(&wrapped),
            "query failed: reading x.parquet: disk on fire"
        );
        // A wrapper that only adds a prefix to its source, and a prefix said twice.
        let inner = anyhow::anyhow!("x.parquet: damaged");
        let wrapped = inner.context("External error: x.parquet: damaged");
        assert_eq!(
            describe_error(&wrapped.context("x.parquet: damaged")),
            "x.parquet: damaged"
        );
        let doubled = anyhow::anyhow!("Parquet error: Parquet error: no footer");
        assert_eq!(describe_error(&doubled), "Parquet error: no footer");
        let detail = anyhow::anyhow!("training diverged at step 3").context("training");
        assert_eq!(
            describe_error(&detail),
            "training: training diverged at step 3"
        );
    }
}
