//! Peers of the benchmarks (pyarrow, duckdb): Python scripts under `pipeline/bench/`, embedded
//! in the binary and run with the Python the user names. Nothing is installed: a Python
//! without the peer's packages makes the benchmark skip it with a note.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;

/// `$BDENSE_PYTHON`, else `python3` on the PATH.
pub fn python() -> PathBuf {
    std::env::var_os("BDENSE_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// "pkg 1.2.3, other 4.5" when `python` imports every one of `packages`, else `None`.
pub fn versions(python: &PathBuf, packages: &[&str]) -> Option<String> {
    let code = format!(
        "import importlib\nprint(', '.join(f'{{p}} {{importlib.import_module(p).__version__}}' for p in {packages:?}))"
    );
    let out = Command::new(python)
        .args(["-c", &code])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `script` (the text of a Python file) with `args` and `input` on its stdin; returns its
/// stdout, or an error with its stderr.
pub fn run_script(
    python: &PathBuf,
    script: &str,
    args: &[String],
    input: &str,
) -> anyhow::Result<String> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    child
        .stdin
        .take()
        .context("the peer's stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "the peer script failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
