//! The few primitives the commit protocol needs from where a dataset lives, so that a local
//! directory and an object store implement the same protocol (docs/STORE-PROTOCOL.md):
//! put-if-absent, get, list one level of a prefix, delete; plus what readers need (a stat, a
//! bounded read, a footer read). Paths are relative to the dataset, `/`-separated.
//!
//! [`LocalDir`]'s put-if-absent writes a temporary file, syncs it and hard-links it to the
//! final name: `link` fails when the name exists (exclusive like `O_EXCL`/`create_new`) and
//! publishes the whole file at once, so a reader never sees a half-written object, exactly as
//! an object store's conditional PUT (`If-None-Match: *`, [`crate::object::ObjectDir`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::location::Location;
use crate::object::ObjectDir;

/// The backend of the dataset or store at `dir`: a local path, `file://PATH` or
/// `s3://BUCKET/PREFIX` ([`Location::parse`]).
pub fn open(dir: &Path) -> Result<Arc<dyn Backend>> {
    Ok(match Location::parse(dir)? {
        Location::Local(path) => Arc::new(LocalDir::new(&path)),
        Location::S3 { bucket, key } => Arc::new(ObjectDir::s3(&bucket, &key)?),
    })
}

/// What a reader needs to know about an object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub bytes: u64,
    pub modified: SystemTime,
    /// A regular file (locally: not a directory, symlink or device); objects always are.
    pub regular: bool,
    /// Changes whenever the content may have (an object's ETag; empty locally, where the
    /// modification time serves).
    pub version: String,
}

/// Where a dataset's objects live.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A printable name for `rel` (a path today, a URL on object storage) for errors.
    fn locate(&self, rel: &str) -> PathBuf;
    /// Creates `rel` holding `bytes` unless it exists; `Ok(false)` when it did (nothing is
    /// changed then). The object appears whole or not at all.
    fn put_if_absent(&self, rel: &str, bytes: &[u8]) -> Result<bool>;
    /// The bytes of `rel`, `None` when it does not exist.
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>>;
    /// Names directly under the prefix `rel` (one level, unsorted); empty when it is absent.
    fn list(&self, rel: &str) -> Result<Vec<String>>;
    /// Removes `rel`; removing what is already gone is no error.
    fn delete(&self, rel: &str) -> Result<()>;
    /// Size and age of `rel` (not following a local symlink), `None` when it does not exist.
    fn stat(&self, rel: &str) -> Result<Option<Stat>>;
    /// At most `limit` bytes of `rel` (a file a manifest names, confined to the dataset), and
    /// whether it holds more: a manifest's byte count bounds every read.
    fn read_bounded(&self, rel: &str, limit: u64) -> Result<(Bytes, bool)>;
    /// The last `len` bytes of `rel`, whose size is `size` (a Parquet footer).
    fn read_tail(&self, rel: &str, size: u64, len: u64) -> Result<Bytes>;
    /// Makes `rel`, which holds `bytes`, count as just published (gc's grace period starts
    /// again).
    fn freshen(&self, rel: &str, bytes: &[u8]) -> Result<()>;
    /// The local directory, when the dataset is on this machine's disk (writers stage files and
    /// hold a lock there; gc asks which local writers are alive).
    fn local_dir(&self) -> Option<&Path> {
        None
    }
    /// The object store, when the dataset is on one (for DataFusion to read byte ranges from).
    fn object_dir(&self) -> Option<&ObjectDir> {
        None
    }
}

/// A dataset in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    pub fn new(dir: &Path) -> LocalDir {
        LocalDir {
            dir: dir.to_path_buf(),
        }
    }
}

impl Backend for LocalDir {
    fn locate(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(rel)
        }
    }

    fn put_if_absent(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.dir.join(rel);
        let parent = path.parent().expect("objects live in a directory");
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        let temp = fsutil::temp_path(&path);
        let written = File::create_new(&temp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(|e| StoreError::io(&temp, e));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        let linked = link_if_absent(&temp, &path);
        if linked.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        linked
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn list(&self, rel: &str) -> Result<Vec<String>> {
        let path = self.dir.join(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&path, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn delete(&self, rel: &str) -> Result<()> {
        let path = self.dir.join(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn stat(&self, rel: &str) -> Result<Option<Stat>> {
        let path = self.dir.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) => Ok(Some(Stat {
                bytes: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                regular: m.is_file(),
                version: String::new(),
            })),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn read_bounded(&self, rel: &str, limit: u64) -> Result<(Bytes, bool)> {
        let (file, path) = fsutil::open_confined(&self.dir, rel)?;
        let (bytes, longer) = fsutil::read_bounded(file, &path, limit)?;
        Ok((Bytes::from(bytes), longer))
    }

    fn read_tail(&self, rel: &str, size: u64, len: u64) -> Result<Bytes> {
        use std::io::{Read, Seek, SeekFrom};
        let (mut file, path) = fsutil::open_confined(&self.dir, rel)?;
        let start = size.saturating_sub(len);
        let mut bytes = Vec::with_capacity((size - start) as usize);
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.take(size - start).read_to_end(&mut bytes))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Bytes::from(bytes))
    }

    fn freshen(&self, rel: &str, _bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(rel);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .map_err(|e| StoreError::io(&path, e))
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// Whether an error means "no such object": the path, or a directory on it, is missing, or
/// a component is a file (`STORE/afile/NAME`).
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Publishes the complete, synced file `temp` as `path` unless `path` exists (`Ok(false)`);
/// `temp` is gone afterwards unless an error is returned. The local put-if-absent: `link` is atomic and
/// exclusive, where `rename` would silently replace.
pub(crate) fn link_if_absent(temp: &Path, path: &Path) -> Result<bool> {
    match std::fs::hard_link(temp, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(temp);
            fsutil::sync_dir(path.parent().expect("published files live in a directory"))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(temp);
            Ok(false)
        }
        // `temp` stays for a retry (a directory on the way was missing) or for the caller to
        // discard.
        Err(e) => Err(StoreError::io(path, e)),
    }
}
