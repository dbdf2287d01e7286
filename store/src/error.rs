//! One error type for the store; every variant names the file or dataset at fault.

use std::path::{Path, PathBuf};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable Parquet file ({source})")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: writing failed: {source}")]
    WriteParquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("{path}: manifest is not valid JSON for this format ({source})")]
    ManifestJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: manifest has format version {found}, newer than this bdense understands ({supported}); upgrade bdense"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: no dataset here (no manifest in _bdense/manifests/)")]
    NotADataset { path: PathBuf },
    #[error("{path}: a dataset already exists here; use resume/append or another name")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: schema does not match the dataset: {detail}")]
    Schema { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error(
        "{path}: damaged or changed since it was committed: {detail} (`bdense store verify` lists every problem)"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path}: holds files but no dataset (no manifest in _bdense/manifests/); a dataset is written only into a new or empty directory"
    )]
    NotEmpty { path: PathBuf },
    #[error(
        "{path}: a dataset in an older bdense's layout (manifest.json, step=0007): readable as it is; run `bdense store upgrade {path}` before writing to it or collecting its garbage"
    )]
    LegacyLayout { path: PathBuf },
    #[error("{path}: {detail}")]
    ObjectStore { path: PathBuf, detail: String },
    #[error("{path}: shard {shard} is already committed; refusing to overwrite it")]
    ShardCommitted { path: PathBuf, shard: u32 },
}

impl StoreError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl AsRef<Path>, detail: impl Into<String>) -> Self {
        StoreError::Invalid {
            path: path.as_ref().to_path_buf(),
            detail: detail.into(),
        }
    }

    pub(crate) fn parquet(path: impl AsRef<Path>, source: parquet::errors::ParquetError) -> Self {
        StoreError::Parquet {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn schema(path: impl AsRef<Path>, detail: impl Into<String>) -> Self {
        StoreError::Schema {
            path: path.as_ref().to_path_buf(),
            detail: detail.into(),
        }
    }
}
