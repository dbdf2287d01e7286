//! The (N, K) student layout over a stored grid, defined in the store (a store-level fact:
//! which stored steps a student reads) and re-exported here for callers of `queries`.

pub use bdense_store::layout::{LayoutError, StudentLayout, supported_pairs};
