//! `bdense teacher train`: a U-Net teacher with EDM's loss.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_trainer::data::DatasetSource;
use bdense_trainer::optim::OptimConfig;
use bdense_trainer::teachers::unet::{TeacherTarget, TeacherTrainConfig, train_teacher};

use bdense_trainer::metrics;
use bdense_trainer::schedule::GridSpec;
use bdense_trainer::teachers::unet::UnetTeacher;

use crate::cli::{TeacherEvalArgs, TeacherTrainArgs};
use crate::generation::teacher_trajectories;
use crate::progress::bar;
use crate::{evaluation, images, teacher_source};

pub fn train(args: &TeacherTrainArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let source: DatasetSource = args.dataset.parse().context("--dataset")?;
    let device = args.device.device();
    if !args.resume && args.out.join("config.json").exists() {
        bail!(
            "{} already holds a teacher run; pass --resume or choose another --out",
            args.out.display()
        );
    }
    let classes = if args.conditional {
        source.load(bdense_trainer::data::Split::Test)?.classes
    } else {
        0
    };
    let mut config = TeacherTrainConfig::new(source, args.steps, args.batch, args.seed);
    config.net = config.net.with_base(args.base).with_num_classes(classes);
    config.optim = OptimConfig {
        lr: args.lr,
        ..config.optim
    };
    config.checkpoint_every = args.checkpoint_every.max(1);
    config.limit = args.limit;
    config.target = TeacherTarget::parse(&args.target).context("--target")?;
    let progress = bar(args.steps, "steps");
    let card = train_teacher(&config, &args.out, &device, args.resume, &mut |r| {
        progress.set_position(r.step);
        progress.set_message(format!("loss {:.4}", r.loss));
    })?;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "trained unet teacher for {} steps (batch {}) in {secs:.1}s ({:.1} images/s), final loss {}, weights {} in {}",
        card.steps,
        args.batch,
        (args.steps as f64 * args.batch as f64) / secs,
        card.final_loss.map_or("none".into(), |l| format!("{l:.4}")),
        card.weights_hash,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `bdense teacher eval` measured, also written to `DIR/eval.json`.
#[derive(Debug, serde::Serialize)]
struct TeacherEval {
    teacher: String,
    weights_hash: String,
    train_steps: u64,
    solver: String,
    grid: usize,
    samples: u64,
    seed: u64,
    fd_cls: f64,
    /// RMSE of the endpoints to the `--against` teacher's from the same noise.
    against: Option<String>,
    rmse_to_against: Option<f64>,
    against_fd_cls: Option<f64>,
}

/// `bdense teacher eval`: a trained teacher's own samples (the store's solver and grid), their
/// FD-cls, a sample grid, and optionally how closely it tracks another teacher from the same noise.
pub fn eval(args: &TeacherEvalArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let device = args.device.device();
    let spec = format!("unet:{}", args.dir.display());
    let built = teacher_source::build(&spec, &args.dataset, None, &device)?;
    let solver = args.solver;
    let sigmas = GridSpec::edm(args.grid as usize).sigmas;
    let endpoints = |teacher: &dyn bdense_trainer::teachers::Teacher| {
        let t = teacher_trajectories(
            teacher,
            solver,
            &sigmas,
            0..args.count,
            args.seed,
            64,
            false,
            &device,
            &|_| {},
        );
        let dim = t.states.len() / (sigmas.len() * args.count as usize);
        t.states[(sigmas.len() - 1) * args.count as usize * dim..].to_vec()
    };
    let ours = endpoints(built.teacher.as_ref());
    let source: DatasetSource = args.dataset.parse().context("--dataset")?;
    let ctx = evaluation::eval_context(&source, &device)?;
    let fd = |x: &[f32]| evaluation::fd_cls(&ctx, x, built.info.dims);
    let against = match &args.against {
        Some(other) => {
            let other_teacher = teacher_source::build(other, &args.dataset, None, &device)?;
            let theirs = endpoints(other_teacher.teacher.as_ref());
            Some((metrics::rmse(&ours, &theirs), fd(&theirs)))
        }
        None => None,
    };
    let result = TeacherEval {
        teacher: spec,
        weights_hash: built.info.checkpoint_hash.clone().unwrap_or_default(),
        train_steps: UnetTeacher::card(&args.dir)?.steps,
        solver: solver.to_string(),
        grid: args.grid as usize,
        samples: args.count,
        seed: args.seed,
        fd_cls: fd(&ours),
        against: args.against.clone(),
        rmse_to_against: against.map(|a| a.0),
        against_fd_cls: against.map(|a| a.1),
    };
    let dim: usize = built.info.dims.iter().product();
    let shown = (args.count as usize).min(64);
    images::write_grid(
        &args.dir.join("samples.png"),
        &[ours[..shown * dim].to_vec()],
        shown,
        built.info.dims,
        2,
    )?;
    let json = args.dir.join("eval.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!(
        "teacher {} ({} steps): FD-cls {:.3} over {} samples ({} on {} points){}; {} and samples.png written in {:.0}s",
        args.dir.display(),
        result.train_steps,
        result.fd_cls,
        args.count,
        result.solver,
        args.grid,
        match (
            &result.against,
            result.rmse_to_against,
            result.against_fd_cls
        ) {
            (Some(name), Some(rmse), Some(fd)) =>
                format!("; {name}: FD-cls {fd:.3}, endpoint RMSE to it {rmse:.4}"),
            _ => String::new(),
        },
        json.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
