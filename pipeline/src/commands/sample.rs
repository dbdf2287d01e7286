//! `bdense sample RUN`: images from a student (endpoint branch only), optionally next to the
//! teacher's from the same noise; a PNG grid plus the raw arrays as .npy.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_store::Dataset;
use bdense_trainer::sample::{labels_tensor, sample};
use bdense_trainer::solvers::{self, Solver};
use burn::prelude::*;

use crate::cli::SampleArgs;
use crate::generation::{labels_for, start_noise};
use crate::images;
use crate::run::{RunRecord, load_student};
use crate::teacher_source;

/// Images sampled together.
const SAMPLE_BATCH: usize = 256;
/// Images shown in grid.png (the .npy files hold them all).
const GRID_IMAGES: usize = 256;

pub fn run(args: &SampleArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let record = RunRecord::load(&args.run)?;
    if let Some(nfe) = args.nfe
        && nfe != record.layout.nfe()
    {
        bail!(
            "--nfe {nfe}: this run's student takes NFE {} (N = {}{}); train another N for another NFE",
            record.layout.nfe(),
            record.layout.n,
            if record.layout.afs { " with AFS" } else { "" }
        );
    }
    let device = args.device.device();
    let net = load_student(&args.run, &record, &device)?;
    let dataset = Dataset::open(&record.dataset)?;
    let teacher = if args.teacher {
        Some(teacher_source::from_manifest(dataset.manifest(), &device)?)
    } else {
        None
    };
    let [c, h, w] = record.dims;
    let (mut student, mut teacher_rows) = (Vec::new(), Vec::new());
    // A few hundred images at a time: memory stays bounded whatever --count says, and each
    // image depends only on its own seed, so the batches do not change the result.
    for start in (0..args.count).step_by(SAMPLE_BATCH) {
        let ids = start as u64..(start + SAMPLE_BATCH).min(args.count) as u64;
        let n = (ids.end - ids.start) as usize;
        let (_, noise) = start_noise(args.seed, ids.clone(), c * h * w, record.layout.sigmas[0]);
        let x = Tensor::<4>::from_data(TensorData::new(noise, [n, c, h, w]), &device);
        let labels = teacher
            .as_ref()
            .and_then(|(t, _)| labels_for(t.teacher.as_ref(), args.seed, ids.clone()))
            .map(|l| labels_tensor(&l, &device));
        let states = sample(
            &net,
            x.clone(),
            &record.layout.sigmas,
            record.layout.afs,
            labels.as_ref(),
        );
        student.extend(solvers::host(states.last().expect("final state")));
        if let Some((t, solver)) = &teacher {
            let sigmas = &dataset.manifest().grid.sigmas;
            let out = run_teacher(t.teacher.as_ref(), *solver, x, sigmas, labels.as_ref());
            teacher_rows.extend(out);
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let shape = [args.count, c, h, w];
    images::write_npy(&args.out.join("student.npy"), &student, &shape)?;
    let mut rows = vec![student];
    if teacher.is_some() {
        images::write_npy(&args.out.join("teacher.npy"), &teacher_rows, &shape)?;
        rows.push(teacher_rows);
    }
    let png = args.out.join("grid.png");
    images::write_grid(&png, &rows, args.count.min(GRID_IMAGES), [c, h, w], 2)?;
    println!(
        "sampled {} images with the {} student (NFE {}) into {} ({}{}) in {:.1}s",
        args.count,
        record.config.method.method(),
        record.layout.nfe(),
        args.out.display(),
        png.display(),
        if teacher.is_some() {
            ", student row above teacher row"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_teacher(
    teacher: &dyn bdense_trainer::solvers::Denoiser,
    solver: Solver,
    x: Tensor<4>,
    sigmas: &[f64],
    labels: Option<&Tensor<1, Int>>,
) -> Vec<f32> {
    solvers::host(&solver.run(teacher, x, sigmas, labels, &mut |_, _, _| {}))
}
