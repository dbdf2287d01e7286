//! The manifest: the committed snapshot of a dataset, one immutable JSON file per version
//! under `_bdense/manifests/`, each created with put-if-absent; the newest version is the
//! snapshot (docs/STORE-PROTOCOL.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Result, StoreError};
/// The manifest's `grid` field (defined with the grid it describes).
pub use crate::grid::Grid;

/// Bumped when a reader of the previous version could misread a new dataset: the newest
/// format this bdense reads. Version 2 added PD rounds ([`PdRound`]), which only those
/// datasets are written as.
pub const FORMAT_VERSION: u32 = 2;
/// What trajectory datasets are written as: their layout is unchanged since version 1, so an
/// older bdense keeps reading them, while it refuses a PD round's dataset rather than taking
/// its three role steps for a trajectory.
pub const TRAJECTORY_FORMAT_VERSION: u32 = 1;
/// Everything in a dataset that is not data lives under this directory: readers of Parquet
/// datasets (pyarrow, polars, duckdb, DataFusion) skip names starting with `_` or `.`.
pub const META_DIR: &str = "_bdense";
/// One file per committed version, `00000000000000000007.json` (fixed width, so names sort
/// as numbers).
pub const MANIFEST_DIR: &str = "_bdense/manifests";
/// Where writers stage step files (`.step-7-shard-00003.parquet.tmp-PID-N`) before publishing
/// them under their final names.
pub const STAGING_DIR: &str = "_bdense/staging";

/// The name a staged step file is based on (before `fsutil::temp_path` makes it temporary).
pub fn staging_name(step: u16, shard: u32) -> String {
    format!("step-{step}-shard-{shard:05}.parquet")
}

/// Whether `name` is a [`staging_name`].
pub(crate) fn is_staging_name(name: &str) -> bool {
    name.strip_prefix("step-")
        .and_then(|s| s.split_once("-"))
        .is_some_and(|(step, shard)| all_digits(step) && is_shard_file_name(shard))
}

/// Where an older bdense kept its one manifest (and `manifest.lock` its lock): still read,
/// never written (`bdense store upgrade` moves such a dataset to the versioned layout).
pub const LEGACY_MANIFEST_FILE: &str = "manifest.json";
pub const LEGACY_LOCK_FILE: &str = "manifest.lock";
/// Manifest versions `gc` keeps (the newest ones); a reader that listed a version gc then
/// pruned lists again.
pub const KEEP_VERSIONS: usize = 8;

/// The file name of manifest version `v`.
pub fn version_name(v: u64) -> String {
    format!("{v:020}.json")
}

/// The version a manifest file name holds, `None` for other names (temporaries included).
pub fn parse_version(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && all_digits(digits))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Relative path of manifest version `v` inside the dataset.
pub fn version_path(v: u64) -> String {
    format!("{MANIFEST_DIR}/{}", version_name(v))
}

/// Which manifest a snapshot was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `_bdense/manifests/<v>.json`.
    Versioned(u64),
    /// An older bdense's `manifest.json`: readable, not writable until upgraded.
    Legacy,
}

impl Version {
    pub fn rel_path(self) -> String {
        match self {
            Version::Versioned(v) => version_path(v),
            Version::Legacy => LEGACY_MANIFEST_FILE.into(),
        }
    }
}

/// Committed versions, ascending.
pub(crate) fn versions(backend: &dyn Backend) -> Result<Vec<u64>> {
    let mut v: Vec<u64> = backend
        .list(MANIFEST_DIR)?
        .iter()
        .filter_map(|n| parse_version(n))
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// The newest committed snapshot and its version: the highest version under
/// `_bdense/manifests/`, else an older bdense's `manifest.json`.
pub fn load_latest(backend: &dyn Backend) -> Result<(Version, Manifest)> {
    // A version listed and then pruned by gc (only ever old ones) means a newer one exists:
    // list again.
    for _ in 0..16 {
        let version = match versions(backend)?.last() {
            Some(&v) => Version::Versioned(v),
            None => Version::Legacy,
        };
        let rel = version.rel_path();
        match backend.get(&rel)? {
            Some(bytes) => return Ok((version, Manifest::parse(&bytes, &backend.locate(&rel))?)),
            None if version == Version::Legacy => {
                return Err(StoreError::NotADataset {
                    path: backend.locate(""),
                });
            }
            None => continue,
        }
    }
    Err(StoreError::invalid(
        backend.locate(MANIFEST_DIR),
        "manifest versions keep disappearing while listed; is something deleting them?",
    ))
}

/// Commits `manifest` as version `v` unless that version exists (`Ok(false)`: another writer
/// won; re-read, merge, retry).
pub(crate) fn put_version(backend: &dyn Backend, v: u64, manifest: &Manifest) -> Result<bool> {
    let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    backend.put_if_absent(&version_path(v), &bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    pub c: u32,
    pub h: u32,
    pub w: u32,
}

/// The most values one state may hold (C x H x W): a manifest asking for more is refused, so no
/// reader allocates from a number a file supplied (2^28 f32 values = 1 GiB per state).
pub const MAX_STATE_VALUES: u64 = 1 << 28;

impl Dims {
    /// C x H x W, without overflow (`None` when the product does not fit in a u64).
    pub fn values(&self) -> Option<u64> {
        (self.c as u64)
            .checked_mul(self.h as u64)?
            .checked_mul(self.w as u64)
    }

    /// C x H x W; saturates on dims no checked manifest holds (see [`MAX_STATE_VALUES`]).
    pub fn len(&self) -> usize {
        self.values()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// Element type of the stored state vectors. Readers always hand out f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    pub fn bytes(&self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "f16" => Ok(Dtype::F16),
            other => Err(format!("unknown dtype {other:?} (expected f32 or f16)")),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        })
    }
}

/// Where the trajectories came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Teacher kind: "gaussian", "gmm", "unet", "synthetic-gaussian", ...
    pub kind: String,
    /// Content hash of the teacher's checkpoint or fitted parameters, when it has one.
    pub checkpoint_hash: Option<String>,
    pub solver: String,
    pub order: u32,
    /// Free-form extra facts (dataset, fit sizes, versions).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// A progressive-distillation round's dataset (format 2) instead of trajectories: each row is
/// one training example, and its three step files hold the example's three states in the
/// same row order: step 0 the noised training image `x0 + s_i eps` at the student's start
/// sigma `s_i`, step 1 the teacher's first Euler step (to `s_{i+1/2}`), step 2 its second (to
/// `s_{i+1}`). The start interval `i` differs per row (the data schedule draws it), so the
/// `sigma` column varies within a step file: row sigma at step `r` is `grid.sigmas[2 i + r]`,
/// the manifest's `grid` being the teacher's grid of the round (`2 student_steps + 1`
/// points, the student's grid every other one of them). `seed` is the example's noise seed,
/// `label` its image's class, `seeds.base_seed` the round's data seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PdRound {
    /// 1 for the round distilled from the original teacher.
    pub round: u32,
    /// Euler steps of the round's student (half the teacher's).
    pub student_steps: u32,
    /// How many training images the data schedule draws from.
    pub images: u64,
}

impl PdRound {
    /// Step files per shard: the start, the teacher's midpoint and its endpoint.
    pub const ROLES: usize = 3;

    /// The start interval whose sigma at step 0 is `sigma`, if any (exact f32 match: the
    /// writer stores the grid's sigmas rounded to f32).
    pub fn interval_of(&self, grid: &Grid, sigma: f32) -> Option<usize> {
        (0..self.student_steps as usize).find(|&i| grid.sigmas[2 * i] as f32 == sigma)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedPolicy {
    pub base_seed: u64,
    pub scheme: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub step: u16,
    /// Relative to the dataset directory, e.g. `step=0007/shard-00003.parquet`.
    pub path: String,
    pub bytes: u64,
    /// xxh3-64 of the whole file, hex.
    pub xxh3: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub index: u32,
    /// Trajectory ids `first_id .. first_id + rows`, sorted, in every step file.
    pub first_id: u64,
    pub rows: u64,
    /// One file per step, in step order.
    pub files: Vec<FileEntry>,
}

impl ShardEntry {
    /// Saturates instead of overflowing; a checked manifest never needs to.
    pub fn id_range(&self) -> std::ops::Range<u64> {
        self.first_id..self.first_id.saturating_add(self.rows)
    }

    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |a, f| a.saturating_add(f.bytes))
    }

    pub fn file(&self, step: u16) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.step == step)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub dims: Dims,
    pub dtype: Dtype,
    pub has_denoised: bool,
    pub grid: Grid,
    pub teacher: Provenance,
    pub seeds: SeedPolicy,
    /// Trajectories per shard; shard `s` holds ids `s * rows_per_shard ..`.
    pub rows_per_shard: u32,
    /// How many trajectories the dataset is meant to hold when complete.
    pub planned_count: u64,
    /// Unix seconds.
    pub created_unix: u64,
    pub updated_unix: u64,
    /// Committed shards, sorted by index.
    pub shards: Vec<ShardEntry>,
    /// Set for a PD round's dataset (whose steps are roles, not grid points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pd: Option<PdRound>,
}

impl Manifest {
    /// Step files per shard: the grid's points, or a PD round's three roles.
    pub fn steps(&self) -> usize {
        match self.pd {
            Some(_) => PdRound::ROLES,
            None => self.grid.sigmas.len(),
        }
    }

    /// Refuses a PD round's dataset where trajectories are needed (students, targets): its
    /// steps are not grid points.
    pub fn require_trajectories(&self, path: &Path) -> Result<()> {
        match &self.pd {
            Some(pd) => Err(StoreError::invalid(
                path,
                format!(
                    "is the store of PD round {} (examples with the teacher's two steps, for `bdense pd`), not teacher trajectories",
                    pd.round
                ),
            )),
            None => Ok(()),
        }
    }

    pub fn trajectories(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.rows))
    }

    pub fn bytes(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.bytes()))
    }

    pub fn shard(&self, index: u32) -> Option<&ShardEntry> {
        self.shards.iter().find(|s| s.index == index)
    }

    /// Number of shards a complete dataset has (saturates at `u32::MAX`; a checked manifest
    /// and [`plan_problem`] never let it).
    pub fn planned_shards(&self) -> u32 {
        planned_shards(self.planned_count, self.rows_per_shard)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(u32::MAX)
    }

    /// Id range shard `index` holds when complete. Cannot overflow: both factors are u32.
    pub fn planned_range(&self, index: u32) -> std::ops::Range<u64> {
        let start = index as u64 * self.rows_per_shard as u64;
        let end = (start + self.rows_per_shard as u64).min(self.planned_count);
        start.min(end)..end
    }

    /// Shards not yet committed, in index order. Allocates one entry per missing shard: for
    /// datasets of unbounded size use [`Manifest::missing_shard_iter`].
    pub fn missing_shards(&self) -> Vec<u32> {
        self.missing_shard_iter().collect()
    }

    /// Shards not yet committed, in index order, lazily (memory bounded by the committed
    /// shards, not by `planned_count`).
    pub fn missing_shard_iter(&self) -> impl Iterator<Item = u32> + '_ {
        let committed: std::collections::HashSet<u32> =
            self.shards.iter().map(|s| s.index).collect();
        (0..self.planned_shards()).filter(move |i| !committed.contains(i))
    }

    /// How many shards are not yet committed, without listing them.
    pub fn missing_shard_count(&self) -> u64 {
        let committed = self
            .shards
            .iter()
            .filter(|s| s.index < self.planned_shards())
            .count() as u64;
        (self.planned_shards() as u64).saturating_sub(committed)
    }

    /// A stable content hash of the committed snapshot (the file hashes, in order). The
    /// store's own file names enter in the form an older bdense wrote (`step=0007/...`), so the
    /// hash is the same in either layout: before and after `bdense store upgrade`, and as run
    /// records made by an older bdense hold it.
    pub fn snapshot_hash(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.name.as_bytes());
        for shard in &self.shards {
            for f in &shard.files {
                if f.path == file_name(f.step, shard.index) {
                    h.update(legacy_file_name(f.step, shard.index).as_bytes());
                } else {
                    h.update(f.path.as_bytes());
                }
                h.update(f.xxh3.as_bytes());
            }
        }
        format!("{:016x}", h.digest())
    }

    /// The file of the newest committed manifest (an older bdense's `manifest.json` when the
    /// dataset has no versioned one; where version 1 goes when it has neither).
    pub fn path(dataset_dir: &Path) -> PathBuf {
        let Ok(backend) = crate::backend::open(dataset_dir) else {
            return dataset_dir.join(version_path(1));
        };
        let version = match versions(backend.as_ref())
            .ok()
            .and_then(|v| v.last().copied())
        {
            Some(v) => Version::Versioned(v),
            None if matches!(backend.stat(LEGACY_MANIFEST_FILE), Ok(Some(_))) => Version::Legacy,
            None => Version::Versioned(1),
        };
        backend.locate(&version.rel_path())
    }

    /// Reads and checks the newest committed manifest of the dataset at `dataset_dir` (a
    /// path or a URL).
    pub fn load(dataset_dir: &Path) -> Result<Manifest> {
        load_latest(crate::backend::open(dataset_dir)?.as_ref()).map(|(_, m)| m)
    }

    /// Parses and checks a manifest's bytes; `path` names the file in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<Manifest> {
        let path = path.to_path_buf();
        // Check the version before the full schema, so a newer manifest says "upgrade" rather
        // than failing on a field it does not know.
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let version: VersionOnly =
            serde_json::from_slice(text).map_err(|source| StoreError::ManifestJson {
                path: path.clone(),
                source,
            })?;
        if version.format_version > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                path,
                found: version.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(text).map_err(|source| StoreError::ManifestJson {
                path: path.clone(),
                source,
            })?;
        manifest.check(&path)?;
        Ok(manifest)
    }

    /// Internal consistency a reader relies on: after this, no number from the file can
    /// overflow an addition, size an allocation beyond the data it describes, or name a path
    /// outside the dataset.
    fn check(&self, path: &Path) -> Result<()> {
        let problem = layout_problem(self.dims, self.rows_per_shard, &self.grid.sigmas)
            .or_else(|| pd_problem(self.pd.as_ref(), &self.grid))
            .or_else(|| plan_problem(self.planned_count, self.rows_per_shard))
            .or_else(|| self.shards_problem());
        match problem {
            Some(problem) => Err(StoreError::invalid(path, problem)),
            None => Ok(()),
        }
    }

    /// What is wrong with the shard list, if anything: each shard once, in order, holding
    /// exactly its planned ids, one file per step at a confined path named once.
    fn shards_problem(&self) -> Option<String> {
        let mut paths = std::collections::HashSet::new();
        let mut total_bytes = 0u64;
        for (i, shard) in self.shards.iter().enumerate() {
            let at = format!("shards[{i}] (shard {})", shard.index);
            if i > 0 && shard.index <= self.shards[i - 1].index {
                return Some(format!(
                    "{at}: shard indices must be unique and increasing (after {})",
                    self.shards[i - 1].index
                ));
            }
            if shard.index >= self.planned_shards() {
                return Some(format!(
                    "{at}: outside the planned {} shards",
                    self.planned_shards()
                ));
            }
            let planned = self.planned_range(shard.index);
            if shard.first_id != planned.start
                || Some(planned.end) != shard.first_id.checked_add(shard.rows)
            {
                return Some(format!(
                    "{at}: first_id {} and rows {} do not match the planned ids {planned:?}",
                    shard.first_id, shard.rows
                ));
            }
            if shard.files.len() != self.steps() {
                return Some(format!(
                    "shard {} lists {} step files but the grid has {} steps",
                    shard.index,
                    shard.files.len(),
                    self.steps()
                ));
            }
            for (step, f) in shard.files.iter().enumerate() {
                if f.step as usize != step {
                    return Some(format!("{at}: files[{step}] is for step {}", f.step));
                }
                if let Err(why) = check_relative_path(&f.path) {
                    return Some(format!("{at}: file path {:?} {why}", f.path));
                }
                if !paths.insert(f.path.as_str()) {
                    return Some(format!("{at}: file {:?} is listed twice", f.path));
                }
                match total_bytes.checked_add(f.bytes) {
                    Some(t) => total_bytes = t,
                    None => return Some(format!("{at}: bytes of {:?} overflow the total", f.path)),
                }
            }
        }
        None
    }
}

/// What makes a dataset's shape unusable, if anything: shared by writers (before creating)
/// and readers (after loading a manifest).
pub(crate) fn layout_problem(dims: Dims, rows_per_shard: u32, sigmas: &[f64]) -> Option<String> {
    let values = dims.values();
    if values == Some(0) {
        Some("dims have zero size".into())
    } else if values.is_none_or(|v| v > MAX_STATE_VALUES) {
        Some(format!(
            "dims {dims} hold more than {MAX_STATE_VALUES} values per state"
        ))
    } else if rows_per_shard == 0 {
        Some("rows per shard must be positive".into())
    } else if sigmas.len() < 2 || sigmas.len() > u16::MAX as usize {
        Some(format!("grid has {} steps (need 2..=65535)", sigmas.len()))
    } else if sigmas.iter().any(|s| !s.is_finite() || *s < 0.0) {
        Some("grid sigmas must be finite and non-negative".into())
    } else if sigmas.windows(2).any(|w| w[1] >= w[0]) {
        Some("grid sigmas must be strictly decreasing".into())
    } else {
        None
    }
}

/// What makes a PD round's description unusable with its grid, if anything.
pub(crate) fn pd_problem(pd: Option<&PdRound>, grid: &Grid) -> Option<String> {
    let pd = pd?;
    if pd.student_steps == 0 || pd.images == 0 {
        Some("a PD round needs a student of at least one step and at least one image".into())
    } else if grid.sigmas.len() as u64 != 2 * pd.student_steps as u64 + 1 {
        Some(format!(
            "a PD round of {} student steps needs a teacher grid of {} points, the grid has {}",
            pd.student_steps,
            2 * pd.student_steps as u64 + 1,
            grid.sigmas.len()
        ))
    } else {
        None
    }
}

/// Shards needed for `count` trajectories, `None` when `rows_per_shard` is 0.
fn planned_shards(count: u64, rows_per_shard: u32) -> Option<u64> {
    (rows_per_shard > 0).then(|| count.div_ceil(rows_per_shard as u64))
}

/// What makes a planned size unusable: shard indices are u32.
pub(crate) fn plan_problem(count: u64, rows_per_shard: u32) -> Option<String> {
    match planned_shards(count, rows_per_shard) {
        Some(n) if n > u32::MAX as u64 => Some(format!(
            "planned_count {count} at {rows_per_shard} rows per shard needs {n} shards, more than {}",
            u32::MAX
        )),
        _ => None,
    }
}

/// Why a manifest's file path is unsafe to open, if it is: it must be relative, normalised
/// (no `.`, `..` or empty components) and plain, so that it names a file inside the dataset.
pub(crate) fn check_relative_path(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        Err("is empty")
    } else if path.starts_with('/') {
        Err("is absolute")
    } else if path.contains('\\') || path.contains('\0') {
        Err("holds a backslash or NUL")
    } else if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        Err("is not normalised (empty, `.` or `..` components)")
    } else {
        Ok(())
    }
}

/// File name of the Parquet file for `(step, shard)`, relative to the dataset directory. The
/// step is a plain integer (`step=7`), so hive-partitioned readers type it as one; an older
/// bdense wrote `step=0007`, which manifests keep naming and readers keep opening.
pub fn file_name(step: u16, shard: u32) -> String {
    format!("step={step}/shard-{shard:05}.parquet")
}

/// [`file_name`] as an older bdense wrote it (`step=0007/shard-00003.parquet`).
fn legacy_file_name(step: u16, shard: u32) -> String {
    format!("step={step:04}/shard-{shard:05}.parquet")
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `name` is a step partition directory this store writes (`step=7`, or an older
/// bdense's `step=0007`).
pub(crate) fn is_step_dir_name(name: &str) -> bool {
    name.strip_prefix("step=").is_some_and(all_digits)
}

/// Whether `name` is a step file name this store writes (`shard-00003.parquet`).
pub(crate) fn is_shard_file_name(name: &str) -> bool {
    name.strip_prefix("shard-")
        .and_then(|s| s.strip_suffix(".parquet"))
        .is_some_and(all_digits)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
