//! A scan that reads step files through the store's reader, whose fast path decodes the state
//! vectors straight into their Arrow buffers, instead of DataFusion's Parquet scan, which
//! materialises a repetition and a definition level per float (docs/perf.md, issue 15).
//!
//! [`crate::table::StepTable`] uses it where it pays and changes no answer: the query reads a
//! vector column and filters on nothing but the vectors, `step` and `shard` (the last two
//! prune files exactly; DataFusion applies the rest above the scan). A filter on another
//! stored column keeps DataFusion's scan, which prunes row groups by their statistics and
//! decodes the vectors of matching rows only (the README's `WHERE a.traj_id < 4` reads one
//! row group of each file the manifest's id ranges leave, see `StepTable::scan`).

use std::sync::Arc;

use bdense_store::Dataset;
use datafusion::arrow::array::{
    ArrayRef, RecordBatch, RecordBatchOptions, UInt16Array, UInt32Array,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;

/// Where an output column comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A column stored in the step files.
    File(String),
    /// The partition values.
    Step,
    Shard,
}

/// One step file to read: its shard (index into the manifest's shards) and step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileRef {
    pub shard_at: usize,
    pub step: u16,
}

/// One partition of the scan: its files, read one after another on a blocking thread each.
#[derive(Debug)]
pub(crate) struct FastFiles {
    pub schema: SchemaRef,
    pub dataset: Dataset,
    pub sources: Arc<Vec<Source>>,
    pub files: Vec<FileRef>,
}

impl PartitionStream for FastFiles {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, dataset, sources) = (
            self.schema.clone(),
            self.dataset.clone(),
            self.sources.clone(),
        );
        let batches = futures::stream::iter(self.files.clone()).then(move |file| {
            let (schema, dataset, sources) = (schema.clone(), dataset.clone(), sources.clone());
            async move {
                tokio::task::spawn_blocking(move || read(&dataset, &schema, &sources, file))
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

/// One step file's rows as `schema`'s columns.
fn read(
    dataset: &Dataset,
    schema: &SchemaRef,
    sources: &[Source],
    file: FileRef,
) -> Result<RecordBatch> {
    let stored: Vec<&str> = sources
        .iter()
        .filter_map(|s| match s {
            Source::File(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let shard = &dataset.shards()[file.shard_at];
    let batch = dataset
        .read_step_columns(shard, file.step, Some(&stored), None)
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .batch;
    let rows = batch.num_rows();
    let columns = sources
        .iter()
        .map(|s| match s {
            Source::File(name) => batch.column_by_name(name).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("step file lacks decoded column {name}"))
            }),
            Source::Step => Ok(Arc::new(UInt16Array::from(vec![file.step; rows])) as ArrayRef),
            Source::Shard => Ok(Arc::new(UInt32Array::from(vec![shard.index; rows])) as ArrayRef),
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}
