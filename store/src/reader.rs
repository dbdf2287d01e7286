//! Reads a committed snapshot: only files the manifest names, checked against its schema.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, RecordBatch, RecordBatchOptions, new_empty_array,
};
use arrow::datatypes::{Float16Type, Float32Type, Int32Type, SchemaRef, UInt64Type};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};

use crate::backend::Backend;
use crate::decode::FastColumn;
use crate::error::{Result, StoreError};
use crate::integrity::{self, VerifiedFiles};
use crate::manifest::{FileEntry, Manifest, ShardEntry};
use crate::schema;

/// A state vector column as f32: borrowed straight from the Arrow buffer when stored as f32,
/// converted when stored as f16.
pub type StateView<'a> = Cow<'a, [f32]>;

/// An open dataset: where it is and the manifest snapshot read at open time.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Its local directory, or its URL on object storage.
    dir: PathBuf,
    backend: Arc<dyn Backend>,
    manifest: Manifest,
    schema: SchemaRef,
    /// Files checked by [`Dataset::check_file`], shared by every clone.
    verified: Arc<VerifiedFiles>,
    /// Decode the vector columns with [`crate::decode`] where it recognises them (the
    /// default); off, everything goes through arrow-rs' general reader (benchmarks compare).
    fast_decode: bool,
}

impl Dataset {
    /// Opens the dataset at `dir`: a path, `file://PATH` or `s3://BUCKET/PREFIX/NAME`.
    pub fn open(dir: &Path) -> Result<Dataset> {
        let backend = crate::backend::open(dir)?;
        let manifest = crate::manifest::load_latest(backend.as_ref())?.1;
        let schema = schema::manifest_schema(&manifest);
        Ok(Dataset {
            dir: backend.locate(""),
            backend,
            manifest,
            schema,
            verified: Arc::default(),
            fast_decode: true,
        })
    }

    /// This dataset with the vector-column fast path on (the default) or off.
    pub fn with_fast_decode(mut self, on: bool) -> Dataset {
        self.fast_decode = on;
        self
    }

    /// Checks `entry` of `shard` against the manifest (size, content hash, rows, trajectory
    /// ids) for a reader that opens the file itself (DataFusion); hashed once while the file
    /// stays unchanged, however many clones of this dataset ask. Returns the file's path.
    pub fn check_file(&self, shard: &ShardEntry, entry: &FileEntry) -> Result<PathBuf> {
        self.verified.check(self.backend.as_ref(), shard, entry)
    }

    /// [`Dataset::check_file`] with the content hash on object storage too (where
    /// `check_file` reads the footer only), for readers that never fetch whole files.
    pub fn check_file_content(&self, shard: &ShardEntry, entry: &FileEntry) -> Result<PathBuf> {
        self.verified
            .check_content(self.backend.as_ref(), shard, entry)
    }

    /// The dataset's local directory, or its URL on object storage.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where its files live.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The dataset's name (its SQL table name): its directory's name, or the manifest's when
    /// the path has no final component.
    pub fn name(&self) -> String {
        crate::dataset_name(&self.dir).unwrap_or_else(|| self.manifest.name.clone())
    }

    /// Schema of every step file (without the `step` partition column).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn shards(&self) -> &[ShardEntry] {
        &self.manifest.shards
    }

    pub fn dim(&self) -> usize {
        self.manifest.dims.len()
    }

    /// The path (or URL) of a file the manifest names.
    pub fn file_path(&self, file: &FileEntry) -> PathBuf {
        self.backend.locate(&file.path)
    }

    /// The manifest entry of `shard`'s file for `step`; an error if the manifest lacks it.
    pub fn file<'a>(&self, shard: &'a ShardEntry, step: u16) -> Result<&'a FileEntry> {
        shard.file(step).ok_or_else(|| {
            StoreError::invalid(
                &self.dir,
                format!("shard {} has no file for step {step}", shard.index),
            )
        })
    }

    /// All columns of `shard` at `step`, as one record batch.
    pub fn read_step(&self, shard: &ShardEntry, step: u16) -> Result<StepBatch> {
        self.read_step_columns(shard, step, None, None)
    }

    /// Selected columns (`None`: all) and row groups (`None`: all) of one step file, after
    /// checking the file against the manifest (size, content hash, rows, trajectory ids; the
    /// hash once per handle, and its clones, while the file's size and modification time stay
    /// unchanged).
    pub fn read_step_columns(
        &self,
        shard: &ShardEntry,
        step: u16,
        columns: Option<&[&str]>,
        row_groups: Option<Vec<usize>>,
    ) -> Result<StepBatch> {
        let (path, bytes) = self
            .verified
            .read(self.backend(), self.file(shard, step)?)?;
        let whole = row_groups.is_none();
        let batch = self.decode(path, bytes, shard, step, columns, row_groups)?;
        check_ids(&batch, shard, whole)?;
        Ok(batch)
    }

    /// Decodes one step file's bytes, checking only what decoding needs (schema, row counts):
    /// the shared core of [`Dataset::read_step_columns`] and `verify` (which checks ids
    /// itself, to report more than the first problem).
    pub(crate) fn decode(
        &self,
        path: PathBuf,
        bytes: Bytes,
        shard: &ShardEntry,
        step: u16,
        columns: Option<&[&str]>,
        row_groups: Option<Vec<usize>>,
    ) -> Result<StepBatch> {
        let at = path.clone();
        integrity::guard(&at, || {
            self.decode_unguarded(path, bytes, shard, step, columns, row_groups)
        })
    }

    fn decode_unguarded(
        &self,
        path: PathBuf,
        bytes: Bytes,
        shard: &ShardEntry,
        step: u16,
        columns: Option<&[&str]>,
        row_groups: Option<Vec<usize>>,
    ) -> Result<StepBatch> {
        let reader_meta = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::default())
            .map_err(|e| StoreError::parquet(&path, e))?;
        if let Some(problem) = schema::schema_mismatch(&self.schema, reader_meta.schema()) {
            return Err(StoreError::schema(&path, problem));
        }
        let meta = reader_meta.metadata().clone();
        let row_groups_given = row_groups.is_some();
        let groups: Vec<usize> = match row_groups {
            Some(groups) => groups,
            None => (0..meta.num_row_groups()).collect(),
        };
        let rows = match row_groups_given {
            true => groups
                .iter()
                .map(|&g| {
                    (g < meta.num_row_groups())
                        .then(|| meta.row_group(g).num_rows() as usize)
                        .ok_or_else(|| StoreError::invalid(&path, format!("has no row group {g}")))
                })
                .sum::<Result<usize>>()?,
            false => shard.rows as usize,
        };
        // Root columns to return, in the file's order (what a projection mask gives).
        let selected: Vec<usize> = match columns {
            Some(cols) => {
                let mut indices = cols
                    .iter()
                    .map(|c| {
                        self.schema
                            .index_of(c)
                            .map_err(|_| StoreError::schema(&path, format!("no column {c}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                indices.sort_unstable();
                indices.dedup();
                indices
            }
            None => (0..self.schema.fields().len()).collect(),
        };
        // The vector columns through the fast path where it recognises them, the rest (and
        // whatever it declines) through the general reader.
        let mut arrays: Vec<Option<ArrayRef>> = vec![None; selected.len()];
        if self.fast_decode {
            for (slot, &root) in arrays.iter_mut().zip(&selected) {
                if let Some(plan) = FastColumn::recognise(&meta, reader_meta.schema(), root) {
                    *slot = plan.decode(&path, &bytes, &meta, &groups)?;
                }
            }
        }
        let general: Vec<usize> = selected
            .iter()
            .zip(&arrays)
            .filter(|(_, a)| a.is_none())
            .map(|(&root, _)| root)
            .collect();
        if !general.is_empty() {
            let mask = ProjectionMask::roots(reader_meta.parquet_schema(), general.iter().copied());
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, reader_meta.clone())
                    .with_batch_size(rows.max(1))
                    .with_projection(mask)
                    .with_row_groups(groups)
                    .build()
                    .map_err(|e| StoreError::parquet(&path, e))?;
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|source| StoreError::Arrow {
                    path: path.clone(),
                    source,
                })?;
            let mut decoded =
                general
                    .iter()
                    .enumerate()
                    .map(|(i, &root)| match batches.as_slice() {
                        [one] => Ok(one.column(i).clone()),
                        [] => Ok(new_empty_array(
                            reader_meta.schema().field(root).data_type(),
                        )),
                        _ => {
                            let parts: Vec<&dyn Array> =
                                batches.iter().map(|b| b.column(i).as_ref()).collect();
                            arrow::compute::concat(&parts)
                        }
                    });
            for slot in arrays.iter_mut().filter(|a| a.is_none()) {
                let array = decoded.next().unwrap_or_else(|| {
                    Err(arrow::error::ArrowError::InvalidArgumentError(
                        "no batch".into(),
                    ))
                });
                *slot = Some(array.map_err(|source| StoreError::Arrow {
                    path: path.clone(),
                    source,
                })?);
            }
        }
        let schema = Arc::new(reader_meta.schema().project(&selected).map_err(|source| {
            StoreError::Arrow {
                path: path.clone(),
                source,
            }
        })?);
        let arrays: Vec<ArrayRef> = arrays
            .into_iter()
            .map(|a| a.expect("every column decoded"))
            .collect();
        if let Some(found) = arrays.iter().map(|a| a.len()).find(|&n| n != rows) {
            return Err(StoreError::invalid(
                &path,
                format!("holds {found} rows, the manifest says {rows}"),
            ));
        }
        let batch = RecordBatch::try_new_with_options(
            schema,
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|source| StoreError::Arrow {
            path: path.clone(),
            source,
        })?;
        Ok(StepBatch {
            path,
            step,
            batch,
            dim: self.dim(),
        })
    }

    /// Opens any Parquet file for a look at its schema and footer, checking only that the
    /// schema is this dataset's. Nothing here is checked against the manifest: data is read
    /// through [`Dataset::read_step_columns`], which is.
    pub fn open_file(&self, path: &Path) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
        let file = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| StoreError::parquet(path, e))?;
        if let Some(problem) = schema::schema_mismatch(&self.schema, builder.schema()) {
            return Err(StoreError::schema(path, problem));
        }
        Ok(builder)
    }

    /// A Parquet reader over a step file's bytes, after checking that it is one of ours.
    fn open_bytes(
        &self,
        path: &Path,
        bytes: Bytes,
    ) -> Result<ParquetRecordBatchReaderBuilder<Bytes>> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| StoreError::parquet(path, e))?;
        if let Some(problem) = schema::schema_mismatch(&self.schema, builder.schema()) {
            return Err(StoreError::schema(path, problem));
        }
        Ok(builder)
    }

    /// Row-group sizes of `shard`'s file for `step` (every step file of a shard has the same),
    /// after checking the file against the manifest.
    pub fn row_groups(&self, shard: &ShardEntry, step: u16) -> Result<Vec<usize>> {
        let (path, bytes) = integrity::read_verified(self.backend(), self.file(shard, step)?)?;
        integrity::guard(&path, || {
            let builder = self.open_bytes(&path, bytes)?;
            integrity::check_footer(&path, builder.metadata(), shard)?;
            Ok(builder
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.num_rows() as usize)
                .collect())
        })
    }

    /// Several steps of one shard, decoded in parallel on the machine's cores (Parquet
    /// decoding, not the disk, bounds a single reader), in the order of `steps`.
    pub fn read_steps(
        &self,
        shard: &ShardEntry,
        steps: &[u16],
        columns: Option<&[&str]>,
    ) -> Result<Vec<StepBatch>> {
        crate::parallel::map_on_cores(steps, |&step| {
            self.read_step_columns(shard, step, columns, None)
        })
        .into_iter()
        .collect()
    }

    /// Every stored state of one trajectory.
    pub fn read_trajectory(&self, traj_id: u64) -> Result<Trajectory> {
        let shard = self
            .shards()
            .iter()
            .find(|s| s.id_range().contains(&traj_id))
            .ok_or_else(|| {
                StoreError::invalid(&self.dir, format!("no committed trajectory {traj_id}"))
            })?;
        let row = (traj_id - shard.first_id) as usize;
        let (group, row_in_group) = locate_row(&self.row_groups(shard, 0)?, row);
        let dim = self.dim();
        let steps = self.manifest.steps();
        let mut states = Vec::with_capacity(steps * dim);
        let mut denoised = self.manifest.has_denoised.then(Vec::new);
        let mut first = None;
        for step in 0..steps as u16 {
            let b = self.read_step_columns(shard, step, None, Some(vec![group]))?;
            let found = b.traj_ids().get(row_in_group).copied();
            if found != Some(traj_id) {
                return Err(StoreError::invalid(
                    &b.path,
                    format!("row {row} holds trajectory {found:?} instead of {traj_id}"),
                ));
            }
            states.extend_from_slice(&b.x()[row_in_group * dim..(row_in_group + 1) * dim]);
            if let (Some(d), Some(col)) = (denoised.as_mut(), b.denoised()) {
                d.extend_from_slice(&col[row_in_group * dim..(row_in_group + 1) * dim]);
            }
            first.get_or_insert((b.seeds()[row_in_group], b.label(row_in_group)));
        }
        let (seed, label) = first.expect("a dataset has at least two steps");
        Ok(Trajectory {
            traj_id,
            seed,
            label,
            sigmas: self.manifest.grid.sigmas.clone(),
            states,
            denoised,
        })
    }
}

/// Trajectory ids (when read) must be the shard's: all of `first_id..first_id + rows` in
/// order for a whole file, strictly increasing inside that range for some row groups.
fn check_ids(batch: &StepBatch, shard: &ShardEntry, whole: bool) -> Result<()> {
    if batch.column(schema::TRAJ_ID).is_none() {
        return Ok(());
    }
    let ids = batch.traj_ids();
    let range = shard.id_range();
    let fine = if whole {
        range.clone().eq(ids.iter().copied())
    } else {
        ids.windows(2).all(|w| w[0] < w[1]) && ids.iter().all(|id| range.contains(id))
    };
    if fine {
        return Ok(());
    }
    Err(integrity::damaged(
        &batch.path,
        format!(
            "holds trajectory ids {:?}..={:?} (not the sorted ids {range:?} of shard {})",
            ids.first(),
            ids.last(),
            shard.index
        ),
    ))
}

/// (row group, row within it) of `row`, given the row groups' sizes.
fn locate_row(groups: &[usize], mut row: usize) -> (usize, usize) {
    for (g, &n) in groups.iter().enumerate() {
        if row < n {
            return (g, row);
        }
        row -= n;
    }
    (groups.len(), row)
}

/// One step of one shard, decoded.
#[derive(Debug, Clone)]
pub struct StepBatch {
    pub path: PathBuf,
    pub step: u16,
    pub batch: RecordBatch,
    dim: usize,
}

impl StepBatch {
    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn column(&self, name: &str) -> Option<&dyn Array> {
        self.batch.column_by_name(name).map(|c| c.as_ref())
    }

    pub fn traj_ids(&self) -> &[u64] {
        self.column(schema::TRAJ_ID)
            .map(|c| c.as_primitive::<UInt64Type>().values().as_ref())
            .unwrap_or(&[])
    }

    pub fn seeds(&self) -> &[u64] {
        self.column(schema::SEED)
            .map(|c| c.as_primitive::<UInt64Type>().values().as_ref())
            .unwrap_or(&[])
    }

    pub fn sigmas(&self) -> &[f32] {
        self.column(schema::SIGMA)
            .map(|c| c.as_primitive::<Float32Type>().values().as_ref())
            .unwrap_or(&[])
    }

    pub fn label(&self, row: usize) -> Option<i32> {
        let col = self.column(schema::LABEL)?.as_primitive::<Int32Type>();
        col.is_valid(row).then(|| col.value(row))
    }

    /// The states, `rows x dim` values, row-major.
    pub fn x(&self) -> StateView<'_> {
        self.vectors(schema::X).unwrap_or(Cow::Borrowed(&[]))
    }

    pub fn denoised(&self) -> Option<StateView<'_>> {
        self.vectors(schema::DENOISED)
    }

    fn vectors(&self, name: &str) -> Option<StateView<'_>> {
        let list = self.column(name)?.as_fixed_size_list();
        Some(list_values(list))
    }
}

/// The flat f32 values of a FixedSizeList column, zero-copy when the items are f32.
pub fn list_values(list: &FixedSizeListArray) -> StateView<'_> {
    let dim = list.value_length() as usize;
    let range = list.offset() * dim..(list.offset() + list.len()) * dim;
    let values = list.values();
    if let Some(f) = values.as_primitive_opt::<Float32Type>() {
        Cow::Borrowed(&f.values()[range])
    } else {
        let h = values.as_primitive::<Float16Type>();
        Cow::Owned(h.values()[range].iter().map(|v| v.to_f32()).collect())
    }
}

/// One trajectory, every step.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub traj_id: u64,
    pub seed: u64,
    pub label: Option<i32>,
    pub sigmas: Vec<f64>,
    /// `steps x dim`, step-major.
    pub states: Vec<f32>,
    pub denoised: Option<Vec<f32>>,
}
