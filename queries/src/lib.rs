//! DataFusion over a trajectory store: every dataset as a table (only its committed files,
//! pruned by `step`), vector UDFs for inspecting teacher paths, and the streamed K-step
//! branch targets the trainer consumes.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod error;
mod fast_scan;
pub mod format;
pub mod layout;
pub mod session;
pub mod table;
pub mod targets;
pub mod udf;

pub use datafusion;
pub use error::{QueryError, Result};
pub use layout::StudentLayout;
pub use session::StoreSession;
pub use targets::{TargetBatch, TargetSpec, TargetStream};
