//! `bdense teacher train`: a U-Net teacher with EDM's loss.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_trainer::data::DatasetSource;
use bdense_trainer::optim::OptimConfig;
use bdense_trainer::teachers::unet::{TeacherTrainConfig, train_teacher};

use crate::cli::TeacherTrainArgs;
use crate::progress::bar;

pub fn train(args: &TeacherTrainArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let source: DatasetSource = args.dataset.parse().context("--dataset")?;
    let device = bdense_trainer::backend::parse_device(&args.device).map_err(anyhow::Error::msg)?;
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
    let progress = bar(args.steps, "steps");
    let card = train_teacher(&config, &args.out, &device, args.resume, &mut |r| {
        progress.set_position(r.step);
        progress.set_message(format!("loss {:.4}", r.loss));
    })?;
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "trained unet teacher for {} steps (batch {}) in {secs:.1}s ({:.1} images/s), final loss {:.4}, weights {} in {}",
        card.steps,
        args.batch,
        (args.steps as f64 * args.batch as f64) / secs,
        card.final_loss,
        card.weights_hash,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
