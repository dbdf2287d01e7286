//! Integrity on every read: a step file is handed to a decoder only after its bytes are shown
//! to be the ones the manifest committed (size and xxh3), and its row count and trajectory
//! ids agree with the manifest. `verify` reports every problem; readers stop at the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;

use crate::backend::Backend;
use crate::error::{Result, StoreError};
use crate::manifest::{FileEntry, ShardEntry, check_relative_path};
use crate::schema;

/// A step file's bytes as read, before any check: what `verify` inspects.
pub(crate) struct RawFile {
    pub path: PathBuf,
    pub bytes: Bytes,
    /// The file's size when it holds more than the manifest's byte count (only that many
    /// were read).
    pub longer: Option<u64>,
}

impl RawFile {
    /// Reads `entry` from the dataset: confined to the dataset, at most the manifest's byte
    /// count.
    pub(crate) fn read(backend: &dyn Backend, entry: &FileEntry) -> Result<RawFile> {
        let path = backend.locate(&entry.path);
        if let Err(why) = check_relative_path(&entry.path) {
            return Err(StoreError::invalid(&path, format!("manifest path {why}")));
        }
        let (bytes, longer) = backend.read_bounded(&entry.path, entry.bytes)?;
        let longer = match longer {
            true => Some(
                backend
                    .stat(&entry.path)?
                    .map_or(entry.bytes + 1, |s| s.bytes),
            ),
            false => None,
        };
        Ok(RawFile {
            path,
            bytes,
            longer,
        })
    }

    /// What differs from the manifest's size and hash, if anything.
    pub(crate) fn mismatch(&self, entry: &FileEntry) -> Option<String> {
        if self.longer.is_some() || self.bytes.len() as u64 != entry.bytes {
            let size = self.longer.unwrap_or(self.bytes.len() as u64);
            return Some(format!("size {size} bytes, manifest says {}", entry.bytes));
        }
        let hash = hash_hex(&self.bytes);
        (hash != entry.xxh3).then(|| format!("content hash {hash}, manifest says {}", entry.xxh3))
    }
}

pub(crate) fn hash_hex(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

pub(crate) fn damaged(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Runs a decoder over bytes that may be damaged in ways its own checks miss (a flipped bit in
/// the footer's embedded Arrow schema makes arrow-ipc panic, even when a rewritten manifest
/// vouches for the file): a panic becomes an error naming the file.
pub(crate) fn guard<T>(path: &Path, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(damaged(
            path,
            format!("the Parquet/Arrow decoder failed: {what}"),
        ))
    })
}

/// The bytes of `entry`, shown to be exactly the committed ones.
pub(crate) fn read_verified(backend: &dyn Backend, entry: &FileEntry) -> Result<(PathBuf, Bytes)> {
    let raw = RawFile::read(backend, entry)?;
    match raw.mismatch(entry) {
        Some(detail) => Err(damaged(&raw.path, detail)),
        None => Ok((raw.path, raw.bytes)),
    }
}

/// Checks a file's footer against its shard: row count and (from the column statistics) the
/// trajectory id range, without decoding any page.
pub(crate) fn check_footer(path: &Path, meta: &ParquetMetaData, shard: &ShardEntry) -> Result<()> {
    let rows = meta.file_metadata().num_rows();
    if u64::try_from(rows).ok() != Some(shard.rows) {
        return Err(damaged(
            path,
            format!("holds {rows} rows, the manifest says {}", shard.rows),
        ));
    }
    let Some(col) = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == schema::TRAJ_ID)
    else {
        return Ok(()); // the schema check names a missing column
    };
    let mut next = shard.first_id;
    for (g, group) in meta.row_groups().iter().enumerate() {
        let Some(Statistics::Int64(s)) = group.column(col).statistics() else {
            return Ok(()); // no statistics to compare; the hash still holds
        };
        let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else {
            return Ok(());
        };
        let (min, max) = (min as u64, max as u64);
        let span = max.checked_sub(min).map(|d| d + 1);
        if min != next || span != u64::try_from(group.num_rows()).ok() {
            return Err(damaged(
                path,
                format!(
                    "row group {g} holds trajectory ids {min}..={max} in {} rows, the manifest's ids continue at {next}",
                    group.num_rows()
                ),
            ));
        }
        next = max.saturating_add(1);
    }
    Ok(())
}

/// When a file was checked: its size, modification time and (on object storage) ETag.
type Stamp = (u64, SystemTime, String);

/// Files already checked in this session, by (path, size, mtime, ETag): one hash per file
/// however many queries or epochs read it, and a new hash as soon as it changes.
#[derive(Debug, Default)]
pub struct VerifiedFiles {
    seen: Mutex<HashMap<PathBuf, Checked>>,
}

/// How far a file was checked: on object storage [`VerifiedFiles::check`] reads the footer
/// alone, so the content hash is still owed by the first reader that fetches the whole file;
/// a reader that hashed the whole file without [`VerifiedFiles::check`] leaves the footer
/// checks (rows, ids, Arrow schema) owed to the first `check`.
#[derive(Debug, Clone, PartialEq)]
struct Checked {
    stamp: Stamp,
    hashed: bool,
    footer: bool,
}

impl VerifiedFiles {
    pub fn new() -> VerifiedFiles {
        VerifiedFiles::default()
    }

    /// Checks `entry` of `shard` (size, hash, rows, ids) unless it was checked unchanged
    /// before. Returns the file's path. On object storage the content hash is left to the
    /// readers that fetch whole files (the target stream, `verify`): here the size and the
    /// footer are checked from two small requests, so that SQL reads only the byte ranges a
    /// query needs.
    pub fn check(
        &self,
        backend: &dyn Backend,
        shard: &ShardEntry,
        entry: &FileEntry,
    ) -> Result<PathBuf> {
        self.check_to(backend, shard, entry, false)
    }

    /// [`VerifiedFiles::check`], and on object storage the content hash too: for readers
    /// that fetch byte ranges and never the whole file (DataFusion's Parquet scan), which
    /// would otherwise read an object replaced with the same size and footer.
    pub fn check_content(
        &self,
        backend: &dyn Backend,
        shard: &ShardEntry,
        entry: &FileEntry,
    ) -> Result<PathBuf> {
        self.check_to(backend, shard, entry, true)
    }

    fn check_to(
        &self,
        backend: &dyn Backend,
        shard: &ShardEntry,
        entry: &FileEntry,
        content: bool,
    ) -> Result<PathBuf> {
        let path = backend.locate(&entry.path);
        // Stamped before reading, so a change while we hash invalidates the entry.
        let stamp = stamp(backend, &entry.path, &path)?;
        match self.checked(&path, &stamp) {
            Some(c) if c.footer && (c.hashed || !content) => return Ok(path),
            Some(c) if c.footer => {
                self.read(backend, entry)?;
                return Ok(path);
            }
            _ => {}
        }
        let hashed = backend.local_dir().is_some();
        let meta = match backend.local_dir() {
            Some(_) => {
                let (path, bytes) = read_verified(backend, entry)?;
                guard(&path, || {
                    ParquetMetaDataReader::new()
                        .parse_and_finish(&bytes)
                        .map_err(|e| StoreError::parquet(&path, e))
                })?
            }
            None if stamp.0 != entry.bytes => {
                return Err(damaged(
                    &path,
                    format!("size {} bytes, manifest says {}", stamp.0, entry.bytes),
                ));
            }
            None => read_footer(backend, entry)?,
        };
        guard(&path, || {
            check_footer(&path, &meta, shard)?;
            // Decode the embedded Arrow schema now, where a failure is an error naming the
            // file, rather than inside the query engine.
            ArrowReaderMetadata::try_new(Arc::new(meta), ArrowReaderOptions::default())
                .map_err(|e| StoreError::parquet(&path, e))
        })?;
        self.remember(
            &path,
            Checked {
                stamp,
                hashed,
                footer: true,
            },
        );
        if content && !hashed {
            self.read(backend, entry)?;
        }
        Ok(path)
    }

    /// The bytes of `entry`: hashed against the manifest unless this handle hashed the file,
    /// unchanged, before (a training run reads every file once per epoch, and `read_steps`
    /// callers read a shard again and again; hashing each time cost a twentieth of the target
    /// stream and a seventh of a single-threaded `read_steps`, docs/perf.md). Stamped before
    /// reading, so a file replaced while it is read is hashed again next time.
    pub(crate) fn read(
        &self,
        backend: &dyn Backend,
        entry: &FileEntry,
    ) -> Result<(PathBuf, Bytes)> {
        let path = backend.locate(&entry.path);
        let stamp = stamp(backend, &entry.path, &path)?;
        let before = self.checked(&path, &stamp);
        if before.as_ref().is_some_and(|c| c.hashed) {
            let raw = RawFile::read(backend, entry)?;
            if raw.longer.is_none() && raw.bytes.len() as u64 == entry.bytes {
                return Ok((raw.path, raw.bytes));
            }
        }
        let (path, bytes) = read_verified(backend, entry)?;
        self.remember(
            &path,
            Checked {
                stamp,
                hashed: true,
                footer: before.is_some_and(|c| c.footer),
            },
        );
        Ok((path, bytes))
    }

    /// How far `path` was checked with this stamp, if at all.
    fn checked(&self, path: &Path, stamp: &Stamp) -> Option<Checked> {
        let seen = self.seen.lock().expect("no poisoned cache");
        seen.get(path).filter(|c| &c.stamp == stamp).cloned()
    }

    fn remember(&self, path: &Path, checked: Checked) {
        let mut seen = self.seen.lock().expect("no poisoned cache");
        seen.insert(path.to_path_buf(), checked);
    }
}

/// What marks `rel` (printed as `path`) unchanged: its size, modification time and version.
fn stamp(backend: &dyn Backend, rel: &str, path: &Path) -> Result<Stamp> {
    let stat = backend
        .stat(rel)?
        .ok_or_else(|| StoreError::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    Ok((stat.bytes, stat.modified, stat.version))
}

/// A step file's footer, read from its tail alone (one request, two when the footer is larger
/// than the first guess).
fn read_footer(backend: &dyn Backend, entry: &FileEntry) -> Result<ParquetMetaData> {
    let path = backend.locate(&entry.path);
    let mut want = FOOTER_GUESS.min(entry.bytes);
    let mut reader = ParquetMetaDataReader::new();
    loop {
        let tail = backend.read_tail(&entry.path, entry.bytes, want)?;
        let parsed = guard(&path, || match reader.try_parse_sized(&tail, entry.bytes) {
            Err(ParquetError::NeedMoreData(n))
                if (n as u64) > want && (n as u64) <= entry.bytes =>
            {
                Ok(Some(n as u64))
            }
            Err(e) => Err(StoreError::parquet(&path, e)),
            Ok(()) => Ok(None),
        })?;
        match parsed {
            Some(n) => want = n,
            None => break,
        }
    }
    reader.finish().map_err(|e| StoreError::parquet(&path, e))
}

/// Bytes read from a file's end for its footer at first: a step file's footer is a few KiB.
const FOOTER_GUESS: u64 = 64 << 10;
