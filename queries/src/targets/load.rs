//! Loading and decoding: a shard's selected step files read through the store's reader (each
//! file checked against the manifest, its state vectors decoded by the store's fast path
//! straight into Arrow buffers), each column found by name, every (slot, row) cell indexed.
//!
//! The files are read directly rather than through a DataFusion scan: the scan's Parquet
//! decoder materialises a repetition and a definition level per float of the `x` column and
//! held the stream to a tenth of the raw-file ceiling (docs/perf.md, issue 15).

use std::collections::HashMap;

use bdense_store::{Dataset, ShardEntry, schema as cols};
use datafusion::arrow::array::{Array, AsArray, PrimitiveArray, RecordBatch};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float16Type, Float32Type, Int32Type, UInt64Type,
};
use half::f16;

use super::order::ShardPlan;
use crate::error::{QueryError, Result, RowProblem};

/// A missing or damaged file is named now, before training starts, not deep inside a query
/// later (the check is remembered, so the scans do not hash the files again).
pub(crate) fn check_files(dataset: &Dataset, shard: &ShardEntry, steps: &[u16]) -> Result<()> {
    bdense_store::parallel::map_on_cores(steps, |&step| {
        let entry = dataset.file(shard, step)?;
        if dataset.backend().stat(&entry.path)?.is_none() {
            return Err(QueryError::MissingStepFile {
                dataset: dataset.dir().to_path_buf(),
                path: dataset.file_path(entry),
            });
        }
        dataset.check_file(shard, entry)?;
        Ok(())
    })
    .into_iter()
    .collect()
}

/// One decoded batch's states, typed once so assembly copies slices without looking anything up.
pub(crate) enum States {
    F32(ScalarBuffer<f32>),
    F16(ScalarBuffer<f16>),
}

impl States {
    /// Appends state `r` (`dim` values) as f32.
    pub fn extend(&self, r: usize, dim: usize, out: &mut Vec<f32>) {
        match self {
            States::F32(v) => out.extend_from_slice(&v[r * dim..(r + 1) * dim]),
            States::F16(v) => out.extend(v[r * dim..(r + 1) * dim].iter().map(|h| h.to_f32())),
        }
    }
}

/// A shard's selected steps, decoded: their states plus where each (slot, row) lives in them.
pub(crate) struct LoadedShard {
    /// One entry per decoded Arrow batch.
    pub states: Vec<States>,
    /// `cells[slot * rows + row] = (batch, row in batch)`.
    pub cells: Vec<(u32, u32)>,
    pub rows: usize,
    pub first_id: u64,
    pub seeds: Vec<u64>,
    pub labels: Vec<Option<i32>>,
    /// Rows this epoch still emits from this shard.
    pub remaining: usize,
}

impl LoadedShard {
    /// Appends trajectory `id`'s state at `slot`.
    pub fn extend(&self, id: u64, slot: usize, dim: usize, out: &mut Vec<f32>) {
        let row = (id - self.first_id) as usize;
        let (b, r) = self.cells[slot * self.rows + row];
        self.states[b as usize].extend(r as usize, dim, out);
    }
}

/// What a loader needs to know about the dataset, shared by every shard it loads.
#[derive(Clone)]
pub(crate) struct LoadSpec {
    pub dataset: Dataset,
    /// The dataset's name, for errors.
    pub name: String,
    pub steps: Vec<u16>,
    /// Values per state (C x H x W).
    pub dim: usize,
}

/// Reads `plan`'s shard at `spec.steps` and indexes every (slot, row) cell. Blocking: CPU
/// work (hashing and decoding), run on a blocking thread by the producer.
pub(crate) fn load_shard(
    spec: &LoadSpec,
    plan: &ShardPlan,
    remaining: usize,
) -> Result<LoadedShard> {
    let ds = &spec.dataset;
    let shard = ds
        .shards()
        .iter()
        .find(|s| s.index == plan.index)
        .ok_or_else(|| QueryError::Dataset {
            dataset: spec.name.clone(),
            detail: format!("shard {} is not in the manifest", plan.index),
        })?;
    let mut index = CellIndex::new(spec, plan);
    let mut states = Vec::with_capacity(spec.steps.len());
    for (b, &step) in spec.steps.iter().enumerate() {
        let columns: &[&str] = if b == 0 { &FIRST_SLOT } else { &OTHER_SLOTS };
        let batch = ds
            .read_step_columns(shard, step, Some(columns), None)?
            .batch;
        index.add(b as u32, step, &batch)?;
        states.push(states_of(spec, &batch)?);
    }
    index.finish(states, remaining)
}

/// The columns a shard load reads from its first slot's file: seeds and labels are taken
/// from there, so the other slots' files skip decoding them.
const FIRST_SLOT: [&str; 4] = [cols::TRAJ_ID, cols::SEED, cols::LABEL, cols::X];
const OTHER_SLOTS: [&str; 2] = [cols::TRAJ_ID, cols::X];

/// Where each (slot, row) cell of one shard lives, filled batch by batch.
struct CellIndex<'a> {
    spec: &'a LoadSpec,
    plan: &'a ShardPlan,
    slot_of: HashMap<u16, usize>,
    rows: usize,
    cells: Vec<(u32, u32)>,
    seeds: Vec<u64>,
    labels: Vec<Option<i32>>,
}

impl<'a> CellIndex<'a> {
    fn new(spec: &'a LoadSpec, plan: &'a ShardPlan) -> Self {
        let rows = plan.rows();
        CellIndex {
            spec,
            plan,
            slot_of: spec
                .steps
                .iter()
                .enumerate()
                .map(|(i, &s)| (s, i))
                .collect(),
            rows,
            cells: vec![(u32::MAX, u32::MAX); spec.steps.len() * rows],
            seeds: vec![0u64; rows],
            labels: vec![None; rows],
        }
    }

    /// Indexes every row of decoded batch `b`, the shard's file for `step`.
    fn add(&mut self, b: u32, step: u16, batch: &RecordBatch) -> Result<()> {
        let ids = column::<UInt64Type>(&self.spec.name, batch, cols::TRAJ_ID)?;
        let first = match b {
            0 => Some((
                column::<UInt64Type>(&self.spec.name, batch, cols::SEED)?,
                column::<Int32Type>(&self.spec.name, batch, cols::LABEL)?,
            )),
            _ => None,
        };
        for r in 0..batch.num_rows() {
            let id = ids.value(r);
            let row = id
                .checked_sub(self.plan.first_id)
                .map(|v| v as usize)
                .filter(|&v| v < self.rows);
            let (Some(row), Some(&slot)) = (row, self.slot_of.get(&step)) else {
                return Err(self.problem(RowProblem::Unexpected, id, step));
            };
            let cell = &mut self.cells[slot * self.rows + row];
            if cell.0 != u32::MAX {
                return Err(self.problem(RowProblem::Duplicate, id, step));
            }
            *cell = (b, r as u32);
            if let Some((seeds, labels)) = first {
                self.seeds[row] = seeds.value(r);
                self.labels[row] = labels.is_valid(r).then(|| labels.value(r));
            }
        }
        Ok(())
    }

    /// The loaded shard, once every cell has a state.
    fn finish(self, states: Vec<States>, remaining: usize) -> Result<LoadedShard> {
        if let Some(missing) = self.cells.iter().position(|c| c.0 == u32::MAX) {
            let (slot, row) = (missing / self.rows, missing % self.rows);
            let id = self.plan.first_id + row as u64;
            return Err(self.problem(RowProblem::Missing, id, self.spec.steps[slot]));
        }
        Ok(LoadedShard {
            states,
            cells: self.cells,
            rows: self.rows,
            first_id: self.plan.first_id,
            seeds: self.seeds,
            labels: self.labels,
            remaining,
        })
    }

    fn problem(&self, problem: RowProblem, traj_id: u64, step: u16) -> QueryError {
        QueryError::ShardRows {
            dataset: self.spec.name.clone(),
            shard: self.plan.index,
            problem,
            traj_id,
            step,
        }
    }
}

/// Column `name` of `batch` as `T`, or an error naming the column.
fn column<'b, T: ArrowPrimitiveType>(
    dataset: &str,
    batch: &'b RecordBatch,
    name: &'static str,
) -> Result<&'b PrimitiveArray<T>> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or_else(|| column_error(dataset, name, T::DATA_TYPE))
}

/// The `x` column's values, typed, after checking each state holds `spec.dim` values.
fn states_of(spec: &LoadSpec, batch: &RecordBatch) -> Result<States> {
    let list = batch
        .column_by_name(cols::X)
        .and_then(|c| c.as_fixed_size_list_opt())
        .filter(|l| l.value_length() as usize == spec.dim)
        .ok_or_else(|| column_error(&spec.name, cols::X, state_type(spec.dim)))?;
    let values = list.values();
    if let Some(v) = values.as_primitive_opt::<Float32Type>() {
        Ok(States::F32(v.values().clone()))
    } else if let Some(v) = values.as_primitive_opt::<Float16Type>() {
        Ok(States::F16(v.values().clone()))
    } else {
        Err(column_error(&spec.name, cols::X, state_type(spec.dim)))
    }
}

fn state_type(dim: usize) -> DataType {
    DataType::new_fixed_size_list(DataType::Float32, dim as i32, false)
}

fn column_error(dataset: &str, column: &'static str, expected: DataType) -> QueryError {
    QueryError::Column {
        dataset: dataset.to_string(),
        column,
        expected: expected.to_string(),
    }
}
