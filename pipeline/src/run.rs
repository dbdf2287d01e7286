//! A run directory and what every command that reads one shares: its record (`run.json`), the
//! store stream as the trainer's batch source, and the trained student.
//!
//! ```text
//! RUN/run.json        config, dataset and its snapshot hash, layout, seeds, backend, versions
//! RUN/log.csv         step, loss, lr, grad_norm, branch_1..branch_K
//! RUN/checkpoints/    model, EMA, optimiser, stream position (every --checkpoint-every)
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_queries::{StudentLayout, TargetSpec, TargetStream};
use bdense_store::{Dataset, Manifest};
use bdense_trainer::checkpoint::{self, RunLock};
use bdense_trainer::edm::EdmNet;
use bdense_trainer::log::CsvLog;
use bdense_trainer::method::{MethodConfig, MethodSpec, StepPer};
use bdense_trainer::optim::{LrSchedule, OptimConfig};
use bdense_trainer::student::{self, BatchSource, Init, StudentConfig, StudentState, TrainBatch};
use bdense_trainer::teachers::unet::UnetTeacher;
use bdense_trainer::unet::UNetConfig;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cli::{InitArg, TrainArgs};
use crate::progress::bar;

pub const RUN_FORMAT: &str = "bdense-run-v1";

/// `run.json`: everything needed to reproduce or resume a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: String,
    pub config: StudentConfig,
    pub dataset: PathBuf,
    pub dataset_name: String,
    pub dataset_snapshot: String,
    pub dims: [usize; 3],
    /// The (N, K) layout over the dataset's grid, as training laid it (`nfe()` tells NFE).
    pub layout: StudentLayout,
    pub device: String,
    pub bdense_version: String,
    pub git_revision: String,
}

impl RunRecord {
    pub fn load(run: &Path) -> anyhow::Result<RunRecord> {
        let path = run.join("run.json");
        let text = std::fs::read(&path).with_context(|| not_a_run(run))?;
        let mut value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a valid run.json", path.display()))?;
        upgrade_layout(&mut value).with_context(|| format!("{}", path.display()))?;
        let record: RunRecord = serde_json::from_value(value)
            .with_context(|| format!("{}: not a valid run.json", path.display()))?;
        if record.format != RUN_FORMAT {
            bail!(
                "{}: format {:?}, this bdense reads {RUN_FORMAT:?}",
                path.display(),
                record.format
            );
        }
        Ok(record)
    }

    pub fn save(&self, run: &Path) -> anyhow::Result<()> {
        let path = run.join("run.json");
        Ok(checkpoint::write_atomic(
            &path,
            &serde_json::to_vec_pretty(self)?,
        )?)
    }

    pub fn target_spec(&self) -> TargetSpec {
        let c = &self.config;
        let mut spec = TargetSpec::new(c.n, c.method.k(), c.batch, c.seed);
        spec.afs = c.method.afs;
        spec.teacher_forcing = c.method.teacher_forcing;
        spec
    }
}

/// Why `run` cannot be resumed, when it has no `run.json`: a directory a `train --out` left
/// with nothing else in it was stopped before it recorded its configuration, so nothing was
/// trained and the same `train --out` starts it again.
fn not_a_run(run: &Path) -> String {
    let left_by_train = std::fs::read_dir(run).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .all(|e| e.file_name() == checkpoint::LOCK_FILE)
    });
    match left_by_train {
        true => format!(
            "{}: not a bdense run directory: it holds no run.json, so the `bdense train --out {}` \
             that made it stopped before recording its configuration and trained nothing; run \
             that command again",
            run.display(),
            run.display()
        ),
        false => format!("{}: not a bdense run directory", run.display()),
    }
}

/// The query stream as the trainer's batch source.
pub struct StreamSource {
    stream: TargetStream,
    dims: [usize; 3],
}

impl StreamSource {
    pub fn new(stream: TargetStream, dims: [usize; 3]) -> StreamSource {
        StreamSource { stream, dims }
    }

    pub fn open(record: &RunRecord, position: u64) -> anyhow::Result<StreamSource> {
        let dataset = Dataset::open(&record.dataset)?;
        if dataset.manifest().snapshot_hash() != record.dataset_snapshot {
            bail!(
                "{}: the dataset changed since this run started (snapshot {} vs {}); resume needs the same data",
                record.dataset.display(),
                dataset.manifest().snapshot_hash(),
                record.dataset_snapshot
            );
        }
        Ok(StreamSource {
            stream: TargetStream::open(dataset, &record.target_spec(), position)?,
            dims: record.dims,
        })
    }
}

impl BatchSource for StreamSource {
    fn next_batch(&mut self) -> bdense_trainer::Result<TrainBatch> {
        let batch = self
            .stream
            .next_batch()
            .unwrap_or_else(|| {
                Err(bdense_queries::QueryError::Layout(
                    "the target stream ended".into(),
                ))
            })
            .map_err(|e| bdense_trainer::TrainerError::Config(format!("target stream: {e}")))?;
        Ok(to_train_batch(&batch, self.dims))
    }

    fn position(&self) -> u64 {
        self.stream.position()
    }
}

pub fn to_train_batch(batch: &bdense_queries::TargetBatch, dims: [usize; 3]) -> TrainBatch {
    TrainBatch {
        dims,
        traj_ids: batch.traj_ids().to_vec(),
        start: batch.start().to_vec(),
        targets: batch.targets().to_vec(),
        interval_starts: batch.interval_starts().map(<[f32]>::to_vec),
        layout: batch.layout.clone(),
        labels: batch.labels(),
    }
}

/// The run's EMA student from its newest checkpoint, on `device` (no autodiff): the weights
/// sample and eval use.
pub fn load_student(run: &Path, record: &RunRecord, device: &Device) -> anyhow::Result<EdmNet> {
    let ckpt = checkpoint::latest(run)?
        .with_context(|| format!("{}: no checkpoint yet (train first)", run.display()))?;
    Ok(student::load_ema(
        &record.config,
        record.dims[0],
        device,
        &ckpt,
    )?)
}

/// Brings the run at `run` to `steps` batch iterations as `bdense train DATASET --out RUN
/// --steps STEPS FLAGS...` would (the flags parsed by the command line itself, so a run made
/// here is one a user can retype): a finished run is kept, an unfinished one resumed, one
/// that died before writing its record started again. Returns the one-line summary.
pub fn ensure_trained(
    dataset: &Path,
    run: &Path,
    steps: u64,
    flags: &[String],
) -> anyhow::Result<String> {
    let finished = checkpoint::latest(run)?
        .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name == format!("step-{steps:06}"));
    if finished {
        return Ok(format!("{}: already trained, reusing it", run.display()));
    }
    let mut argv: Vec<std::ffi::OsString> = vec!["bdense".into(), "train".into()];
    if run.join("run.json").exists() {
        argv.extend(["--resume".into(), run.into()]);
    } else {
        if run.exists() {
            std::fs::remove_dir_all(run)?; // died before writing its record
        }
        argv.extend([dataset.into(), "--out".into(), run.into()]);
        argv.extend(flags.iter().map(Into::into));
    }
    argv.extend(["--steps".into(), steps.to_string().into()]);
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("{}: {e}", run.display()))?;
    match cli.command {
        crate::cli::Command::Train(args) => train(&args, false),
        _ => unreachable!("argv names the train command"),
    }
}

/// Trains (or resumes) the run `args` describe; returns the one-line summary. `show_progress`
/// draws a progress bar (off when several runs train side by side).
pub fn train(args: &TrainArgs, show_progress: bool) -> anyhow::Result<String> {
    let started = Instant::now();
    // Held until training ends: a second trainer on this run is refused, not interleaved.
    let (lock, record, run_dir) = take_run(args)?;
    if let Some(dead) = &lock.took_over_from {
        eprintln!(
            "note: {} was held by {dead}, which stopped without releasing it; continuing",
            run_dir.display()
        );
    }
    let removed = checkpoint::remove_stale_temporaries(&run_dir)?;
    if removed > 0 {
        eprintln!(
            "note: removed {removed} half-written file(s) a stopped trainer left in {}",
            run_dir.display()
        );
    }
    let device =
        bdense_trainer::backend::parse_device(&record.device).map_err(anyhow::Error::msg)?;
    let channels = record.dims[0];
    let (state, position) = if checkpoint::latest(&run_dir)?.is_some() {
        let (state, loop_state) =
            StudentState::resume(&record.config, channels, &device, &run_dir)?;
        (state, loop_state.source_position)
    } else {
        if args.resume.is_some() {
            // A trainer killed before its first checkpoint: its config is all there is.
            eprintln!(
                "note: {} has no checkpoint yet: training it from step 0 with its recorded config",
                run_dir.display()
            );
        }
        (StudentState::fresh(&record.config, channels, &device)?, 0)
    };
    if state.step > record.config.steps {
        bail!(
            "--steps {}: {} is already at step {}; give a larger total",
            record.config.steps,
            run_dir.display(),
            state.step
        );
    }
    if args.resume.is_some() && args.steps.is_some() {
        record.save(&run_dir)?;
    }
    let start_step = state.step;
    let mut source = StreamSource::open(&record, position)?;
    let header = student::log_header(record.config.method.k());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut log = CsvLog::open(&run_dir.join("log.csv"), &header, start_step)?;
    let progress = if show_progress {
        bar(record.config.steps, "steps")
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_position(start_step);
    let abort_after = args_abort_after();
    let (mut wait, mut compute) = (0.0, 0.0);
    let state = student::train(
        &record.config,
        state,
        &mut source,
        &run_dir,
        &mut log,
        &mut |r| {
            progress.set_position(r.step);
            let branches: Vec<String> = r.per_branch.iter().map(|v| format!("{v:.4}")).collect();
            progress.set_message(format!("loss {:.4} [{}]", r.loss, branches.join(" ")));
            wait += r.wait_s;
            compute += r.compute_s;
            if abort_after == Some(r.step) {
                // Crash simulation for tests.
                std::process::abort();
            }
        },
    )?;
    progress.finish_and_clear();
    let trained = state.step - start_step;
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "trained {} student (N={}, K={}, NFE {}) steps {}..{} in {secs:.1}s ({:.1} traj/s, stream wait {:.1}% of step time), loss {:.4}, run {}",
        record.config.method.method(),
        record.config.n,
        record.config.method.k(),
        record.layout.nfe(),
        start_step,
        state.step,
        (trained as f64 * record.config.batch as f64) / secs,
        100.0 * wait / (wait + compute).max(1e-9),
        state.last_loss,
        run_dir.display()
    ))
}

/// Opens the run `--resume` names, or creates the one `STORE/NAME --out RUN` describes (clap
/// lets exactly one of the two through), and locks it.
fn take_run(args: &TrainArgs) -> anyhow::Result<(RunLock, RunRecord, PathBuf)> {
    match (&args.resume, &args.dataset, &args.out) {
        (Some(run), _, _) => {
            let (lock, record) = open_run(run, args.steps)?;
            Ok((lock, record, run.clone()))
        }
        (None, Some(dataset), Some(out)) => {
            let record = new_record(args, dataset)?;
            Ok((create_run(out, &record)?, record, out.clone()))
        }
        _ => unreachable!("clap requires STORE/NAME with --out, or --resume RUN"),
    }
}

/// Locks an existing run and reads its record, with `steps` as the new total if given (saved
/// once the checkpoint shows it is ahead).
fn open_run(run: &Path, steps: Option<u64>) -> anyhow::Result<(RunLock, RunRecord)> {
    // Read once before locking so that a directory holding no run is named as such and
    // gets no lock file, and again after: another trainer may have just changed it.
    RunRecord::load(run)?;
    let lock = RunLock::acquire(run)?;
    let mut record = RunRecord::load(run)?;
    if let Some(steps) = steps {
        record.config.steps = steps;
    }
    Ok((lock, record))
}

/// Creates the run directory `dir` for `record` and locks it; never takes over a directory
/// that holds anything else.
fn create_run(dir: &Path, record: &RunRecord) -> anyhow::Result<RunLock> {
    refuse_existing(dir)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the run directory {}", dir.display()))?;
    let lock = RunLock::acquire(dir)?;
    // Again under the lock: another `train --out` of the same name may have got there first.
    refuse_existing(dir)?;
    record.save(dir)?;
    Ok(lock)
}

/// Fails unless `dir` is missing or empty (a lock file alone counts as empty), with a
/// message for each way it is not.
fn refuse_existing(dir: &Path) -> anyhow::Result<()> {
    if dir.join("run.json").exists() {
        bail!(
            "{} already holds a run, and a run never overwrites another run's directory: `bdense train --resume {}` continues it",
            dir.display(),
            dir.display()
        );
    }
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries.with_context(|| format!("--out {}", dir.display()))?,
    };
    let mut others = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != checkpoint::LOCK_FILE);
    if others.next().is_some() {
        bail!(
            "{} is not empty and holds no run: a run never overwrites another run's directory; choose another --out",
            dir.display()
        );
    }
    Ok(())
}

/// Hidden crash-test hook: `BDENSE_ABORT_AFTER_STEP=n` aborts right after step n.
fn args_abort_after() -> Option<u64> {
    std::env::var("BDENSE_ABORT_AFTER_STEP")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// The U-Net a student starts from: `teacher:DIR`; `scratch`; or `auto`, the network teacher
/// that generated the store (found through its provenance), else scratch.
fn resolve_init(init: &InitArg, m: &Manifest) -> Option<PathBuf> {
    match init {
        InitArg::Scratch => None,
        InitArg::Auto => store_teacher_dir(m),
        InitArg::Teacher(dir) => Some(dir.clone()),
    }
}

/// The directory of the U-Net teacher that generated the store, when it was one.
fn store_teacher_dir(m: &Manifest) -> Option<PathBuf> {
    let spec = m.teacher.params.get("teacher")?.as_str()?;
    spec.strip_prefix("unet:").map(PathBuf::from)
}

fn student_copies_teacher(init: &InitArg, m: &Manifest) -> bool {
    resolve_init(init, m).is_some()
}

/// The optimiser recipe. A student copied from its teacher gets the paper's (SFD's) setting:
/// AFS, Adam with the lr x0.1 half-way, no EMA, no clipping; a student from scratch the
/// project's (constant lr 1e-3, EMA 0.999, clip 1). A flag the user gives always wins.
struct Recipe {
    lr: f64,
    schedule: LrSchedule,
    grad_clip: f64,
    ema: f64,
    afs: bool,
}

impl Recipe {
    fn for_run(args: &TrainArgs, copies_teacher: bool) -> Recipe {
        let (lr, schedule, grad_clip, ema, afs) = if copies_teacher {
            (2e-4, LrSchedule::StepHalf { factor: 0.1 }, 0.0, 0.0, true)
        } else {
            (1e-3, LrSchedule::Constant, 1.0, 0.999, false)
        };
        Recipe {
            lr: args.lr.unwrap_or(lr),
            schedule: args.lr_schedule.unwrap_or(schedule),
            grad_clip: args.grad_clip.unwrap_or(grad_clip),
            ema: args.ema.unwrap_or(ema),
            afs: args.afs.unwrap_or(afs),
        }
    }
}

/// A run.json written before the record kept the whole layout (it kept N, K, AFS, the
/// timestamps and their sigmas) gets the layout rebuilt from its dataset's grid, which must
/// give the same timestamps and sigmas; the file itself is left as it is.
fn upgrade_layout(value: &mut serde_json::Value) -> anyhow::Result<()> {
    let Some(old) = value.get("layout").filter(|l| l.get("targets").is_none()) else {
        return Ok(());
    };
    #[derive(Deserialize)]
    struct Before {
        n: usize,
        k: usize,
        afs: bool,
        timestamps: Vec<u16>,
        sigmas: Vec<f64>,
    }
    let old: Before = serde_json::from_value(old.clone()).context("not a valid layout")?;
    let dataset = value
        .get("dataset")
        .and_then(|d| d.as_str())
        .context("no dataset")?;
    let grid = Dataset::open(Path::new(dataset))
        .with_context(|| {
            format!("written by an older bdense; its layout is rebuilt from its dataset, {dataset}")
        })?
        .manifest()
        .grid
        .clone();
    let layout = StudentLayout::for_grid(&grid, old.n, old.k, old.afs)?;
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(1.0))
    };
    if layout.timestamps != old.timestamps || !close(&layout.sigmas, &old.sigmas) {
        bail!(
            "its layout (timestamps {:?}) does not match its dataset {dataset} (timestamps {:?}): the dataset changed",
            old.timestamps,
            layout.timestamps
        );
    }
    value["layout"] = serde_json::to_value(layout)?;
    Ok(())
}

fn new_record(args: &TrainArgs, dataset_path: &Path) -> anyhow::Result<RunRecord> {
    // Before any work: the method with its branches is settled by the arguments alone.
    let spec =
        MethodSpec::new(args.method, args.k, args.weights.clone()).map_err(anyhow::Error::msg)?;
    let dataset = Dataset::open(dataset_path)?;
    let m = dataset.manifest();
    m.require_trajectories(dataset_path)?;
    let mut mc = MethodConfig::with_spec(spec);
    mc.distance = args.distance;
    let recipe = Recipe::for_run(args, student_copies_teacher(&args.init, m));
    mc.afs = recipe.afs;
    mc.teacher_forcing = args.teacher_forcing;
    mc.step_per = if args.step_per_trajectory {
        StepPer::Trajectory
    } else {
        StepPer::Interval
    };
    let layout = StudentLayout::new(&m.grid.sigmas, m.grid.points(), args.n, mc.k(), recipe.afs)?;
    let classes = m
        .teacher
        .params
        .get("num_classes")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as usize;
    let (init, net) = match resolve_init(&args.init, m) {
        None => {
            let net = UNetConfig::new()
                .with_base(args.base)
                .with_in_channels(m.dims.c as usize)
                .with_num_classes(classes);
            (Init::Scratch, net)
        }
        // The student is the teacher's architecture, whatever --base says.
        Some(dir) => {
            let card = UnetTeacher::card_matching(&dir, m.teacher.checkpoint_hash.as_deref())?;
            (Init::Teacher(dir), card.net)
        }
    };
    let out_channels = layout.k * m.dims.c as usize;
    let config = StudentConfig {
        method: mc,
        n: args.n,
        steps: args.steps.unwrap_or(1000),
        batch: args.batch,
        seed: args.seed,
        optim: OptimConfig {
            lr: recipe.lr,
            schedule: recipe.schedule,
            grad_clip: (recipe.grad_clip > 0.0).then_some(recipe.grad_clip),
            ema_decay: recipe.ema,
            ..OptimConfig::default()
        },
        net: net.with_out_channels(out_channels),
        init,
        checkpoint_every: args.checkpoint_every,
    };
    Ok(RunRecord {
        format: RUN_FORMAT.into(),
        config,
        dataset: bdense_store::location::absolute(dataset_path),
        dataset_name: m.name.clone(),
        dataset_snapshot: m.snapshot_hash(),
        dims: [m.dims.c as usize, m.dims.h as usize, m.dims.w as usize],
        layout,
        device: args.device.to_string(),
        bdense_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: option_env!("BDENSE_GIT_REVISION")
            .unwrap_or("unknown")
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use bdense_trainer::method::{BranchWeights, Method, MethodSpec};

    use super::*;

    /// run.json files as `bdense train` wrote them before the method became data (k beside
    /// the method, weights for every method): an SFD run and a B-DENSE run with linear weights.
    const OLD_SFD: &str = r#"{
  "format": "bdense-run-v1",
  "config": {
    "method": {
      "method": "sfd",
      "k": 1,
      "distance": "l1",
      "weights": "uniform",
      "afs": false,
      "teacher_forcing": false,
      "step_per": "interval"
    },
    "n": 4,
    "steps": 4,
    "batch": 16,
    "seed": 0,
    "optim": {
      "lr": 0.001,
      "schedule": "constant",
      "weight_decay": 0.0,
      "beta1": 0.9,
      "beta2": 0.999,
      "eps": 1e-8,
      "grad_clip": 1.0,
      "ema_decay": 0.999
    },
    "net": {
      "in_channels": 1,
      "out_channels": 1,
      "base": 8,
      "mults": [
        1,
        2
      ],
      "patch": 2,
      "num_classes": 0,
      "emb": 64,
      "fourier": 16
    },
    "init": "Scratch",
    "checkpoint_every": 2
  },
  "dataset": "/tmp/cmp/before/store/p",
  "dataset_name": "p",
  "dataset_snapshot": "9081949b4781d791",
  "dims": [
    1,
    16,
    16
  ],
  "layout": {
    "n": 4,
    "k": 1,
    "afs": false,
    "timestamps": [
      0,
      4,
      8,
      12
    ],
    "sigmas": [
      80.0,
      9.723201355260132,
      0.46997905799774714,
      0.002000000000000003
    ],
    "nfe": 3
  },
  "device": "cpu",
  "bdense_version": "0.1.0",
  "git_revision": "unknown"
}"#;
    const OLD_BDENSE: &str = r#"{
  "format": "bdense-run-v1",
  "config": {
    "method": {
      "method": "bdense",
      "k": 2,
      "distance": "l2",
      "weights": "linear",
      "afs": false,
      "teacher_forcing": true,
      "step_per": "trajectory"
    },
    "n": 4,
    "steps": 4,
    "batch": 16,
    "seed": 0,
    "optim": {
      "lr": 0.001,
      "schedule": "constant",
      "weight_decay": 0.0,
      "beta1": 0.9,
      "beta2": 0.999,
      "eps": 1e-8,
      "grad_clip": 1.0,
      "ema_decay": 0.999
    },
    "net": {
      "in_channels": 1,
      "out_channels": 2,
      "base": 8,
      "mults": [
        1,
        2
      ],
      "patch": 2,
      "num_classes": 0,
      "emb": 64,
      "fourier": 16
    },
    "init": "Scratch",
    "checkpoint_every": 250
  },
  "dataset": "/tmp/cmp/before/store/p",
  "dataset_name": "p",
  "dataset_snapshot": "9081949b4781d791",
  "dims": [
    1,
    16,
    16
  ],
  "layout": {
    "n": 4,
    "k": 2,
    "afs": false,
    "timestamps": [
      0,
      4,
      8,
      12
    ],
    "sigmas": [
      80.0,
      9.723201355260132,
      0.46997905799774714,
      0.002000000000000003
    ],
    "nfe": 3
  },
  "device": "cpu",
  "bdense_version": "0.1.0",
  "git_revision": "unknown"
}"#;

    /// Writes `json` as RUN/run.json with its dataset path pointing at `dataset`.
    fn run_with(json: &str, dataset: &Path) -> tempfile::TempDir {
        let run = tempfile::tempdir().unwrap();
        let text = json.replace("/tmp/cmp/before/store/p", dataset.to_str().unwrap());
        std::fs::write(run.path().join("run.json"), text).unwrap();
        run
    }

    #[test]
    fn runs_written_before_load_with_their_layout_rebuilt_from_the_dataset() {
        let store = tempfile::tempdir().unwrap();
        // The old records' timestamps 0, 4, 8, 12 and sigmas are those of a 13-point EDM grid.
        let ds = bdense_tests::synthetic(store.path(), "p", 8, 13, 8, bdense_store::Dtype::F32);
        let sfd_run = run_with(OLD_SFD, ds.dir());
        let sfd = RunRecord::load(sfd_run.path()).unwrap();
        assert_eq!(sfd.config.method.spec, MethodSpec::Sfd);
        assert_eq!(sfd.config.method.k(), 1);
        let grid = &ds.manifest().grid;
        assert_eq!(
            sfd.layout,
            StudentLayout::for_grid(grid, 4, 1, false).unwrap()
        );
        assert_eq!(sfd.layout.targets, vec![vec![4], vec![8], vec![12]]);

        let bdense_run = run_with(OLD_BDENSE, ds.dir());
        let bdense = RunRecord::load(bdense_run.path()).unwrap();
        assert_eq!(
            bdense.config.method.spec,
            MethodSpec::Bdense {
                k: 2,
                weights: BranchWeights::Linear
            }
        );
        assert_eq!(bdense.config.method.method(), Method::Bdense);
        assert_eq!(bdense.layout.k, 2);
        assert_eq!(bdense.layout.targets[0], vec![2, 4]);
        assert_eq!(bdense.layout.nfe(), 3);
        // The old file is left alone; saved again, the record holds the whole layout.
        let before = std::fs::read_to_string(bdense_run.path().join("run.json")).unwrap();
        assert!(!before.contains("target_sigmas"));
        bdense.save(bdense_run.path()).unwrap();
        let again = RunRecord::load(bdense_run.path()).unwrap();
        assert_eq!(again.layout.targets, bdense.layout.targets);
        let close = again
            .layout
            .target_sigmas
            .iter()
            .flatten()
            .zip(bdense.layout.target_sigmas.iter().flatten())
            .all(|(a, b)| (a - b).abs() <= 1e-12 * b);
        assert!(close);
    }

    #[test]
    fn an_old_run_whose_dataset_is_gone_or_changed_says_so() {
        let store = tempfile::tempdir().unwrap();
        let gone = run_with(OLD_SFD, &store.path().join("missing"));
        let err = format!("{:#}", RunRecord::load(gone.path()).unwrap_err());
        assert!(
            err.contains("run.json") && err.contains("older bdense") && err.contains("missing"),
            "{err}"
        );
        // A 25-point grid puts N = 4 at steps 0, 8, 16, 24, not the record's 0, 4, 8, 12.
        let ds = bdense_tests::synthetic(store.path(), "q", 8, 25, 8, bdense_store::Dtype::F32);
        let changed = run_with(OLD_SFD, ds.dir());
        let err = format!("{:#}", RunRecord::load(changed.path()).unwrap_err());
        assert!(err.contains("does not match its dataset"), "{err}");
    }

    #[test]
    fn a_record_that_gives_sfd_several_branches_is_refused() {
        let bad = OLD_SFD.replace(r#""k": 1"#, r#""k": 4"#);
        let err = serde_json::from_str::<RunRecord>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sfd"), "{err}");
    }
}
