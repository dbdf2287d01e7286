//! One module per subcommand.

pub mod bench;
pub mod bench_peer;
pub mod bench_sql;
pub mod demo;
pub mod eval;
pub mod fid;
pub mod generate;
pub mod pd;
pub mod report;
pub mod sample;
pub mod sql;
pub mod store;
pub mod sweep;
pub mod targets;
pub mod teacher;
pub mod train;
