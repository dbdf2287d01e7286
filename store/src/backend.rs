//! The few primitives the commit protocol needs from where a dataset lives, so that an object
//! store can implement the same protocol later (docs/STORE-PROTOCOL.md): put-if-absent, get,
//! list one level of a prefix, delete. Paths are relative to the dataset, `/`-separated.
//!
//! Only [`LocalDir`] exists today. Its put-if-absent writes a temporary file, syncs it and
//! hard-links it to the final name: `link` fails when the name exists (exclusive like
//! `O_EXCL`/`create_new`) and publishes the whole file at once, so a reader never sees a
//! half-written object, exactly as an object store's conditional PUT (`If-None-Match: *`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::fsutil;

/// Where a dataset's objects live.
pub trait Backend {
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
