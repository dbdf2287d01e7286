//! The manifest: the committed snapshot of a dataset, replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::fsutil;

/// Bumped when a reader of the previous version could misread a new dataset.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
/// Held (advisory `flock`) while a writer commits or `gc` deletes, so they never interleave.
pub const LOCK_FILE: &str = "manifest.lock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    pub c: u32,
    pub h: u32,
    pub w: u32,
}

impl Dims {
    pub fn len(&self) -> usize {
        (self.c * self.h * self.w) as usize
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

/// The teacher's sigma grid: one sigma per stored step, descending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridInfo {
    /// `sigmas[step]`; the last entry is 0 when the solver appends the sigma = 0 state.
    pub sigmas: Vec<f64>,
    /// How the grid was built (e.g. "polynomial"), with its parameters.
    pub kind: String,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    /// True when the final sigma = 0 state is stored as the last step.
    pub appends_zero: bool,
}

impl GridInfo {
    /// Number of points on the sigma grid proper (without an appended zero).
    pub fn points(&self) -> usize {
        self.sigmas.len() - usize::from(self.appends_zero)
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
    pub fn id_range(&self) -> std::ops::Range<u64> {
        self.first_id..self.first_id + self.rows
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
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
    pub grid: GridInfo,
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
}

impl Manifest {
    pub fn steps(&self) -> usize {
        self.grid.sigmas.len()
    }

    pub fn trajectories(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes()).sum()
    }

    pub fn shard(&self, index: u32) -> Option<&ShardEntry> {
        self.shards.iter().find(|s| s.index == index)
    }

    /// Number of shards a complete dataset has.
    pub fn planned_shards(&self) -> u32 {
        self.planned_count.div_ceil(self.rows_per_shard as u64) as u32
    }

    /// Id range shard `index` holds when complete.
    pub fn planned_range(&self, index: u32) -> std::ops::Range<u64> {
        let start = index as u64 * self.rows_per_shard as u64;
        start..(start + self.rows_per_shard as u64).min(self.planned_count)
    }

    /// Shards not yet committed, in index order.
    pub fn missing_shards(&self) -> Vec<u32> {
        (0..self.planned_shards())
            .filter(|&i| self.shard(i).is_none())
            .collect()
    }

    /// A stable content hash of the committed snapshot (the file hashes, in order).
    pub fn snapshot_hash(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.name.as_bytes());
        for shard in &self.shards {
            for f in &shard.files {
                h.update(f.path.as_bytes());
                h.update(f.xxh3.as_bytes());
            }
        }
        format!("{:016x}", h.digest())
    }

    pub fn path(dataset_dir: &Path) -> PathBuf {
        dataset_dir.join(MANIFEST_FILE)
    }

    /// Reads and checks the committed manifest of the dataset at `dataset_dir`.
    pub fn load(dataset_dir: &Path) -> Result<Manifest> {
        let path = Manifest::path(dataset_dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotADataset {
                    path: dataset_dir.to_path_buf(),
                });
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        // Check the version before the full schema, so a newer manifest says "upgrade" rather
        // than failing on a field it does not know.
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let version: VersionOnly =
            serde_json::from_slice(&text).map_err(|source| StoreError::ManifestJson {
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
            serde_json::from_slice(&text).map_err(|source| StoreError::ManifestJson {
                path: path.clone(),
                source,
            })?;
        manifest.check(&path)?;
        Ok(manifest)
    }

    /// Internal consistency a reader relies on.
    fn check(&self, path: &Path) -> Result<()> {
        if let Some(problem) = layout_problem(self.dims, self.rows_per_shard, &self.grid.sigmas) {
            return Err(StoreError::invalid(path, problem));
        }
        for shard in &self.shards {
            if shard.files.len() != self.steps() {
                return Err(StoreError::invalid(
                    path,
                    format!(
                        "shard {} lists {} step files but the grid has {} steps",
                        shard.index,
                        shard.files.len(),
                        self.steps()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Writes the manifest atomically: temp file, fsync, rename, fsync of the directory.
    pub(crate) fn commit(&self, dataset_dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("manifest serialises");
        fsutil::write_atomic(&Manifest::path(dataset_dir), &bytes)
    }
}

/// What makes a dataset's shape unusable, if anything: shared by writers (before creating)
/// and readers (after loading a manifest).
pub(crate) fn layout_problem(dims: Dims, rows_per_shard: u32, sigmas: &[f64]) -> Option<String> {
    if dims.is_empty() {
        Some("dims have zero size".into())
    } else if rows_per_shard == 0 {
        Some("rows per shard must be positive".into())
    } else if sigmas.len() < 2 || sigmas.len() > u16::MAX as usize {
        Some(format!("grid has {} steps (need 2..=65535)", sigmas.len()))
    } else if sigmas.windows(2).any(|w| w[1] >= w[0]) {
        Some("grid sigmas must be strictly decreasing".into())
    } else {
        None
    }
}

/// File name of the Parquet file for `(step, shard)`, relative to the dataset directory.
pub fn file_name(step: u16, shard: u32) -> String {
    format!("step={step:04}/shard-{shard:05}.parquet")
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
