//! Noise schedules in EDM sigma space (Karras et al. 2022), computed in f64.
//!
//! The polynomial grid is defined once, in the store, because a store's steps are indexed by
//! it and its manifest records it; the trainer's solvers walk the same grid.

pub use bdense_store::grid::{Grid, polynomial_sigmas};

/// The grid under the name the trainer used before it moved to the store.
pub type GridSpec = Grid;
