//! The stages wired together, and the command line that runs them.

pub mod cli;
pub mod commands;
pub mod evaluation;
pub mod generation;
pub mod images;
pub mod parallel;
pub mod plots;
pub mod progress;
pub mod teacher_source;

use std::process::ExitCode;

use cli::{BenchCommand, Cli, Command, StoreCommand, TeacherCommand};

/// Runs one command; `Ok(code)` carries non-zero exits that are not errors (a failed verify).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Store(StoreCommand::Ls(a)) => commands::store::ls(&a),
        Command::Store(StoreCommand::Info(a)) => commands::store::info(&a),
        Command::Store(StoreCommand::Verify(a)) => commands::store::verify(&a),
        Command::Store(StoreCommand::Gc(a)) => commands::store::gc(&a),
        Command::Generate(a) => commands::generate::run(&a),
        Command::Sql(a) => commands::sql::run(&a),
        Command::Targets(a) => commands::targets::run(&a),
        Command::Teacher(TeacherCommand::Train(a)) => commands::teacher::train(&a),
        Command::Train(a) => commands::train::run(&a),
        Command::Sample(a) => commands::sample::run(&a),
        Command::Eval(a) => commands::eval::run(&a),
        Command::Report(a) => commands::report::run(&a),
        Command::Demo(a) => commands::demo::run(&a),
        Command::Fid(a) => commands::fid::run(&a),
        Command::Bench(BenchCommand::Store(a)) => commands::bench::store(&a),
        Command::Bench(BenchCommand::Targets(a)) => commands::bench::targets(&a),
        Command::Bench(BenchCommand::Train(a)) => commands::bench::train(&a),
    }
}
