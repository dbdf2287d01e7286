//! One error type for the query layer.

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
    #[error("{0}")]
    Layout(String),
    #[error("{dataset}: {detail}")]
    Dataset { dataset: String, detail: String },
    #[error("{0}")]
    Refused(String),
}

/// DataFusion's message without the `Diagnostic`/`Context` wrappers' noise.
fn describe(e: &datafusion::error::DataFusionError) -> String {
    e.clone_root_message()
}

trait RootMessage {
    fn clone_root_message(&self) -> String;
}

impl RootMessage for datafusion::error::DataFusionError {
    fn clone_root_message(&self) -> String {
        self.find_root().strip_backtrace()
    }
}
