//! `gc`: removes what a crashed or interrupted writer left behind in a dataset, and nothing
//! else. It deletes only names the store itself creates (uncommitted `step=N/shard-N.parquet`
//! files, `.NAME.tmp-PID` temporaries, stale writer locks) inside a dataset directory, never
//! files it does not recognise and never a directory that holds no manifest.
//!
//! Whose is a temporary file? Its name carries the writer's pid, and every open writer holds
//! a `flock` on `.writer-PID-N.lock` (see `fsutil::WriterLock`). A file of a pid whose lock
//! is held belongs to a live writer and stays; one whose lock file exists but is not held
//! (the kernel releases it when the process dies) is abandoned and goes at once; one with no
//! lock file at all (another host, an older bdense) goes only once older than the grace
//! period. Uncommitted files with final names have no pid: they too wait out the grace period.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Result, StoreError};
use crate::fsutil::{DatasetLock, WriterLock, temp_owner};
use crate::manifest::{self, LOCK_FILE, MANIFEST_FILE, Manifest};

/// How long a file whose writer cannot be identified is presumed to be in use.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// Unheld writer lock files younger than this stay (they may be about to be locked).
const STALE_LOCK_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only list what would be removed.
    pub dry_run: bool,
    /// Files of unknown writers younger than this stay.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: DEFAULT_GRACE,
        }
    }
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<PathBuf>,
    pub bytes: u64,
    /// Store-named files that stay, with the reason (a live writer, the grace period).
    pub kept: Vec<(PathBuf, String)>,
}

/// [`collect_garbage_with`] the default grace period.
pub fn collect_garbage(dataset_dir: &Path, dry_run: bool) -> Result<GcReport> {
    collect_garbage_with(
        dataset_dir,
        &GcOptions {
            dry_run,
            ..GcOptions::default()
        },
    )
}

/// Deletes what dead writers left in the dataset at `dataset_dir` (or only lists it when
/// `options.dry_run`).
pub fn collect_garbage_with(dataset_dir: &Path, options: &GcOptions) -> Result<GcReport> {
    // Refuse a non-dataset before touching anything (not even creating a lock file in it).
    Manifest::load(dataset_dir)?;
    let _lock = DatasetLock::acquire(dataset_dir)?;
    // Under the lock no commit is half done: re-read what is committed now.
    let manifest = Manifest::load(dataset_dir)?;
    let mut gc = Collector {
        dir: dataset_dir,
        options,
        committed: manifest
            .shards
            .iter()
            .flat_map(|s| s.files.iter().map(|f| dataset_dir.join(&f.path)))
            .collect(),
        writers: HashMap::new(),
        now: SystemTime::now(),
        report: GcReport::default(),
    };
    gc.sweep_top()?;
    Ok(gc.report)
}

/// What gc knows of a pid's writer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Writer {
    Alive,
    /// Its lock file exists and nobody holds it.
    Dead,
    /// No lock file names it.
    Unknown,
}

struct Collector<'a> {
    dir: &'a Path,
    options: &'a GcOptions,
    committed: HashSet<PathBuf>,
    writers: HashMap<u32, Writer>,
    now: SystemTime,
    report: GcReport,
}

impl Collector<'_> {
    fn sweep_top(&mut self) -> Result<()> {
        for (path, name, meta) in entries(self.dir)? {
            if name == MANIFEST_FILE || name == LOCK_FILE {
                continue;
            }
            if meta.is_dir() && manifest::is_step_dir_name(&name) {
                self.sweep_step_dir(&path)?;
            } else if meta.is_file() && WriterLock::owner(&name).is_some() {
                // A dead writer's lock file goes once it is clearly old: a brand-new one may
                // be between its writer's create and flock.
                if !WriterLock::is_held(&path) && self.age(&meta) >= STALE_LOCK_AGE {
                    self.remove(&path, &meta)?;
                }
            } else if meta.is_file()
                && let Some((pid, MANIFEST_FILE)) = temp_owner(&name)
            {
                self.consider_temp(&path, &meta, pid)?;
            }
        }
        Ok(())
    }

    fn sweep_step_dir(&mut self, dir: &Path) -> Result<()> {
        for (path, name, meta) in entries(dir)? {
            if !meta.is_file() {
                continue;
            }
            if manifest::is_shard_file_name(&name) {
                if !self.committed.contains(&path) {
                    self.consider_aged(&path, &meta, "an uncommitted shard file")?;
                }
            } else if let Some((pid, base)) = temp_owner(&name)
                && manifest::is_shard_file_name(base)
            {
                self.consider_temp(&path, &meta, pid)?;
            }
        }
        if !self.options.dry_run && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    fn consider_temp(&mut self, path: &Path, meta: &std::fs::Metadata, pid: u32) -> Result<()> {
        match self.writer(pid) {
            Writer::Alive => {
                self.keep(path, format!("writer {pid} is still running"));
                Ok(())
            }
            Writer::Dead => self.remove(path, meta),
            Writer::Unknown => self.consider_aged(path, meta, "a temporary file"),
        }
    }

    /// Removes a file no live writer is known to own once it is older than the grace period.
    fn consider_aged(&mut self, path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<()> {
        let age = self.age(meta);
        if age >= self.options.grace {
            return self.remove(path, meta);
        }
        self.keep(
            path,
            format!(
                "{what} younger than the grace period ({}s < {}s)",
                age.as_secs(),
                self.options.grace.as_secs()
            ),
        );
        Ok(())
    }

    fn age(&self, meta: &std::fs::Metadata) -> Duration {
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        self.now.duration_since(modified).unwrap_or_default()
    }

    /// Whether `pid` has a writer lock, held or not. Looked up when a file of `pid` has been
    /// seen, so a writer's lock (taken before its first file) is already there.
    fn writer(&mut self, pid: u32) -> Writer {
        if let Some(&known) = self.writers.get(&pid) {
            return known;
        }
        let locks: Vec<PathBuf> = entries(self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, name, _)| WriterLock::owner(name) == Some(pid))
            .map(|(path, _, _)| path)
            .collect();
        let state = if locks.iter().any(|p| WriterLock::is_held(p)) {
            Writer::Alive
        } else if locks.is_empty() {
            Writer::Unknown
        } else {
            Writer::Dead
        };
        // A live writer may commit (and so rename) at any moment: look again next time.
        if state != Writer::Alive {
            self.writers.insert(pid, state);
        }
        state
    }

    fn keep(&mut self, path: &Path, why: String) {
        self.report.kept.push((path.to_path_buf(), why));
    }

    fn remove(&mut self, path: &Path, meta: &std::fs::Metadata) -> Result<()> {
        if !self.options.dry_run {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                // Committed or cleaned up by its writer meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        self.report.bytes += meta.len();
        self.report.removed.push(path.to_path_buf());
        Ok(())
    }
}

/// A directory's entries with their names and (not followed) metadata, sorted by name.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, String, std::fs::Metadata)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        out.push((path, entry.file_name().to_string_lossy().into_owned(), meta));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}
