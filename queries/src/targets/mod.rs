//! Branch targets, streamed: for a student with N timestamps and K branches, each trajectory's
//! start state and its K (N-1) teacher targets, assembled with DataFusion from the steps the
//! layout selects, in an order shuffled by a seed, in batches of B, through a bounded
//! prefetch channel fed by a background thread.
//!
//! Order: every epoch visits the shards in a seeded permutation, each shard's row groups in a
//! seeded permutation, and passes the rows through a seeded shuffle buffer of bounded size.
//! The order depends only on (dataset snapshot, seed, epoch, buffer size), never on data
//! values or timing, so it can be computed without reading anything: that is how a resumed
//! run skips to its batch. Memory stays bounded by the shards the buffer window spans.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bdense_store::{Dataset, ShardEntry, schema as cols};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int32Array, RecordBatch,
    UInt64Array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float16Type, Float32Type, Schema, SchemaRef, UInt16Type, UInt64Type,
};
use datafusion::prelude::{SessionContext, col, lit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{QueryError, Result};
use crate::layout::StudentLayout;
use crate::session::{StoreSession, dataset_name};
use crate::table::{SHARD, STEP};

#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub n: usize,
    pub k: usize,
    pub afs: bool,
    /// Also emit each interval's teacher start state (for teacher-forced training).
    pub teacher_forcing: bool,
    pub batch: usize,
    pub seed: u64,
    /// Trajectories held in the shuffle buffer.
    pub shuffle_buffer: usize,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// Stop after this many epochs (`None`: never).
    pub epochs: Option<u64>,
}

impl TargetSpec {
    pub fn new(n: usize, k: usize, batch: usize, seed: u64) -> TargetSpec {
        TargetSpec {
            n,
            k,
            afs: false,
            teacher_forcing: false,
            batch,
            seed,
            shuffle_buffer: 1024,
            prefetch: 4,
            epochs: None,
        }
    }
}

/// One batch of B trajectories as an Arrow record batch:
/// `traj_id u64, seed u64, label i32?, start [f32; D], targets [[f32; D]; (N-1) K]`
/// and, for teacher forcing, `interval_starts [[f32; D]; N-1]`.
#[derive(Debug, Clone)]
pub struct TargetBatch {
    pub epoch: u64,
    /// Position of this batch in the whole stream (0-based, across epochs).
    pub index: u64,
    pub layout: Arc<StudentLayout>,
    pub batch: RecordBatch,
    pub dim: usize,
}

pub const START: &str = "start";
pub const TARGETS: &str = "targets";
pub const INTERVAL_STARTS: &str = "interval_starts";

impl TargetBatch {
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    fn column(&self, name: &str) -> &dyn Array {
        self.batch
            .column_by_name(name)
            .expect("target batch column")
            .as_ref()
    }

    pub fn traj_ids(&self) -> &[u64] {
        self.column(cols::TRAJ_ID)
            .as_primitive::<UInt64Type>()
            .values()
    }

    /// Labels, when the dataset has them.
    pub fn labels(&self) -> Option<Vec<i32>> {
        let l = self
            .column(cols::LABEL)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        (l.null_count() == 0).then(|| l.values().to_vec())
    }

    /// `[B, D]`: each trajectory's state at the first student timestamp.
    pub fn start(&self) -> &[f32] {
        flat_f32(self.column(START))
    }

    /// `[B, N-1, K, D]`: branch k's target on interval i.
    pub fn targets(&self) -> &[f32] {
        flat_f32(self.column(TARGETS))
    }

    /// `[B, N-1, D]`: the teacher's state at each interval's start (teacher forcing).
    pub fn interval_starts(&self) -> Option<&[f32]> {
        self.batch
            .column_by_name(INTERVAL_STARTS)
            .map(|c| flat_f32(c.as_ref()))
    }
}

/// The f32 values under (possibly nested) FixedSizeLists, zero-copy.
fn flat_f32(a: &dyn Array) -> &[f32] {
    match a.data_type() {
        DataType::FixedSizeList(_, _) => flat_f32(a.as_fixed_size_list().values().as_ref()),
        _ => a.as_primitive::<Float32Type>().values(),
    }
}

pub fn target_schema(layout: &StudentLayout, dim: usize, teacher_forcing: bool) -> SchemaRef {
    let vector = DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        dim as i32,
    );
    let vectors = |n: usize| {
        DataType::FixedSizeList(
            Arc::new(Field::new_list_field(vector.clone(), false)),
            n as i32,
        )
    };
    let mut fields = vec![
        Field::new(cols::TRAJ_ID, DataType::UInt64, false),
        Field::new(cols::SEED, DataType::UInt64, false),
        Field::new(cols::LABEL, DataType::Int32, true),
        Field::new(START, vector.clone(), false),
        Field::new(TARGETS, vectors(layout.intervals() * layout.k), false),
    ];
    if teacher_forcing {
        fields.push(Field::new(
            INTERVAL_STARTS,
            vectors(layout.intervals()),
            false,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// A shard's place in the plan: which ids, in which row groups.
#[derive(Debug, Clone)]
struct ShardPlan {
    index: u32,
    first_id: u64,
    row_groups: Vec<usize>,
}

/// Trajectory ids of one epoch, in emission order.
fn epoch_order(shards: &[ShardPlan], seed: u64, epoch: u64, buffer: usize) -> Vec<u64> {
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

/// The streamed targets of one dataset.
pub struct TargetStream {
    layout: Arc<StudentLayout>,
    rx: Option<Receiver<Result<TargetBatch>>>,
    worker: Option<std::thread::JoinHandle<()>>,
    batches_per_epoch: u64,
    position: u64,
}

impl TargetStream {
    /// Starts the background producer at batch `start_batch` of the stream.
    pub fn open(dataset: Dataset, spec: &TargetSpec, start_batch: u64) -> Result<TargetStream> {
        let m = dataset.manifest();
        let name = dataset_name(&dataset);
        if m.trajectories() == 0 {
            return Err(QueryError::Dataset {
                dataset: dataset.dir().display().to_string(),
                detail: "holds no committed trajectories (generate some first)".into(),
            });
        }
        if spec.batch == 0 {
            return Err(QueryError::Layout("batch size must be positive".into()));
        }
        let layout = Arc::new(StudentLayout::new(
            &m.grid.sigmas,
            m.grid.points(),
            spec.n,
            spec.k,
            spec.afs,
        )?);
        let steps = layout.steps();
        let mut plans = Vec::with_capacity(m.shards.len());
        for shard in &m.shards {
            check_files(&dataset, shard, &steps)?;
            // Read from a file checked against the manifest (hash, rows, ids).
            let row_groups = dataset.row_groups(shard, steps[0])?;
            plans.push(ShardPlan {
                index: shard.index,
                first_id: shard.first_id,
                row_groups,
            });
        }
        let total = m.trajectories();
        let batches_per_epoch = total.div_ceil(spec.batch as u64);
        let (tx, rx) = sync_channel(spec.prefetch.max(1));
        let producer = Producer {
            session: StoreSession::for_dataset(dataset)?,
            name,
            layout: layout.clone(),
            spec: spec.clone(),
            plans,
            batches_per_epoch,
        };
        let worker = std::thread::Builder::new()
            .name("bdense-targets".into())
            .spawn(move || producer.run(start_batch, tx))
            .expect("spawn target producer");
        Ok(TargetStream {
            layout,
            rx: Some(rx),
            worker: Some(worker),
            batches_per_epoch,
            position: start_batch,
        })
    }

    pub fn layout(&self) -> &StudentLayout {
        &self.layout
    }

    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    /// Index of the batch the next call returns.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next batch; `None` once the requested epochs are done.
    pub fn next_batch(&mut self) -> Option<Result<TargetBatch>> {
        let item = self.rx.as_ref()?.recv().ok()?;
        if item.is_ok() {
            self.position += 1;
        }
        Some(item)
    }
}

impl Iterator for TargetStream {
    type Item = Result<TargetBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

impl Drop for TargetStream {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail, and it stops.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A missing or damaged file is named now, before training starts, not deep inside a query
/// later (the check is remembered, so the scans do not hash the files again).
fn check_files(dataset: &Dataset, shard: &ShardEntry, steps: &[u16]) -> Result<()> {
    for &step in steps {
        let entry = dataset.file(shard, step)?;
        let path = dataset.file_path(entry);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(QueryError::Dataset {
                dataset: dataset.dir().display().to_string(),
                detail: format!("step partition file {} is missing", path.display()),
            });
        }
        dataset.check_file(shard, entry)?;
    }
    Ok(())
}

/// A shard's selected steps, decoded: Arrow batches plus where each (slot, row) lives in them.
struct LoadedShard {
    batches: Vec<RecordBatch>,
    /// `cells[slot * rows + row] = (batch, row in batch)`.
    cells: Vec<(u32, u32)>,
    rows: usize,
    first_id: u64,
    seeds: Vec<u64>,
    labels: Vec<Option<i32>>,
    remaining: usize,
}

struct Producer {
    session: StoreSession,
    name: String,
    layout: Arc<StudentLayout>,
    spec: TargetSpec,
    plans: Vec<ShardPlan>,
    batches_per_epoch: u64,
}

/// Shards decoded ahead of the one being assembled, each in its own task, so decoding runs on
/// every core while batches are cut.
const LOOKAHEAD_SHARDS: usize = 2;

type ShardLoad = tokio::task::JoinHandle<Result<LoadedShard>>;

impl Producer {
    fn run(self, start_batch: u64, tx: SyncSender<Result<TargetBatch>>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("bdense-targets-io")
            .enable_all()
            .build()
            .expect("runtime");
        let mut epoch = start_batch / self.batches_per_epoch;
        let mut skip = (start_batch % self.batches_per_epoch) as usize * self.spec.batch;
        while self.spec.epochs.is_none_or(|e| epoch < e) {
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
        let ctx = self.session.ctx().clone();
        let (name, steps, plan) = (
            self.name.clone(),
            self.layout.steps(),
            self.plans[s].clone(),
        );
        tokio::spawn(async move { load_shard(&ctx, &name, &steps, &plan, remaining).await })
    }

    /// Sends one epoch's batches after skipping `skip` trajectories; false when the consumer
    /// has hung up.
    async fn run_epoch(
        &self,
        epoch: u64,
        skip: usize,
        tx: &SyncSender<Result<TargetBatch>>,
    ) -> Result<bool> {
        let order = epoch_order(&self.plans, self.spec.seed, epoch, self.spec.shuffle_buffer);
        let shard_of = |id: u64| {
            self.plans
                .iter()
                .position(|p| {
                    id >= p.first_id && id < p.first_id + p.row_groups.iter().sum::<usize>() as u64
                })
                .expect("ids come from the plan")
        };
        let todo = &order[skip.min(order.len())..];
        // How many of each shard's rows this epoch still emits, and the order shards are needed.
        let mut left: HashMap<usize, usize> = HashMap::new();
        let mut load_order = Vec::new();
        for &id in todo {
            let n = left.entry(shard_of(id)).or_default();
            if *n == 0 {
                load_order.push(shard_of(id));
            }
            *n += 1;
        }
        let mut upcoming = load_order.into_iter();
        let mut pending: std::collections::VecDeque<(usize, ShardLoad)> = Default::default();
        let mut loaded: HashMap<usize, LoadedShard> = HashMap::new();
        let first_index = epoch * self.batches_per_epoch + (skip / self.spec.batch) as u64;
        for (i, chunk) in todo.chunks(self.spec.batch).enumerate() {
            let mut picks = Vec::with_capacity(chunk.len());
            for &id in chunk {
                let s = shard_of(id);
                while !loaded.contains_key(&s) {
                    while pending.len() <= LOOKAHEAD_SHARDS {
                        let Some(next) = upcoming.next() else { break };
                        pending.push_back((next, self.spawn_load(next, left[&next])));
                    }
                    let (ready, load) = pending
                        .pop_front()
                        .expect("shards load in the order needed");
                    let shard = load
                        .await
                        .map_err(|e| QueryError::Layout(format!("shard loader failed: {e}")))??;
                    loaded.insert(ready, shard);
                }
                picks.push((s, id));
            }
            let batch = self.assemble(&loaded, &picks, epoch, first_index + i as u64)?;
            for (s, _) in &picks {
                let shard = loaded.get_mut(s).expect("loaded");
                shard.remaining -= 1;
                if shard.remaining == 0 {
                    loaded.remove(s);
                }
            }
            // A full channel blocks here: the consumer sets the pace.
            if tokio::task::block_in_place(|| tx.send(Ok(batch))).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Copies the picked trajectories' cells, straight from the decoded Arrow buffers, into
    /// one target batch.
    fn assemble(
        &self,
        loaded: &HashMap<usize, LoadedShard>,
        picks: &[(usize, u64)],
        epoch: u64,
        index: u64,
    ) -> Result<TargetBatch> {
        let layout = &self.layout;
        let slots = layout.steps().len();
        let dim = loaded
            .values()
            .next()
            .map(|s| vector_len(&s.batches[0]))
            .unwrap_or(0);
        let b = picks.len();
        let mut start = Vec::with_capacity(b * dim);
        let mut targets = Vec::with_capacity(b * (slots - 1) * dim);
        let mut interval_starts = self
            .spec
            .teacher_forcing
            .then(|| Vec::with_capacity(b * layout.intervals() * dim));
        let (mut ids, mut seeds, mut labels) = (
            Vec::with_capacity(b),
            Vec::with_capacity(b),
            Vec::with_capacity(b),
        );
        for &(s, id) in picks {
            let shard = &loaded[&s];
            let row = (id - shard.first_id) as usize;
            let cell = |slot: usize, out: &mut Vec<f32>| {
                let (bi, r) = shard.cells[slot * shard.rows + row];
                extend_vector(&shard.batches[bi as usize], r as usize, out);
            };
            cell(0, &mut start);
            (1..slots).for_each(|slot| cell(slot, &mut targets));
            if let Some(starts) = interval_starts.as_mut() {
                // Interval i starts where the teacher's interval i-1 ended: slot i*K.
                (0..layout.intervals()).for_each(|i| cell(i * layout.k, starts));
            }
            ids.push(id);
            seeds.push(shard.seeds[row]);
            labels.push(shard.labels[row]);
        }
        let schema = target_schema(layout, dim, self.spec.teacher_forcing);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(ids)),
            Arc::new(UInt64Array::from(seeds)),
            Arc::new(Int32Array::from(labels)),
            vectors(start, dim, None),
            vectors(targets, dim, Some(slots - 1)),
        ];
        if let Some(starts) = interval_starts {
            columns.push(vectors(starts, dim, Some(layout.intervals())));
        }
        Ok(TargetBatch {
            epoch,
            index,
            layout: layout.clone(),
            batch: RecordBatch::try_new(schema, columns)?,
            dim,
        })
    }
}

fn vector_len(batch: &RecordBatch) -> usize {
    batch.column(4).as_fixed_size_list().value_length() as usize
}

/// Appends row `r` of the `x` column (f32 or f16) as f32.
fn extend_vector(batch: &RecordBatch, r: usize, out: &mut Vec<f32>) {
    let list = batch.column(4).as_fixed_size_list();
    let n = list.value_length() as usize;
    let values = list.values();
    match values.data_type() {
        DataType::Float16 => {
            let v = &values.as_primitive::<Float16Type>().values()[r * n..(r + 1) * n];
            out.extend(v.iter().map(|h| h.to_f32()));
        }
        _ => out
            .extend_from_slice(&values.as_primitive::<Float32Type>().values()[r * n..(r + 1) * n]),
    }
}

/// `values` as `[rows][dim]` vectors, or as `[rows][per_row][dim]` when `per_row` is given.
fn vectors(values: Vec<f32>, dim: usize, per_row: Option<usize>) -> ArrayRef {
    let item = Arc::new(Field::new_list_field(DataType::Float32, false));
    let inner =
        FixedSizeListArray::new(item, dim as i32, Arc::new(Float32Array::from(values)), None);
    match per_row {
        None => Arc::new(inner),
        Some(n) => {
            let field = Arc::new(Field::new_list_field(inner.data_type().clone(), false));
            Arc::new(FixedSizeListArray::new(
                field,
                n as i32,
                Arc::new(inner),
                None,
            ))
        }
    }
}

/// Reads the layout's steps of one shard with DataFusion (partition-pruned to exactly
/// those files) and indexes every (slot, row) cell.
async fn load_shard(
    ctx: &SessionContext,
    name: &str,
    steps: &[u16],
    plan: &ShardPlan,
    remaining: usize,
) -> Result<LoadedShard> {
    let slot_of: HashMap<u16, usize> = steps.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let df = ctx
        .table(name)
        .await?
        .filter(
            col(SHARD)
                .eq(lit(plan.index))
                .and(col(STEP).in_list(steps.iter().map(|&s| lit(s)).collect(), false)),
        )?
        .select_columns(&[cols::TRAJ_ID, STEP, cols::SEED, cols::LABEL, cols::X])?;
    let batches = df.collect().await?;
    let rows: usize = plan.row_groups.iter().sum();
    let mut cells = vec![(u32::MAX, u32::MAX); steps.len() * rows];
    let mut seeds = vec![0u64; rows];
    let mut labels = vec![None; rows];
    for (b, batch) in batches.iter().enumerate() {
        let ids = batch.column(0).as_primitive::<UInt64Type>();
        let step_col = batch.column(1).as_primitive::<UInt16Type>();
        let seed_col = batch.column(2).as_primitive::<UInt64Type>();
        let label_col = batch
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        for r in 0..batch.num_rows() {
            let row = ids
                .value(r)
                .checked_sub(plan.first_id)
                .map(|v| v as usize)
                .filter(|&v| v < rows);
            let (Some(row), Some(&slot)) = (row, slot_of.get(&step_col.value(r))) else {
                return Err(corrupt(
                    name,
                    plan,
                    format!(
                        "unexpected row (trajectory {}, step {})",
                        ids.value(r),
                        step_col.value(r)
                    ),
                ));
            };
            let cell = &mut cells[slot * rows + row];
            if cell.0 != u32::MAX {
                return Err(corrupt(
                    name,
                    plan,
                    format!(
                        "trajectory {} appears twice at step {}",
                        ids.value(r),
                        step_col.value(r)
                    ),
                ));
            }
            *cell = (b as u32, r as u32);
            if slot == 0 {
                seeds[row] = seed_col.value(r);
                labels[row] = label_col.is_valid(r).then(|| label_col.value(r));
            }
        }
    }
    if let Some(missing) = cells.iter().position(|c| c.0 == u32::MAX) {
        let (slot, row) = (missing / rows, missing % rows);
        return Err(corrupt(
            name,
            plan,
            format!(
                "trajectory {} has no state at step {}",
                plan.first_id + row as u64,
                steps[slot]
            ),
        ));
    }
    Ok(LoadedShard {
        batches,
        cells,
        rows,
        first_id: plan.first_id,
        seeds,
        labels,
        remaining,
    })
}

fn corrupt(name: &str, plan: &ShardPlan, detail: String) -> QueryError {
    QueryError::Dataset {
        dataset: name.to_string(),
        detail: format!("shard {}: {detail}", plan.index),
    }
}
