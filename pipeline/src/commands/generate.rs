//! `bdense generate`: a teacher's trajectories on the fine grid, into a store dataset.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_queries::session::{GRID_TABLE, MANIFEST_TABLE};
use bdense_store::{
    DatasetSpec, DatasetWriter, Dims, Dtype, Grid, SeedPolicy, ShardData, StoreError, seeds,
};
use bdense_trainer::solvers::Solver;

use bdense_trainer::data::{DatasetSource, Split};

use crate::cli::GenerateArgs;
use crate::generation::teacher_trajectories;
use crate::pd_store::{self, RoundPlan, RoundTeacher};
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
    if let (Some(round), Some(steps)) = (args.pd_round, args.pd_steps) {
        return pd_round(args, round, steps);
    }
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
    let part = match (args.worker, args.workers) {
        (Some(i), Some(n)) if i >= n => bail!("--worker {i}: need 0 <= I < --workers {n}"),
        (Some(i), Some(n)) => Some((i, n)),
        _ => args.shard.as_deref().map(parse_shard).transpose()?,
    };
    let joining = args.workers.is_some();
    check_arguments(args)?;
    let device = bdense_trainer::backend::parse_device(&args.device)
        .map_err(anyhow::Error::msg)
        .context("--device")?;
    let built = teacher_source::build(&args.teacher, &args.source, args.fit_limit, &device)?;
    let teacher_s = started.elapsed().as_secs_f64();
    let [c, h, w] = built.info.dims;
    let mut grid = Grid::polynomial(args.grid, args.sigma_min, args.sigma_max, args.rho);
    if args.append_zero {
        grid = grid.with_zero();
    }
    // The teacher runs on the grid the arguments give (on --resume, checked equal to the
    // manifest's below), as before the grid moved to the store.
    let sigmas = grid.sigmas.clone();
    let spec = DatasetSpec {
        name: new_dataset_name(&args.dataset),
        dims: Dims {
            c: c as u32,
            h: h as u32,
            w: w as u32,
        },
        dtype,
        has_denoised: args.denoised,
        grid,
        teacher: built.provenance(solver),
        seeds: SeedPolicy {
            base_seed: args.seed,
            scheme: seeds::SCHEME.into(),
        },
        rows_per_shard: args.rows_per_shard,
        planned_count: args.count,
        pd: None,
    };
    check_shard_memory(args, spec.dims.len(), sigmas.len())?;
    let options = args.write_options.clone();
    let mut writer = if args.resume {
        let w = DatasetWriter::open(&args.dataset, options)?;
        if let Some(why) = spec.mismatch(w.manifest()) {
            bail!("cannot resume: {why}");
        }
        w
    } else {
        match DatasetWriter::create(&args.dataset, spec.clone(), options.clone()) {
            // Another worker created it first (or this worker is rerun): join it.
            Err(StoreError::AlreadyExists { .. }) if joining => {
                let w = DatasetWriter::open(&args.dataset, options)?;
                if let Some(why) = spec.mismatch(w.manifest()) {
                    bail!(
                        "{}: the dataset exists with other arguments than this worker's ({why}); every --workers generator of one dataset takes the same arguments",
                        args.dataset.display()
                    );
                }
                w
            }
            Err(e @ StoreError::AlreadyExists { .. }) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "{} exists: pass --resume to continue it, or choose another name",
                    args.dataset.display()
                )));
            }
            other => other?,
        }
    };
    // The shards to write, listed lazily: memory stays bounded by one shard however large
    // --count is.
    let plan = writer.manifest().clone();
    let ours = move |s: &u32| part.is_none_or(|(i, n)| s % n == i);
    let todo = || plan.missing_shard_iter().filter(ours);
    let todo_rows: u64 = todo()
        .map(|s| {
            let r = plan.planned_range(s);
            r.end - r.start
        })
        .sum();
    let progress = bar(todo_rows, "traj");
    let (mut written_bytes, mut write_s, mut done) = (0u64, 0f64, 0usize);
    for index in todo() {
        let ids = plan.planned_range(index);
        let t = teacher_trajectories(
            built.teacher.as_ref(),
            solver,
            &sigmas,
            ids,
            args.seed,
            args.batch,
            args.denoised,
            &device,
            &|b| progress.inc(b as u64),
        );
        let write_started = Instant::now();
        let written = writer.write_shard(&ShardData {
            index,
            seeds: &t.seeds,
            labels: t.labels.as_deref(),
            states: &t.states,
            denoised: t.denoised.as_deref(),
        });
        let entry = match written {
            // A second run of this worker committed it meanwhile: the same bytes are there.
            Err(StoreError::ShardCommitted { .. }) if joining => continue,
            other => other?,
        };
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
        done,
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

/// `--pd-round`: a progressive-distillation round's examples (`crate::pd_store`).
fn pd_round(args: &GenerateArgs, round: u32, steps: u32) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    check_arguments(args)?;
    let device = bdense_trainer::backend::parse_device(&args.device)
        .map_err(anyhow::Error::msg)
        .context("--device")?;
    let teacher = RoundTeacher::parse(&args.teacher)?;
    let source: DatasetSource = args.source.parse().context("--dataset")?;
    let images = source.load(Split::Train)?;
    let plan = RoundPlan {
        round,
        student_steps: steps,
        data_seed: args.seed,
        count: args.count,
        rows_per_shard: args.rows_per_shard,
    };
    let progress = bar(args.count, "examples");
    let w = pd_store::write_round(
        &args.dataset,
        &teacher,
        &images,
        &plan,
        args.resume,
        args.batch,
        crate::parallel::workers(),
        &device,
        &|n| progress.inc(n),
    )?;
    progress.finish_and_clear();
    println!(
        "generated {} PD examples of round {round} ({} -> {steps} steps, teacher {}) in {} shards ({}) into {} in {:.1}s; dataset holds {}/{} examples",
        w.examples,
        2 * steps,
        teacher.file.hash,
        w.shards,
        bytes(w.bytes),
        args.dataset.display(),
        started.elapsed().as_secs_f64(),
        w.manifest.trajectories(),
        w.manifest.planned_count
    );
    Ok(ExitCode::SUCCESS)
}

/// The name a new dataset at `path` gets ("dataset" when the path has no final component).
fn new_dataset_name(path: &std::path::Path) -> String {
    bdense_store::dataset_name(path).unwrap_or_else(|| "dataset".into())
}

/// Everything about the arguments that can be wrong, checked before the teacher is built and
/// before anything is written.
fn check_arguments(args: &GenerateArgs) -> anyhow::Result<()> {
    let name = new_dataset_name(&args.dataset);
    if [GRID_TABLE, MANIFEST_TABLE]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&name))
    {
        bail!(
            "{}: {name:?} is a reserved table name in `bdense sql` (the store's {GRID_TABLE} and {MANIFEST_TABLE} tables); choose another dataset name",
            args.dataset.display()
        );
    }
    let max_points = u16::MAX as usize - usize::from(args.append_zero);
    if args.grid < 2 || args.grid > max_points {
        bail!("--grid {}: need 2..={max_points} points", args.grid);
    }
    let (lo, hi) = (args.sigma_min, args.sigma_max);
    if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo < hi) {
        bail!(
            "--sigma-min {lo} --sigma-max {hi}: need finite sigmas with 0 < sigma-min < sigma-max"
        );
    }
    if !(args.rho.is_finite() && args.rho > 0.0) {
        bail!("--rho {}: need a finite rho > 0", args.rho);
    }
    if args.count == 0 || args.batch == 0 || args.rows_per_shard == 0 {
        bail!("--count, --batch and --rows-per-shard must be positive");
    }
    let shards = args.count.div_ceil(args.rows_per_shard as u64);
    if shards > u32::MAX as u64 {
        bail!(
            "--count {} at --rows-per-shard {} needs {shards} shards, more than {}; raise --rows-per-shard",
            args.count,
            args.rows_per_shard,
            u32::MAX
        );
    }
    Ok(())
}

/// The most memory one shard may take while it is generated (all its steps are held until
/// the shard is written).
const MAX_SHARD_BYTES: u64 = 4 << 30;

/// A shard is generated whole in memory: refuse one that would not fit, rather than
/// allocating from a number the user typed.
fn check_shard_memory(args: &GenerateArgs, dim: usize, steps: usize) -> anyhow::Result<()> {
    let rows = (args.rows_per_shard as u64).min(args.count);
    let copies = if args.denoised { 2 } else { 1 };
    let need = rows
        .saturating_mul(steps as u64)
        .saturating_mul(dim as u64)
        .saturating_mul(4 * copies);
    if need > MAX_SHARD_BYTES {
        bail!(
            "--rows-per-shard {}: a shard of {rows} trajectories x {steps} steps x {dim} values needs {} in memory, more than {}; lower --rows-per-shard",
            args.rows_per_shard,
            bytes(need),
            bytes(MAX_SHARD_BYTES)
        );
    }
    Ok(())
}
