//! Independent work spread over the machine's cores: hashing and decoding step files (not the
//! disk bound a reader, docs/perf.md), solving teacher batches, training and evaluating runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Workers to use: the machine's cores, or `BDENSE_WORKERS`.
pub fn workers() -> usize {
    std::env::var("BDENSE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// `f` applied to every item on up to `workers` threads, results in the items' order. Stops
/// handing out items after the first error and returns it.
pub fn try_map<T: Sync, R: Send, E: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let workers = workers.min(items.len()).max(1);
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<R, E>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = f(item);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    slots.lock().expect("no poisoned worker")[i] = Some(r);
                }
            });
        }
    });
    // Items after an error were never mapped: the error comes first in item order or the
    // collect stops at it.
    slots
        .into_inner()
        .expect("no poisoned worker")
        .into_iter()
        .flatten()
        .collect()
}

/// `f` applied to every item on all workers, results in the items' order.
pub fn map_on_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    match try_map(items, workers(), |item| {
        Ok::<R, std::convert::Infallible>(f(item))
    }) {
        Ok(v) => v,
        Err(never) => match never {},
    }
}
