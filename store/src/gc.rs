//! `gc`: removes what a crashed or interrupted writer left behind in a dataset, and nothing
//! else. It deletes only names the store itself creates (uncommitted `step=N/shard-N.parquet`
//! files, `.NAME.tmp-PID-N` temporaries, stale writer locks, manifest versions older than the
//! newest [`KEEP_VERSIONS`]) inside a dataset directory, never files it does not recognise,
//! never what the newest snapshot names and never a directory that holds no manifest.
//!
//! Whose is a temporary file? Its name carries the writer's pid, and every open writer holds
//! a `flock` on `_bdense/writer-PID-N.lock` (see `fsutil::WriterLock`). A file of a pid whose
//! lock is held belongs to a live writer and stays; one whose lock file exists but is not held
//! (the kernel releases it when the process dies) is abandoned and goes at once; one with no
//! lock file at all (another host, an older bdense) goes only once older than the grace
//! period. Uncommitted files with final names have no pid: they stay while any writer of the
//! dataset lives, and for the grace period.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::backend::Backend;
use crate::error::{Result, StoreError};
use crate::fsutil::{WriterLock, temp_owner};
use crate::manifest::{self, KEEP_VERSIONS, MANIFEST_DIR, META_DIR};
use crate::writer::latest_writable;

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
///
/// No lock is taken (the protocol of docs/STORE-PROTOCOL.md): files are listed and stat'd
/// first, then the live writers are looked up, then the newest snapshot is read. A file a
/// writer commits before that read is named by it; one committed after was published by a
/// writer alive at the lookup (whose files stay) or freshened within the grace period.
pub fn collect_garbage_with(dataset_dir: &Path, options: &GcOptions) -> Result<GcReport> {
    let backend = crate::backend::open(dataset_dir)?;
    // Refuse a non-dataset (or an older layout) before touching anything.
    latest_writable(backend.as_ref())?;
    let Some(dataset_dir) = backend.local_dir() else {
        return collect_remote(backend.as_ref(), options);
    };
    let mut gc = Collector {
        dir: dataset_dir,
        options,
        committed: HashSet::new(),
        writers: HashMap::new(),
        any_writer_alive: false,
        now: SystemTime::now(),
        report: GcReport::default(),
    };
    let found = gc.list()?;
    gc.any_writer_alive = gc
        .writer_locks()
        .iter()
        .any(|(p, _)| WriterLock::is_held(p));
    let (_, manifest) = latest_writable(backend.as_ref())?;
    gc.committed = manifest
        .shards
        .iter()
        .flat_map(|s| s.files.iter().map(|f| dataset_dir.join(&f.path)))
        .collect();
    let versions = found
        .iter()
        .filter_map(|f| match f.kind {
            Kind::Version(v) => Some(v),
            _ => None,
        })
        .collect::<Vec<u64>>();
    let newest_kept = versions
        .iter()
        .copied()
        .rev()
        .nth(KEEP_VERSIONS.saturating_sub(1));
    for f in found {
        match f.kind {
            Kind::Shard => {
                if !gc.committed.contains(&f.path) {
                    gc.consider_uncommitted(&f.path, &f.meta)?;
                }
            }
            Kind::Temp(pid) => gc.consider_temp(&f.path, &f.meta, pid)?,
            Kind::WriterLock => {
                // A dead writer's lock file goes once it is clearly old: a brand-new one may
                // be between its writer's create and flock.
                if !WriterLock::is_held(&f.path) && gc.age(&f.meta) >= STALE_LOCK_AGE {
                    gc.remove(&f.path, &f.meta)?;
                }
            }
            // Old versions go, the newest few stay (the newest always: `newest_kept` is
            // at most it).
            Kind::Version(v) => {
                if newest_kept.is_some_and(|keep| v < keep) {
                    gc.remove(&f.path, &f.meta)?;
                }
            }
        }
    }
    if !options.dry_run {
        for dir in gc.step_dirs()? {
            if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
    Ok(gc.report)
}

/// gc on object storage. Writers there put whole files (no temporaries) and hold no lock, so
/// an uncommitted step file goes by the grace period alone (a writer that adopts one puts it
/// again, which makes it young: see `ObjectDir::freshen`), and manifest versions beyond the
/// newest [`KEEP_VERSIONS`] are pruned. The same order as locally: list and stat, then read
/// the snapshot, then delete only files unchanged since they were listed.
fn collect_remote(backend: &dyn Backend, options: &GcOptions) -> Result<GcReport> {
    let now = SystemTime::now();
    let mut found = Vec::new();
    for dir in backend.list("")? {
        if !manifest::is_step_dir_name(&dir) {
            continue;
        }
        for name in backend.list(&dir)? {
            let rel = format!("{dir}/{name}");
            if manifest::is_shard_file_name(&name)
                && let Some(stat) = backend.stat(&rel)?
            {
                found.push((rel, stat));
            }
        }
    }
    let versions = manifest::versions(backend)?;
    let (_, snapshot) = latest_writable(backend)?;
    let committed: HashSet<&str> = snapshot
        .shards
        .iter()
        .flat_map(|s| s.files.iter().map(|f| f.path.as_str()))
        .collect();
    let mut report = GcReport::default();
    for (rel, stat) in found {
        if committed.contains(rel.as_str()) {
            continue;
        }
        let path = backend.locate(&rel);
        let age = now.duration_since(stat.modified).unwrap_or_default();
        if age < options.grace {
            report.kept.push((
                path,
                format!(
                    "an uncommitted file younger than the grace period ({}s < {}s)",
                    age.as_secs(),
                    options.grace.as_secs()
                ),
            ));
        } else if backend.stat(&rel)?.as_ref() == Some(&stat) {
            if !options.dry_run {
                backend.delete(&rel)?;
            }
            report.bytes += stat.bytes;
            report.removed.push(path);
        }
    }
    let keep_from = versions.iter().rev().nth(KEEP_VERSIONS.saturating_sub(1));
    for &v in versions
        .iter()
        .filter(|&&v| keep_from.is_some_and(|&k| v < k))
    {
        let rel = manifest::version_path(v);
        if let Some(stat) = backend.stat(&rel)? {
            if !options.dry_run {
                backend.delete(&rel)?;
            }
            report.bytes += stat.bytes;
            report.removed.push(backend.locate(&rel));
        }
    }
    Ok(report)
}

/// A store-named file gc found, and what it is.
struct Found {
    path: PathBuf,
    meta: std::fs::Metadata,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `step=N/shard-N.parquet`, committed or not.
    Shard,
    /// `.NAME.tmp-PID-N` of a step file or a manifest version.
    Temp(u32),
    /// `_bdense/writer-PID-N.lock`.
    WriterLock,
    /// `_bdense/manifests/<v>.json`.
    Version(u64),
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
    /// Whether any writer held its lock when gc looked, after listing.
    any_writer_alive: bool,
    now: SystemTime,
    report: GcReport,
}

impl Collector<'_> {
    /// Every file gc may delete, with what it is; nothing else is looked at.
    fn list(&self) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        for dir in self.step_dirs()? {
            for (path, name, meta) in entries(&dir)? {
                let kind = if !meta.is_file() {
                    continue;
                } else if manifest::is_shard_file_name(&name) {
                    Kind::Shard
                } else if let Some((pid, base)) = temp_owner(&name)
                    && manifest::is_shard_file_name(base)
                {
                    Kind::Temp(pid)
                } else {
                    continue;
                };
                found.push(Found { path, meta, kind });
            }
        }
        for (path, name, meta) in entries_if_any(&self.dir.join(manifest::STAGING_DIR))? {
            if meta.is_file()
                && let Some((pid, base)) = temp_owner(&name)
                && manifest::is_staging_name(base)
            {
                found.push(Found {
                    path,
                    meta,
                    kind: Kind::Temp(pid),
                });
            }
        }
        for (path, name, meta) in entries_if_any(&self.dir.join(MANIFEST_DIR))? {
            let kind = if !meta.is_file() {
                continue;
            } else if let Some(v) = manifest::parse_version(&name) {
                Kind::Version(v)
            } else if let Some((pid, base)) = temp_owner(&name)
                && manifest::parse_version(base).is_some()
            {
                Kind::Temp(pid)
            } else {
                continue;
            };
            found.push(Found { path, meta, kind });
        }
        for (path, meta) in self.writer_locks() {
            found.push(Found {
                path,
                meta,
                kind: Kind::WriterLock,
            });
        }
        Ok(found)
    }

    fn step_dirs(&self) -> Result<Vec<PathBuf>> {
        Ok(entries(self.dir)?
            .into_iter()
            .filter(|(_, name, meta)| meta.is_dir() && manifest::is_step_dir_name(name))
            .map(|(path, _, _)| path)
            .collect())
    }

    /// `_bdense/writer-PID-N.lock` files, with their metadata.
    fn writer_locks(&self) -> Vec<(PathBuf, std::fs::Metadata)> {
        entries_if_any(&self.dir.join(META_DIR))
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, name, meta)| meta.is_file() && WriterLock::owner(name).is_some())
            .map(|(path, _, meta)| (path, meta))
            .collect()
    }

    /// A step file under its final name that the newest snapshot does not name: a writer
    /// published it and died before committing, or is about to commit it. It has no pid in
    /// its name, so it stays while any writer of this dataset lives, and for the grace period.
    fn consider_uncommitted(&mut self, path: &Path, meta: &std::fs::Metadata) -> Result<()> {
        if self.any_writer_alive {
            self.keep(
                path,
                "an uncommitted shard file while a writer of this dataset is running".into(),
            );
            return Ok(());
        }
        // A writer that found this file in its way with its own bytes freshens it before
        // committing it: look again just before deleting.
        let fresh = std::fs::symlink_metadata(path).unwrap_or_else(|_| meta.clone());
        if fresh.modified().ok() != meta.modified().ok() {
            self.keep(
                path,
                "an uncommitted shard file changed while gc ran".into(),
            );
            return Ok(());
        }
        self.consider_aged(path, meta, "an uncommitted shard file")
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
        let locks: Vec<PathBuf> = self
            .writer_locks()
            .into_iter()
            .filter(|(path, _)| {
                path.file_name()
                    .and_then(|n| WriterLock::owner(&n.to_string_lossy()))
                    == Some(pid)
            })
            .map(|(path, _)| path)
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

/// [`entries`] of a directory that may not exist (yet): none then.
fn entries_if_any(dir: &Path) -> Result<Vec<(PathBuf, String, std::fs::Metadata)>> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => entries(dir),
        Ok(_) => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io(dir, e)),
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
