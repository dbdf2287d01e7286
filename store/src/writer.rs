//! Writes whole shards: every step of a batch of trajectories, one Parquet file per step.
//!
//! Order of operations (crash safety): each step file is written to a hidden temporary name and
//! fsynced; then, under the dataset lock, the manifest is re-read (another process may have
//! committed meanwhile), the temp files are renamed into place, and the manifest naming them is
//! replaced atomically. A crash at any point leaves the last committed snapshot intact; files
//! not named by the manifest are ignored by readers and removed by `gc`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float16Array, Float32Array, Int32Array, RecordBatch, UInt64Array,
};
use arrow::datatypes::{Field, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Result, StoreError};
use crate::fsutil::{self, DatasetLock, WriterLock};
use crate::manifest::{
    self, Dims, Dtype, FileEntry, Grid, Manifest, Provenance, SeedPolicy, ShardEntry,
};
use crate::schema;

/// What a new dataset is; everything in the manifest except the shards.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub name: String,
    pub dims: Dims,
    pub dtype: Dtype,
    pub has_denoised: bool,
    pub grid: Grid,
    pub teacher: Provenance,
    pub seeds: SeedPolicy,
    pub rows_per_shard: u32,
    pub planned_count: u64,
}

/// How files are encoded. The defaults are what the store benchmark measured as best
/// (docs/perf.md): zstd level 1 with BYTE_STREAM_SPLIT floats.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// zstd level; `None` stores pages uncompressed.
    pub zstd_level: Option<i32>,
    /// BYTE_STREAM_SPLIT for the float vector columns (groups the bytes of each float by
    /// significance, which lets zstd find the redundancy in exponents and high mantissa bits).
    pub byte_stream_split: bool,
    /// Rows per Parquet row group: the unit the branch-target stream shuffles.
    pub row_group_rows: usize,
    /// Step files written in parallel.
    pub threads: usize,
    /// Fault injection for crash tests: stop (with an error) after this many step files of the
    /// next shard have been written, before anything is committed.
    #[doc(hidden)]
    pub fail_after_files: Option<usize>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            zstd_level: Some(1),
            byte_stream_split: true,
            row_group_rows: 128,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            fail_after_files: None,
        }
    }
}

/// One shard's worth of trajectories, all steps, in memory.
#[derive(Debug, Clone, Copy)]
pub struct ShardData<'a> {
    pub index: u32,
    /// Per-trajectory seed, one per row.
    pub seeds: &'a [u64],
    /// Class labels, one per row, for class-conditional teachers.
    pub labels: Option<&'a [i32]>,
    /// States, step-major: `states[(step * rows + row) * dim + j]`.
    pub states: &'a [f32],
    /// Teacher D(x; sigma) at each state, same layout, when the dataset stores it.
    pub denoised: Option<&'a [f32]>,
}

pub struct DatasetWriter {
    dir: PathBuf,
    manifest: Manifest,
    options: WriteOptions,
    schema: SchemaRef,
    /// Tells `gc` this writer is alive, so its staged files are not garbage.
    _writer_lock: WriterLock,
}

impl DatasetWriter {
    /// Creates a new, empty dataset at `dir` and commits its manifest. `dir` must not exist
    /// or be empty: a dataset never shares its directory with files it does not own (gc
    /// deletes inside it).
    pub fn create(dir: &Path, spec: DatasetSpec, options: WriteOptions) -> Result<Self> {
        if Manifest::path(dir).exists() {
            return Err(StoreError::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        check_spec(dir, &spec)?;
        refuse_foreign_files(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let now = manifest::now_unix();
        let manifest = Manifest {
            format_version: manifest::FORMAT_VERSION,
            name: spec.name,
            dims: spec.dims,
            dtype: spec.dtype,
            has_denoised: spec.has_denoised,
            grid: spec.grid,
            teacher: spec.teacher,
            seeds: spec.seeds,
            rows_per_shard: spec.rows_per_shard,
            planned_count: spec.planned_count,
            created_unix: now,
            updated_unix: now,
            shards: Vec::new(),
        };
        let writer_lock = WriterLock::acquire(dir)?;
        {
            let _lock = DatasetLock::acquire(dir)?;
            if Manifest::path(dir).exists() {
                return Err(StoreError::AlreadyExists {
                    path: dir.to_path_buf(),
                });
            }
            manifest.commit(dir)?;
        }
        // Write from the manifest as read back, so a fresh and a resumed writer use the very
        // same (JSON round-tripped) sigmas.
        let manifest = Manifest::load(dir)?;
        Ok(Self::with_manifest(dir, manifest, options, writer_lock))
    }

    /// Opens an existing dataset to add the shards it is missing (resume).
    pub fn open(dir: &Path, options: WriteOptions) -> Result<Self> {
        let manifest = Manifest::load(dir)?;
        let writer_lock = WriterLock::acquire(dir)?;
        Ok(Self::with_manifest(dir, manifest, options, writer_lock))
    }

    fn with_manifest(
        dir: &Path,
        manifest: Manifest,
        options: WriteOptions,
        writer_lock: WriterLock,
    ) -> Self {
        let schema = schema::manifest_schema(&manifest);
        DatasetWriter {
            dir: dir.to_path_buf(),
            manifest,
            options,
            schema,
            _writer_lock: writer_lock,
        }
    }

    /// The manifest as of this writer's last commit (or open).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes and commits one shard. Returns its manifest entry.
    pub fn write_shard(&mut self, data: &ShardData) -> Result<ShardEntry> {
        let rows = self.check_shard(data)?;
        if self.manifest.shard(data.index).is_some() {
            return Err(self.committed(data.index));
        }
        let staged = self.stage_files(data, rows)?;
        self.commit_shard(data.index, rows, staged)
    }

    fn committed(&self, shard: u32) -> StoreError {
        StoreError::ShardCommitted {
            path: self.dir.clone(),
            shard,
        }
    }

    fn check_shard(&self, data: &ShardData) -> Result<usize> {
        let m = &self.manifest;
        if data.index >= m.planned_shards() {
            return Err(StoreError::invalid(
                &self.dir,
                format!(
                    "shard {} is outside the planned {} shards",
                    data.index,
                    m.planned_shards()
                ),
            ));
        }
        let rows = m.planned_range(data.index).count();
        let want = rows * m.steps() * m.dims.len();
        let bad = |what: &str, got: usize, expected: usize| {
            StoreError::invalid(
                &self.dir,
                format!(
                    "shard {}: {what} has {got} values, expected {expected} ({rows} trajectories x {} steps x {} values)",
                    data.index,
                    m.steps(),
                    m.dims.len()
                ),
            )
        };
        if data.seeds.len() != rows {
            return Err(bad("seeds", data.seeds.len(), rows));
        }
        if let Some(labels) = data.labels
            && labels.len() != rows
        {
            return Err(bad("labels", labels.len(), rows));
        }
        if data.states.len() != want {
            return Err(bad("states", data.states.len(), want));
        }
        match (data.denoised, m.has_denoised) {
            (Some(d), true) if d.len() != want => return Err(bad("denoised", d.len(), want)),
            (None, true) => {
                return Err(StoreError::invalid(
                    &self.dir,
                    "this dataset stores denoised outputs but none were given",
                ));
            }
            (Some(_), false) => {
                return Err(StoreError::invalid(
                    &self.dir,
                    "denoised outputs given but the dataset was created without them",
                ));
            }
            _ => {}
        }
        Ok(rows)
    }

    /// Writes every step file of the shard under a temporary name, in parallel.
    fn stage_files(&self, data: &ShardData, rows: usize) -> Result<Vec<StagedFile>> {
        let steps = self.manifest.steps();
        let threads = self.options.threads.clamp(1, steps);
        let props = self.writer_properties();
        let limit = self.options.fail_after_files.unwrap_or(usize::MAX);
        let results: Vec<Result<Vec<StagedFile>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|worker| {
                    let props = props.clone();
                    scope.spawn(move || {
                        (worker..steps)
                            .step_by(threads)
                            .filter(|&step| step < limit)
                            .map(|step| self.stage_step(data, rows, step as u16, props.clone()))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("step writer thread panicked"))
                .collect()
        });
        let mut staged = Vec::with_capacity(steps);
        let mut first_error = None;
        for r in results {
            match r {
                Ok(files) => staged.extend(files),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(e) = first_error {
            discard(&staged);
            return Err(e);
        }
        if staged.len() < steps {
            // Fault injection: behave like a writer that died here. Its temp files stay behind,
            // exactly as after a crash, for gc to collect.
            return Err(StoreError::invalid(
                &self.dir,
                format!(
                    "injected fault: stopped after {} of {steps} step files",
                    staged.len()
                ),
            ));
        }
        staged.sort_by_key(|s| s.entry.step);
        Ok(staged)
    }

    fn stage_step(
        &self,
        data: &ShardData,
        rows: usize,
        step: u16,
        props: WriterProperties,
    ) -> Result<StagedFile> {
        let rel = manifest::file_name(step, data.index);
        let final_path = self.dir.join(&rel);
        let dir = final_path.parent().expect("step directory");
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let temp = fsutil::temp_path(&final_path);
        let batch = self.step_batch(data, rows, step)?;
        match write_parquet(&temp, &batch, props, step) {
            Ok((bytes, hash)) => Ok(StagedFile {
                temp,
                final_path,
                entry: FileEntry {
                    step,
                    path: rel,
                    bytes,
                    xxh3: hash,
                },
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    fn step_batch(&self, data: &ShardData, rows: usize, step: u16) -> Result<RecordBatch> {
        let m = &self.manifest;
        let dim = m.dims.len();
        let first_id = m.planned_range(data.index).start;
        let span = |all: &[f32]| {
            let start = step as usize * rows * dim;
            vector_column(m.dtype, dim, &all[start..start + rows * dim])
        };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(
                first_id..first_id + rows as u64,
            )),
            Arc::new(UInt64Array::from(data.seeds.to_vec())),
            Arc::new(Float32Array::from(vec![
                m.grid.sigmas[step as usize] as f32;
                rows
            ])),
            Arc::new(match data.labels {
                Some(l) => Int32Array::from(l.to_vec()),
                None => Int32Array::new_null(rows),
            }),
            span(data.states),
        ];
        if let Some(d) = data.denoised {
            columns.push(span(d));
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|source| StoreError::Arrow {
            path: self.dir.clone(),
            source,
        })
    }

    fn writer_properties(&self) -> WriterProperties {
        let o = &self.options;
        let compression = match o.zstd_level {
            Some(level) => Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default()),
            None => Compression::UNCOMPRESSED,
        };
        let mut b = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(o.row_group_rows.max(1)))
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from(schema::SIGMA), true)
            .set_column_dictionary_enabled(ColumnPath::from(schema::LABEL), true);
        for col in [schema::X, schema::DENOISED] {
            let leaf = vector_leaf(col);
            // Min/max over a state vector's page say nothing useful and cost a pass.
            b = b.set_column_statistics_enabled(leaf.clone(), EnabledStatistics::None);
            if o.byte_stream_split {
                b = b.set_column_encoding(leaf, Encoding::BYTE_STREAM_SPLIT);
            }
        }
        b.build()
    }

    /// Publishes the staged files and the manifest that names them, under the dataset lock.
    fn commit_shard(
        &mut self,
        index: u32,
        rows: usize,
        staged: Vec<StagedFile>,
    ) -> Result<ShardEntry> {
        let _lock = DatasetLock::acquire(&self.dir)?;
        // Another process (a `--shard i/n` sibling) may have committed since we opened.
        let mut latest = Manifest::load(&self.dir)?;
        if latest.shard(index).is_some() {
            discard(&staged);
            self.manifest = latest;
            return Err(self.committed(index));
        }
        for file in &staged {
            fsutil::publish(&file.temp, &file.final_path)?;
        }
        let entry = ShardEntry {
            index,
            first_id: latest.planned_range(index).start,
            rows: rows as u64,
            files: staged.into_iter().map(|s| s.entry).collect(),
        };
        latest.shards.push(entry.clone());
        latest.shards.sort_by_key(|s| s.index);
        latest.updated_unix = manifest::now_unix();
        latest.commit(&self.dir)?;
        self.manifest = latest;
        Ok(entry)
    }
}

fn check_spec(dir: &Path, spec: &DatasetSpec) -> Result<()> {
    let problem = manifest::layout_problem(spec.dims, spec.rows_per_shard, &spec.grid.sigmas)
        .or_else(|| manifest::plan_problem(spec.planned_count, spec.rows_per_shard));
    match problem {
        Some(p) => Err(StoreError::invalid(dir, p)),
        None => Ok(()),
    }
}

/// A new dataset goes into a new or empty directory only (the lock and temporary manifest
/// files of a create that died aside): never into a store root or a directory of someone
/// else's files.
fn refuse_foreign_files(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == manifest::LOCK_FILE
            || WriterLock::owner(&name).is_some()
            || fsutil::temp_owner(&name).is_some_and(|(_, base)| base == manifest::MANIFEST_FILE);
        if !ours {
            return Err(StoreError::NotEmpty {
                path: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Parquet path of the float leaf inside a FixedSizeList column.
pub(crate) fn vector_leaf(col: &str) -> ColumnPath {
    ColumnPath::new(vec![col.to_string(), "list".into(), schema::ITEM.into()])
}

fn vector_column(dtype: Dtype, dim: usize, values: &[f32]) -> ArrayRef {
    let values: ArrayRef = match dtype {
        Dtype::F32 => Arc::new(Float32Array::from(values.to_vec())),
        Dtype::F16 => Arc::new(Float16Array::from_iter_values(
            values.iter().map(|&v| half::f16::from_f32(v)),
        )),
    };
    let item = Arc::new(Field::new(schema::ITEM, schema::element_type(dtype), false));
    Arc::new(FixedSizeListArray::new(item, dim as i32, values, None))
}

struct StagedFile {
    temp: PathBuf,
    final_path: PathBuf,
    entry: FileEntry,
}

fn discard(staged: &[StagedFile]) {
    for s in staged {
        let _ = std::fs::remove_file(&s.temp);
    }
}

/// Writes one batch as a complete, synced Parquet file; returns its size and xxh3.
fn write_parquet(
    path: &Path,
    batch: &RecordBatch,
    props: WriterProperties,
    step: u16,
) -> Result<(u64, String)> {
    let file = File::create(path).map_err(|e| StoreError::io(path, e))?;
    let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut writer = ArrowWriter::try_new(sink, batch.schema(), Some(props))
        .map_err(|e| write_error(path, e))?;
    for (k, v) in schema::file_metadata(step) {
        writer.append_key_value_metadata(KeyValue::new(k, v));
    }
    writer.write(batch).map_err(|e| write_error(path, e))?;
    let sink = writer.into_inner().map_err(|e| write_error(path, e))?;
    let (buffered, bytes, hash) = sink.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| StoreError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| StoreError::io(path, e))?;
    Ok((bytes, format!("{hash:016x}")))
}

fn write_error(path: &Path, source: parquet::errors::ParquetError) -> StoreError {
    StoreError::WriteParquet {
        path: path.to_path_buf(),
        source,
    }
}

/// Hashes and counts bytes as they stream to disk, so no file is read back to hash it.
struct HashingWriter<W> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, u64, u64) {
        (self.inner, self.bytes, self.hasher.digest())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// xxh3-64 of a file's bytes, hex, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| StoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, format!("{:016x}", hasher.digest())))
}
