//! Test support shared by the end-to-end tests in `tests/e2e` (compiled as the pipeline
//! crate's integration test, so they can run the built `bdense` binary): a `TestCommand`
//! runner in a fresh temporary directory and synthetic stores with a closed form.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bdense_store::synthetic::{SyntheticSpec, write_gaussian};
use bdense_store::{Dataset, Dims, Dtype, WriteOptions};

/// A fresh temporary directory that the command runs in.
pub struct TestDir {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl TestDir {
    /// `bin` is `env!("CARGO_BIN_EXE_bdense")` of the calling test.
    pub fn new(bin: &str) -> TestDir {
        TestDir {
            dir: tempfile::tempdir().expect("temp dir"),
            bin: PathBuf::from(bin),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `bdense ARGS...` in this directory.
    pub fn bdense<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(self.path())
            .args(args)
            .env_remove("BDENSE_ABORT_AFTER_STEP");
        TestCommand { cmd }
    }
}

pub struct TestCommand {
    pub cmd: Command,
}

impl TestCommand {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn output(mut self) -> Output {
        self.cmd.output().expect("run bdense")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(self) -> String {
        let described = format!("{:?}", self.cmd);
        let out = self.output();
        assert!(
            out.status.success(),
            "{described} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts the exit code; returns (stdout, stderr).
    pub fn code(self, code: i32) -> (String, String) {
        let described = format!("{:?}", self.cmd);
        let out = self.output();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{described}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        (stdout, stderr)
    }

    /// Runs and asserts failure with exit code 2 and `needle` in stderr; returns stderr.
    pub fn fails_with(self, needle: &str) -> String {
        let (_, stderr) = self.code(2);
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
        stderr
    }
}

/// The EDM polynomial grid, as datasets store it.
pub fn edm_sigmas(points: usize) -> Vec<f64> {
    bdense_store::Grid::edm(points).sigmas
}

/// A closed-form Gaussian dataset of 1x4x4 states on a `points`-point EDM grid.
pub fn synthetic(
    store: &Path,
    name: &str,
    count: u64,
    points: usize,
    rows_per_shard: u32,
    dtype: Dtype,
) -> Dataset {
    let spec = synthetic_spec(name, count, points, rows_per_shard, dtype);
    write_gaussian(&store.join(name), &spec, WriteOptions::default()).expect("synthetic dataset")
}

/// What [`synthetic`] writes, for a test that writes (or alters) its shards itself.
pub fn synthetic_spec(
    name: &str,
    count: u64,
    points: usize,
    rows_per_shard: u32,
    dtype: Dtype,
) -> SyntheticSpec {
    SyntheticSpec {
        name: name.into(),
        dims: Dims { c: 1, h: 4, w: 4 },
        count,
        sigmas: edm_sigmas(points),
        rows_per_shard,
        dtype,
        base_seed: 11,
        classes: 10,
        with_denoised: false,
    }
}

/// Every committed file of a dataset with its hash, relative to the dataset directory.
pub fn file_hashes(dataset: &Path) -> Vec<(String, String)> {
    let ds = Dataset::open(dataset).expect("dataset");
    let mut out: Vec<(String, String)> = ds
        .shards()
        .iter()
        .flat_map(|s| s.files.iter().map(|f| (f.path.clone(), f.xxh3.clone())))
        .collect();
    out.sort();
    out
}

/// Whether two CSV answers to one query agree: the same header and rows, text fields equal
/// and numbers within `rel` of each other relative to the larger (a parallel `sum` adds in
/// an order that depends on how the scan was split, so the last digits may differ).
pub fn csv_answers_agree(a: &str, b: &str, rel: f64) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            let (x, y): (Vec<&str>, Vec<&str>) = (x.split(',').collect(), y.split(',').collect());
            x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| fields_agree(p, q, rel))
        })
}

fn fields_agree(p: &str, q: &str, rel: f64) -> bool {
    match (p.parse::<f64>(), q.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= rel * x.abs().max(y.abs())
        }
        _ => p == q,
    }
}

#[cfg(test)]
mod tests {
    use super::csv_answers_agree;

    #[test]
    fn csv_answers_agree_within_the_tolerance_and_not_beyond() {
        let a = "id,v\n4,0.9996285707607242\n7,NaN\n";
        assert!(csv_answers_agree(
            a,
            "id,v\n4,0.9996285707607238\n7,NaN\n",
            1e-12
        ));
        assert!(!csv_answers_agree(
            a,
            "id,v\n4,0.9996285707607238\n7,NaN\n",
            1e-16
        ));
        assert!(!csv_answers_agree(
            a,
            "id,v\n5,0.9996285707607242\n7,NaN\n",
            1e-12
        ));
        assert!(!csv_answers_agree(a, "id,v\n4,0.9996285707607242\n", 1e-12));
        assert!(!csv_answers_agree(
            a,
            "id,w\n4,0.9996285707607242\n7,NaN\n",
            1e-12
        ));
    }
}
