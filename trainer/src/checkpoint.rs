//! Checkpoints: model, EMA and optimiser state plus the loop's own state (step, RNG, data
//! position), written into a temporary directory and renamed, so a crash never leaves a
//! half-written checkpoint behind a valid name.
//!
//! ```text
//! <run>/checkpoints/step-000100/{model.bpk, ema.bpk, optim.bpk, meta.json}
//! ```

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::edm::EdmNet;
use crate::error::{Result, TrainerError, read_json, write_json};
use crate::optim::weights_hash;

pub const FORMAT: &str = "bdense-checkpoint-v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta<S> {
    pub format: String,
    /// "teacher" or "student": a teacher checkpoint cannot resume a student run.
    pub kind: String,
    pub step: u64,
    pub weights_hash: String,
    pub ema_hash: String,
    pub state: S,
}

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Saves a checkpoint for `step` and returns its directory.
pub fn save<S: Serialize>(
    run: &Path,
    kind: &str,
    step: u64,
    model: &EdmNet,
    ema: &EdmNet,
    optim: &ModuleOptimizer,
    state: &S,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run);
    let dir = root.join(format!("step-{step:06}"));
    let tmp = root.join(format!(".step-{step:06}.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| TrainerError::io(&tmp, e))?;
    let record =
        |e: burn::store::RecordError, file: &str| TrainerError::checkpoint(tmp.join(file), e);
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| record(e, "model.bpk"))?;
    ema.clone()
        .save_file(tmp.join("ema.bpk"))
        .map_err(|e| record(e, "ema.bpk"))?;
    optim
        .save(tmp.join("optim.bpk"))
        .map_err(|e| record(e, "optim.bpk"))?;
    let meta = Meta {
        format: FORMAT.into(),
        kind: kind.into(),
        step,
        weights_hash: weights_hash(model),
        ema_hash: weights_hash(ema),
        state,
    };
    write_json(&tmp.join("meta.json"), &meta)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TrainerError::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| TrainerError::io(&dir, e))?;
    Ok(dir)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let root = checkpoints_dir(run);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(None);
    };
    // By number: past step 999999 the names grow a digit and no longer sort as text.
    Ok(entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let step = p
                .file_name()?
                .to_str()?
                .strip_prefix("step-")?
                .parse::<u64>();
            Some((step.ok()?, p))
        })
        .max_by_key(|(step, _)| *step)
        .map(|(_, p)| p))
}

/// Whether `name` is one of the temporary names a writer gives a file or checkpoint before
/// renaming it into place (`.step-000100.tmp-PID`, `run.tmp-PID`).
fn is_temporary(name: &str) -> bool {
    name.rsplit_once(".tmp-")
        .is_some_and(|(_, pid)| pid.parse::<u32>().is_ok())
}

/// Removes what a killed trainer left half-written in the run and its checkpoints; returns
/// how many entries went. Call it holding the run's [`RunLock`]: then no live process can
/// still be writing them.
pub fn remove_stale_temporaries(run: &Path) -> Result<usize> {
    let mut removed = 0;
    for dir in [run.to_path_buf(), checkpoints_dir(run)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            if !entry.file_name().to_str().is_some_and(is_temporary) {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.map_err(|e| TrainerError::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes a run's file through a synced temporary file and a rename: a crash leaves the old
/// content or the new, never half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::error::write_atomic(path, bytes)
}

/// The lock file inside a run directory (hidden, like the store's).
pub const LOCK_FILE: &str = ".lock";

/// The one process allowed to write a run directory. An advisory lock on [`LOCK_FILE`], the
/// same kind the store takes on a dataset: the OS drops it when its holder exits or is
/// killed, so a dead trainer never leaves a stale lock. The file names its holder (pid and
/// host) for the error another trainer gets, and is emptied on release, so a name found there
/// by the next holder is a trainer that died holding the run.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    /// The trainer that died holding the run ("pid N on HOST"), if one did.
    pub took_over_from: Option<String>,
}

impl RunLock {
    /// Takes the lock on `run` (an existing directory), or says who holds it.
    pub fn acquire(run: &Path) -> Result<RunLock> {
        let path = run.join(LOCK_FILE);
        let io = |e| TrainerError::io(&path, e);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    who => who.to_string(),
                };
                return Err(TrainerError::checkpoint(
                    run,
                    format!(
                        "this run is being trained by {holder}; one trainer per run (wait for it, or stop it and resume)"
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut previous = String::new();
        file.read_to_string(&mut previous).map_err(io)?;
        let holder = format!("pid {} on {}\n", std::process::id(), host_name());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(io)?;
        let previous = previous.trim();
        Ok(RunLock {
            file,
            took_over_from: (!previous.is_empty()).then(|| previous.to_string()),
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".into())
}

/// What a checkpoint restores.
pub struct Restored<S> {
    pub model: EdmNet,
    pub ema: EdmNet,
    pub optim: ModuleOptimizer,
    pub meta: Meta<S>,
}

/// Loads the checkpoint in `dir` into models shaped like `model` and `ema`, checking its
/// format, kind and weight hashes so a corrupt or foreign checkpoint is named, not trusted.
pub fn load<S: DeserializeOwned>(
    dir: &Path,
    kind: &str,
    model: EdmNet,
    ema: EdmNet,
    optim: ModuleOptimizer,
) -> Result<Restored<S>> {
    let meta_path = dir.join("meta.json");
    let meta: Meta<S> = read_json(&meta_path)?;
    if meta.format != FORMAT {
        return Err(TrainerError::checkpoint(
            &meta_path,
            format!("format {:?}, this bdense reads {FORMAT:?}", meta.format),
        ));
    }
    if meta.kind != kind {
        return Err(TrainerError::checkpoint(
            &meta_path,
            format!(
                "is a {} checkpoint, expected a {kind} checkpoint",
                meta.kind
            ),
        ));
    }
    let model = load_module(model, &dir.join("model.bpk"), &meta.weights_hash)?;
    let ema = load_module(ema, &dir.join("ema.bpk"), &meta.ema_hash)?;
    let optim_path = dir.join("optim.bpk");
    let optim = optim.load(&optim_path).map_err(|e| {
        TrainerError::checkpoint(&optim_path, format!("unreadable optimiser state ({e})"))
    })?;
    Ok(Restored {
        model,
        ema,
        optim,
        meta,
    })
}

/// Loads weights into a module shaped like `template` and checks their hash.
pub fn load_module<M: Module>(template: M, path: &Path, expected_hash: &str) -> Result<M> {
    if !path.is_file() {
        return Err(TrainerError::checkpoint(path, "missing"));
    }
    let loaded = template.try_load_file(path).map_err(|e| {
        TrainerError::checkpoint(path, format!("not a checkpoint of this network ({e})"))
    })?;
    let found = weights_hash(&loaded);
    if found != expected_hash {
        return Err(TrainerError::checkpoint(
            path,
            format!(
                "weights hash {found} does not match the recorded {expected_hash}: the file is corrupt"
            ),
        ));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_run_released_on_drop() {
        let run = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(run.path()).unwrap();
        let refused = RunLock::acquire(run.path()).unwrap_err().to_string();
        let me = format!("pid {}", std::process::id());
        assert!(refused.contains(&me), "{refused}");
        drop(held);
        let next = RunLock::acquire(run.path()).expect("free again once dropped");
        assert_eq!(next.took_over_from, None, "released cleanly");
        // A holder that died leaves its name behind (the kernel dropped its lock).
        drop(next);
        std::fs::write(run.path().join(LOCK_FILE), "pid 4000000 on elsewhere\n").unwrap();
        let next = RunLock::acquire(run.path()).unwrap();
        assert_eq!(
            next.took_over_from.as_deref(),
            Some("pid 4000000 on elsewhere")
        );
    }

    #[test]
    fn latest_is_the_highest_step_and_temporaries_are_swept() {
        let run = tempfile::tempdir().unwrap();
        let root = checkpoints_dir(run.path());
        for name in [
            "step-999999",
            "step-1000000",
            ".step-1000001.tmp-4242",
            "notes",
        ] {
            std::fs::create_dir_all(root.join(name)).unwrap();
        }
        std::fs::write(run.path().join("run.tmp-17"), "{").unwrap();
        let newest = latest(run.path()).unwrap().unwrap();
        assert!(newest.ends_with("step-1000000"), "{newest:?}");
        assert_eq!(remove_stale_temporaries(run.path()).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes", "step-1000000", "step-999999"]);
        assert!(!run.path().join("run.tmp-17").exists());
    }
}
