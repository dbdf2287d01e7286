//! One error type for the query layer.

use std::path::PathBuf;

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error(transparent)]
    Store(#[from] bdense_store::StoreError),
    #[error("{}", describe(.0))]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// (N, K) does not fit the dataset's grid.
    #[error(transparent)]
    StudentLayout(#[from] bdense_store::LayoutError),
    /// A layout or stream problem described in words (callers outside this crate raise it).
    #[error("{0}")]
    Layout(String),
    #[error("{dataset}: {detail}")]
    Dataset { dataset: String, detail: String },
    #[error("{0}")]
    Refused(String),
    /// A target stream over a dataset with no committed trajectories.
    #[error("{}: holds no committed trajectories (generate some first)", .dataset.display())]
    EmptyDataset { dataset: PathBuf },
    #[error("batch size must be positive")]
    ZeroBatch,
    /// A step file the manifest lists is not on disk.
    #[error("{}: step partition file {} is missing", .dataset.display(), .path.display())]
    MissingStepFile { dataset: PathBuf, path: PathBuf },
    /// A scan returned a batch without the column, or with another type.
    #[error("{dataset}: column {column:?} is missing or not of type {expected}")]
    Column {
        dataset: String,
        column: &'static str,
        expected: String,
    },
    /// A shard's rows do not match its plan (one state per trajectory and selected step).
    #[error("{dataset}: shard {shard}: {}", problem.describe(*traj_id, *step))]
    ShardRows {
        dataset: String,
        shard: u32,
        problem: RowProblem,
        traj_id: u64,
        step: u16,
    },
    /// The task decoding a shard panicked or was cancelled.
    #[error("{dataset}: shard {shard}: the loader task failed: {source}")]
    ShardLoader {
        dataset: String,
        shard: u32,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("could not start the target stream's thread: {0}")]
    StreamThread(#[source] std::io::Error),
    #[error("could not start the target stream's runtime: {0}")]
    StreamRuntime(#[source] std::io::Error),
}

/// How a shard's rows disagree with its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowProblem {
    /// A row whose trajectory or step the plan does not hold.
    Unexpected,
    /// A second row for one (trajectory, step).
    Duplicate,
    /// No row for a (trajectory, step) the plan holds.
    Missing,
}

impl RowProblem {
    fn describe(self, traj_id: u64, step: u16) -> String {
        match self {
            RowProblem::Unexpected => format!("unexpected row (trajectory {traj_id}, step {step})"),
            RowProblem::Duplicate => format!("trajectory {traj_id} appears twice at step {step}"),
            RowProblem::Missing => format!("trajectory {traj_id} has no state at step {step}"),
        }
    }
}

/// DataFusion's message without the `Diagnostic`/`Context` wrappers' noise; a store error
/// raised inside a scan (a damaged file) is shown as the store words it, naming the file.
fn describe(e: &datafusion::error::DataFusionError) -> String {
    match e.find_root() {
        datafusion::error::DataFusionError::External(inner) => inner.to_string(),
        root => root.strip_backtrace(),
    }
}
