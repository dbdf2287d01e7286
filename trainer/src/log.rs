//! Append-only CSV logs that survive a resume: rows past the checkpoint being resumed from are
//! dropped first, so a resumed run's log equals an uninterrupted run's.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainerError};

pub struct CsvLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl CsvLog {
    /// Opens `path` for appending after step `from_step` (0: start afresh with a header).
    pub fn open(path: &Path, header: &[&str], from_step: u64) -> Result<CsvLog> {
        let io = |e| TrainerError::io(path, e);
        let mut kept = format!("{}\n", header.join(","));
        if from_step > 0
            && let Ok(text) = std::fs::read_to_string(path)
        {
            for line in text.lines().skip(1) {
                let step: u64 = line
                    .split(',')
                    .next()
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0) as u64;
                if step <= from_step {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        // Atomically: a crash here must not lose the rows already logged.
        crate::error::write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(CsvLog {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    pub fn row(&mut self, values: &[f64]) -> Result<()> {
        let line: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
        writeln!(self.file, "{}", line.join(",")).map_err(|e| TrainerError::io(&self.path, e))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| TrainerError::io(&self.path, e))
    }
}

impl Drop for CsvLog {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}
