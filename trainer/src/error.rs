//! The trainer's error type: every variant names the file or setting at fault.

use std::path::{Path, PathBuf};

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Checkpoint { path: PathBuf, detail: String },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{0}")]
    Config(String),
    #[error("training diverged at step {step}: {detail}")]
    Diverged { step: u64, detail: String },
}

impl TrainerError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        TrainerError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn checkpoint(path: impl AsRef<Path>, detail: impl std::fmt::Display) -> Self {
        TrainerError::Checkpoint {
            path: path.as_ref().to_path_buf(),
            detail: detail.to_string(),
        }
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    match result.and_then(|_| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(TrainerError::io(path, e))
        }
    }
}

/// Reads and parses a JSON file, naming it in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TrainerError::checkpoint(path, format!("not a valid file of this kind ({e})")))
}

pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(
        path,
        &serde_json::to_vec_pretty(value).expect("serialisable"),
    )
}
