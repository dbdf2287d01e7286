//! Assembly: the picked trajectories' cells, copied straight from the decoded Arrow buffers
//! into one target batch.

use std::collections::HashMap;
use std::sync::Arc;

use bdense_store::StudentLayout;
use datafusion::arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field};

use super::load::LoadedShard;
use super::{TargetBatch, target_schema};
use crate::error::Result;

/// What every batch of one stream shares.
pub(crate) struct Assembler {
    pub layout: Arc<StudentLayout>,
    pub teacher_forcing: bool,
    /// Values per state (C x H x W).
    pub dim: usize,
}

/// Columns of one batch, filled trajectory by trajectory.
struct Columns {
    ids: Vec<u64>,
    seeds: Vec<u64>,
    labels: Vec<Option<i32>>,
    start: Vec<f32>,
    targets: Vec<f32>,
    interval_starts: Option<Vec<f32>>,
}

impl Assembler {
    /// The batch of `picks` (shard, trajectory id), each shard among `loaded`.
    pub fn assemble(
        &self,
        loaded: &HashMap<usize, LoadedShard>,
        picks: &[(usize, u64)],
        epoch: u64,
        index: u64,
    ) -> Result<TargetBatch> {
        let mut c = self.columns(picks.len());
        for &(s, id) in picks {
            self.push(&loaded[&s], id, &mut c);
        }
        self.finish(c, epoch, index)
    }

    fn columns(&self, b: usize) -> Columns {
        let (dim, l) = (self.dim, &self.layout);
        Columns {
            ids: Vec::with_capacity(b),
            seeds: Vec::with_capacity(b),
            labels: Vec::with_capacity(b),
            start: Vec::with_capacity(b * dim),
            targets: Vec::with_capacity(b * l.intervals() * l.k * dim),
            interval_starts: self
                .teacher_forcing
                .then(|| Vec::with_capacity(b * l.intervals() * dim)),
        }
    }

    /// Appends trajectory `id` of `shard`: its start, every target slot, and for teacher
    /// forcing each interval's start.
    fn push(&self, shard: &LoadedShard, id: u64, c: &mut Columns) {
        let (dim, l) = (self.dim, &self.layout);
        let slots = l.intervals() * l.k + 1;
        shard.extend(id, 0, dim, &mut c.start);
        (1..slots).for_each(|slot| shard.extend(id, slot, dim, &mut c.targets));
        if let Some(starts) = c.interval_starts.as_mut() {
            // Interval i starts where the teacher's interval i-1 ended: slot i*K.
            (0..l.intervals()).for_each(|i| shard.extend(id, i * l.k, dim, starts));
        }
        let row = (id - shard.first_id) as usize;
        c.ids.push(id);
        c.seeds.push(shard.seeds[row]);
        c.labels.push(shard.labels[row]);
    }

    fn finish(&self, c: Columns, epoch: u64, index: u64) -> Result<TargetBatch> {
        let (dim, l) = (self.dim, &self.layout);
        let schema = target_schema(l, dim, self.teacher_forcing);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(c.ids)),
            Arc::new(UInt64Array::from(c.seeds)),
            Arc::new(Int32Array::from(c.labels)),
            vectors(c.start, dim, None),
            vectors(c.targets, dim, Some(l.intervals() * l.k)),
        ];
        if let Some(starts) = c.interval_starts {
            columns.push(vectors(starts, dim, Some(l.intervals())));
        }
        Ok(TargetBatch {
            epoch,
            index,
            layout: l.clone(),
            batch: RecordBatch::try_new(schema, columns)?,
            dim,
        })
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
