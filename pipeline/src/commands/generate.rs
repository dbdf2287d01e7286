//! `bdense generate`: a teacher's trajectories on the fine grid, into a store dataset.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_store::{
    DatasetSpec, DatasetWriter, Dims, Dtype, GridInfo, SeedPolicy, ShardData, WriteOptions, seeds,
};
use bdense_trainer::schedule::GridSpec;
use bdense_trainer::solvers::Solver;

use crate::cli::GenerateArgs;
use crate::generation::teacher_trajectories;
use crate::progress::{bar, bytes};
use crate::teacher_source;

/// `--shard i/n` as (i, n).
fn parse_shard(s: &str) -> anyhow::Result<(u32, u32)> {
    let (i, n) = s.split_once('/').context("--shard takes i/n, e.g. 0/4")?;
    let (i, n): (u32, u32) = (
        i.parse().context("--shard i")?,
        n.parse().context("--shard n")?,
    );
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= i < n");
    }
    Ok((i, n))
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let solver: Solver = args
        .solver
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--solver")?;
    let dtype: Dtype = args
        .dtype
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--dtype")?;
    let part = args.shard.as_deref().map(parse_shard).transpose()?;
    if args.grid < 2 {
        bail!("--grid {}: need at least 2 points", args.grid);
    }
    if args.count == 0 || args.batch == 0 || args.rows_per_shard == 0 {
        bail!("--count, --batch and --rows-per-shard must be positive");
    }
    let device = bdense_trainer::backend::parse_device(&args.device)
        .map_err(anyhow::Error::msg)
        .context("--device")?;
    let built = teacher_source::build(&args.teacher, &args.source, args.fit_limit, &device)?;
    let teacher_s = started.elapsed().as_secs_f64();
    let [c, h, w] = built.info.dims;
    let grid = GridSpec {
        points: args.grid,
        sigma_min: args.sigma_min,
        sigma_max: args.sigma_max,
        rho: args.rho,
    };
    let mut sigmas = grid.sigmas();
    if args.append_zero {
        sigmas.push(0.0);
    }
    let spec = DatasetSpec {
        name: dataset_name(&args.dataset),
        dims: Dims {
            c: c as u32,
            h: h as u32,
            w: w as u32,
        },
        dtype,
        has_denoised: args.denoised,
        grid: GridInfo {
            sigmas: sigmas.clone(),
            kind: "polynomial".into(),
            sigma_min: args.sigma_min,
            sigma_max: args.sigma_max,
            rho: args.rho,
            appends_zero: args.append_zero,
        },
        teacher: built.provenance(solver),
        seeds: SeedPolicy {
            base_seed: args.seed,
            scheme: seeds::SCHEME.into(),
        },
        rows_per_shard: args.rows_per_shard,
        planned_count: args.count,
    };
    let options = WriteOptions::default();
    let mut writer = if args.resume {
        let w = DatasetWriter::open(&args.dataset, options)?;
        check_resume(w.manifest(), &spec)?;
        w
    } else {
        DatasetWriter::create(&args.dataset, spec, options).with_context(|| {
            format!(
                "{} exists: pass --resume to continue it, or choose another name",
                args.dataset.display()
            )
        })?
    };
    let todo: Vec<u32> = writer
        .manifest()
        .missing_shards()
        .into_iter()
        .filter(|s| part.is_none_or(|(i, n)| s % n == i))
        .collect();
    let todo_rows: u64 = todo
        .iter()
        .map(|&s| writer.manifest().planned_range(s).count() as u64)
        .sum();
    let progress = bar(todo_rows, "traj");
    let (mut written_bytes, mut write_s, mut done) = (0u64, 0f64, 0usize);
    for &index in &todo {
        let ids = writer.manifest().planned_range(index);
        let t = teacher_trajectories(
            built.teacher.as_ref(),
            solver,
            &sigmas,
            ids,
            args.seed,
            args.batch,
            args.denoised,
            &device,
            &mut |b| progress.inc(b as u64),
        );
        let write_started = Instant::now();
        let entry = writer.write_shard(&ShardData {
            index,
            seeds: &t.seeds,
            labels: t.labels.as_deref(),
            states: &t.states,
            denoised: t.denoised.as_deref(),
        })?;
        write_s += write_started.elapsed().as_secs_f64();
        written_bytes += entry.bytes();
        done += 1;
        if args.abort_after_shards == Some(done) {
            // Crash simulation for tests: no cleanup, no summary.
            std::process::abort();
        }
    }
    progress.finish_and_clear();
    let m = writer.manifest();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated {} trajectories x {} steps ({} shards, {}) into {} in {secs:.1}s: {:.1} traj/s; teacher ready in {teacher_s:.1}s, solving {:.0}%, writing {:.0}% of the time; dataset holds {}/{} trajectories",
        todo_rows,
        m.steps(),
        todo.len(),
        bytes(written_bytes),
        args.dataset.display(),
        todo_rows as f64 / secs,
        100.0 * (secs - teacher_s - write_s) / secs,
        100.0 * write_s / secs,
        m.trajectories(),
        m.planned_count
    );
    Ok(ExitCode::SUCCESS)
}

fn dataset_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into())
}

/// A resumed dataset must be continued with the very same teacher, grid and layout.
fn check_resume(m: &bdense_store::Manifest, spec: &DatasetSpec) -> anyhow::Result<()> {
    let mismatches: Vec<String> = [
        (
            "teacher",
            format!("{:?}", m.teacher.checkpoint_hash),
            format!("{:?}", spec.teacher.checkpoint_hash),
        ),
        (
            "solver",
            m.teacher.solver.clone(),
            spec.teacher.solver.clone(),
        ),
        (
            "grid",
            format!("{:?}", m.grid.sigmas.len()),
            format!("{:?}", spec.grid.sigmas.len()),
        ),
        (
            "count",
            m.planned_count.to_string(),
            spec.planned_count.to_string(),
        ),
        (
            "seed",
            m.seeds.base_seed.to_string(),
            spec.seeds.base_seed.to_string(),
        ),
        ("dtype", m.dtype.to_string(), spec.dtype.to_string()),
        (
            "rows per shard",
            m.rows_per_shard.to_string(),
            spec.rows_per_shard.to_string(),
        ),
        (
            "denoised",
            m.has_denoised.to_string(),
            spec.has_denoised.to_string(),
        ),
    ]
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(what, a, b)| format!("{what}: dataset has {a}, arguments give {b}"))
    .collect();
    if !mismatches.is_empty() {
        bail!("cannot resume: {}", mismatches.join("; "));
    }
    if m.grid
        .sigmas
        .iter()
        .zip(&spec.grid.sigmas)
        .any(|(a, b)| a != b)
    {
        bail!("cannot resume: the sigma grid differs from the dataset's");
    }
    Ok(())
}
