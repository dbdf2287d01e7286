//! The student training loop: one loop for every method (the method is data, see
//! [`crate::method`]), fed by any [`BatchSource`], checkpointed so that a resumed run is
//! bit-identical to an uninterrupted one on the CPU.

use bdense_store::StudentLayout;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint;
use crate::edm::EdmNet;
use crate::error::{Result, TrainerError};
use crate::fit::{BatchOutcome, Schedule, TrainState, fit};
use crate::method::{MethodConfig, Objective, StepPer, branch_loss};
use crate::optim::OptimConfig;
use crate::sample::rollout;
use crate::unet::UNetConfig;

/// A batch of trajectories as the trainer sees it: host buffers, no Parquet.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// `[C, H, W]`.
    pub dims: [usize; 3],
    pub traj_ids: Vec<u64>,
    /// `[B, D]`: the teacher's state at the first student timestamp.
    pub start: Vec<f32>,
    /// `[B, N-1, K, D]`: the teacher's state at each branch's target.
    pub targets: Vec<f32>,
    /// `[B, N-1, D]` when teacher forcing: the teacher's state at each interval start.
    pub interval_starts: Option<Vec<f32>>,
    /// The (N, K) layout the targets follow (its sigmas are the student's timestamps and
    /// each branch's target): shared by every batch of a run, not copied into each.
    pub layout: Arc<StudentLayout>,
    pub labels: Option<Vec<i32>>,
}

impl TrainBatch {
    pub fn len(&self) -> usize {
        self.traj_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.traj_ids.is_empty()
    }

    fn dim(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Where batches come from. `position` counts batches handed out since the stream began, so
/// a checkpoint can record it and a resumed run can reopen the source there.
pub trait BatchSource {
    fn next_batch(&mut self) -> Result<TrainBatch>;
    fn position(&self) -> u64;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// Random weights (for analytic teachers, which have no network to copy).
    Scratch,
    /// Copy every weight of the U-Net teacher in DIR; its output layer into each branch.
    Teacher(PathBuf),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentConfig {
    pub method: MethodConfig,
    pub n: usize,
    /// Batch iterations (each one trains every interval of a batch of trajectories).
    pub steps: u64,
    pub batch: usize,
    pub seed: u64,
    pub optim: OptimConfig,
    pub net: UNetConfig,
    pub init: Init,
    pub checkpoint_every: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopState {
    /// Batches taken from the source when the checkpoint was written.
    pub source_position: u64,
    pub last_loss: f64,
}

/// One batch iteration's numbers.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: u64,
    pub total: u64,
    pub loss: f64,
    /// Mean distance of each branch over the batch's trained intervals.
    pub per_branch: Vec<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    /// Seconds waiting for the batch source / computing.
    pub wait_s: f64,
    pub compute_s: f64,
}

/// The student's live model, EMA and optimiser: the shared loop's state.
pub use crate::fit::TrainState as StudentState;

impl StudentState {
    /// A fresh student per `config.init` on `device` (autodiff is added here).
    pub fn fresh(config: &StudentConfig, channels: usize, device: &Device) -> Result<StudentState> {
        let k = config.method.k();
        let autodiff = device.clone().autodiff();
        let model = match &config.init {
            Init::Scratch => EdmNet::new(
                &config.net.clone().with_out_channels(k * channels),
                channels,
                &autodiff,
                config.seed,
            ),
            Init::Teacher(dir) => crate::teachers::unet::UnetTeacher::load(dir, &autodiff)?
                .net
                .widen(k),
        };
        let ema = model.valid();
        Ok(StudentState {
            model,
            ema,
            optim: config.optim.build(),
            step: 0,
            last_loss: f64::NAN,
        })
    }

    /// Restores the newest checkpoint of `run`; returns it with the saved loop state.
    pub fn resume(
        config: &StudentConfig,
        channels: usize,
        device: &Device,
        run: &Path,
    ) -> Result<(StudentState, LoopState)> {
        let ckpt = checkpoint::latest(run)?
            .ok_or_else(|| TrainerError::checkpoint(run, "no checkpoint to resume from"))?;
        let template = StudentState::fresh(
            &StudentConfig {
                init: Init::Scratch,
                ..config.clone()
            },
            channels,
            device,
        )?;
        let r = checkpoint::load::<LoopState>(
            &ckpt,
            "student",
            template.model,
            template.ema,
            template.optim,
        )?;
        let state = StudentState {
            model: r.model,
            ema: r.ema,
            optim: r.optim,
            step: r.meta.step,
            last_loss: r.meta.state.last_loss,
        };
        Ok((state, r.meta.state))
    }
}

/// The EMA weights of the student checkpoint in `ckpt` (no autodiff): what sampling and
/// evaluation use. Format, kind and hash are checked as a resume checks them.
pub fn load_ema(
    config: &StudentConfig,
    channels: usize,
    device: &Device,
    ckpt: &Path,
) -> Result<EdmNet> {
    let meta_path = ckpt.join("meta.json");
    let meta: checkpoint::Meta<LoopState> = crate::error::read_json(&meta_path)?;
    if meta.format != checkpoint::FORMAT || meta.kind != "student" {
        return Err(TrainerError::checkpoint(
            &meta_path,
            format!(
                "a {:?} checkpoint of format {:?}, expected a student checkpoint of {:?}",
                meta.kind,
                meta.format,
                checkpoint::FORMAT
            ),
        ));
    }
    let template = EdmNet::new(&config.net, channels, device, 0);
    checkpoint::load_module(template, &ckpt.join("ema.bpk"), &meta.ema_hash)
}

/// Trains until `config.steps`, checkpointing into `run`, and returns the final state.
pub fn train(
    config: &StudentConfig,
    mut state: StudentState,
    source: &mut dyn BatchSource,
    run: &Path,
    log: &mut crate::log::CsvLog,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<StudentState> {
    let device = state
        .model
        .devices()
        .first()
        .cloned()
        .expect("model lives on a device");
    let mut objective = IntervalObjective {
        config,
        objective: config.method.objective().map_err(TrainerError::Config)?,
        source,
        device,
    };
    let schedule = Schedule {
        kind: "student",
        run,
        steps: config.steps,
        checkpoint_every: config.checkpoint_every,
        optim: &config.optim,
    };
    fit(&schedule, &mut state, &mut objective, log, &mut |p| {
        on_step(&StepReport {
            step: p.step,
            total: p.total,
            loss: p.loss,
            per_branch: p.extra.clone(),
            lr: p.lr,
            grad_norm: p.grad_norm,
            wait_s: p.wait_s,
            compute_s: p.compute_s,
        })
    })?;
    Ok(state)
}

/// The student's objective: the method's interval loss over every interval of each batch the
/// source hands out, one optimiser step per interval (or per trajectory batch).
struct IntervalObjective<'a> {
    config: &'a StudentConfig,
    objective: Objective,
    source: &'a mut dyn BatchSource,
    device: Device,
}

impl crate::fit::Objective for IntervalObjective<'_> {
    type Batch = TrainBatch;
    type State = LoopState;

    fn next_batch(&mut self) -> Result<TrainBatch> {
        self.source.next_batch()
    }

    fn train_batch(
        &mut self,
        batch: TrainBatch,
        state: &mut TrainState,
        _optim: &OptimConfig,
        lr: f64,
    ) -> Result<BatchOutcome> {
        let (loss, per_branch, grad_norm) =
            train_batch(self.config, state, batch, &self.objective, lr, &self.device)?;
        Ok(BatchOutcome {
            loss,
            extra: per_branch,
            grad_norm,
        })
    }

    fn checkpoint_state(&self, last_loss: f64) -> LoopState {
        LoopState {
            source_position: self.source.position(),
            last_loss,
        }
    }
}

/// Trains every interval of one batch as callbacks of the student's own rollout; returns
/// (loss, per-branch distances, grad norm). The batch's buffers move into the tensors.
fn train_batch(
    config: &StudentConfig,
    state: &mut StudentState,
    batch: TrainBatch,
    objective: &Objective,
    lr: f64,
    device: &Device,
) -> Result<(f64, Vec<f64>, f64)> {
    let m = &config.method;
    let layout = batch.layout.clone();
    let (b, [c, h, w], d) = (batch.len(), batch.dims, batch.dim());
    let (intervals, k) = (layout.intervals(), m.k());
    if layout.k != k {
        return Err(TrainerError::Config(format!(
            "batch has {} targets per interval, the student has K = {k} branches",
            layout.k
        )));
    }
    let targets: Tensor<3> = Tensor::from_data(
        TensorData::new(batch.targets, [b, intervals * k, d]),
        device,
    );
    let target = |i: usize, j: usize| {
        targets
            .clone()
            .narrow(1, i * k + j, 1)
            .reshape([b, c, h, w])
    };
    let interval_starts: Option<Tensor<3>> = batch
        .interval_starts
        .map(|s| Tensor::from_data(TensorData::new(s, [b, intervals, d]), device));
    // Teacher forcing starts interval i from the teacher's state there.
    let teacher_start = |i: usize| match &interval_starts {
        Some(all) => all.clone().narrow(1, i, 1).reshape([b, c, h, w]),
        None => target(i - 1, k - 1),
    };
    let labels = batch
        .labels
        .as_ref()
        .filter(|_| config.net.num_classes > 0)
        .map(|l| crate::sample::labels_tensor(l, device));
    let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.start, [b, c, h, w]), device);

    let state = RefCell::new(state);
    let (mut total, mut per_branch, mut trained, mut norm) = (0.0, vec![0.0; k], 0usize, 0.0f64);
    let mut pending: Option<Tensor<1>> = None;
    let mut denoise = |x: &Tensor<4>, s: f64| {
        let live = state.borrow();
        crate::sample::net_denoiser(&live.model, labels.as_ref())(x, s)
    };
    rollout(x, &layout.sigmas, m.afs, &mut denoise, &mut |step| {
        let i = step.index;
        // The analytical first step calls no network: nothing to train.
        if let Some(branches) = step.branches {
            let ts: Vec<Tensor<4>> = (0..k).map(|j| target(i, j)).collect();
            let out = branch_loss(
                step.x,
                step.s,
                branches,
                &ts,
                &layout.target_sigmas[i],
                objective,
            );
            total += out.loss.clone().inner().into_scalar::<f64>();
            per_branch
                .iter_mut()
                .zip(&out.per_branch)
                .for_each(|(a, v)| *a += v);
            trained += 1;
            match m.step_per {
                StepPer::Interval => {
                    let g = state.borrow_mut().optimise(&config.optim, out.loss, lr);
                    norm = norm.max(g)
                }
                StepPer::Trajectory => {
                    pending = Some(match pending.take() {
                        Some(p) => p + out.loss,
                        None => out.loss,
                    })
                }
            }
        }
        (m.teacher_forcing && i + 1 < intervals).then(|| teacher_start(i + 1))
    });
    if let Some(loss) = pending {
        norm = state.borrow_mut().optimise(&config.optim, loss, lr);
    }
    let n = trained.max(1) as f64;
    Ok((
        total / n,
        per_branch.into_iter().map(|v| v / n).collect(),
        norm,
    ))
}

/// The log's header for K branches.
pub fn log_header(k: usize) -> Vec<String> {
    let mut h: Vec<String> = ["step", "loss", "lr", "grad_norm"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    h.extend((1..=k).map(|i| format!("branch_{i}")));
    h
}
