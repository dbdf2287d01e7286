//! The order trajectories are emitted in: a pure function of (dataset snapshot, seed, epoch,
//! buffer size), never of data values or timing, so a resumed run computes where it stands
//! without reading anything.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A shard's place in the plan: which ids, in which row groups.
#[derive(Debug, Clone)]
pub(crate) struct ShardPlan {
    pub index: u32,
    pub first_id: u64,
    pub row_groups: Vec<usize>,
}

impl ShardPlan {
    pub fn rows(&self) -> usize {
        self.row_groups.iter().sum()
    }

    fn holds(&self, id: u64) -> bool {
        id >= self.first_id && id < self.first_id + self.rows() as u64
    }
}

/// Trajectory ids of one epoch, in emission order: shards in a seeded permutation, each
/// shard's row groups in a seeded permutation, rows through a seeded shuffle buffer of
/// `buffer` trajectories (memory stays bounded by the shards the window spans).
pub(crate) fn epoch_order(shards: &[ShardPlan], seed: u64, epoch: u64, buffer: usize) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut shard_order: Vec<usize> = (0..shards.len()).collect();
    shuffle(&mut shard_order, &mut rng);
    let mut pending: Vec<u64> = Vec::with_capacity(buffer + 1);
    let mut out = Vec::new();
    for s in shard_order {
        let shard = &shards[s];
        let mut starts = Vec::with_capacity(shard.row_groups.len());
        let mut at = shard.first_id;
        for &n in &shard.row_groups {
            starts.push((at, n));
            at += n as u64;
        }
        shuffle(&mut starts, &mut rng);
        for (first, n) in starts {
            for id in first..first + n as u64 {
                pending.push(id);
                if pending.len() > buffer {
                    let pick = rng.random_range(0..pending.len());
                    out.push(pending.swap_remove(pick));
                }
            }
        }
    }
    while !pending.is_empty() {
        let pick = rng.random_range(0..pending.len());
        out.push(pending.swap_remove(pick));
    }
    out
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

/// Which shard holds `id`; ids come from the plan, so one always does.
pub(crate) fn shard_of(plans: &[ShardPlan], id: u64) -> usize {
    plans
        .iter()
        .position(|p| p.holds(id))
        .expect("ids come from the plan")
}

/// The shards `order` needs, in the order it first needs them, and how many of each shard's
/// rows it emits (a decoded shard is dropped after its last one).
pub(crate) fn shard_needs(
    plans: &[ShardPlan],
    order: &[u64],
) -> (Vec<usize>, HashMap<usize, usize>) {
    let mut left: HashMap<usize, usize> = HashMap::new();
    let mut load_order = Vec::new();
    for &id in order {
        let s = shard_of(plans, id);
        let n = left.entry(s).or_default();
        if *n == 0 {
            load_order.push(s);
        }
        *n += 1;
    }
    (load_order, left)
}
