//! The neural teacher: a U-Net with EDM preconditioning, trained with EDM's loss
//! (log-normal sigma, weight lambda(sigma)) by `bdense teacher train`.
//!
//! ```text
//! DIR/config.json       training configuration
//! DIR/teacher.json      what a generator needs: net config, dims, weights hash, final loss
//! DIR/model.bpk         EMA weights (what the teacher runs with)
//! DIR/log.csv           step, loss, lr, grad_norm
//! DIR/checkpoints/...   resumable training state
//! ```

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::{DatasetSource, ImageSet, Split};
use crate::edm::EdmNet;
use crate::error::{Result, TrainerError, read_json, write_json};
use crate::fit::{BatchOutcome, Objective, Schedule, TrainState, fit};
use crate::optim::{OptimConfig, weights_hash};
use crate::precond::EdmPrecond;
use crate::rng::{Stream, StreamState};
use crate::solvers::Denoiser;
use crate::teachers::{Teacher, TeacherInfo, TeacherSpec};
use crate::unet::UNetConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherTrainConfig {
    pub dataset: DatasetSource,
    pub net: UNetConfig,
    pub steps: u64,
    pub batch: usize,
    pub seed: u64,
    pub optim: OptimConfig,
    /// EDM's log-normal training distribution of sigma.
    pub p_mean: f64,
    pub p_std: f64,
    pub checkpoint_every: u64,
    /// Train on the first `limit` images only (quick runs).
    pub limit: Option<usize>,
    /// What the denoiser learns to output (older configs: the data).
    #[serde(default)]
    pub target: TeacherTarget,
}

/// What a U-Net teacher's denoiser is trained to output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherTarget {
    /// EDM's denoising score matching: the clean image, at log-normal sigmas.
    #[default]
    Data,
    /// An analytic teacher's exact posterior mean (e.g. `gmm`), at log-uniform sigmas over the
    /// sampling range. The targets are deterministic, so the net converges far faster than on
    /// noisy clean-image targets, and the result is a network students can be copied from.
    Analytic {
        teacher: String,
        sigma_min: f64,
        sigma_max: f64,
    },
}

impl TeacherTarget {
    /// `data`, or an analytic teacher's name (`gmm`, `gaussian`, ...) over EDM's sigma range.
    pub fn parse(name: &str) -> Result<TeacherTarget> {
        if name == "data" {
            return Ok(TeacherTarget::Data);
        }
        match name.parse::<TeacherSpec>() {
            Ok(TeacherSpec::Gaussian { .. } | TeacherSpec::Gmm { .. }) => {
                Ok(TeacherTarget::Analytic {
                    teacher: name.into(),
                    sigma_min: 0.002,
                    sigma_max: 80.0,
                })
            }
            _ => Err(TrainerError::Config(format!(
                "--target {name:?}: expected data or an analytic teacher (gaussian, gmm, gmm-cond)"
            ))),
        }
    }
}

impl TeacherTrainConfig {
    pub fn new(dataset: DatasetSource, steps: u64, batch: usize, seed: u64) -> Self {
        TeacherTrainConfig {
            dataset,
            net: UNetConfig::new(),
            steps,
            batch,
            seed,
            optim: OptimConfig {
                lr: 2e-3,
                ..OptimConfig::default()
            },
            p_mean: -1.2,
            p_std: 1.2,
            checkpoint_every: 500,
            limit: None,
            target: TeacherTarget::Data,
        }
    }
}

/// `teacher.json`: a trained teacher's identity card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherCard {
    pub format: String,
    pub net: UNetConfig,
    pub dims: [usize; 3],
    pub weights_hash: String,
    pub steps: u64,
    /// The last step's loss; `None` before any step.
    pub final_loss: Option<f64>,
    pub dataset: String,
    /// What the denoiser was trained to output.
    #[serde(default)]
    pub target: TeacherTarget,
}

const CARD_FORMAT: &str = "bdense-unet-teacher-v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopState {
    rng: StreamState,
    last_loss: f64,
}

/// One training step's numbers, for progress reporting.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: u64,
    pub total: u64,
    pub loss: f64,
    pub lr: f64,
}

/// Trains (or, with `resume`, continues training) a U-Net teacher into `dir`.
pub fn train_teacher(
    config: &TeacherTrainConfig,
    dir: &Path,
    device: &Device,
    resume: bool,
    on_step: &mut dyn FnMut(StepReport),
) -> Result<TeacherCard> {
    let mut train = config.dataset.load(Split::Train)?;
    // Fitted on every training image, whatever `limit` says: it is the teacher being copied.
    let analytic = analytic_teacher(&config.target, &train, &device.clone().inner())?;
    if let Some(n) = config.limit {
        train = train.take(n);
    }
    let net_config = config
        .net
        .clone()
        .with_in_channels(train.channels)
        .with_out_channels(train.channels);
    let autodiff = device.clone().autodiff();
    let fresh = EdmNet::new(&net_config, train.channels, &autodiff, config.seed);
    let fresh_ema = EdmNet::new(
        &net_config,
        train.channels,
        &device.clone().inner(),
        config.seed,
    );
    let (mut state, rng) = match checkpoint::latest(dir)? {
        Some(ckpt) if resume => {
            check_same_target(dir, config)?;
            let r = checkpoint::load::<LoopState>(
                &ckpt,
                "teacher",
                fresh,
                fresh_ema,
                config.optim.build(),
            )?;
            let s = r.meta.state;
            let state = TrainState {
                model: r.model,
                ema: r.ema,
                optim: r.optim,
                step: r.meta.step,
                last_loss: s.last_loss,
            };
            (state, Stream::restore(&s.rng))
        }
        _ if resume => {
            return Err(TrainerError::checkpoint(
                dir,
                "no checkpoint to resume from",
            ));
        }
        _ => {
            std::fs::create_dir_all(dir).map_err(|e| TrainerError::io(dir, e))?;
            write_json(&dir.join("config.json"), config)?;
            let state = TrainState {
                model: fresh,
                ema: fresh_ema,
                optim: config.optim.build(),
                step: 0,
                last_loss: f64::NAN,
            };
            (state, Stream::new(config.seed))
        }
    };
    // One trainer per run, as for students; then sweep what a killed one left half-written.
    let _lock = checkpoint::RunLock::acquire(dir)?;
    checkpoint::remove_stale_temporaries(dir)?;
    let mut log = crate::log::CsvLog::open(
        &dir.join("log.csv"),
        &["step", "loss", "lr", "grad_norm"],
        state.step,
    )?;
    let mut objective = EdmObjective {
        train: &train,
        config,
        analytic: analytic.as_deref(),
        rng,
        device: autodiff,
        dir,
        net_config: &net_config,
    };
    let schedule = Schedule {
        kind: "teacher",
        run: dir,
        steps: config.steps,
        checkpoint_every: config.checkpoint_every,
        optim: &config.optim,
    };
    fit(&schedule, &mut state, &mut objective, &mut log, &mut |p| {
        on_step(StepReport {
            step: p.step,
            total: p.total,
            loss: p.loss,
            lr: p.lr,
        })
    })?;
    write_teacher(
        dir,
        config,
        &net_config,
        &train,
        &state.ema,
        state.step,
        state.last_loss,
    )
}

/// EDM's loss on batches drawn from the checkpointed stream (towards the clean images or an
/// analytic teacher's denoiser, as the config's target says).
struct EdmObjective<'a> {
    train: &'a ImageSet,
    config: &'a TeacherTrainConfig,
    analytic: Option<&'a dyn Teacher>,
    rng: Stream,
    device: Device,
    dir: &'a Path,
    net_config: &'a UNetConfig,
}

impl Objective for EdmObjective<'_> {
    type Batch = EdmBatch;
    type State = LoopState;

    fn next_batch(&mut self) -> Result<EdmBatch> {
        Ok(edm_batch(
            self.train,
            self.config,
            self.analytic,
            &mut self.rng,
            &self.device,
        ))
    }

    fn train_batch(
        &mut self,
        batch: EdmBatch,
        state: &mut TrainState,
        optim: &OptimConfig,
        lr: f64,
    ) -> Result<BatchOutcome> {
        let loss = edm_loss(&state.model, &batch);
        let value = loss.clone().into_scalar::<f64>();
        state.step_on_loss(optim, loss, value, lr, Vec::new())
    }

    fn checkpoint_state(&self, last_loss: f64) -> LoopState {
        LoopState {
            rng: self.rng.state(self.config.seed),
            last_loss,
        }
    }

    fn after_checkpoint(&mut self, state: &TrainState) -> Result<()> {
        write_teacher(
            self.dir,
            self.config,
            self.net_config,
            self.train,
            &state.ema,
            state.step,
            state.last_loss,
        )
        .map(|_| ())
    }
}

/// Writes the EMA weights as `model.bpk` and the card beside them: the teacher a generator
/// loads. Done at every checkpoint, so a long run can be used (and shipped) while it goes on.
fn write_teacher(
    dir: &Path,
    config: &TeacherTrainConfig,
    net_config: &UNetConfig,
    train: &ImageSet,
    ema: &EdmNet,
    step: u64,
    last_loss: f64,
) -> Result<TeacherCard> {
    let model_path = dir.join("model.bpk");
    let tmp_path = dir.join(".model.bpk.tmp");
    ema.clone()
        .save_file(&tmp_path)
        .map_err(|e| TrainerError::checkpoint(&tmp_path, e))?;
    std::fs::rename(&tmp_path, &model_path).map_err(|e| TrainerError::io(&model_path, e))?;
    let card = TeacherCard {
        format: CARD_FORMAT.into(),
        net: net_config.clone(),
        dims: [train.channels, train.height, train.width],
        weights_hash: weights_hash(ema),
        steps: step,
        final_loss: last_loss.is_finite().then_some(last_loss),
        dataset: config.dataset.to_string(),
        target: config.target.clone(),
    };
    write_json(&dir.join("teacher.json"), &card)?;
    Ok(card)
}

/// A resumed run must keep learning what it learnt so far.
fn check_same_target(dir: &Path, config: &TeacherTrainConfig) -> Result<()> {
    let path = dir.join("config.json");
    let stored: TeacherTrainConfig = read_json(&path)?;
    if stored.target != config.target {
        return Err(TrainerError::Config(format!(
            "{}: this run was trained towards {:?}, not {:?}; resume with the same --target",
            path.display(),
            stored.target,
            config.target
        )));
    }
    Ok(())
}

/// The analytic teacher a `TeacherTarget::Analytic` run regresses onto, fitted on `train`.
fn analytic_teacher(
    target: &TeacherTarget,
    train: &ImageSet,
    device: &Device,
) -> Result<Option<Box<dyn Teacher>>> {
    match target {
        TeacherTarget::Data => Ok(None),
        TeacherTarget::Analytic { teacher, .. } => {
            let spec: TeacherSpec = teacher.parse().map_err(TrainerError::Config)?;
            Ok(Some(crate::teachers::load(&spec, train, device)?))
        }
    }
}

/// A batch for EDM's loss: clean images, unit noise, sigmas, labels for conditional nets, and
/// what the denoiser should output (the clean images, or an analytic teacher's posterior mean).
/// Every draw comes from the checkpointed stream, so a resumed run sees the same batches.
pub struct EdmBatch {
    pub clean: Tensor<4>,
    pub noise: Tensor<4>,
    pub sigma: Tensor<1>,
    pub labels: Option<Tensor<1, Int>>,
    pub target: Tensor<4>,
}

/// One sigma per image: EDM's log-normal for data targets, log-uniform over the sampling
/// range for analytic targets (the copy must be right wherever a sampler evaluates it).
fn draw_sigma(target: &TeacherTarget, config: &TeacherTrainConfig, rng: &mut Stream) -> f32 {
    match target {
        TeacherTarget::Data => (rng.normal() as f64 * config.p_std + config.p_mean).exp() as f32,
        TeacherTarget::Analytic {
            sigma_min,
            sigma_max,
            ..
        } => {
            let u = rng.unit();
            (sigma_min.ln() + u * (sigma_max.ln() - sigma_min.ln())).exp() as f32
        }
    }
}

/// The analytic teacher's denoised output for each noisy image at its own sigma.
fn analytic_targets(
    teacher: &dyn Teacher,
    noisy: &[f32],
    sigmas: &[f32],
    labels: &[i64],
    shape: [usize; 4],
    device: &Device,
) -> Vec<f32> {
    let d = shape[1] * shape[2] * shape[3];
    let mut out = Vec::with_capacity(noisy.len());
    for (i, &sigma) in sigmas.iter().enumerate() {
        let x = Tensor::<4>::from_data(
            TensorData::new(
                noisy[i * d..(i + 1) * d].to_vec(),
                [1, shape[1], shape[2], shape[3]],
            ),
            device,
        );
        let label = Tensor::<1, Int>::from_data(TensorData::new(vec![labels[i]], [1]), device);
        let denoised = teacher.denoise(x, sigma as f64, Some(&label));
        out.extend(crate::solvers::host(&denoised));
    }
    out
}

fn edm_batch(
    train: &ImageSet,
    config: &TeacherTrainConfig,
    analytic: Option<&dyn Teacher>,
    rng: &mut Stream,
    device: &Device,
) -> EdmBatch {
    let (b, d) = (config.batch, train.dim());
    let mut pixels = Vec::with_capacity(b * d);
    let mut labels = Vec::with_capacity(b);
    for _ in 0..b {
        let i = rng.index(train.len());
        pixels.extend_from_slice(train.image(i));
        labels.push(train.labels[i] as i64);
    }
    let sigmas: Vec<f32> = (0..b)
        .map(|_| draw_sigma(&config.target, config, rng))
        .collect();
    let shape = [b, train.channels, train.height, train.width];
    let noise = rng.normals(b * d);
    let target = match analytic {
        None => pixels.clone(),
        Some(teacher) => {
            let noisy: Vec<f32> = (0..b * d)
                .map(|j| pixels[j] + noise[j] * sigmas[j / d])
                .collect();
            analytic_targets(
                teacher,
                &noisy,
                &sigmas,
                &labels,
                shape,
                &device.clone().inner(),
            )
        }
    };
    EdmBatch {
        target: Tensor::from_data(TensorData::new(target, shape), device),
        clean: Tensor::from_data(TensorData::new(pixels, shape), device),
        noise: Tensor::from_data(TensorData::new(noise, shape), device),
        sigma: Tensor::from_data(TensorData::new(sigmas, [b]), device),
        labels: (config.net.num_classes > 0)
            .then(|| Tensor::from_data(TensorData::new(labels, [b]), device)),
    }
}

/// EDM's loss `E[lambda(sigma) |D(y + sigma n; sigma) - target|^2]` for clean `y`, unit noise
/// `n` (the target is `y` itself for denoising score matching).
pub fn edm_loss(model: &EdmNet, batch: &EdmBatch) -> Tensor<1> {
    let [b, _, _, _] = batch.clean.dims();
    let y = batch.clean.clone();
    let noisy = y + batch.noise.clone() * batch.sigma.clone().reshape([b, 1, 1, 1]);
    let weight = EdmPrecond::default().loss_weight(batch.sigma.clone());
    let denoised = model.denoise_endpoint(noisy, batch.sigma.clone(), batch.labels.as_ref());
    ((denoised - batch.target.clone()).square() * weight).mean()
}

/// A trained U-Net teacher loaded for generation.
pub struct UnetTeacher {
    pub net: EdmNet,
    pub card: TeacherCard,
    pub dir: PathBuf,
}

impl UnetTeacher {
    /// Reads `DIR/teacher.json`.
    pub fn card(dir: &Path) -> Result<TeacherCard> {
        let card_path = dir.join("teacher.json");
        let card: TeacherCard = read_json(&card_path)?;
        if card.format != CARD_FORMAT {
            return Err(TrainerError::checkpoint(
                &card_path,
                format!("format {:?}, expected {CARD_FORMAT:?}", card.format),
            ));
        }
        Ok(card)
    }

    /// The card of the teacher in `dir`, refused unless its weights are the ones that
    /// generated a store (`store_hash`, from the store's provenance): a student must be copied
    /// from the network whose trajectories it learns.
    pub fn card_matching(dir: &Path, store_hash: Option<&str>) -> Result<TeacherCard> {
        let card = Self::card(dir)?;
        match store_hash {
            Some(hash) if hash == card.weights_hash => Ok(card),
            other => Err(TrainerError::Config(format!(
                "teacher {} has weights hash {}, but the dataset was generated by a teacher with hash {}; initialise from that teacher (or --init scratch)",
                dir.display(),
                card.weights_hash,
                other.unwrap_or("(none recorded)")
            ))),
        }
    }

    /// Loads the teacher onto `device` (with autodiff when the device has it, as a student
    /// initialised from it needs).
    pub fn load(dir: &Path, device: &Device) -> Result<UnetTeacher> {
        let card = Self::card(dir)?;
        let template = EdmNet::new(&card.net, card.dims[0], device, 0);
        let net = checkpoint::load_module(template, &dir.join("model.bpk"), &card.weights_hash)?;
        Ok(UnetTeacher {
            net,
            card,
            dir: dir.to_path_buf(),
        })
    }
}

impl Denoiser for UnetTeacher {
    fn denoise(&self, x: Tensor<4>, sigma: f64, labels: Option<&Tensor<1, Int>>) -> Tensor<4> {
        self.net.denoise(x, sigma, labels)
    }
}

impl Teacher for UnetTeacher {
    fn info(&self) -> TeacherInfo {
        TeacherInfo {
            kind: "unet".into(),
            checkpoint_hash: Some(self.card.weights_hash.clone()),
            dims: self.card.dims,
            conditional: self.card.net.num_classes > 0,
            num_classes: self.card.net.num_classes,
            params: vec![
                ("dir".into(), self.dir.display().to_string()),
                ("train_steps".into(), self.card.steps.to_string()),
                (
                    "final_loss".into(),
                    self.card
                        .final_loss
                        .map_or("none".into(), |l| format!("{l:.5}")),
                ),
            ],
        }
    }
}
