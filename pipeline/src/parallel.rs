//! Independent jobs (student runs, evaluations, teacher batches) spread over the machine's
//! cores.
//!
//! A training step on burn-ndarray keeps about one core busy, so two runs side by side nearly
//! double throughput on a 2-core machine (measured: docs/perf.md). The one implementation lives
//! in the store crate, whose readers hash and decode files the same way.

pub use bdense_store::parallel::workers;

/// Runs `f` on every item with up to `workers` threads; results in item order. Stops handing
/// out new items after the first error and returns it.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    bdense_store::parallel::try_map(items, workers, f)
}
