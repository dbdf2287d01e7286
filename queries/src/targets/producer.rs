//! Threading: one background thread runs a tokio runtime that decodes shards ahead of need
//! (each on its own blocking thread, so decoding uses every core) and cuts them into batches, sent
//! through a bounded channel so the consumer sets the pace.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::SyncSender;

use super::TargetBatch;
use super::assemble::Assembler;
use super::load::{LoadSpec, LoadedShard, load_shard};
use super::order::{ShardPlan, epoch_order, shard_needs, shard_of};
use crate::error::{QueryError, Result};

/// Shards decoded ahead of the one being assembled, each on its own blocking thread, so decoding runs on
/// every core while batches are cut.
const LOOKAHEAD_SHARDS: usize = 2;

type ShardLoad = tokio::task::JoinHandle<Result<LoadedShard>>;

pub(crate) struct Producer {
    pub load: LoadSpec,
    pub assembler: Assembler,
    pub plans: Vec<ShardPlan>,
    pub batch: usize,
    pub seed: u64,
    pub shuffle_buffer: usize,
    pub epochs: Option<u64>,
    pub batches_per_epoch: u64,
}

impl Producer {
    /// Sends batches from `start_batch` on until the epochs are done, the consumer hangs up,
    /// or an error (sent as the last item).
    pub fn run(self, start_batch: u64, tx: SyncSender<Result<TargetBatch>>) {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("bdense-targets-io")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(QueryError::StreamRuntime(e)));
                return;
            }
        };
        let mut epoch = start_batch / self.batches_per_epoch;
        let mut skip = (start_batch % self.batches_per_epoch) as usize * self.batch;
        while self.epochs.is_none_or(|e| epoch < e) {
            match rt.block_on(self.run_epoch(epoch, skip, &tx)) {
                Ok(true) => {}
                Ok(false) => return, // consumer gone
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            epoch += 1;
            skip = 0;
        }
    }

    /// Starts decoding shard `s` in the background.
    fn spawn_load(&self, s: usize, remaining: usize) -> ShardLoad {
        let (spec, plan) = (self.load.clone(), self.plans[s].clone());
        tokio::task::spawn_blocking(move || load_shard(&spec, &plan, remaining))
    }

    /// Sends one epoch's batches after skipping `skip` trajectories; false when the consumer
    /// has hung up.
    async fn run_epoch(
        &self,
        epoch: u64,
        skip: usize,
        tx: &SyncSender<Result<TargetBatch>>,
    ) -> Result<bool> {
        let order = epoch_order(&self.plans, self.seed, epoch, self.shuffle_buffer);
        let todo = &order[skip.min(order.len())..];
        let (load_order, left) = shard_needs(&self.plans, todo);
        let mut loads = Loads {
            upcoming: load_order.into_iter(),
            left,
            pending: VecDeque::new(),
            loaded: HashMap::new(),
        };
        let first_index = epoch * self.batches_per_epoch + (skip / self.batch) as u64;
        for (i, chunk) in todo.chunks(self.batch).enumerate() {
            let mut picks = Vec::with_capacity(chunk.len());
            for &id in chunk {
                let s = shard_of(&self.plans, id);
                loads.ensure(self, s).await?;
                picks.push((s, id));
            }
            let batch =
                self.assembler
                    .assemble(&loads.loaded, &picks, epoch, first_index + i as u64)?;
            loads.emitted(&picks);
            // A full channel blocks here: the consumer sets the pace.
            if tokio::task::block_in_place(|| tx.send(Ok(batch))).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// One epoch's shard loads: started in the order needed, at most [`LOOKAHEAD_SHARDS`] ahead,
/// dropped after their last row is emitted.
struct Loads {
    upcoming: std::vec::IntoIter<usize>,
    /// Rows of each shard the epoch emits (the count a load starts with).
    left: HashMap<usize, usize>,
    pending: VecDeque<(usize, ShardLoad)>,
    loaded: HashMap<usize, LoadedShard>,
}

impl Loads {
    /// Waits until shard `s` is decoded, starting the loads ahead of it.
    async fn ensure(&mut self, producer: &Producer, s: usize) -> Result<()> {
        while !self.loaded.contains_key(&s) {
            while self.pending.len() <= LOOKAHEAD_SHARDS {
                let Some(next) = self.upcoming.next() else {
                    break;
                };
                let load = producer.spawn_load(next, self.left[&next]);
                self.pending.push_back((next, load));
            }
            let (ready, load) = self
                .pending
                .pop_front()
                .expect("shards load in the order needed");
            let shard = load.await.map_err(|source| QueryError::ShardLoader {
                dataset: producer.load.name.clone(),
                shard: producer.plans[ready].index,
                source,
            })??;
            self.loaded.insert(ready, shard);
        }
        Ok(())
    }

    /// Counts `picks` as emitted, dropping shards with nothing left to emit.
    fn emitted(&mut self, picks: &[(usize, u64)]) {
        for (s, _) in picks {
            let shard = self.loaded.get_mut(s).expect("loaded");
            shard.remaining -= 1;
            if shard.remaining == 0 {
                self.loaded.remove(s);
            }
        }
    }
}
