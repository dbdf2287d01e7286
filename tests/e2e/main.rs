//! End-to-end tests: `bdense` run as a user runs it, in a fresh directory per test.

mod generate;
mod queries;
mod report;
mod store;
mod train;

use bdense_tests::TestDir;

pub fn dir() -> TestDir {
    TestDir::new(env!("CARGO_BIN_EXE_bdense"))
}
