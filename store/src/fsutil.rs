//! Crash-safe file primitives: everything durable is written to a temporary name, synced and
//! published under its final name without replacing anything (see [`crate::backend`]), then
//! the directory is synced so the new name itself survives a crash.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// Temporary sibling of `path`, `.NAME.tmp-PID-N`: dot-prefixed so DataFusion, pyarrow,
/// polars and duckdb skip it (and it does not end in `.parquet`). The writer's pid in the name
/// tells `gc` whose it is (see [`WriterLock`]); N keeps two writers of one process apart.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// The pid and final name of a temporary file [`temp_path`] named (or an older bdense's
/// `.NAME.tmp-PID`), `None` for other names.
pub(crate) fn temp_owner(name: &str) -> Option<(u32, &str)> {
    let (base, tail) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let pid = match tail.split_once('-') {
        Some((pid, n)) => {
            digits(n)?;
            pid
        }
        None => tail,
    };
    Some((digits(pid)?, base))
}

fn digits(s: &str) -> Option<u32> {
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse().ok())
        .flatten()
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Held (exclusive `flock` on `_bdense/writer-PID-N.lock`) by every open [`crate::DatasetWriter`] for
/// its whole life, so `gc` can tell a live writer's temporary files from a dead one's: the
/// kernel drops the lock when the process dies, however it dies.
pub(crate) struct WriterLock {
    file: File,
    path: PathBuf,
}

/// Writer locks live in [`crate::manifest::META_DIR`]; an older bdense put them at the top
/// as `.writer-PID-N.lock`.
const WRITER_LOCK_PREFIX: &str = "writer-";
pub(crate) const LEGACY_WRITER_LOCK_PREFIX: &str = ".writer-";
const WRITER_LOCK_SUFFIX: &str = ".lock";

impl WriterLock {
    pub(crate) fn acquire(dataset_dir: &Path) -> Result<WriterLock> {
        // Several writers of one process (tests, a library user) each need their own file:
        // flock on a second descriptor of the same file would wait for the first.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!(
            "{WRITER_LOCK_PREFIX}{}-{n}{WRITER_LOCK_SUFFIX}",
            std::process::id()
        );
        let meta = dataset_dir.join(crate::manifest::META_DIR);
        std::fs::create_dir_all(&meta).map_err(|e| StoreError::io(&meta, e))?;
        let path = meta.join(name);
        let file = File::create(&path).map_err(|e| StoreError::io(&path, e))?;
        file.lock().map_err(|e| StoreError::io(&path, e))?;
        Ok(WriterLock { file, path })
    }

    /// The pid of a writer lock file's name, `None` for other names.
    pub(crate) fn owner(name: &str) -> Option<u32> {
        let rest = name
            .strip_prefix(WRITER_LOCK_PREFIX)
            .or_else(|| name.strip_prefix(LEGACY_WRITER_LOCK_PREFIX))?
            .strip_suffix(WRITER_LOCK_SUFFIX)?;
        let (pid, n) = rest.split_once('-')?;
        digits(n)?;
        digits(pid)
    }

    /// Whether a live process holds the writer lock at `path` (false when it is gone).
    pub(crate) fn is_held(path: &Path) -> bool {
        let Ok(file) = File::options().read(true).open(path) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Opens `rel` (a path a manifest names) inside `dir` for reading, refusing anything but a
/// regular file reached through real directories: no symlink, device or fifo, so a manifest
/// cannot make a reader open `/etc/passwd` or block on `/dev/zero`.
pub(crate) fn open_confined(dir: &Path, rel: &str) -> Result<(File, PathBuf)> {
    let path = dir.join(rel);
    if let Err(why) = crate::manifest::check_relative_path(rel) {
        return Err(StoreError::invalid(&path, format!("manifest path {why}")));
    }
    let mut at = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        // Errors name the file the manifest lists, whichever component is missing.
        let meta = std::fs::symlink_metadata(&at).map_err(|e| StoreError::io(&path, e))?;
        let last = i + 1 == parts.len();
        let fine = if last { meta.is_file() } else { meta.is_dir() };
        if !fine {
            let want = if last {
                "a regular file"
            } else {
                "a directory"
            };
            return Err(StoreError::invalid(
                &at,
                format!("is not {want} (symlink or special file)"),
            ));
        }
    }
    let file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
    Ok((file, path))
}

/// Reads at most `limit` bytes of `file`, and says if there were more: a manifest's byte
/// count bounds every read, whatever the file holds.
pub(crate) fn read_bounded(file: File, path: &Path, limit: u64) -> Result<(Vec<u8>, bool)> {
    use std::io::Read;
    let capacity = file.metadata().map(|m| m.len().min(limit)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::io(path, e))?;
    let longer = bytes.len() as u64 > limit;
    bytes.truncate(limit as usize);
    Ok((bytes, longer))
}
