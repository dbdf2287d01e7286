//! `bdense store ls | info | verify | gc | upgrade | copy`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bdense_store::Dataset;
use bdense_store::gc::{GcOptions, collect_garbage_with};
use bdense_store::verify::{stat_files, verify as verify_dataset};

use crate::cli::{CopyArgs, DatasetArgs, GcArgs, StoreDirArgs};
use crate::progress::{bar, bytes};

pub fn ls(args: &StoreDirArgs) -> anyhow::Result<ExitCode> {
    let names = bdense_store::list_datasets(&args.store)?;
    let mut total = 0;
    for name in &names {
        let ds = Dataset::open(&args.store.join(name))?;
        let m = ds.manifest();
        total += m.bytes();
        println!(
            "{name:<24} {:>7}/{:<7} traj  {:>3} steps  {}  {}  teacher={} solver={}  {}",
            m.trajectories(),
            m.planned_count,
            m.steps(),
            m.dims,
            m.dtype,
            m.teacher.kind,
            m.teacher.solver,
            bytes(m.bytes())
        );
    }
    println!(
        "{} datasets in {}, {}",
        names.len(),
        args.store.display(),
        bytes(total)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn info(args: &DatasetArgs) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(&args.dataset)?;
    let m = ds.manifest();
    let t = &m.teacher;
    let per_traj = m.bytes() as f64 / m.trajectories().max(1) as f64;
    let raw = (m.steps() * m.dims.len() * 4) as f64;
    println!("dataset      {}", args.dataset.display());
    println!("format       v{}", m.format_version);
    println!(
        "dims         {} (C x H x W = {} values)",
        m.dims,
        m.dims.len()
    );
    println!(
        "dtype        {}{}",
        m.dtype,
        if m.has_denoised {
            ", with denoised"
        } else {
            ""
        }
    );
    println!(
        "grid         {} steps: {} points, sigma {} .. {}, rho {}{}",
        m.steps(),
        m.grid.points(),
        m.grid.sigma_max,
        m.grid.sigma_min,
        m.grid.rho,
        if m.grid.appends_zero {
            ", then sigma = 0"
        } else {
            ""
        }
    );
    println!(
        "trajectories {} of {} planned, {} shards of {}",
        m.trajectories(),
        m.planned_count,
        m.shards.len(),
        m.rows_per_shard
    );
    println!(
        "bytes        {} on disk, {} per trajectory ({:.2}x of raw f32)",
        bytes(m.bytes()),
        bytes(per_traj as u64),
        per_traj / raw
    );
    println!(
        "checked      file sizes only (manifest only; run `bdense store verify` to check the files)"
    );
    println!(
        "teacher      {} (checkpoint {})",
        t.kind,
        t.checkpoint_hash.as_deref().unwrap_or("-")
    );
    println!("solver       {} (order {})", t.solver, t.order);
    for (k, v) in &t.params {
        println!("  {k:<11} {v}");
    }
    println!(
        "seeds        base {} ({})",
        m.seeds.base_seed, m.seeds.scheme
    );
    println!("snapshot     {}", m.snapshot_hash());
    let missing = m.missing_shard_count();
    if missing > 0 {
        println!("incomplete   {missing} shards missing (generate --resume fills them)");
    }
    let problems = stat_files(&ds);
    if let Some(first) = problems.first() {
        for p in &problems[1..] {
            eprintln!("{p}");
        }
        bail!(
            "{first}; {} of the manifest's files are missing or of the wrong size (`bdense store verify {}` checks everything)",
            problems.len(),
            args.dataset.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: &DatasetArgs) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(&args.dataset)?;
    let report = verify_dataset(&ds)?;
    for p in &report.problems {
        println!("{p}");
    }
    let status = if report.ok() { "ok" } else { "FAILED" };
    println!(
        "verify {status}: {} files, {} rows, {} checked, {} problems in {}",
        report.files_checked,
        report.rows_checked,
        bytes(report.bytes_checked),
        report.problems.len(),
        args.dataset.display()
    );
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn gc(args: &GcArgs) -> anyhow::Result<ExitCode> {
    let options = GcOptions {
        dry_run: args.dry_run,
        grace: std::time::Duration::from_secs(args.grace),
    };
    let report = collect_garbage_with(&args.dataset, &options)
        .with_context(|| format!("collecting garbage in {}", args.dataset.display()))?;
    for p in &report.removed {
        println!(
            "{} {}",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            p.display()
        );
    }
    for (p, why) in &report.kept {
        println!("kept {}: {why}", p.display());
    }
    println!(
        "gc {}: {} files, {} in {}{}",
        if args.dry_run { "dry run" } else { "done" },
        report.removed.len(),
        bytes(report.bytes),
        args.dataset.display(),
        if report.kept.is_empty() {
            String::new()
        } else {
            format!(
                "; kept {} files of running or recent writers",
                report.kept.len()
            )
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn upgrade(args: &DatasetArgs) -> anyhow::Result<ExitCode> {
    let report = bdense_store::upgrade::upgrade(&args.dataset)
        .with_context(|| format!("upgrading {}", args.dataset.display()))?;
    if report.already && report.files_moved == 0 {
        println!("{}: already in the current layout", args.dataset.display());
    } else {
        println!(
            "upgraded {}: {} step files renamed (step=N), manifest in _bdense/manifests/",
            args.dataset.display(),
            report.files_moved
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn copy(args: &CopyArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let src = Dataset::open(&args.from)?;
    let progress = bar(src.manifest().trajectories(), "traj");
    let report =
        bdense_store::copy::copy_dataset(&src, &args.to, args.write_options.clone(), &|rows| {
            progress.inc(rows)
        })?;
    progress.finish_and_clear();
    println!(
        "copied {} shards of {} into {} ({} kept from an earlier copy) in {:.1}s: {} against {}",
        report.written,
        args.from.display(),
        args.to.display(),
        report.kept,
        started.elapsed().as_secs_f64(),
        bytes(report.bytes),
        bytes(src.manifest().bytes())
    );
    Ok(ExitCode::SUCCESS)
}
