//! Checkpoints: model, EMA and optimiser state plus the loop's own state (step, RNG, data
//! position), written into a temporary directory and renamed, so a crash never leaves a
//! half-written checkpoint behind a valid name.
//!
//! ```text
//! <run>/checkpoints/step-000100/{model.bpk, ema.bpk, optim.bpk, meta.json}
//! ```

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
    let mut steps: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    steps.sort();
    Ok(steps.pop())
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
