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

/// DataFusion's message without the `Diagnostic`/`Context` wrappers' noise; a store error
/// raised inside a scan (a damaged file) is shown as the store words it, naming the file.
fn describe(e: &datafusion::error::DataFusionError) -> String {
    match e.find_root() {
        datafusion::error::DataFusionError::External(inner) => inner.to_string(),
        root => root.strip_backtrace(),
    }
}
