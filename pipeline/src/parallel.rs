//! Independent jobs (student runs, evaluations) spread over the machine's cores.
//!
//! A training step on burn-ndarray keeps about one core busy, so two runs side by side nearly
//! double throughput on a 2-core machine (measured: docs/perf.md).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Workers to use: the machine's cores, or `BDENSE_WORKERS`.
pub fn workers() -> usize {
    std::env::var("BDENSE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Runs `f` on every item with up to `workers` threads; results in item order. Stops handing
/// out new items after the first error and returns it.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()).max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= items.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = f(&items[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    results.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .flatten()
        .collect()
}
