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

/// Shards decoded ahead of the one being assembled, each on its own blocking thread, so
/// decoding runs on every core while batches are cut: one per core (a shard's load is
/// sequential), at least 2 (1 was slower on 2 cores, docs/perf.md), at most
/// [`MAX_LOOKAHEAD_SHARDS`] (each load in flight holds its shard's decoded steps).
fn lookahead_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, MAX_LOOKAHEAD_SHARDS)
}

const MAX_LOOKAHEAD_SHARDS: usize = 16;

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
        if let Err(e) = rt.block_on(self.send_epochs(start_batch, &tx)) {
            let _ = tx.send(Err(e));
        }
    }

    /// Sends every epoch's batches from `start_batch` on (until the consumer hangs up). Each
    /// epoch's shard loads queue behind the previous epoch's, so the next epoch's first shards
    /// decode while this one's last batches are cut: an epoch boundary costs no idle core.
    async fn send_epochs(
        &self,
        start_batch: u64,
        tx: &SyncSender<Result<TargetBatch>>,
    ) -> Result<()> {
        let mut epoch = start_batch / self.batches_per_epoch;
        let skip = (start_batch % self.batches_per_epoch) as usize * self.batch;
        let mut first_index = epoch * self.batches_per_epoch + (skip / self.batch) as u64;
        let mut todo = self.epoch_todo(epoch, skip);
        let mut loads = Loads {
            lookahead: lookahead_shards(),
            upcoming: VecDeque::new(),
            pending: VecDeque::new(),
            loaded: HashMap::new(),
        };
        loads.queue(&self.plans, &todo);
        while self.epochs.is_none_or(|e| epoch < e) {
            let next = epoch + 1;
            let next_todo = self
                .epochs
                .is_none_or(|e| next < e)
                .then(|| self.epoch_todo(next, 0));
            if let Some(next_todo) = &next_todo {
                loads.queue(&self.plans, next_todo);
            }
            if !self
                .send_epoch(epoch, first_index, &todo, &mut loads, tx)
                .await?
            {
                return Ok(()); // consumer gone
            }
            let Some(next_todo) = next_todo else {
                break;
            };
            (epoch, todo) = (next, next_todo);
            first_index = epoch * self.batches_per_epoch;
        }
        Ok(())
    }

    /// The ids epoch `epoch` emits after skipping its first `skip`, in order.
    fn epoch_todo(&self, epoch: u64, skip: usize) -> Vec<u64> {
        let mut order = epoch_order(&self.plans, self.seed, epoch, self.shuffle_buffer);
        order.drain(..skip.min(order.len()));
        order
    }

    /// Starts decoding shard `s` in the background.
    fn spawn_load(&self, s: usize, remaining: usize) -> ShardLoad {
        let (spec, plan) = (self.load.clone(), self.plans[s].clone());
        tokio::task::spawn_blocking(move || load_shard(&spec, &plan, remaining))
    }

    /// Sends `todo`, epoch `epoch`'s ids, as batches numbered from `first_index`; false when
    /// the consumer has hung up.
    async fn send_epoch(
        &self,
        epoch: u64,
        first_index: u64,
        todo: &[u64],
        loads: &mut Loads,
        tx: &SyncSender<Result<TargetBatch>>,
    ) -> Result<bool> {
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

/// The stream's shard loads: queued epoch after epoch in the order needed, started at most
/// [`lookahead_shards`] ahead, dropped after their last row is emitted.
struct Loads {
    /// Loads started ahead of the shard being cut.
    lookahead: usize,
    /// Loads not started yet: (shard, rows its epoch emits from it).
    upcoming: VecDeque<(usize, usize)>,
    pending: VecDeque<(usize, ShardLoad)>,
    /// The current epoch's decoded shards (every one is dropped before the next epoch's first
    /// is taken from `pending`).
    loaded: HashMap<usize, LoadedShard>,
}

impl Loads {
    /// Queues the loads of one epoch's `todo` behind those already queued.
    fn queue(&mut self, plans: &[ShardPlan], todo: &[u64]) {
        let (order, left) = shard_needs(plans, todo);
        self.upcoming
            .extend(order.into_iter().map(|s| (s, left[&s])));
    }

    /// Waits until shard `s` is decoded, starting the loads ahead of it.
    async fn ensure(&mut self, producer: &Producer, s: usize) -> Result<()> {
        while !self.loaded.contains_key(&s) {
            while self.pending.len() <= self.lookahead {
                let Some((next, left)) = self.upcoming.pop_front() else {
                    break;
                };
                self.pending
                    .push_back((next, producer.spawn_load(next, left)));
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
