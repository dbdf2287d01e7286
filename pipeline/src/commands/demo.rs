//! `bdense demo`: from nothing to a report on Fashion-MNIST with the default CPU teacher.
//!
//! Fits the GMM teacher, generates the store (and held-out trajectories), trains SFD and
//! B-DENSE students at N = 3, 4, 5 (NFE 2, 3, 4) from the same store with the same budget and
//! three seeds each, evaluates them and writes the report. Finished pieces are reused when the
//! demo is run again into the same directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use bdense_store::Dataset;

use crate::cli::{DemoArgs, EvalArgs, GenerateArgs, TrainArgs};
use crate::commands::{eval, generate, report, train};
use crate::parallel;

/// What a preset spends.
#[derive(Debug, Clone)]
pub struct Preset {
    pub count: u64,
    pub heldout: u64,
    pub fit_limit: Option<usize>,
    pub steps: u64,
    pub batch: usize,
    pub base: usize,
    pub lr: f64,
    /// EMA decay per optimiser step (short runs want a short window).
    pub ema: f64,
    pub ns: Vec<usize>,
    pub k: usize,
    pub seeds: Vec<u64>,
}

pub fn preset(name: &str) -> anyhow::Result<Preset> {
    Ok(match name {
        "quick" => Preset {
            count: 256,
            heldout: 128,
            fit_limit: Some(10_000),
            steps: 6,
            batch: 16,
            base: 8,
            lr: 2e-3,
            ema: 0.9,
            ns: vec![3, 4, 5],
            k: 4,
            seeds: vec![0, 1, 2],
        },
        "default" => Preset {
            count: 2000,
            heldout: 512,
            fit_limit: None,
            steps: 80,
            batch: 32,
            base: 16,
            lr: 2e-3,
            ema: 0.95,
            ns: vec![3, 4, 5],
            k: 4,
            seeds: vec![0, 1, 2],
        },
        other => bail!("unknown preset {other:?} (quick or default)"),
    })
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let p = preset(&args.preset)?;
    let store = args.out.join("store");
    let dataset = store.join(dataset_name(&args.dataset));
    ensure_dataset(&dataset, args, &p)?;
    let mut plan = Vec::new();
    for &n in &p.ns {
        for method in ["sfd", "bdense"] {
            for &seed in &p.seeds {
                plan.push((
                    args.out.join("runs").join(format!("{method}-n{n}-s{seed}")),
                    method,
                    n,
                    seed,
                ));
            }
        }
    }
    let workers = parallel::workers();
    println!("training {} students, {workers} at a time", plan.len());
    let trained = Instant::now();
    parallel::map(&plan, workers, |(run, method, n, seed)| {
        ensure_run(run, &dataset, method, *n, *seed, args, &p)
    })?;
    println!(
        "trained {} students in {:.0}s",
        plan.len(),
        trained.elapsed().as_secs_f64()
    );
    let runs: Vec<PathBuf> = plan.into_iter().map(|(run, ..)| run).collect();
    eval::run(&EvalArgs {
        runs: runs.clone(),
        nfe: None,
        heldout: None,
        count: p.heldout,
        fid: None,
        fid_images: 0,
        device: args.device.clone(),
    })?;
    let loaded = report::load_runs(&runs)?;
    let (md, html, headline) = report::write_report(&loaded, &args.out.join("report"))?;
    println!("\n{headline}");
    println!(
        "demo ({} preset) done in {:.0}s: {} runs from one store; report at {} (and {})",
        args.preset,
        started.elapsed().as_secs_f64(),
        runs.len(),
        md.display(),
        html.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn dataset_name(source: &str) -> String {
    source.replace(['/', ':', '.'], "-")
}

/// Generates the store dataset, or finishes or reuses one already there.
fn ensure_dataset(dataset: &Path, args: &DemoArgs, p: &Preset) -> anyhow::Result<()> {
    let resume = match Dataset::open(dataset) {
        Ok(ds) if ds.manifest().missing_shards().is_empty() => return Ok(()),
        Ok(_) => true,
        Err(_) => false,
    };
    generate::run(&GenerateArgs {
        dataset: dataset.to_path_buf(),
        source: args.dataset.clone(),
        teacher: "gmm".into(),
        solver: "dpmpp3m".into(),
        grid: 49,
        sigma_min: 0.002,
        sigma_max: 80.0,
        rho: 7.0,
        append_zero: false,
        count: p.count,
        batch: 64,
        rows_per_shard: 256,
        seed: 0,
        shard: None,
        resume,
        dtype: "f32".into(),
        denoised: false,
        device: args.device.clone(),
        fit_limit: p.fit_limit,
        abort_after_shards: None,
    })?;
    Ok(())
}

/// Trains a run, resumes an interrupted one, or reuses a finished one.
fn ensure_run(
    run: &PathBuf,
    dataset: &Path,
    method: &str,
    n: usize,
    seed: u64,
    args: &DemoArgs,
    p: &Preset,
) -> anyhow::Result<()> {
    let finished = bdense_trainer::checkpoint::latest(run)?
        .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name == format!("step-{:06}", p.steps));
    if finished {
        println!("{}: already trained, reusing it", run.display());
        return Ok(());
    }
    // `train --resume` continues a run from its checkpoint, or from step 0 if it died before
    // its first one.
    let resume = run.join("run.json").exists();
    if run.exists() && !resume {
        std::fs::remove_dir_all(run)?; // died before writing its record
    }
    let summary = train::train(
        &TrainArgs {
            dataset: (!resume).then(|| dataset.to_path_buf()),
            method: method.into(),
            n,
            k: p.k,
            steps: Some(p.steps),
            batch: p.batch,
            seed,
            init: "scratch".into(),
            out: (!resume).then(|| run.clone()),
            resume: resume.then(|| run.clone()),
            lr: p.lr,
            lr_schedule: "constant".into(),
            distance: "l1".into(),
            weights: bdense_trainer::method::BranchWeights::Uniform,
            afs: false,
            teacher_forcing: false,
            step_per_trajectory: false,
            ema: p.ema,
            grad_clip: 1.0,
            base: p.base,
            checkpoint_every: p.steps,
            device: args.device.clone(),
        },
        false,
    )?;
    println!("{summary}");
    Ok(())
}
