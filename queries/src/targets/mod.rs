//! Branch targets, streamed: for a student with N timestamps and K branches, each trajectory's
//! start state and its K (N-1) teacher targets, assembled from the step files the layout
//! selects (read through the store's checked reader and its vector fast path), in an order shuffled by a seed, in batches of B, through a bounded
//! prefetch channel fed by a background thread.
//!
//! One module per job: [`order`] (which trajectory comes when: a pure function of the
//! snapshot, seed, epoch and buffer size, so a resumed run skips to its batch without
//! reading), `load` (reading and decoding a shard's steps, columns found by name),
//! `assemble` (copying cells into a batch) and `producer` (the background thread and its
//! lookahead). Memory stays bounded by the shards the shuffle window spans.

mod assemble;
mod load;
pub(crate) mod order;
mod producer;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use bdense_store::{Dataset, schema as cols};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef, UInt64Type};

use crate::error::{QueryError, Result};
use crate::layout::StudentLayout;
use assemble::Assembler;
use load::{LoadSpec, check_files};
use order::ShardPlan;
use producer::Producer;

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
        m.require_trajectories(dataset.dir())?;
        if m.trajectories() == 0 {
            return Err(QueryError::EmptyDataset {
                dataset: dataset.dir().to_path_buf(),
            });
        }
        if spec.batch == 0 {
            return Err(QueryError::ZeroBatch);
        }
        let layout = Arc::new(StudentLayout::for_grid(&m.grid, spec.n, spec.k, spec.afs)?);
        let load = LoadSpec {
            dataset: dataset.clone(),
            name: dataset.name(),
            steps: layout.steps(),
            dim: dataset.dim(),
        };
        let plans = shard_plans(&dataset, &load.steps)?;
        let batches_per_epoch = m.trajectories().div_ceil(spec.batch as u64);
        let (tx, rx) = sync_channel(spec.prefetch.max(1));
        let producer = Producer {
            assembler: Assembler {
                layout: layout.clone(),
                teacher_forcing: spec.teacher_forcing,
                dim: load.dim,
            },
            load,
            plans,
            batch: spec.batch,
            seed: spec.seed,
            shuffle_buffer: spec.shuffle_buffer,
            epochs: spec.epochs,
            batches_per_epoch,
        };
        let worker = std::thread::Builder::new()
            .name("bdense-targets".into())
            .spawn(move || producer.run(start_batch, tx))
            .map_err(QueryError::StreamThread)?;
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

/// Every shard's plan, after checking its files hold the layout's steps (hash, rows, ids).
fn shard_plans(dataset: &Dataset, steps: &[u16]) -> Result<Vec<ShardPlan>> {
    let shards = &dataset.manifest().shards;
    let mut plans = Vec::with_capacity(shards.len());
    for shard in shards {
        check_files(dataset, shard, steps)?;
        plans.push(ShardPlan {
            index: shard.index,
            first_id: shard.first_id,
            row_groups: dataset.row_groups(shard, steps[0])?,
        });
    }
    Ok(plans)
}
