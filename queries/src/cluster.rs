//! A store's tables and vector functions across an Apache DataFusion Ballista cluster.
//!
//! The client plans a query against its [`StoreSession`](crate::StoreSession) and sends the
//! logical plan to the scheduler, which plans it physically (so opens the datasets) and sends
//! stages to the executors. [`StoreLogicalCodec`] carries the tables over that wire: a
//! dataset as its absolute directory and the snapshot the client planned against (reopened
//! there, and refused if a commit has since moved it), the in-memory `manifest` and `grid`
//! tables as Arrow IPC. Both codecs resolve the vector functions by name, so an executor
//! needs nothing registered beyond them. Every other node goes to Ballista's own codecs.
//!
//! The scheduler and the executors read the store's files at the path the client names: they
//! run on one machine, or share the filesystem at the same mount point.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use bdense_store::Dataset;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::table::StepTable;
use crate::udf;

/// The first byte of an encoded table: what follows.
const STEP_TABLE: u8 = 0;
const MEM_TABLE: u8 = 1;

/// Ballista's logical codec plus bdense's tables and functions.
#[derive(Debug, Default)]
pub struct StoreLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    /// The datasets decoded so far, by directory, each at the newest snapshot asked for:
    /// repeated queries share one handle, so each file is hashed once, not once per query.
    datasets: Mutex<HashMap<PathBuf, Dataset>>,
}

impl StoreLogicalCodec {
    /// The dataset at `dir` as of `snapshot`, from the cache or opened anew.
    fn dataset(&self, dir: &Path, snapshot: &str) -> Result<Dataset> {
        let mut cache = self.datasets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ds) = cache.get(dir)
            && ds.manifest().snapshot_hash() == snapshot
        {
            return Ok(ds.clone());
        }
        let ds = Dataset::open(dir).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let now = ds.manifest().snapshot_hash();
        if now != snapshot {
            return Err(DataFusionError::Plan(format!(
                "{}: a commit moved the dataset from snapshot {snapshot} to {now} while the \
                 query was sent; run it again",
                dir.display()
            )));
        }
        cache.insert(dir.to_path_buf(), ds.clone());
        Ok(ds)
    }
}

fn encode_step_table(table: &StepTable, buf: &mut Vec<u8>) -> Result<()> {
    let ds = table.dataset();
    let dir = std::path::absolute(ds.dir())?;
    let dir = dir.to_str().ok_or_else(|| {
        DataFusionError::Plan(format!(
            "{}: a cluster query needs a UTF-8 store path",
            dir.display()
        ))
    })?;
    let snapshot = ds.manifest().snapshot_hash();
    buf.push(STEP_TABLE);
    buf.extend_from_slice(&(snapshot.len() as u32).to_le_bytes());
    buf.extend_from_slice(snapshot.as_bytes());
    buf.extend_from_slice(dir.as_bytes());
    Ok(())
}

/// (directory, snapshot) of an encoded [`StepTable`] (the bytes after the tag).
fn decode_step_table(bytes: &[u8]) -> Result<(PathBuf, String)> {
    let corrupt = || DataFusionError::Internal("corrupt bdense table encoding".into());
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let (snapshot, dir) = rest
        .split_at_checked(u32::from_le_bytes(*len) as usize)
        .ok_or_else(corrupt)?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt());
    Ok((PathBuf::from(text(dir)?), text(snapshot)?))
}

/// Every batch of an in-memory table as one Arrow IPC stream.
fn encode_mem_table(table: &MemTable, buf: &mut Vec<u8>) -> Result<()> {
    buf.push(MEM_TABLE);
    let mut writer = StreamWriter::try_new(&mut *buf, &table.schema())?;
    for partition in &table.batches {
        let batches = partition
            .try_read()
            .map_err(|_| DataFusionError::Internal("an in-memory table is being written".into()))?;
        for batch in batches.iter() {
            writer.write(batch)?;
        }
    }
    writer.finish()?;
    Ok(())
}

fn decode_mem_table(bytes: &[u8], schema: SchemaRef) -> Result<MemTable> {
    let batches = StreamReader::try_new(bytes, None)?.collect::<Result<Vec<_>, _>>()?;
    MemTable::try_new(schema, vec![batches])
}

fn scalar_function(name: &str) -> Option<Arc<ScalarUDF>> {
    udf::scalar_functions()
        .into_iter()
        .find(|f| f.name() == name)
        .map(Arc::new)
}

fn aggregate_function(name: &str) -> Option<Arc<AggregateUDF>> {
    udf::aggregate_functions()
        .into_iter()
        .find(|f| f.name() == name)
        .map(Arc::new)
}

impl LogicalExtensionCodec for StoreLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.split_first() {
            Some((&STEP_TABLE, rest)) => {
                let (dir, snapshot) = decode_step_table(rest)?;
                // The scheduler plans the scan and ships it to executors in Ballista's
                // codec, which knows DataFusion's Parquet scan and not the store's own.
                let table = StepTable::new(&self.dataset(&dir, &snapshot)?);
                Ok(Arc::new(table.with_datafusion_scans_only()))
            }
            Some((&MEM_TABLE, rest)) => Ok(Arc::new(decode_mem_table(rest, schema)?)),
            _ => self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(table) = node.downcast_ref::<StepTable>() {
            encode_step_table(table, buf)
        } else if let Some(table) = node.downcast_ref::<MemTable>() {
            encode_mem_table(table, buf)
        } else {
            self.ballista
                .try_encode_table_provider(table_ref, node, buf)
        }
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        scalar_function(name).map_or_else(|| self.ballista.try_decode_udf(name, buf), Ok)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        aggregate_function(name).map_or_else(|| self.ballista.try_decode_udaf(name, buf), Ok)
    }
}

/// Ballista's physical codec plus bdense's functions.
#[derive(Debug, Default)]
pub struct StorePhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for StorePhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.ballista.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        scalar_function(name).map_or_else(|| self.ballista.try_decode_udf(name, buf), Ok)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        aggregate_function(name).map_or_else(|| self.ballista.try_decode_udaf(name, buf), Ok)
    }
}

#[cfg(test)]
mod tests {
    use bdense_store::synthetic::{SyntheticSpec, write_gaussian};
    use bdense_store::{Dims, Dtype, WriteOptions};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };

    use super::*;
    use crate::session::{StoreSession, config, runtime};

    fn store(dir: &Path) -> Dataset {
        let spec = SyntheticSpec {
            name: "g".into(),
            dims: Dims { c: 1, h: 2, w: 3 },
            count: 40,
            sigmas: bdense_store::Grid::edm(5).sigmas,
            rows_per_shard: 16,
            dtype: Dtype::F16,
            base_seed: 5,
            classes: 3,
            with_denoised: false,
        };
        write_gaussian(&dir.join("g"), &spec, WriteOptions::default()).unwrap()
    }

    /// A plan sent as a scheduler (logical) and an executor (physical) receive it, each
    /// decoded by a fresh codec into a context that knows none of bdense's functions or
    /// tables, answers as the client's own session does.
    #[test]
    fn plans_cross_the_wire_with_tables_and_functions() {
        let tmp = tempfile::tempdir().unwrap();
        store(tmp.path());
        // One partition on both sides: floats are then summed in the same order, so the
        // answers can be compared as text.
        let one = || SessionConfig::new().with_target_partitions(1);
        let session = StoreSession::open_in(
            tmp.path(),
            SessionContext::new_with_config(config().with_target_partitions(1)),
        )
        .unwrap();
        runtime().block_on(async {
            for query in [
                "SELECT step, avg(l2(x)) AS n, vec_avg(x) AS m FROM g WHERE step < 4 GROUP BY step ORDER BY step",
                "SELECT a.traj_id, l2_dist(a.x, b.x) FROM g a JOIN g b ON a.traj_id = b.traj_id AND b.step = a.step + 1 WHERE a.step = 0 ORDER BY 1",
                "SELECT m.dataset, m.trajectories, count(*) FROM manifest m JOIN grid USING (dataset) GROUP BY 1, 2",
            ] {
                let df = session.sql(query, false).await.unwrap();
                let plan = df.logical_plan().clone();
                let local = pretty_format_batches(&df.collect().await.unwrap()).unwrap().to_string();

                let bare = SessionContext::new_with_config(one());
                let bytes =
                    logical_plan_to_bytes_with_extension_codec(&plan, &StoreLogicalCodec::default()).unwrap();
                let plan = logical_plan_from_bytes_with_extension_codec(
                    &bytes,
                    &bare.task_ctx(),
                    &StoreLogicalCodec::default(),
                )
                .unwrap();
                let physical = bare.state().create_physical_plan(&plan).await.unwrap();
                let bytes = physical_plan_to_bytes_with_extension_codec(
                    physical,
                    &StorePhysicalCodec::default(),
                )
                .unwrap();
                let physical = physical_plan_from_bytes_with_extension_codec(
                    &bytes,
                    &SessionContext::new_with_config(one()).task_ctx(),
                    &StorePhysicalCodec::default(),
                )
                .unwrap();
                let remote = datafusion::physical_plan::collect(physical, bare.task_ctx())
                    .await
                    .unwrap();
                assert_eq!(pretty_format_batches(&remote).unwrap().to_string(), local, "{query}");
            }
        });
    }

    /// A table planned against one snapshot is refused against another, naming the dataset.
    #[test]
    fn a_moved_snapshot_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = store(tmp.path());
        let codec = StoreLogicalCodec::default();
        let table: Arc<dyn TableProvider> = Arc::new(StepTable::new(&ds));
        let mut buf = Vec::new();
        codec
            .try_encode_table_provider(&"g".into(), table.clone(), &mut buf)
            .unwrap();
        let ctx = TaskContext::default();
        let decoded = codec
            .try_decode_table_provider(&buf, &"g".into(), table.schema(), &ctx)
            .unwrap();
        assert_eq!(decoded.schema(), table.schema());

        // The snapshot hash follows the tag and its length: another one is another snapshot.
        buf[5] = if buf[5] == b'0' { b'1' } else { b'0' };
        let err = StoreLogicalCodec::default()
            .try_decode_table_provider(&buf, &"g".into(), table.schema(), &ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a commit moved the dataset"), "{err}");
        assert!(err.contains(&ds.dir().display().to_string()), "{err}");
        assert!(
            codec
                .try_decode_table_provider(&buf[..3], &"g".into(), table.schema(), &ctx)
                .is_err()
        );
    }
}
