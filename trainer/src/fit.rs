//! The one training loop, as EDM's `training_loop` takes its loss: what is learnt is an
//! [`Objective`] (the teacher's EDM loss, the student's interval loss), and the loop owns the
//! rest: learning-rate schedule, optimiser step with clipping and EMA, the log, the step
//! count, checkpoints and the divergence check.

use std::path::Path;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::Serialize;

use crate::checkpoint;
use crate::edm::EdmNet;
use crate::error::{Result, TrainerError};
use crate::log::CsvLog;
use crate::optim::{OptimConfig, clip_global_norm, ema_update};

/// The live model, its EMA and the optimiser, at some step.
pub struct TrainState {
    pub model: EdmNet,
    pub ema: EdmNet,
    pub optim: burn::optim::ModuleOptimizer,
    pub step: u64,
    pub last_loss: f64,
}

impl TrainState {
    /// One optimiser step on `loss`, clipped as `config` says, then the EMA update; returns
    /// the gradient norm before clipping (NaN when not clipping).
    pub fn optimise(&mut self, config: &OptimConfig, loss: Tensor<1>, lr: f64) -> f64 {
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let norm = config.grad_clip.map_or(f64::NAN, |max| {
            clip_global_norm(&self.model, &mut grads, max)
        });
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.ema = ema_update(self.ema.clone(), &self.model, config.ema_decay);
        norm
    }
}

/// What one batch gave: its loss, extra log columns, and the largest gradient norm.
pub struct BatchOutcome {
    pub loss: f64,
    pub extra: Vec<f64>,
    pub grad_norm: f64,
}

impl TrainState {
    /// One optimiser step on `loss` (whose value is `value`), refused before the step when
    /// the value is not finite: a diverged batch must not reach the weights.
    pub fn step_on_loss(
        &mut self,
        optim: &OptimConfig,
        loss: Tensor<1>,
        value: f64,
        lr: f64,
        extra: Vec<f64>,
    ) -> Result<BatchOutcome> {
        if !value.is_finite() {
            return Err(TrainerError::Diverged {
                step: self.step,
                detail: format!("loss {value}"),
            });
        }
        let grad_norm = self.optimise(optim, loss, lr);
        Ok(BatchOutcome {
            loss: value,
            extra,
            grad_norm,
        })
    }
}

/// What a training run learns.
pub trait Objective {
    type Batch;
    /// Written into every checkpoint beside the weights: enough to continue bit for bit.
    type State: Serialize;

    fn next_batch(&mut self) -> Result<Self::Batch>;

    /// Trains on one batch through [`TrainState::optimise`] (once, or once per interval).
    fn train_batch(
        &mut self,
        batch: Self::Batch,
        state: &mut TrainState,
        optim: &OptimConfig,
        lr: f64,
    ) -> Result<BatchOutcome>;

    fn checkpoint_state(&self, last_loss: f64) -> Self::State;

    /// Called after each checkpoint (a teacher also publishes its EMA weights there).
    fn after_checkpoint(&mut self, _state: &TrainState) -> Result<()> {
        Ok(())
    }
}

/// How long to train and where checkpoints go.
pub struct Schedule<'a> {
    /// Checkpoint kind (`teacher`, `student`): a checkpoint of one kind never loads as another.
    pub kind: &'static str,
    pub run: &'a Path,
    pub steps: u64,
    pub checkpoint_every: u64,
    pub optim: &'a OptimConfig,
}

/// One batch iteration's numbers.
#[derive(Debug, Clone)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
    pub loss: f64,
    pub extra: Vec<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    /// Seconds waiting for the batch / computing.
    pub wait_s: f64,
    pub compute_s: f64,
}

/// Trains `state` towards `objective` until `schedule.steps`, logging a row
/// `step, loss, lr, grad_norm, extra...` per batch and checkpointing into `schedule.run`.
pub fn fit<O: Objective>(
    schedule: &Schedule,
    state: &mut TrainState,
    objective: &mut O,
    log: &mut CsvLog,
    on_step: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let mut waited = Instant::now();
    while state.step < schedule.steps {
        let batch = objective.next_batch()?;
        let wait_s = waited.elapsed().as_secs_f64();
        let started = Instant::now();
        let lr = schedule.optim.lr_at(state.step, schedule.steps);
        let out = objective.train_batch(batch, state, schedule.optim, lr)?;
        if !out.loss.is_finite() {
            return Err(TrainerError::Diverged {
                step: state.step,
                detail: format!("loss {}", out.loss),
            });
        }
        state.step += 1;
        state.last_loss = out.loss;
        let mut row = vec![state.step as f64, out.loss, lr, out.grad_norm];
        row.extend(&out.extra);
        log.row(&row)?;
        on_step(&Progress {
            step: state.step,
            total: schedule.steps,
            loss: out.loss,
            extra: out.extra,
            lr,
            grad_norm: out.grad_norm,
            wait_s,
            compute_s: started.elapsed().as_secs_f64(),
        });
        if state.step.is_multiple_of(schedule.checkpoint_every) || state.step == schedule.steps {
            log.flush()?;
            checkpoint::save(
                schedule.run,
                schedule.kind,
                state.step,
                &state.model,
                &state.ema,
                &state.optim,
                &objective.checkpoint_state(out.loss),
            )?;
            objective.after_checkpoint(state)?;
        }
        waited = Instant::now();
    }
    Ok(())
}
