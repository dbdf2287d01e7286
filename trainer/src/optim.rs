//! Optimiser, learning-rate schedule, global gradient clipping, EMA and weight hashing: the
//! pieces every training loop here (teacher and student) shares.

use std::collections::HashMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    Constant,
    /// Multiply by `factor` once half the steps are done (SFD's schedule).
    StepHalf {
        factor: f64,
    },
    /// Cosine from `lr` to 0.
    Cosine,
}

impl std::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(LrSchedule::Constant),
            "step" | "step-half" => Ok(LrSchedule::StepHalf { factor: 0.1 }),
            "cosine" => Ok(LrSchedule::Cosine),
            other => Err(format!(
                "unknown lr schedule {other:?} (constant, step-half, cosine)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub lr: f64,
    pub schedule: LrSchedule,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global L2 norm of all gradients to this (as torch's `clip_grad_norm_`).
    pub grad_clip: Option<f64>,
    /// EMA decay per optimiser step; 0 keeps the EMA equal to the live weights.
    pub ema_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            schedule: LrSchedule::Constant,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: Some(1.0),
            ema_decay: 0.999,
        }
    }
}

impl OptimConfig {
    pub fn build(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_beta_1(self.beta1 as f32)
            .with_beta_2(self.beta2 as f32)
            .with_epsilon(self.eps as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init()
    }

    /// Learning rate at optimiser step `step` of `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let progress = step as f64 / total.max(1) as f64;
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::StepHalf { factor } => {
                if progress < 0.5 {
                    self.lr
                } else {
                    self.lr * factor
                }
            }
            LrSchedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

/// Scales all gradients so their global L2 norm is at most `max`; returns the norm before.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max: f64) -> f64 {
    struct Ids(Vec<(ParamId, usize)>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.push((p.id, D));
        }
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    fn scale<const D: usize>(grads: &mut GradientsParams, id: ParamId, by: Option<f64>) -> f64 {
        match (grads.remove::<D>(id), by) {
            (Some(g), Some(s)) => {
                grads.register(id, g * s);
                0.0
            }
            (Some(g), None) => {
                let sq = g.clone().square().sum().into_scalar::<f64>();
                grads.register(id, g);
                sq
            }
            (None, _) => 0.0,
        }
    }
    let apply = |grads: &mut GradientsParams, by: Option<f64>| -> f64 {
        ids.0
            .iter()
            .map(|&(id, d)| match d {
                1 => scale::<1>(grads, id, by),
                2 => scale::<2>(grads, id, by),
                3 => scale::<3>(grads, id, by),
                4 => scale::<4>(grads, id, by),
                _ => 0.0,
            })
            .sum()
    };
    let norm = apply(grads, None).sqrt();
    if norm > max && norm.is_finite() {
        apply(grads, Some(max / norm));
    }
    norm
}

/// Every float parameter's values by path, without autodiff.
fn params_by_path<M: Module>(module: &M) -> HashMap<String, Tensor<1>> {
    #[derive(Default)]
    struct Grab {
        path: Vec<String>,
        out: HashMap<String, Tensor<1>>,
    }
    impl ModuleVisitor for Grab {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val().inner();
            let n = t.shape().num_elements();
            self.out.insert(self.path.join("."), t.reshape([n]));
        }
    }
    let mut g = Grab::default();
    module.visit(&mut g);
    g.out
}

/// `ema <- decay * ema + (1 - decay) * live`, parameter by parameter.
pub fn ema_update<M: Module>(ema: M, live: &M, decay: f64) -> M {
    struct Ema {
        path: Vec<String>,
        live: HashMap<String, Tensor<1>>,
        decay: f64,
    }
    impl ModuleMapper for Ema {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let live = self
                .live
                .remove(&self.path.join("."))
                .expect("EMA and live model have the same parameters");
            let d = self.decay;
            p.map(|e| {
                let shape = e.shape();
                e * d + live.reshape(shape) * (1.0 - d)
            })
        }
    }
    ema.map(&mut Ema {
        path: Vec::new(),
        live: params_by_path(live),
        decay,
    })
}

/// xxh3 over every parameter's path, shape and f32 bytes: equal weights give equal hashes,
/// whatever burn's random parameter ids are.
pub fn weights_hash<M: Module>(module: &M) -> String {
    let params = params_by_path(module);
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for name in names {
        h.update(name.as_bytes());
        let values = crate::solvers::host(&params[name]);
        values.iter().for_each(|v| h.update(&v.to_le_bytes()));
    }
    format!("{:016x}", h.digest())
}
