//! Progressive distillation (Salimans & Ho 2022) in this project's EDM conventions, with and
//! without B-DENSE's second branch (the B-DENSE paper's Algorithm 2, K = 2).
//!
//! A round halves a deterministic sampler. The teacher takes two Euler steps (DDIM is the
//! Euler step of the probability-flow ODE in sigma space) on the fine grid,
//! `s_i -> s_{i+1/2} -> s_{i+1}`; the student takes one, `s_i -> s_{i+1}`, on the coarse grid
//! (every other fine point: a polynomial grid sampled every other point is the polynomial grid
//! with half the steps, see [`RoundGrid`]). The Euler step `x' = x + (s' - s)(x - D)/s` is
//! affine in `D`, so the teacher's landing point `x''` fixes the one denoised output that makes
//! the student land there too: `D* = x - s (x'' - x) / (s_{i+1} - s_i)` ([`denoised_for_step`]).
//!
//! PD + B-DENSE: the student's last layer emits 2 x C channels; branch 1 is trained on the state
//! after the teacher's first step (at `s_{i+1/2}`, through the same Euler inversion, which makes
//! its target the teacher's own denoised output), branch 2 (the endpoint) on `D*`; sampling
//! uses branch 2 only, so both students cost the same to sample.
//!
//! The loss is in denoised space weighted by EDM's `lambda(sigma) = (sigma^2 + sd^2) /
//! (sigma sd)^2` ([`crate::precond::EdmPrecond::loss_weight`]). PD's own choice is "truncated
//! SNR", `max(SNR, 1)` on the x-prediction error, with `SNR = 1 / sigma^2` for `x0 + sigma eps`:
//! both weigh low-noise errors by `1 / sigma^2` and level off at high noise; EDM's lambda levels
//! off at `1 / sd^2` instead of 1. We take EDM's because `lambda c_out^2 = 1`: the loss on the
//! network's raw output F has unit weight at every sigma, exactly the balance the teacher was
//! trained with, so a student copied from the teacher starts with gradients of the size its
//! weights were tuned under.
//!
//! Inputs are noised training images `x0 + s_i eps` at a start step `i`: which image, which noise
//! and which step are a pure function of `(data seed, example index)` ([`example`]), so the data
//! a run sees does not depend on its batch size (as trajectory noise in the store does not).

use std::ops::Range;
use std::path::{Path, PathBuf};

use bdense_store::seeds;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::ImageSet;
use crate::edm::EdmNet;
use crate::error::{Result, TrainerError, read_json, write_json};
use crate::fit::{BatchOutcome, Objective, Schedule, TrainState, fit};
use crate::log::CsvLog;
use crate::optim::OptimConfig;
use crate::precond::EdmPrecond;
use crate::schedule::Grid;
use crate::solvers::{Denoiser, euler, host};
use crate::unet::UNetConfig;

/// The denoised output `D` for which one Euler step from `x` at `s` lands on `x_next` at
/// `s_next`: the step `x_next = x + (s_next - s)(x - D)/s` solved for `D`. Exact for any
/// `s_next != s`, including `s_next = 0` (then `D = x_next`).
pub fn denoised_for_step(x: Tensor<4>, x_next: Tensor<4>, s: f64, s_next: f64) -> Tensor<4> {
    x.clone() - (x_next - x) * (s / (s_next - s))
}

/// The sigma grids of one round: the student's `M + 1` points and the teacher's `2M + 1`
/// (EDM's polynomial grid, sigma 80 -> 0.002, rho 7, both).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundGrid {
    pub student: Vec<f64>,
    pub teacher: Vec<f64>,
}

impl RoundGrid {
    /// The round whose student samples in `student_steps` Euler steps.
    pub fn new(student_steps: usize) -> RoundGrid {
        RoundGrid {
            student: Grid::edm(student_steps + 1).sigmas,
            teacher: Grid::edm(2 * student_steps + 1).sigmas,
        }
    }

    pub fn intervals(&self) -> usize {
        self.student.len() - 1
    }

    /// `[s_i, s_{i+1/2}, s_{i+1}]`: the student's interval `i` and the teacher's midpoint.
    pub fn triple(&self, i: usize) -> [f64; 3] {
        [
            self.student[i],
            self.teacher[2 * i + 1],
            self.student[i + 1],
        ]
    }
}

/// The teacher's two Euler steps from `x` over `triple = [s, s_mid, s_next]`: its states at
/// `s_mid` and at `s_next`.
///
/// # Shapes
/// - `x`: `[B, C, H, W]`; returns two tensors `[B, C, H, W]`
pub fn teacher_two_steps(
    teacher: &dyn Denoiser,
    x: Tensor<4>,
    triple: [f64; 3],
    labels: Option<&Tensor<1, Int>>,
) -> [Tensor<4>; 2] {
    let mut mid = None;
    let end = euler(teacher, x, &triple, labels, &mut |i, xi, _| {
        if i == 1 {
            mid = Some(xi.clone());
        }
    });
    [mid.expect("euler reports the midpoint"), end]
}

/// The student's denoised targets for one interval from the teacher's states at `s_mid` and
/// `s_next` after starting at `x`: `[D*]` for PD (K = 1); `[D_mid, D*]` for PD + B-DENSE
/// (K = 2), `D_mid` being the output whose step from `s` lands on the teacher's state at
/// `s_mid`.
///
/// # Shapes
/// - `x`, `mid`, `end`: `[B, C, H, W]`; returns K tensors `[B, C, H, W]`, the endpoint's last
pub fn targets_from_states(
    x: Tensor<4>,
    [mid, end]: [Tensor<4>; 2],
    triple: [f64; 3],
    k: usize,
) -> Vec<Tensor<4>> {
    assert!(
        k == 1 || k == 2,
        "a PD round has two teacher steps: K is 1 or 2"
    );
    let [s, s_mid, s_next] = triple;
    let endpoint = denoised_for_step(x.clone(), end, s, s_next);
    match k {
        1 => vec![endpoint],
        _ => vec![denoised_for_step(x, mid, s, s_mid), endpoint],
    }
}

/// The student's denoised targets for one interval, from the teacher's two Euler steps from `x`
/// ([`teacher_two_steps`], then [`targets_from_states`]).
///
/// # Shapes
/// - `x`: `[B, C, H, W]`; returns K tensors `[B, C, H, W]`, the endpoint's last
pub fn branch_targets(
    teacher: &dyn Denoiser,
    x: Tensor<4>,
    triple: [f64; 3],
    k: usize,
    labels: Option<&Tensor<1, Int>>,
) -> Vec<Tensor<4>> {
    let states = teacher_two_steps(teacher, x.clone(), triple, labels);
    targets_from_states(x, states, triple, k)
}

/// One training example of a round: which image, which start step, which noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example {
    pub image: usize,
    pub step: usize,
    pub noise_seed: u64,
}

/// The data seed of round `round` of a chain started from `seed` (rounds see fresh examples).
pub fn round_data_seed(seed: u64, round: usize) -> u64 {
    seeds::trajectory_seed(seed ^ 0x9D15_7111_0000_0000, round as u64)
}

/// Example `index` of a round with data seed `data_seed`: a pure function of the two, from the
/// store's seed policy (splitmix64), so batch size and batch boundaries change nothing.
pub fn example(data_seed: u64, index: u64, images: usize, intervals: usize) -> Example {
    let pick =
        |salt: u64, n: usize| seeds::trajectory_label(data_seed ^ salt, index, n as u32) as usize;
    Example {
        image: pick(0x1111_1111_1111_1111, images),
        step: pick(0x2222_2222_2222_2222, intervals),
        noise_seed: seeds::trajectory_seed(data_seed, index),
    }
}

/// PD examples with the teacher's two steps from each, on the host: what a round's store
/// holds (one row per example) and what its targets are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PdExamples {
    /// `[C, H, W]`.
    pub dims: [usize; 3],
    /// `[B]`: each example's start interval `i` on the round's student grid.
    pub interval: Vec<usize>,
    /// `[B]`: each example's noise seed and its image's class.
    pub seeds: Vec<u64>,
    pub labels: Vec<i32>,
    /// `[B, D]` each: `x0 + s_i eps`, the teacher's state at `s_{i+1/2}`, and at `s_{i+1}`.
    pub x: Vec<f32>,
    pub mid: Vec<f32>,
    pub end: Vec<f32>,
}

impl PdExamples {
    pub fn len(&self) -> usize {
        self.interval.len()
    }

    pub fn is_empty(&self) -> bool {
        self.interval.is_empty()
    }

    /// Rows `rows` (a range of row positions) as examples of their own.
    pub fn slice(&self, rows: Range<usize>) -> PdExamples {
        let d: usize = self.dims.iter().product();
        let vec = |v: &Vec<f32>| v[rows.start * d..rows.end * d].to_vec();
        PdExamples {
            dims: self.dims,
            interval: self.interval[rows.clone()].to_vec(),
            seeds: self.seeds[rows.clone()].to_vec(),
            labels: self.labels[rows.clone()].to_vec(),
            x: vec(&self.x),
            mid: vec(&self.mid),
            end: vec(&self.end),
        }
    }

    /// `parts` one after the other.
    pub fn concat(dims: [usize; 3], parts: Vec<PdExamples>) -> PdExamples {
        let mut all = PdExamples {
            dims,
            interval: Vec::new(),
            seeds: Vec::new(),
            labels: Vec::new(),
            x: Vec::new(),
            mid: Vec::new(),
            end: Vec::new(),
        };
        for p in parts {
            all.interval.extend(p.interval);
            all.seeds.extend(p.seeds);
            all.labels.extend(p.labels);
            all.x.extend(p.x);
            all.mid.extend(p.mid);
            all.end.extend(p.end);
        }
        all
    }
}

/// The examples `indices` of a round with the teacher's two steps from each. The teacher runs
/// once per start interval present (a denoiser takes one sigma per call); rows come back in
/// example order.
pub fn teacher_examples(
    teacher: &dyn Denoiser,
    images: &ImageSet,
    grid: &RoundGrid,
    data_seed: u64,
    indices: Range<u64>,
    device: &Device,
) -> PdExamples {
    let d = images.dim();
    let dims = [images.channels, images.height, images.width];
    let examples: Vec<Example> = indices
        .map(|i| example(data_seed, i, images.len(), grid.intervals()))
        .collect();
    let b = examples.len();
    let mut out = PdExamples {
        dims,
        interval: examples.iter().map(|e| e.step).collect(),
        seeds: examples.iter().map(|e| e.noise_seed).collect(),
        labels: examples.iter().map(|e| images.labels[e.image]).collect(),
        x: vec![0f32; b * d],
        mid: vec![0f32; b * d],
        end: vec![0f32; b * d],
    };
    for step in 0..grid.intervals() {
        let rows: Vec<usize> = (0..b).filter(|&r| examples[r].step == step).collect();
        if rows.is_empty() {
            continue;
        }
        let triple = grid.triple(step);
        let mut noisy = Vec::with_capacity(rows.len() * d);
        for &r in &rows {
            let e = examples[r];
            let eps = seeds::standard_normal(e.noise_seed, d);
            let x0 = images.image(e.image);
            noisy.extend(x0.iter().zip(&eps).map(|(a, n)| a + n * triple[0] as f32));
        }
        let xt = Tensor::<4>::from_data(
            TensorData::new(noisy.clone(), [rows.len(), dims[0], dims[1], dims[2]]),
            device,
        );
        let [mid, end] = teacher_two_steps(teacher, xt, triple, None);
        for (values, dest) in [
            (noisy, &mut out.x),
            (host(&mid), &mut out.mid),
            (host(&end), &mut out.end),
        ] {
            for (j, &r) in rows.iter().enumerate() {
                dest[r * d..(r + 1) * d].copy_from_slice(&values[j * d..(j + 1) * d]);
            }
        }
    }
    out
}

/// A batch of PD examples with their targets, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct PdBatch {
    /// `[C, H, W]`.
    pub dims: [usize; 3],
    /// `[B, D]`: `x0 + s_i eps`.
    pub x: Vec<f32>,
    /// `[B]`: each example's `s_i`.
    pub sigma: Vec<f32>,
    /// `[K][B, D]`: each branch's denoised target.
    pub targets: Vec<Vec<f32>>,
}

impl PdBatch {
    pub fn len(&self) -> usize {
        self.sigma.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sigma.is_empty()
    }

    /// The K-branch targets of `examples` ([`targets_from_states`], interval by interval).
    pub fn from_examples(
        examples: &PdExamples,
        grid: &RoundGrid,
        k: usize,
        device: &Device,
    ) -> PdBatch {
        let dims = examples.dims;
        let d: usize = dims.iter().product();
        let b = examples.len();
        let mut targets = vec![vec![0f32; b * d]; k];
        for step in 0..grid.intervals() {
            let rows: Vec<usize> = (0..b).filter(|&r| examples.interval[r] == step).collect();
            if rows.is_empty() {
                continue;
            }
            let gather = |v: &Vec<f32>| -> Tensor<4> {
                let data: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| v[r * d..(r + 1) * d].iter().copied())
                    .collect();
                Tensor::from_data(
                    TensorData::new(data, [rows.len(), dims[0], dims[1], dims[2]]),
                    device,
                )
            };
            let states = [gather(&examples.mid), gather(&examples.end)];
            let branch = targets_from_states(gather(&examples.x), states, grid.triple(step), k);
            for (kk, t) in branch.iter().enumerate() {
                let t = host(t);
                for (j, &r) in rows.iter().enumerate() {
                    targets[kk][r * d..(r + 1) * d].copy_from_slice(&t[j * d..(j + 1) * d]);
                }
            }
        }
        PdBatch {
            dims,
            x: examples.x.clone(),
            sigma: examples
                .interval
                .iter()
                .map(|&i| grid.student[i] as f32)
                .collect(),
            targets,
        }
    }
}

/// The examples `indices` of a round with their teacher targets, from the teacher online.
pub fn pd_batch(
    teacher: &dyn Denoiser,
    images: &ImageSet,
    grid: &RoundGrid,
    k: usize,
    data_seed: u64,
    indices: Range<u64>,
    device: &Device,
) -> PdBatch {
    let examples = teacher_examples(teacher, images, grid, data_seed, indices, device);
    PdBatch::from_examples(&examples, grid, k, device)
}

/// Where a round's examples come from: the teacher online, or a round's store.
pub trait PdData {
    /// Examples `indices` (positions in the round's data schedule), in order.
    fn examples(&mut self, indices: Range<u64>) -> Result<PdExamples>;
    /// What a round record names as its data (the same string means the same examples).
    fn identity(&self) -> String;
}

/// The teacher run online on each batch (what the round's store would hold).
pub struct OnlineData<'a> {
    pub teacher: EdmNet,
    pub images: &'a ImageSet,
    pub grid: RoundGrid,
    pub data_seed: u64,
    pub teacher_hash: String,
    pub device: Device,
}

impl PdData for OnlineData<'_> {
    fn examples(&mut self, indices: Range<u64>) -> Result<PdExamples> {
        Ok(teacher_examples(
            &self.teacher,
            self.images,
            &self.grid,
            self.data_seed,
            indices,
            &self.device,
        ))
    }

    fn identity(&self) -> String {
        format!(
            "online: teacher {}, images {} ({}), data seed {}",
            self.teacher_hash,
            self.images.name,
            self.images.len(),
            self.data_seed
        )
    }
}

/// `sum_k w_k mean(lambda(sigma) |D_k(x; sigma) - target_k|^2)` over the batch, with each
/// branch's unweighted term on the host. For K = 1 this is EDM's loss with the PD target in
/// place of the clean image.
///
/// # Shapes
/// - `x`: `[B, C, H, W]`; `sigma`: `[B]`; `targets`: K tensors `[B, C, H, W]`
pub fn pd_loss(
    net: &EdmNet,
    x: Tensor<4>,
    sigma: Tensor<1>,
    targets: &[Tensor<4>],
    weights: &[f64],
) -> (Tensor<1>, Vec<f64>) {
    let lambda = EdmPrecond::default().loss_weight(sigma.clone());
    let branches = net.denoise_branches(x, sigma, None);
    assert_eq!(branches.len(), targets.len(), "one target per branch");
    let mut total: Option<Tensor<1>> = None;
    let mut per_branch = Vec::with_capacity(targets.len());
    for ((denoised, target), w) in branches.into_iter().zip(targets).zip(weights) {
        let term = ((denoised - target.clone()).square() * lambda.clone()).mean();
        per_branch.push(term.clone().inner().into_scalar::<f64>());
        let term = term * *w;
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    (total.expect("at least one branch"), per_branch)
}

/// PD (K = 1) or PD + B-DENSE (K = 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PdMethod {
    Pd,
    PdBdense,
}

impl PdMethod {
    pub fn k(&self) -> usize {
        match self {
            PdMethod::Pd => 1,
            PdMethod::PdBdense => 2,
        }
    }
}

impl std::str::FromStr for PdMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pd" => Ok(PdMethod::Pd),
            "pd-bdense" => Ok(PdMethod::PdBdense),
            other => Err(format!("unknown PD method {other:?} (pd or pd-bdense)")),
        }
    }
}

impl std::fmt::Display for PdMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PdMethod::Pd => "pd",
            PdMethod::PdBdense => "pd-bdense",
        })
    }
}

/// One round's training settings (the same for both methods: the budget is `steps x batch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PdConfig {
    pub method: PdMethod,
    /// Branch weights `w_1..w_K` (uniform: each branch weighs what PD's one branch weighs).
    pub weights: Vec<f64>,
    /// Optimiser steps per round.
    pub steps: u64,
    pub batch: usize,
    pub seed: u64,
    pub optim: OptimConfig,
    pub checkpoint_every: u64,
}

/// Checkpointed beside the weights: examples consumed, so the data stream resumes exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PdLoopState {
    pub examples: u64,
    pub last_loss: f64,
}

/// Checkpoint kind of a PD student (never loads as another kind).
pub const KIND: &str = "pd-student";

struct PdObjective<'a> {
    data: &'a mut dyn PdData,
    grid: &'a RoundGrid,
    config: &'a PdConfig,
    weights: Vec<f64>,
    next_example: u64,
    device: Device,
}

impl Objective for PdObjective<'_> {
    type Batch = PdBatch;
    type State = PdLoopState;

    fn next_batch(&mut self) -> Result<PdBatch> {
        let start = self.next_example;
        self.next_example += self.config.batch as u64;
        let examples = self.data.examples(start..self.next_example)?;
        Ok(PdBatch::from_examples(
            &examples,
            self.grid,
            self.config.method.k(),
            &self.device.clone().inner(),
        ))
    }

    fn train_batch(
        &mut self,
        batch: PdBatch,
        state: &mut TrainState,
        optim: &OptimConfig,
        lr: f64,
    ) -> Result<BatchOutcome> {
        let [c, h, w] = batch.dims;
        let b = batch.len();
        let tensor = |v: &Vec<f32>| -> Tensor<4> {
            Tensor::from_data(TensorData::new(v.clone(), [b, c, h, w]), &self.device)
        };
        let targets: Vec<Tensor<4>> = batch.targets.iter().map(tensor).collect();
        let sigma = Tensor::<1>::from_data(TensorData::new(batch.sigma.clone(), [b]), &self.device);
        let (loss, per_branch) = pd_loss(
            &state.model,
            tensor(&batch.x),
            sigma,
            &targets,
            &self.weights,
        );
        let value = loss.clone().inner().into_scalar::<f64>();
        state.step_on_loss(optim, loss, value, lr, per_branch)
    }

    fn checkpoint_state(&self, last_loss: f64) -> PdLoopState {
        PdLoopState {
            examples: self.next_example,
            last_loss,
        }
    }
}

/// Weights on disk that a round starts from: the shipped teacher's `model.bpk`, or a previous
/// round's `ema.bpk`, with the config and hash needed to load and check them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetFile {
    /// The net's config, `out_channels` = branches x channels.
    pub net: UNetConfig,
    pub channels: usize,
    pub path: PathBuf,
    pub hash: String,
}

impl NetFile {
    /// A U-Net teacher directory (`teacher.json` + `model.bpk`).
    pub fn teacher(dir: &Path) -> Result<NetFile> {
        let card = crate::teachers::unet::UnetTeacher::card(dir)?;
        Ok(NetFile {
            net: card.net,
            channels: card.dims[0],
            path: dir.join("model.bpk"),
            hash: card.weights_hash,
        })
    }

    /// The EMA weights of the newest checkpoint of a PD round in `run`, for `net`, and its step.
    pub fn round(run: &Path, net: UNetConfig, channels: usize) -> Result<Option<(NetFile, u64)>> {
        let Some(ckpt) = checkpoint::latest(run)? else {
            return Ok(None);
        };
        let meta_path = ckpt.join("meta.json");
        let meta: checkpoint::Meta<PdLoopState> = read_json(&meta_path)?;
        if meta.format != checkpoint::FORMAT || meta.kind != KIND {
            return Err(TrainerError::checkpoint(
                &meta_path,
                format!(
                    "a {:?} checkpoint of format {:?}, expected a {KIND} checkpoint",
                    meta.kind, meta.format
                ),
            ));
        }
        Ok(Some((
            NetFile {
                net,
                channels,
                path: ckpt.join("ema.bpk"),
                hash: meta.ema_hash,
            },
            meta.step,
        )))
    }

    /// Loads the weights onto `device` (autodiff when the device has it), hash checked.
    pub fn load(&self, device: &Device) -> Result<EdmNet> {
        let template = EdmNet::new(&self.net, self.channels, device, 0);
        checkpoint::load_module(template, &self.path, &self.hash)
    }

    /// What this net teaches with (its endpoint branch), on `device` without autodiff.
    pub fn teacher_net(&self, device: &Device) -> Result<EdmNet> {
        Ok(self.load(&device.clone().inner())?.endpoint_net())
    }

    /// A K-branch student that starts as a copy of [`NetFile::teacher_net`]: every branch head
    /// a copy of the teacher's output layer (the same widening B-DENSE's SFD students use).
    pub fn student_net(&self, k: usize, device: &Device) -> Result<EdmNet> {
        Ok(self
            .load(&device.clone().autodiff())?
            .endpoint_net()
            .widen(k))
    }
}

/// What a round directory records, so a finished round is reused, and an interrupted one
/// resumed, only for the same question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub format: String,
    pub round: usize,
    pub student_steps: usize,
    pub teacher: NetFile,
    pub config: PdConfig,
    /// [`PdData::identity`] of the examples (a round's store: its snapshot hash).
    pub data: String,
}

const ROUND_FORMAT: &str = "bdense-pd-round-v2";

/// The student of the finished round in `run` (a directory `train_round` wrote): what the next
/// round's teacher is.
pub fn finished_round(run: &Path) -> Result<NetFile> {
    let record: RoundRecord = read_json(&run.join("round.json"))?;
    let net = record
        .teacher
        .net
        .clone()
        .with_out_channels(record.config.method.k() * record.teacher.channels);
    match NetFile::round(run, net, record.teacher.channels)? {
        Some((file, step)) if step == record.config.steps => Ok(file),
        _ => Err(TrainerError::checkpoint(
            run,
            format!(
                "round {} is not finished ({} steps); run `bdense pd` to finish it",
                record.round, record.config.steps
            ),
        )),
    }
}

/// One round's progress, for a progress line.
#[derive(Debug, Clone)]
pub struct RoundStep {
    pub round: usize,
    pub step: u64,
    pub total: u64,
    pub loss: f64,
}

/// Which round a run trains: the student's steps, its teacher and its examples.
pub struct RoundInput<'a> {
    pub round: usize,
    pub student_steps: usize,
    pub teacher: &'a NetFile,
    pub data: &'a mut dyn PdData,
}

/// Trains round `input.round` into `run`: reuses it when `run` already holds this very round
/// finished, continues it from its newest checkpoint when it was interrupted (the data
/// schedule is a function of the example index, so the continued run sees exactly the batches
/// an uninterrupted one would), else starts it. Returns the student's weights file and
/// whether it was reused.
pub fn train_round(
    config: &PdConfig,
    input: RoundInput,
    run: &Path,
    device: &Device,
    on_step: &mut dyn FnMut(&RoundStep),
) -> Result<(NetFile, bool)> {
    let RoundInput {
        round,
        student_steps,
        teacher,
        data,
    } = input;
    let k = config.method.k();
    if config.weights.len() != k {
        return Err(TrainerError::Config(format!(
            "{} branch weights for {} (K = {k})",
            config.weights.len(),
            config.method
        )));
    }
    if student_steps == 0 {
        return Err(TrainerError::Config(
            "a PD round needs a student of at least one step".into(),
        ));
    }
    let record = RoundRecord {
        format: ROUND_FORMAT.into(),
        round,
        student_steps,
        teacher: teacher.clone(),
        config: config.clone(),
        data: data.identity(),
    };
    let net = teacher.net.clone().with_out_channels(k * teacher.channels);
    let record_path = run.join("round.json");
    if record_path.exists() {
        let stored: RoundRecord = read_json(&record_path)?;
        if stored != record {
            return Err(TrainerError::Config(format!(
                "{} holds another round (a different teacher, data or settings); choose a new --out",
                run.display()
            )));
        }
        if let Some((file, step)) = NetFile::round(run, net.clone(), teacher.channels)?
            && step == config.steps
        {
            return Ok((file, true));
        }
    }
    std::fs::create_dir_all(run).map_err(|e| TrainerError::io(run, e))?;
    write_json(&record_path, &record)?;
    let _lock = checkpoint::RunLock::acquire(run)?;
    checkpoint::remove_stale_temporaries(run)?;
    let (mut state, examples) = round_state(config, teacher, k, run, device)?;
    let mut header = vec!["step", "loss", "lr", "grad_norm"];
    let names: Vec<String> = (1..=k).map(|i| format!("branch_{i}")).collect();
    header.extend(names.iter().map(String::as_str));
    let mut log = CsvLog::open(&run.join("log.csv"), &header, state.step)?;
    let grid = RoundGrid::new(student_steps);
    let mut objective = PdObjective {
        data,
        grid: &grid,
        config,
        weights: config.weights.clone(),
        next_example: examples,
        device: device.clone().autodiff(),
    };
    let schedule = Schedule {
        kind: KIND,
        run,
        steps: config.steps,
        checkpoint_every: config.checkpoint_every.max(1),
        optim: &config.optim,
    };
    fit(&schedule, &mut state, &mut objective, &mut log, &mut |p| {
        on_step(&RoundStep {
            round,
            step: p.step,
            total: p.total,
            loss: p.loss,
        })
    })?;
    let (file, _) = NetFile::round(run, net, teacher.channels)?
        .ok_or_else(|| TrainerError::checkpoint(run, "no checkpoint after training"))?;
    Ok((file, false))
}

/// The state a round trains on and the examples it has consumed: its newest checkpoint, or a
/// fresh copy of the teacher.
fn round_state(
    config: &PdConfig,
    teacher: &NetFile,
    k: usize,
    run: &Path,
    device: &Device,
) -> Result<(TrainState, u64)> {
    let model = teacher.student_net(k, device)?;
    let fresh = TrainState {
        ema: model.valid(),
        model,
        optim: config.optim.build(),
        step: 0,
        last_loss: f64::NAN,
    };
    let Some(ckpt) = checkpoint::latest(run)? else {
        return Ok((fresh, 0));
    };
    let r = checkpoint::load::<PdLoopState>(&ckpt, KIND, fresh.model, fresh.ema, fresh.optim)?;
    let state = TrainState {
        model: r.model,
        ema: r.ema,
        optim: r.optim,
        step: r.meta.step,
        last_loss: r.meta.state.last_loss,
    };
    Ok((state, r.meta.state.examples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_student_grid_is_every_other_teacher_point() {
        for m in [1, 2, 4, 8, 16] {
            let g = RoundGrid::new(m);
            assert_eq!(g.teacher.len(), 2 * m + 1);
            for (i, s) in g.student.iter().enumerate() {
                assert!((s - g.teacher[2 * i]).abs() <= 1e-9 * s, "m {m} point {i}");
            }
            let [a, mid, b] = g.triple(m - 1);
            assert!(a > mid && mid > b, "{a} > {mid} > {b}");
            assert!((b - 0.002).abs() < 1e-12, "the last step ends at sigma_min");
        }
    }

    #[test]
    fn examples_are_a_function_of_seed_and_index_only() {
        let a: Vec<Example> = (0..500).map(|i| example(3, i, 1000, 8)).collect();
        let b: Vec<Example> = (0..500).rev().map(|i| example(3, i, 1000, 8)).collect();
        assert!(a.iter().eq(b.iter().rev()));
        // Every start step is drawn, roughly uniformly; images spread; another seed differs.
        for step in 0..8 {
            let n = a.iter().filter(|e| e.step == step).count();
            assert!((30..100).contains(&n), "step {step}: {n} of 500");
        }
        let mut images: Vec<usize> = a.iter().map(|e| e.image).collect();
        images.sort();
        images.dedup();
        assert!(images.len() > 350, "{} distinct images", images.len());
        assert_ne!(example(4, 0, 1000, 8), a[0]);
        assert_ne!(round_data_seed(0, 1), round_data_seed(0, 2));
    }
}
