//! Writes whole shards: every step of a batch of trajectories, one Parquet file per step.
//!
//! Order of operations (crash safety, docs/STORE-PROTOCOL.md): each step file is written to a
//! hidden temporary name and fsynced, then published under its final name with put-if-absent
//! (never replacing a file); then the newest manifest is read, this shard's entry added, and
//! the result written as the next manifest version with put-if-absent. A writer that loses
//! that race (another writer took the version) re-reads the newer snapshot, merges its entry
//! into it and tries the next version. A crash at any point leaves the last committed snapshot
//! intact; files no manifest names are ignored by readers and removed by `gc`.

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

use crate::backend::{self, Backend};
use crate::error::{Result, StoreError};
use crate::fsutil::{self, WriterLock};
use crate::manifest::{
    self, Dims, Dtype, FileEntry, Grid, Manifest, Provenance, SeedPolicy, ShardEntry, Version,
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
    /// A PD round's dataset (its rows are training examples) instead of trajectories.
    pub pd: Option<manifest::PdRound>,
}

impl DatasetSpec {
    /// How an existing dataset differs from this spec, if it does: a resumed or joined dataset
    /// (trajectories or a PD round) must be continued with the very same teacher, grid and
    /// layout. Named field by field, as "what: dataset has A, arguments give B".
    pub fn mismatch(&self, m: &Manifest) -> Option<String> {
        let mismatches: Vec<String> = [
            ("PD round", format!("{:?}", m.pd), format!("{:?}", self.pd)),
            (
                "teacher",
                format!("{:?}", m.teacher.checkpoint_hash),
                format!("{:?}", self.teacher.checkpoint_hash),
            ),
            (
                "solver",
                m.teacher.solver.clone(),
                self.teacher.solver.clone(),
            ),
            (
                "grid",
                m.grid.sigmas.len().to_string(),
                self.grid.sigmas.len().to_string(),
            ),
            (
                "count",
                m.planned_count.to_string(),
                self.planned_count.to_string(),
            ),
            (
                "seed",
                m.seeds.base_seed.to_string(),
                self.seeds.base_seed.to_string(),
            ),
            ("dims", m.dims.to_string(), self.dims.to_string()),
            ("dtype", m.dtype.to_string(), self.dtype.to_string()),
            (
                "rows per shard",
                m.rows_per_shard.to_string(),
                self.rows_per_shard.to_string(),
            ),
            (
                "denoised",
                m.has_denoised.to_string(),
                self.has_denoised.to_string(),
            ),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what}: dataset has {a}, arguments give {b}"))
        .collect();
        if !mismatches.is_empty() {
            return Some(mismatches.join("; "));
        }
        m.grid
            .difference(&self.grid)
            .map(|what| format!("the sigma grid differs from the dataset's ({what})"))
    }
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

impl WriteOptions {
    /// The options for a compression named as on the command line: `zstd` (level 1, the
    /// default), `zstd:LEVEL` (1 to 22) or `none`. Compressed files byte-split their floats
    /// (zstd then finds the exponents' redundancy); uncompressed ones store them PLAIN, which a
    /// reader copies as they are, so byte-splitting would only add a pass.
    pub fn with_compression(self, name: &str) -> std::result::Result<Self, String> {
        let zstd_level = match name.split_once(':') {
            None if name == "none" => None,
            None if name == "zstd" => Some(1),
            Some(("zstd", level)) => match level.parse::<i32>() {
                Ok(l) if ZstdLevel::try_new(l).is_ok() && l >= 1 => Some(l),
                _ => return Err(format!("zstd:{level}: the level must be 1 to 22")),
            },
            _ => return Err(format!("{name}: expected zstd, zstd:LEVEL or none")),
        };
        Ok(WriteOptions {
            zstd_level,
            byte_stream_split: zstd_level.is_some(),
            ..self
        })
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
    /// The dataset's local directory, or its URL on object storage.
    dir: PathBuf,
    backend: Arc<dyn Backend>,
    manifest: Manifest,
    options: WriteOptions,
    schema: SchemaRef,
    /// Tells `gc` this writer is alive, so its staged files are not garbage (local datasets;
    /// on object storage gc goes by the grace period alone).
    _writer_lock: Option<WriterLock>,
}

impl DatasetWriter {
    /// Creates a new, empty dataset at `dir` and commits its manifest. `dir` must not exist
    /// or be empty: a dataset never shares its directory with files it does not own (gc
    /// deletes inside it).
    pub fn create(dir: &Path, spec: DatasetSpec, options: WriteOptions) -> Result<Self> {
        let backend = backend::open(dir)?;
        let dir = &backend.locate("");
        let exists = || StoreError::AlreadyExists {
            path: dir.to_path_buf(),
        };
        if is_dataset_in(backend.as_ref())? {
            return Err(exists());
        }
        check_spec(dir, &spec)?;
        if let Err(e) = refuse_foreign_files(backend.as_ref()) {
            // A concurrent creator may have committed and started writing step files since.
            return Err(if is_dataset_in(backend.as_ref())? {
                exists()
            } else {
                e
            });
        }
        if let Some(local) = backend.local_dir() {
            std::fs::create_dir_all(local).map_err(|e| StoreError::io(local, e))?;
        }
        let now = manifest::now_unix();
        let manifest = Manifest {
            format_version: match spec.pd {
                Some(_) => manifest::FORMAT_VERSION,
                None => manifest::TRAJECTORY_FORMAT_VERSION,
            },
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
            pd: spec.pd,
        };
        let writer_lock = lock_if_local(backend.as_ref())?;
        // Version 1 is the empty dataset; of several creators racing, exactly one writes it.
        if !manifest::put_version(backend.as_ref(), 1, &manifest)? {
            return Err(exists());
        }
        // Write from the manifest as read back, so a fresh and a resumed writer use the very
        // same (JSON round-tripped) sigmas.
        let manifest = manifest::load_latest(backend.as_ref())?.1;
        Ok(Self::with_manifest(backend, manifest, options, writer_lock))
    }

    /// Opens an existing dataset to add the shards it is missing (resume, or one of several
    /// writers filling it). A dataset of an older bdense's layout must be upgraded first.
    pub fn open(dir: &Path, options: WriteOptions) -> Result<Self> {
        let backend = backend::open(dir)?;
        let manifest = latest_writable(backend.as_ref())?.1;
        let writer_lock = lock_if_local(backend.as_ref())?;
        Ok(Self::with_manifest(backend, manifest, options, writer_lock))
    }

    fn with_manifest(
        backend: Arc<dyn Backend>,
        manifest: Manifest,
        options: WriteOptions,
        writer_lock: Option<WriterLock>,
    ) -> Self {
        let schema = schema::manifest_schema(&manifest);
        DatasetWriter {
            dir: backend.locate(""),
            backend,
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
        self.write_shard_rows(data, None)
    }

    /// Writes and commits one shard of a PD round's dataset, whose rows have their own sigma
    /// at each step: `sigmas[step * rows + row]`.
    pub fn write_pd_shard(&mut self, data: &ShardData, sigmas: &[f32]) -> Result<ShardEntry> {
        let rows = self.manifest.planned_range(data.index).count();
        if self.manifest.pd.is_none() || sigmas.len() != rows * self.manifest.steps() {
            return Err(StoreError::invalid(
                &self.dir,
                format!(
                    "shard {}: {} per-row sigmas for a {} dataset of {rows} rows per shard",
                    data.index,
                    sigmas.len(),
                    if self.manifest.pd.is_some() {
                        "PD round's"
                    } else {
                        "trajectory (one sigma per step)"
                    }
                ),
            ));
        }
        self.write_shard_rows(data, Some(sigmas))
    }

    fn write_shard_rows(&mut self, data: &ShardData, sigmas: Option<&[f32]>) -> Result<ShardEntry> {
        let rows = self.check_shard(data)?;
        if self.manifest.shard(data.index).is_some() {
            return Err(self.committed(data.index));
        }
        let staged = self.stage_files(data, sigmas, rows)?;
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
    fn stage_files(
        &self,
        data: &ShardData,
        sigmas: Option<&[f32]>,
        rows: usize,
    ) -> Result<Vec<StagedFile>> {
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
                            .map(|step| {
                                self.stage_step(data, sigmas, rows, step as u16, props.clone())
                            })
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
        sigmas: Option<&[f32]>,
        rows: usize,
        step: u16,
        props: WriterProperties,
    ) -> Result<StagedFile> {
        let rel = manifest::file_name(step, data.index);
        let batch = self.step_batch(data, sigmas, rows, step)?;
        let entry = |bytes, xxh3| FileEntry {
            step,
            path: rel.clone(),
            bytes,
            xxh3,
        };
        let Some(local) = self.backend.local_dir() else {
            // Object storage has no temporaries: the file is put whole, from memory.
            let at = self.backend.locate(&rel);
            let version = self.manifest.format_version;
            let (bytes, size, hash) = write_parquet(Vec::new(), &at, &batch, props, version, step)?;
            return Ok(StagedFile {
                staged: Staged::Memory(bytes),
                entry: entry(size, hash),
            });
        };
        let final_path = local.join(&rel);
        let dir = final_path.parent().expect("step directory");
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        // Staged under `_bdense/staging/`, not beside the data: polars reads every file of a
        // partition directory, hidden ones included, but skips `_`-prefixed directories.
        let staging = local.join(manifest::STAGING_DIR);
        std::fs::create_dir_all(&staging).map_err(|e| StoreError::io(&staging, e))?;
        let temp = fsutil::temp_path(&staging.join(manifest::staging_name(step, data.index)));
        match write_parquet_file(&temp, &batch, props, self.manifest.format_version, step) {
            Ok((bytes, hash)) => Ok(StagedFile {
                staged: Staged::File { temp, final_path },
                entry: entry(bytes, hash),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    fn step_batch(
        &self,
        data: &ShardData,
        sigmas: Option<&[f32]>,
        rows: usize,
        step: u16,
    ) -> Result<RecordBatch> {
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
            Arc::new(Float32Array::from(match sigmas {
                Some(s) => s[step as usize * rows..(step as usize + 1) * rows].to_vec(),
                None => vec![m.grid.sigmas[step as usize] as f32; rows],
            })),
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

    /// Publishes the staged files, then commits the next manifest version naming them; on
    /// losing the race for a version, merges into the newer snapshot and tries again.
    fn commit_shard(
        &mut self,
        index: u32,
        rows: usize,
        staged: Vec<StagedFile>,
    ) -> Result<ShardEntry> {
        let backend = self.backend.clone();
        let backend = backend.as_ref();
        // Another writer (a `--worker` sibling) may have committed since we opened.
        let (mut version, mut latest) = match latest_writable(backend) {
            Ok(v) => v,
            Err(e) => {
                discard(&staged);
                return Err(e);
            }
        };
        if latest.shard(index).is_some() {
            discard(&staged);
            self.manifest = latest;
            return Err(self.committed(index));
        }
        for (i, file) in staged.iter().enumerate() {
            if let Err(e) = publish_data(backend, file) {
                discard(&staged[i..]);
                return Err(e);
            }
        }
        let entry = ShardEntry {
            index,
            first_id: latest.planned_range(index).start,
            rows: rows as u64,
            files: staged.into_iter().map(|s| s.entry).collect(),
        };
        loop {
            latest.shards.push(entry.clone());
            latest.shards.sort_by_key(|s| s.index);
            latest.updated_unix = manifest::now_unix();
            let next = version.checked_add(1).ok_or_else(|| {
                StoreError::invalid(manifest::version_path(version), "no manifest version left")
            })?;
            let put = manifest::put_version(backend, next, &latest)?;
            // Lost the race for `next` (or won it and others committed after): read the
            // newest snapshot.
            let newest = if put && manifest::versions(backend)?.last() == Some(&next) {
                None
            } else {
                Some(latest_writable(backend)?)
            };
            let Some((newest_version, newest)) = newest else {
                self.manifest = latest;
                return Ok(entry);
            };
            // Every version after ours was merged from a snapshot holding ours. But a version
            // number is free again once gc pruned it, and a writer that read a long outdated
            // snapshot could fill such a hole, which no reader takes as the newest: a put
            // counts only if the newest snapshot holds its entry.
            if put && newest.shard(index) == Some(&entry) {
                self.manifest = newest;
                return Ok(entry);
            }
            (version, latest) = (newest_version, newest);
            if latest.shard(index).is_some() {
                // Another writer of this very shard won; its files are byte for byte ours
                // (`publish_data` checked), so the snapshot holds our data either way.
                self.manifest = latest;
                return Err(self.committed(index));
            }
        }
    }
}

/// Whether the backend holds a committed dataset; an error when that cannot be told (an
/// object store that does not answer: a missing bucket, wrong credentials).
pub(crate) fn is_dataset_in(backend: &dyn Backend) -> Result<bool> {
    match manifest::load_latest(backend) {
        Err(StoreError::NotADataset { .. }) => Ok(false),
        Err(e @ StoreError::ObjectStore { .. }) => Err(e),
        _ => Ok(true),
    }
}

/// A writer lock for a local dataset (none on object storage).
fn lock_if_local(backend: &dyn Backend) -> Result<Option<WriterLock>> {
    backend.local_dir().map(WriterLock::acquire).transpose()
}

/// The newest snapshot and its version, refusing an older bdense's layout (written only after
/// `bdense store upgrade`, which gives it a first version).
pub(crate) fn latest_writable(backend: &dyn Backend) -> Result<(u64, Manifest)> {
    match manifest::load_latest(backend)? {
        (Version::Versioned(v), m) => Ok((v, m)),
        (Version::Legacy, _) => Err(StoreError::LegacyLayout {
            path: backend.locate(""),
        }),
    }
}

/// Publishes one staged step file under its final name, never replacing a file there. A file
/// already there is not committed (the caller checked the snapshot): a writer of the same
/// shard that died before its commit, or one racing us. Its bytes are used if they are exactly
/// ours (generation is deterministic), freshened so that gc's grace period counts from now;
/// other bytes are an error, since the manifest must name what the file holds.
fn publish_data(backend: &dyn Backend, file: &StagedFile) -> Result<()> {
    let rel = &file.entry.path;
    let published = match &file.staged {
        Staged::File { temp, final_path } => link_data(temp, final_path)?,
        Staged::Memory(bytes) => backend.put_if_absent(rel, bytes)?,
    };
    if published {
        return Ok(());
    }
    let at = backend.locate(rel);
    let (there, longer) = backend.read_bounded(rel, file.entry.bytes)?;
    let (bytes, hash) = (there.len() as u64, crate::integrity::hash_hex(&there));
    if longer || bytes != file.entry.bytes || hash != file.entry.xxh3 {
        return Err(StoreError::invalid(
            &at,
            format!(
                "an uncommitted file with other content is in the way ({bytes} bytes, xxh3 {hash}; this writer's is {} bytes, xxh3 {}): a writer of the same shard with other options, or one that died; `bdense store gc` removes it once its writer is gone",
                file.entry.bytes, file.entry.xxh3
            ),
        ));
    }
    let ours = match &file.staged {
        Staged::Memory(bytes) => bytes.as_slice(),
        Staged::File { .. } => &[],
    };
    backend.freshen(rel, ours)
}

/// Links a staged local file to its final name unless one is there (`Ok(false)`).
fn link_data(temp: &Path, final_path: &Path) -> Result<bool> {
    let dir = final_path.parent().expect("step directory");
    // gc removes empty step directories: (re)create ours right before linking into it.
    let mut tries = 0;
    loop {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        match backend::link_if_absent(temp, final_path) {
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && tries < 8 =>
            {
                tries += 1
            }
            other => break other,
        }
    }
}

fn check_spec(dir: &Path, spec: &DatasetSpec) -> Result<()> {
    let problem = manifest::layout_problem(spec.dims, spec.rows_per_shard, &spec.grid.sigmas)
        .or_else(|| manifest::pd_problem(spec.pd.as_ref(), &spec.grid))
        .or_else(|| manifest::plan_problem(spec.planned_count, spec.rows_per_shard));
    match problem {
        Some(p) => Err(StoreError::invalid(dir, p)),
        None => Ok(()),
    }
}

/// A new dataset goes into a new or empty directory only (the `_bdense/` of a create that died,
/// or of a concurrent creator, aside): never into a store root or a directory of someone
/// else's files.
fn refuse_foreign_files(backend: &dyn Backend) -> Result<()> {
    if backend
        .list("")?
        .iter()
        .any(|name| name != manifest::META_DIR)
    {
        return Err(StoreError::NotEmpty {
            path: backend.locate(""),
        });
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
    staged: Staged,
    entry: FileEntry,
}

/// Where a step file waits to be published.
enum Staged {
    /// A synced temporary in the local dataset's `_bdense/staging/`.
    File { temp: PathBuf, final_path: PathBuf },
    /// The whole file, to be put on object storage.
    Memory(Vec<u8>),
}

/// Removes staged temporaries (those already published are gone: a no-op for them).
fn discard(staged: &[StagedFile]) {
    for s in staged {
        if let Staged::File { temp, .. } = &s.staged {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Writes one batch as a complete, synced Parquet file; returns its size and xxh3.
fn write_parquet_file(
    path: &Path,
    batch: &RecordBatch,
    props: WriterProperties,
    format_version: u32,
    step: u16,
) -> Result<(u64, String)> {
    let file = File::create(path).map_err(|e| StoreError::io(path, e))?;
    let sink = BufWriter::with_capacity(1 << 20, file);
    let (buffered, bytes, hash) = write_parquet(sink, path, batch, props, format_version, step)?;
    let file = buffered
        .into_inner()
        .map_err(|e| StoreError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| StoreError::io(path, e))?;
    Ok((bytes, hash))
}

/// Writes one batch as a complete Parquet file into `sink` (`path` names it in errors);
/// returns the sink, the size and the xxh3.
fn write_parquet<W: Write + Send>(
    sink: W,
    path: &Path,
    batch: &RecordBatch,
    props: WriterProperties,
    format_version: u32,
    step: u16,
) -> Result<(W, u64, String)> {
    let sink = HashingWriter::new(sink);
    let mut writer = ArrowWriter::try_new(sink, batch.schema(), Some(props))
        .map_err(|e| write_error(path, e))?;
    for (k, v) in schema::file_metadata(format_version, step) {
        writer.append_key_value_metadata(KeyValue::new(k, v));
    }
    writer.write(batch).map_err(|e| write_error(path, e))?;
    let sink = writer.into_inner().map_err(|e| write_error(path, e))?;
    let (inner, bytes, hash) = sink.finish();
    Ok((inner, bytes, format!("{hash:016x}")))
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
