//! A dataset as a DataFusion table: exactly the files its committed manifest names (never
//! stray files), with `step` and `shard` as partition columns so filters on them prune files
//! before any is opened; filters on `traj_id` prune whole shards by the manifest's id ranges
//! the same way. Every file a scan will read is first checked against the manifest
//! (size, content hash, rows, trajectory ids), once per session while it stays unchanged: a
//! damaged shard is an error naming the file, never numbers that are silently wrong. Once
//! checked, the files' row count and id, step and shard ranges are given to DataFusion as
//! exact statistics from the manifest, so `count(*)` and those `min`/`max` open no file.

use std::sync::Arc;

use async_trait::async_trait;
use bdense_store::{Dataset, FileEntry, ShardEntry, schema as cols};
use datafusion::arrow::array::{ArrayRef, UInt16Array, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{
    Column, ColumnStatistics, DFSchema, DataFusionError, Result, ScalarValue, Statistics,
    project_schema,
};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};

use crate::fast_scan::{FastFiles, FileRef, Source};

pub const STEP: &str = "step";
pub const SHARD: &str = "shard";
const PARTITION_COLS: [&str; 2] = [STEP, SHARD];

#[derive(Debug)]
struct StepFile {
    location: ObjectPath,
    bytes: u64,
    step: u16,
    shard: u32,
    /// Where the file's entry sits in the manifest: `shards[at.0].files[at.1]`.
    at: (usize, usize),
}

#[derive(Debug)]
pub struct StepTable {
    schema: TableSchema,
    files: Vec<StepFile>,
    dataset: Dataset,
    /// The object store DataFusion reads the files from (registered with the session's
    /// runtime under this URL).
    store_url: ObjectStoreUrl,
    /// Whether scans of vector columns may read through the store's fast decoder
    /// ([`crate::fast_scan`]); off where the plan must travel to a cluster, whose codec knows
    /// DataFusion's own scans only.
    fast_scan: bool,
}

impl StepTable {
    pub fn new(dataset: &Dataset) -> StepTable {
        let partition: Vec<FieldRef> = vec![
            Arc::new(Field::new(STEP, DataType::UInt16, false)),
            Arc::new(Field::new(SHARD, DataType::UInt32, false)),
        ];
        let files = dataset
            .shards()
            .iter()
            .enumerate()
            .flat_map(|(s, shard)| {
                shard.files.iter().enumerate().map(move |(i, f)| StepFile {
                    location: location(dataset, f),
                    bytes: f.bytes,
                    step: f.step,
                    shard: shard.index,
                    at: (s, i),
                })
            })
            .collect();
        StepTable {
            schema: TableSchema::builder(dataset.schema())
                .with_table_partition_cols(partition)
                .build(),
            files,
            dataset: dataset.clone(),
            store_url: store_url(dataset),
            fast_scan: true,
        }
    }

    /// The table with every scan through DataFusion's Parquet reader (for plans that are
    /// serialised to a cluster).
    pub fn with_datafusion_scans_only(mut self) -> StepTable {
        self.fast_scan = false;
        self
    }

    /// The store's fast decoder over `files` for the columns `projection` selects.
    fn fast_plan(
        &self,
        projection: &[usize],
        files: &[&StepFile],
        partitions: usize,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.schema.table_schema();
        let schema = Arc::new(table.project(projection)?);
        let sources: Vec<Source> = projection
            .iter()
            .map(|&i| match table.field(i).name().as_str() {
                STEP => Source::Step,
                SHARD => Source::Shard,
                name => Source::File(name.to_string()),
            })
            .collect();
        let sources = Arc::new(sources);
        let mut groups: Vec<Vec<FileRef>> = vec![Vec::new(); partitions];
        for (i, f) in files.iter().enumerate() {
            groups[i % partitions].push(FileRef {
                shard_at: f.at.0,
                step: f.step,
            });
        }
        let streams: Vec<Arc<dyn PartitionStream>> = groups
            .into_iter()
            .map(|files| {
                Arc::new(FastFiles {
                    schema: schema.clone(),
                    dataset: self.dataset.clone(),
                    sources: sources.clone(),
                    files,
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        let exec = StreamingTableExec::try_new(
            schema,
            streams,
            None,
            Vec::<LexOrdering>::new(),
            false,
            limit,
        )?;
        Ok(Arc::new(exec))
    }

    /// The dataset (at the snapshot it was opened at) this table reads.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The manifest's shard and file entry of `file`.
    fn entry(&self, file: &StepFile) -> (&ShardEntry, &FileEntry) {
        let shard = &self.dataset.shards()[file.at.0];
        (shard, &shard.files[file.at.1])
    }

    /// Checks a file against the manifest before a scan reads it (once per dataset handle
    /// while its size and version stay the same). With `content`, its hash too on object
    /// storage, where the check reads only the footer: DataFusion's scan fetches byte ranges,
    /// so nothing else would hash the file.
    fn verify(&self, file: &StepFile, content: bool) -> Result<()> {
        let (shard, entry) = self.entry(file);
        match content {
            true => self.dataset.check_file_content(shard, entry),
            // The store's reader hashes a file on its first full read.
            false => self.dataset.check_file(shard, entry),
        }
        .map(|_| ())
        .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// What the manifest says exactly of `files` (each just checked against it: size, hash,
    /// rows and ids): their row count and the range of `traj_id`, `step` and `shard`.
    /// DataFusion answers `count(*)` and `min`/`max` of those columns from this without
    /// opening a file, where it opened every file's footer and read every id (docs/perf.md).
    fn statistics(&self, files: &[&StepFile]) -> Statistics {
        let schema = self.schema.table_schema();
        let mut stats = Statistics::new_unknown(schema);
        let shard = |f: &StepFile| &self.dataset.shards()[f.at.0];
        let rows: u64 = files.iter().map(|f| shard(f).rows).sum();
        stats.num_rows = Precision::Exact(rows as usize);
        let filled: Vec<&&StepFile> = files.iter().filter(|f| shard(f).rows > 0).collect();
        let range = |key: &dyn Fn(&StepFile) -> (ScalarValue, ScalarValue)| {
            let keys: Vec<(ScalarValue, ScalarValue)> = filled.iter().map(|f| key(f)).collect();
            let lo = keys
                .iter()
                .map(|k| k.0.clone())
                .min_by(|a, b| a.partial_cmp(b).unwrap());
            let hi = keys
                .iter()
                .map(|k| k.1.clone())
                .max_by(|a, b| a.partial_cmp(b).unwrap());
            let mut c = ColumnStatistics::new_unknown();
            c.null_count = Precision::Exact(0);
            if let (Some(lo), Some(hi)) = (lo, hi) {
                (c.min_value, c.max_value) = (Precision::Exact(lo), Precision::Exact(hi));
            }
            c
        };
        for (i, field) in schema.fields().iter().enumerate() {
            let column = match field.name().as_str() {
                cols::TRAJ_ID => range(&|f| {
                    let r = shard(f).id_range();
                    (ScalarValue::from(r.start), ScalarValue::from(r.end - 1))
                }),
                STEP => range(&|f| (ScalarValue::from(f.step), ScalarValue::from(f.step))),
                SHARD => range(&|f| (ScalarValue::from(f.shard), ScalarValue::from(f.shard))),
                _ => continue,
            };
            stats.column_statistics[i] = column;
        }
        stats
    }

    /// The files a scan with `filters` reads, as DataFusion's partitioned files: those whose
    /// `step` and `shard` pass the partition filters (evaluated exactly), then those the
    /// manifest's id ranges do not rule out.
    fn files_to_read(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Result<(Vec<&StepFile>, Vec<PartitionedFile>)> {
        let partition_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| expr_applicable_for_cols(&PARTITION_COLS, f))
            .cloned()
            .collect();
        let partition_schema = Self::partition_schema()?;
        let mut files = Vec::new();
        let mut partitioned = Vec::new();
        for f in &self.files {
            let mut pf = PartitionedFile::new(String::new(), f.bytes);
            pf.object_meta.location = f.location.clone();
            let pf = pf.with_partition_values(vec![
                ScalarValue::UInt16(Some(f.step)),
                ScalarValue::UInt32(Some(f.shard)),
            ]);
            if let Some(pf) = filter_partitioned_file(pf, &partition_filters, &partition_schema)? {
                files.push(f);
                partitioned.push(pf);
            }
        }
        let keep = self.prune_by_manifest(state, filters, &files);
        Ok(files
            .into_iter()
            .zip(partitioned)
            .zip(keep)
            .filter_map(|(pair, keep)| keep.then_some(pair))
            .unzip())
    }

    /// Which of `files` may hold rows that pass `filters`, judged by the manifest's id, step
    /// and shard ranges, so a filter such as `traj_id < 4` leaves out whole shards before any
    /// file is checked or opened (DataFusion's scan would open every file's footer to learn
    /// what the manifest already says). A filter the pruning cannot read keeps every file.
    fn prune_by_manifest(
        &self,
        state: &dyn Session,
        filters: &[Expr],
        files: &[&StepFile],
    ) -> Vec<bool> {
        let keep_all = vec![true; files.len()];
        let Some(filter) = conjunction(filters.iter().cloned()) else {
            return keep_all;
        };
        let table = self.schema.table_schema();
        let pruning = DFSchema::try_from(table.as_ref().clone())
            .and_then(|schema| state.create_physical_expr(filter, &schema))
            .and_then(|expr| {
                PruningPredicateBuilder::new()
                    .with_file_schema(table.clone())
                    .try_build(expr)
            });
        let ranges = ManifestRanges {
            dataset: &self.dataset,
            files,
        };
        match pruning.and_then(|p| p.prune(&ranges)) {
            Ok(keep) => keep,
            Err(_) => keep_all,
        }
    }

    fn partition_schema() -> Result<DFSchema> {
        DFSchema::from_unqualified_fields(
            vec![
                Field::new(STEP, DataType::UInt16, true),
                Field::new(SHARD, DataType::UInt32, true),
            ]
            .into(),
            Default::default(),
        )
    }
}

/// The manifest's exact ranges of each file's `traj_id`, `step` and `shard` (every file of
/// a shard holds the shard's ids, sorted and contiguous), as DataFusion's pruning asks them.
struct ManifestRanges<'a> {
    dataset: &'a Dataset,
    files: &'a [&'a StepFile],
}

impl ManifestRanges<'_> {
    fn shard(&self, file: &StepFile) -> &ShardEntry {
        &self.dataset.shards()[file.at.0]
    }

    /// Every file's least (or, with `max`, greatest) value of `column`, for the columns the
    /// manifest knows; `None` for the others. An empty shard's ids have no range: unknown (null), so its files are never pruned by
    /// them.
    fn column(&self, column: &Column, max: bool) -> Option<ArrayRef> {
        let array: ArrayRef = match column.name.as_str() {
            cols::TRAJ_ID => Arc::new(
                self.files
                    .iter()
                    .map(|f| {
                        let ids = self.shard(f).id_range();
                        (!ids.is_empty()).then(|| if max { ids.end - 1 } else { ids.start })
                    })
                    .collect::<UInt64Array>(),
            ),
            STEP => Arc::new(self.files.iter().map(|f| f.step).collect::<UInt16Array>()),
            SHARD => Arc::new(self.files.iter().map(|f| f.shard).collect::<UInt32Array>()),
            _ => return None,
        };
        Some(array)
    }
}

impl PruningStatistics for ManifestRanges<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column, false)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column, true)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column, false)?;
        Some(Arc::new(UInt64Array::from(vec![0; self.files.len()])))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let rows = self.files.iter().map(|f| self.shard(f).rows);
        Some(Arc::new(rows.collect::<UInt64Array>()))
    }

    #[allow(clippy::mutable_key_type)] // the trait's signature
    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<datafusion::arrow::array::BooleanArray> {
        None
    }
}

/// The object-store location of a step file: its key on object storage; for a local file,
/// built from the absolute path (not from a string, which `object_store` would
/// percent-encode a second time), so a store path holding `ü`, `%`, `#` or `?` names the file
/// it should.
fn location(dataset: &Dataset, file: &FileEntry) -> ObjectPath {
    if let Some(remote) = dataset.backend().object_dir() {
        return remote.object_path(&file.path);
    }
    let path = dataset.file_path(file);
    let absolute = std::path::absolute(&path).unwrap_or(path);
    ObjectPath::from_absolute_path(&absolute)
        .unwrap_or_else(|_| ObjectPath::from(absolute.to_string_lossy().as_ref()))
}

/// The URL DataFusion knows the dataset's object store by: `s3://BUCKET`, or the local file
/// system.
pub(crate) fn store_url(dataset: &Dataset) -> ObjectStoreUrl {
    dataset
        .backend()
        .object_dir()
        .and_then(|remote| ObjectStoreUrl::parse(format!("s3://{}", remote.bucket())).ok())
        .unwrap_or_else(ObjectStoreUrl::local_filesystem)
}

#[async_trait]
impl TableProvider for StepTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.schema.table_schema())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if expr_applicable_for_cols(&PARTITION_COLS, f) {
                    // Guaranteed by pruning files in `scan`.
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (to_check, kept) = self.files_to_read(state, filters)?;
        let table = self.schema.table_schema();
        let projected: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..table.fields().len()).collect());
        let vector = |name: &str| [cols::X, cols::DENOISED].contains(&name);
        let reads_vectors = projected.iter().any(|&i| vector(table.field(i).name()));
        // A filter on another stored column (ids, seeds, labels) is left to DataFusion's
        // scan, which skips row groups by their statistics; the vectors have none.
        let filters_rows = filters.iter().any(|f| {
            f.column_refs()
                .iter()
                .any(|c| !vector(&c.name) && !PARTITION_COLS.contains(&c.name.as_str()))
        });
        let fast = self.fast_scan && reads_vectors && !filters_rows;
        // Hashing is most of a first query's time: on every core, the first problem (in the
        // manifest's order) reported. DataFusion's scan fetches byte ranges, so its files are
        // hashed here even on object storage; the fast scan reads (and hashes) whole files.
        bdense_store::parallel::map_on_cores(&to_check, |f| self.verify(f, !fast))
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        if kept.is_empty() {
            return Ok(Arc::new(EmptyExec::new(project_schema(
                &self.schema(),
                projection,
            )?)));
        }
        let groups = state.config().target_partitions().clamp(1, kept.len());
        if fast {
            return self.fast_plan(&projected, &to_check, groups, limit);
        }
        let statistics = self.statistics(&to_check);
        let mut grouped: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (i, pf) in kept.into_iter().enumerate() {
            grouped[i % groups].push(pf);
        }
        let source = Arc::new(
            ParquetSource::new(self.schema.clone())
                .with_table_parquet_options(state.table_options().parquet.clone()),
        );
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(grouped.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .with_statistics(statistics)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
