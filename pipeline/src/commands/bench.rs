//! `bdense bench store | targets | train`: throughput next to a baseline measured in the same
//! run, printed as ratios (docs/perf.md records the results and these commands).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bdense_queries::{StudentLayout, TargetSpec, TargetStream};
use bdense_store::synthetic::{SyntheticSpec, gaussian_shard};
use bdense_store::{Dataset, DatasetWriter, Dims, Dtype, ShardData, WriteOptions};
use bdense_trainer::log::CsvLog;
use bdense_trainer::student::{self, BatchSource, Init, StudentConfig, StudentState, TrainBatch};

use super::bench_peer;
use crate::cli::{BenchStoreArgs, BenchTargetsArgs, BenchTrainArgs};
use crate::progress::bytes;
use crate::run::{StreamSource, to_train_batch};

/// States `[steps][count][dim]` plus per-trajectory seeds, from a dataset or synthetic.
struct States {
    steps: usize,
    count: usize,
    dim: usize,
    values: Vec<f32>,
    sigmas: Vec<f64>,
    seeds: Vec<u64>,
}

fn states(args: &BenchStoreArgs) -> anyhow::Result<States> {
    if let Some(from) = &args.from {
        let ds = Dataset::open(from)?;
        let m = ds.manifest();
        let (steps, dim) = (m.steps(), ds.dim());
        let count = (m.trajectories() as usize).min(args.count as usize);
        let mut values = vec![0f32; steps * count * dim];
        let mut seeds = vec![0u64; count];
        for shard in ds.shards() {
            for step in 0..steps as u16 {
                let b = ds.read_step_columns(shard, step, Some(&["traj_id", "seed", "x"]), None)?;
                for (r, &id) in b
                    .traj_ids()
                    .iter()
                    .enumerate()
                    .filter(|(_, id)| (**id as usize) < count)
                {
                    let at = (step as usize * count + id as usize) * dim;
                    values[at..at + dim].copy_from_slice(&b.x()[r * dim..(r + 1) * dim]);
                    seeds[id as usize] = b.seeds()[r];
                }
            }
        }
        return Ok(States {
            steps,
            count,
            dim,
            values,
            sigmas: m.grid.sigmas.clone(),
            seeds,
        });
    }
    let spec = synthetic_spec(args, Dtype::F32, args.count as u32);
    let s = gaussian_shard(&spec, 0);
    Ok(States {
        steps: args.steps,
        count: args.count as usize,
        dim: args.dim,
        values: s.states,
        sigmas: spec.sigmas,
        seeds: s.seeds,
    })
}

fn synthetic_spec(args: &BenchStoreArgs, dtype: Dtype, rows_per_shard: u32) -> SyntheticSpec {
    SyntheticSpec {
        name: "bench".into(),
        dims: Dims {
            c: 1,
            h: 1,
            w: args.dim as u32,
        },
        count: args.count,
        sigmas: bdense_store::Grid::edm(args.steps).sigmas,
        rows_per_shard,
        dtype,
        base_seed: 0,
        classes: 0,
        with_denoised: false,
    }
}

/// The 13 evenly spaced steps a (N, K) = (4, 4) student reads from a 49-point grid.
fn chosen_steps(steps: usize) -> Vec<usize> {
    (0..13).map(|i| i * (steps - 1) / 12).collect()
}

/// Empties the kernel's page cache so the next read comes from the disk.
fn drop_page_cache() -> anyhow::Result<()> {
    let synced = std::process::Command::new("sync")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("dropping the page cache for --cold (needs root)")?;
    anyhow::ensure!(synced, "sync failed");
    Ok(())
}

/// The fastest of `repeats` runs of `f`, and a run's result.
pub(crate) fn best<T>(
    repeats: usize,
    f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, T)> {
    best_with(repeats, || Ok(()), f).map(|(t, v)| (t.secs, v))
}

/// One timed run: wall seconds and this process's CPU seconds (all threads) during it.
#[derive(Clone, Copy)]
struct Timing {
    secs: f64,
    cpu: f64,
}

impl Timing {
    const NONE: Timing = Timing {
        secs: f64::MAX,
        cpu: f64::MAX,
    };

    /// The least wall time and the least CPU of two runs.
    fn min(self, other: Timing) -> Timing {
        Timing {
            secs: self.secs.min(other.secs),
            cpu: self.cpu.min(other.cpu),
        }
    }
}

/// The fastest of `repeats` runs of `f`, each after an untimed `before`. The CPU seconds are
/// the least any run used: a first run that also hashes files or faults memory in does not
/// count against the steady state.
fn best_with<T>(
    repeats: usize,
    mut before: impl FnMut() -> anyhow::Result<()>,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(Timing, T)> {
    let mut out = None;
    let mut best = Timing::NONE;
    for _ in 0..repeats.max(1) {
        before()?;
        let clock = Clock::start();
        let v = f()?;
        best = best.min(clock.read());
        out = Some(v);
    }
    Ok((best, out.expect("at least one repeat")))
}

/// Wall and CPU time since it started.
struct Clock(Instant, f64);

impl Clock {
    fn start() -> Clock {
        Clock(Instant::now(), cpu_seconds().0)
    }

    fn read(&self) -> Timing {
        Timing {
            secs: self.0.elapsed().as_secs_f64(),
            cpu: cpu_seconds().0 - self.1,
        }
    }
}

/// One epoch's trajectory ids, batch by batch.
type EpochOrder = Vec<Vec<u64>>;

/// Reads a whole target stream: each epoch's timing (an epoch ends when the first batch of
/// the next arrives) and each epoch's order of trajectory ids, batch by batch.
fn stream_epochs(
    ds: &Dataset,
    spec: &TargetSpec,
    epochs: usize,
) -> anyhow::Result<(Vec<Timing>, Vec<EpochOrder>)> {
    let mut timings = Vec::with_capacity(epochs);
    let mut orders: Vec<EpochOrder> = Vec::with_capacity(epochs);
    let mut clock = Clock::start();
    let mut check = 0f64;
    for b in TargetStream::open(ds.clone(), spec, 0)? {
        let b = b?;
        if orders.len() <= b.epoch as usize {
            if !orders.is_empty() {
                timings.push(clock.read());
                clock = Clock::start();
            }
            orders.push(Vec::new());
        }
        orders
            .last_mut()
            .expect("pushed")
            .push(b.traj_ids().to_vec());
        check += b.targets()[0] as f64;
    }
    timings.push(clock.read());
    std::hint::black_box(check);
    Ok((timings, orders))
}

pub fn store(args: &BenchStoreArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let s = states(args)?;
    let raw_bytes = (s.values.len() * 4) as u64;
    let chosen = chosen_steps(s.steps);
    let read_bytes = (chosen.len() * s.count * s.dim * 4) as f64;
    println!(
        "store benchmark: {} trajectories x {} steps x {} f32 = {} raw ({}); best of {}{}",
        s.count,
        s.steps,
        s.dim,
        bytes(raw_bytes),
        args.from
            .as_ref()
            .map_or("synthetic Gaussian trajectories".to_string(), |p| p
                .display()
                .to_string()),
        args.repeats,
        if args.cold {
            ", reads from a cold page cache"
        } else {
            ", reads from the page cache"
        }
    );
    // Baseline: the same bytes as one flat f32 file, written and synced, then the 13 steps read.
    let raw = args.dir.join("raw.f32");
    let (raw_write, _) = best(args.repeats, || {
        let mut f = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&raw)?);
        for v in s.values.chunks(1 << 20) {
            f.write_all(bytemuck_f32(v))?;
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })?;
    let before_read = || if args.cold { drop_page_cache() } else { Ok(()) };
    let (Timing { secs: raw_read, .. }, _) = best_with(args.repeats, before_read, || {
        let mut f = std::fs::File::open(&raw)?;
        let mut buf = vec![0u8; s.count * s.dim * 4];
        let mut sum = 0f64;
        for &step in &chosen {
            f.seek(SeekFrom::Start((step * s.count * s.dim * 4) as u64))?;
            f.read_exact(&mut buf)?;
            sum += f32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as f64;
        }
        Ok(sum)
    })?;
    let rows_per_shard = 256usize;
    let (
        Timing {
            secs: raw_fresh, ..
        },
        _,
    ) = best_with(args.repeats, before_read, || {
        raw_fresh_arrays(&raw, &s, &chosen, rows_per_shard)
    })?;
    std::fs::remove_file(&raw).ok();
    println!(
        "{:<28} {:>10} {:>6} {:>10} {:>6} {:>12} {:>6} {:>7} {:>9}",
        "variant",
        "write MB/s",
        "x raw",
        "read MB/s",
        "x raw",
        "read, cores",
        "x raw",
        "x fresh",
        "disk/raw"
    );
    println!(
        "{:<28} {:>10.0} {:>6.2} {:>10.0} {:>6.2} {:>12} {:>6} {:>7} {:>9.3}",
        "raw f32 file (baseline)",
        raw_bytes as f64 / raw_write / 1e6,
        1.0,
        read_bytes / raw_read / 1e6,
        1.0,
        "-",
        "-",
        "-",
        1.0
    );
    println!(
        "{:<28} {:>10} {:>6} {:>10.0} {:>6.2} {:>12} {:>6} {:>7} {:>9}",
        "  fresh array per shard-step",
        "-",
        "-",
        read_bytes / raw_fresh / 1e6,
        raw_read / raw_fresh,
        "-",
        "-",
        "1.00",
        "-"
    );
    let variants: [(&str, Dtype, Option<i32>, bool, usize); 6] = [
        ("f32 zstd-1 + byte-split", Dtype::F32, Some(1), true, 128),
        ("  same, 256-row groups", Dtype::F32, Some(1), true, 256),
        ("f32 zstd-1 plain", Dtype::F32, Some(1), false, 128),
        ("f32 zstd-3 + byte-split", Dtype::F32, Some(3), true, 128),
        ("f32 uncompressed", Dtype::F32, None, false, 128),
        ("f16 zstd-1 + byte-split", Dtype::F16, Some(1), true, 128),
    ];
    for (name, dtype, zstd, bss, row_group_rows) in variants {
        let dir = args.dir.join("ds");
        let options = WriteOptions {
            zstd_level: zstd,
            byte_stream_split: bss,
            row_group_rows,
            ..WriteOptions::default()
        };
        let rows_per_shard = rows_per_shard as u32;
        let (write_s, on_disk) = best(args.repeats, || {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            write_dataset(&dir, &s, dtype, rows_per_shard, options.clone())
        })?;
        let ds = Dataset::open(&dir)?;
        let (Timing { secs: read_s, .. }, _) = best_with(args.repeats, before_read, || {
            let mut sum = 0f64;
            for shard in ds.shards() {
                for &step in &chosen {
                    let b = ds.read_step_columns(shard, step as u16, Some(&["x"]), None)?;
                    sum += b.x()[0] as f64;
                }
            }
            Ok(sum)
        })?;
        let steps: Vec<u16> = chosen.iter().map(|&s| s as u16).collect();
        let (Timing { secs: par_s, .. }, _) = best_with(args.repeats, before_read, || {
            let mut sum = 0f64;
            for shard in ds.shards() {
                for b in ds.read_steps(shard, &steps, Some(&["x"]))? {
                    sum += b.x()[0] as f64;
                }
            }
            Ok(sum)
        })?;
        println!(
            "{name:<28} {:>10.0} {:>6.2} {:>10.0} {:>6.2} {:>12.0} {:>6.2} {:>7.2} {:>9.3}",
            raw_bytes as f64 / write_s / 1e6,
            raw_write / write_s,
            read_bytes / read_s / 1e6,
            raw_read / read_s,
            read_bytes / par_s / 1e6,
            raw_read / par_s,
            raw_fresh / par_s,
            on_disk as f64 / raw_bytes as f64
        );
        std::fs::remove_dir_all(&dir).ok();
    }
    println!(
        "bench store done: throughput in MB of raw f32 per second; x raw = speed relative to the flat-file baseline; x fresh = relative to the same file read as read_steps returns states, a new array per shard and step"
    );
    Ok(ExitCode::SUCCESS)
}

/// The flat file's `chosen` steps read as `Dataset::read_steps` returns them: shard by shard
/// (`rows` trajectories), each step's states into a new array, the shard's arrays held until
/// the next shard (as `np.fromfile` per block would). A reader that hands out its states pays
/// for fresh memory; the baseline's one reused buffer does not.
fn raw_fresh_arrays(raw: &Path, s: &States, chosen: &[usize], rows: usize) -> anyhow::Result<f64> {
    let f = std::fs::File::open(raw)?;
    let mut sum = 0f64;
    for first in (0..s.count).step_by(rows) {
        let n = rows.min(s.count - first) * s.dim * 4;
        let arrays = chosen
            .iter()
            .map(|&step| {
                let mut v = Vec::with_capacity(n);
                (&f).seek(SeekFrom::Start(
                    ((step * s.count + first) * s.dim * 4) as u64,
                ))?;
                (&f).take(n as u64).read_to_end(&mut v)?;
                Ok(v)
            })
            .collect::<std::io::Result<Vec<Vec<u8>>>>()?;
        sum += arrays.iter().map(|a| a[0] as f64).sum::<f64>();
    }
    Ok(sum)
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the slice stays borrowed.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Writes `s` as a store dataset; returns its bytes on disk.
fn write_dataset(
    dir: &Path,
    s: &States,
    dtype: Dtype,
    rows_per_shard: u32,
    options: WriteOptions,
) -> anyhow::Result<u64> {
    let spec = SyntheticSpec {
        name: "bench".into(),
        dims: Dims {
            c: 1,
            h: 1,
            w: s.dim as u32,
        },
        count: s.count as u64,
        sigmas: s.sigmas.clone(),
        rows_per_shard,
        dtype,
        base_seed: 0,
        classes: 0,
        with_denoised: false,
    };
    let mut w = DatasetWriter::create(dir, spec.dataset_spec(), options)?;
    let mut shard_states = Vec::new();
    for index in w.manifest().missing_shards() {
        let ids = w.manifest().planned_range(index);
        let rows = ids.clone().count();
        shard_states.clear();
        for step in 0..s.steps {
            let at = (step * s.count + ids.start as usize) * s.dim;
            shard_states.extend_from_slice(&s.values[at..at + rows * s.dim]);
        }
        w.write_shard(&ShardData {
            index,
            seeds: &s.seeds[ids.start as usize..ids.end as usize],
            labels: None,
            states: &shard_states,
            denoised: None,
        })?;
    }
    Ok(w.manifest().bytes())
}

pub fn targets(args: &BenchTargetsArgs) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(&args.dataset)?;
    let m = ds.manifest().clone();
    let (count, dim) = (m.trajectories() as usize, ds.dim());
    let mut spec = TargetSpec::new(args.n, args.k, args.batch, 0);
    spec.epochs = Some(1);
    let layout =
        bdense_queries::StudentLayout::new(&m.grid.sigmas, m.grid.points(), args.n, args.k, false)?;
    let steps = layout.steps();
    let per_traj = (steps.len() * dim * 4) as f64;
    let before = || if args.cold { drop_page_cache() } else { Ok(()) };
    let (stream, order) = match args.cold {
        true => {
            let (t, mut orders) = best_with(args.repeats, before, || {
                stream_epochs(&ds, &spec, 1).map(|(_, orders)| orders)
            })?;
            (t, orders.swap_remove(0))
        }
        false => {
            // One stream of `repeats` epochs, as the trainer reads it: the first epoch also
            // checks every file and warms the loader threads' heaps; the best epoch counts.
            // One more epoch runs untimed: an epoch's window opens when its first batch
            // arrives, by which time shards and batches are already prepared ahead, so the
            // last window misses that work (earlier windows gain and lose it alike).
            let epochs = args.repeats.max(1);
            spec.epochs = Some(epochs as u64 + 1);
            let (windows, mut orders) = stream_epochs(&ds, &spec, epochs + 1)?;
            let best = windows[..epochs]
                .iter()
                .copied()
                .fold(Timing::NONE, Timing::min);
            (best, orders.swap_remove(0))
        }
    };
    // Baseline: the same states from one raw f32 file `[steps][count][dim]`, read with the
    // same access pattern (per batch, per trajectory, each selected step).
    std::fs::create_dir_all(&args.dir)?;
    let raw = args.dir.join("raw.f32");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&raw)?);
        for step in 0..m.steps() as u16 {
            let mut rows = vec![0f32; count * dim];
            for shard in ds.shards() {
                let b = ds.read_step_columns(shard, step, Some(&["traj_id", "x"]), None)?;
                for (r, &id) in b.traj_ids().iter().enumerate() {
                    rows[id as usize * dim..(id as usize + 1) * dim]
                        .copy_from_slice(&b.x()[r * dim..(r + 1) * dim]);
                }
            }
            f.write_all(bytemuck_f32(&rows))?;
        }
    }
    let (ceiling, _) = best_with(args.repeats, before, || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&raw)?;
        let mut check = 0f64;
        for batch in &order {
            let mut out = vec![0u8; batch.len() * steps.len() * dim * 4];
            for (r, &id) in batch.iter().enumerate() {
                for (j, &step) in steps.iter().enumerate() {
                    let at = (
                        (r * steps.len() + j) * dim * 4,
                        (step as usize * count + id as usize) * dim * 4,
                    );
                    f.read_exact_at(&mut out[at.0..at.0 + dim * 4], at.1 as u64)?;
                }
            }
            check += out[0] as f64;
        }
        Ok(check)
    })?;
    std::fs::remove_file(&raw).ok();
    let report = |name: &str, secs: f64, cpu: f64| {
        println!(
            "{name:<44} {:>10.0} traj/s {:>8.3} GB/s  {:>6.2}x raw  {cpu:>6.3} CPU s/epoch",
            count as f64 / secs,
            count as f64 * per_traj / secs / 1e9,
            ceiling.secs / secs
        );
    };
    println!(
        "branch targets N={} K={} ({} steps per trajectory), {count} trajectories x {dim} values, batch {}, best of {}, {} page cache (stream and raw CPU: the least one epoch used):",
        args.n,
        args.k,
        steps.len(),
        args.batch,
        args.repeats,
        if args.cold { "cold" } else { "warm" }
    );
    report(
        "raw f32 file, same access pattern (ceiling)",
        ceiling.secs,
        ceiling.cpu,
    );
    report(
        "bdense TargetStream (Parquet, fast vector decode)",
        stream.secs,
        stream.cpu,
    );
    targets_peer(args, stream.secs, (count, steps.len(), dim))?;
    println!("bench targets done");
    Ok(ExitCode::SUCCESS)
}

/// The pyarrow + numpy peer (`pipeline/bench/targets_pyarrow.py`), run on the same dataset
/// right after the stream; a missing pyarrow is a note, not a failure.
fn targets_peer(
    args: &BenchTargetsArgs,
    stream_s: f64,
    (count, steps, dim): (usize, usize, usize),
) -> anyhow::Result<()> {
    if bdense_store::location::is_remote(&args.dataset) {
        // The peer script reads a local directory; on object storage the comparison that
        // matters is the same stream on local disk (pipeline/bench/s3_loopback.sh).
        println!("pyarrow + numpy peer skipped: it reads local datasets only");
        return Ok(());
    }
    let python = bench_peer::python();
    let Some(versions) = bench_peer::versions(&python, &["pyarrow", "numpy"]) else {
        println!(
            "pyarrow + numpy peer skipped: {} cannot import pyarrow and numpy (set BDENSE_PYTHON to a python that can)",
            python.display()
        );
        return Ok(());
    };
    let cpu = cpu_seconds();
    let out = bench_peer::run_script(
        &python,
        include_str!("../../bench/targets_pyarrow.py"),
        &[
            args.dataset.display().to_string(),
            args.n.to_string(),
            args.k.to_string(),
            args.batch.to_string(),
            args.repeats.to_string(),
        ],
        "",
    )?;
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("seconds "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the pyarrow peer printed no time:\n{out}"))?;
    // The script's CPU time covers its imports and reading the manifest too: an upper bound.
    let peer_cpu = (cpu_seconds().1 - cpu.1) / args.repeats as f64;
    println!(
        "{:<44} {:>10.0} traj/s {:>8.3} GB/s  {:>6}       {peer_cpu:>6.3} CPU s/epoch ({versions}, {})",
        "pyarrow + numpy (targets_pyarrow.py)",
        count as f64 / secs,
        count as f64 * (steps * dim * 4) as f64 / secs / 1e9,
        "",
        python.display()
    );
    println!(
        "bdense TargetStream against pyarrow + numpy: {:.2}x",
        secs / stream_s
    );
    Ok(())
}

/// CPU seconds (user + system) used so far by this process (all its threads) and by its
/// waited-for children (on a shared machine, a steadier measure of work than wall time).
fn cpu_seconds() -> (f64, f64) {
    let used = |who| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut u) } != 0 {
            return 0.0;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        secs(u.ru_utime) + secs(u.ru_stime)
    };
    (used(libc::RUSAGE_SELF), used(libc::RUSAGE_CHILDREN))
}

/// Batches held in memory, handed out like a stream.
struct MemorySource {
    batches: Vec<TrainBatch>,
    at: usize,
}

impl BatchSource for MemorySource {
    fn next_batch(&mut self) -> bdense_trainer::Result<TrainBatch> {
        let b = self.batches[self.at % self.batches.len()].clone();
        self.at += 1;
        Ok(b)
    }

    fn position(&self) -> u64 {
        self.at as u64
    }
}

/// SFD's own loop, for the cost of not having a store: every batch's trajectories are solved
/// by the teacher on the fly (same grid, solver and seeds as the store), and the layout's
/// states picked from them.
struct OnlineTeacherSource<'a> {
    teacher: &'a dyn bdense_trainer::teachers::Teacher,
    solver: bdense_trainer::solvers::Solver,
    grid: Vec<f64>,
    layout: Arc<StudentLayout>,
    base_seed: u64,
    batch: usize,
    dims: [usize; 3],
    device: burn::prelude::Device,
    at: u64,
}

impl BatchSource for OnlineTeacherSource<'_> {
    fn next_batch(&mut self) -> bdense_trainer::Result<TrainBatch> {
        let first = self.at * self.batch as u64;
        let ids = first..first + self.batch as u64;
        let t = crate::generation::teacher_trajectories(
            self.teacher,
            self.solver,
            &self.grid,
            ids.clone(),
            self.base_seed,
            self.batch,
            false,
            &self.device,
            &|_| {},
        );
        self.at += 1;
        let dim: usize = self.dims.iter().product();
        let rows = self.batch;
        // `states` is `[steps][rows][D]`; the trainer wants `[rows][steps of the layout][D]`.
        let state = |step: u16, row: usize| {
            let at = (step as usize * rows + row) * dim;
            &t.states[at..at + dim]
        };
        let l = &self.layout;
        let mut start = Vec::with_capacity(rows * dim);
        let mut targets = Vec::with_capacity(rows * l.intervals() * l.k * dim);
        for row in 0..rows {
            start.extend_from_slice(state(l.timestamps[0], row));
            for &step in l.targets.iter().flatten() {
                targets.extend_from_slice(state(step, row));
            }
        }
        Ok(TrainBatch {
            dims: self.dims,
            traj_ids: ids.collect(),
            start,
            targets,
            interval_starts: None,
            layout: l.clone(),
            labels: t.labels,
        })
    }

    fn position(&self) -> u64 {
        self.at
    }
}

struct Timed {
    compute: f64,
    wait: f64,
    steps: u64,
}

fn time_training(
    config: &StudentConfig,
    dims: [usize; 3],
    source: &mut dyn BatchSource,
    dir: &Path,
    device: &burn::prelude::Device,
) -> anyhow::Result<Timed> {
    let state = StudentState::fresh(config, dims[0], device)?;
    std::fs::create_dir_all(dir)?;
    let mut log = CsvLog::open(&dir.join("log.csv"), &["step"], 0)?;
    let mut t = Timed {
        compute: 0.0,
        wait: 0.0,
        steps: 0,
    };
    student::train(config, state, source, dir, &mut log, &mut |r| {
        if r.step > 1 {
            // The first step warms caches and allocators; it is not counted.
            t.compute += r.compute_s;
            t.wait += r.wait_s;
            t.steps += 1;
        }
    })?;
    std::fs::remove_dir_all(dir).ok();
    Ok(t)
}

pub fn train(args: &BenchTrainArgs) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(&args.dataset)?;
    let m = ds.manifest().clone();
    let dims = [m.dims.c as usize, m.dims.h as usize, m.dims.w as usize];
    let device = bdense_trainer::backend::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    println!(
        "student training throughput on {}, N={} batch {} from {}, U-Net base {}, {} timed steps after one warm-up:",
        args.device,
        args.n,
        args.batch,
        args.dataset.display(),
        args.base,
        args.steps - 1
    );
    // The store's own teacher, rebuilt, for the cost of training without a store.
    let online = match crate::teacher_source::from_manifest(&m, &device) {
        Ok(found) => Some(found),
        Err(e) => {
            println!("  (no online-teacher variant: {e:#})");
            None
        }
    };
    let mut per_traj = Vec::new();
    let mut reuse = Vec::new();
    use bdense_trainer::method::{BranchWeights, Method, MethodConfig, MethodSpec};
    let specs = [
        MethodSpec::Sfd,
        MethodSpec::new(Method::Bdense, Some(args.k), BranchWeights::Uniform)
            .map_err(anyhow::Error::msg)?,
    ];
    for spec in specs {
        let (method, k) = (spec.method(), spec.k());
        let config = StudentConfig {
            method: MethodConfig::with_spec(spec),
            n: args.n,
            steps: args.steps,
            batch: args.batch,
            seed: 0,
            optim: Default::default(),
            net: bdense_trainer::unet::UNetConfig::new()
                .with_base(args.base)
                .with_in_channels(dims[0]),
            init: Init::Scratch,
            checkpoint_every: u64::MAX,
        };
        let spec = TargetSpec::new(args.n, k, args.batch, 0);
        let mut stream = TargetStream::open(ds.clone(), &spec, 0)?;
        let batches: Vec<TrainBatch> = (0..args.steps)
            .map(|_| {
                stream
                    .next_batch()
                    .context("stream ended")?
                    .map(|b| to_train_batch(&b, dims))
                    .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<_>>()?;
        drop(stream);
        let memory = time_training(
            &config,
            dims,
            &mut MemorySource { batches, at: 0 },
            &args.dataset.with_file_name(".bench-train-mem"),
            &device,
        )?;
        let mut streamed_source =
            StreamSource::new(TargetStream::open(ds.clone(), &spec, 0)?, dims);
        let streamed = time_training(
            &config,
            dims,
            &mut streamed_source,
            &args.dataset.with_file_name(".bench-train-stream"),
            &device,
        )?;
        if let Some((built, solver)) = &online {
            let mut source = OnlineTeacherSource {
                teacher: built.teacher.as_ref(),
                solver: *solver,
                grid: m.grid.sigmas.clone(),
                layout: Arc::new(StudentLayout::new(
                    &m.grid.sigmas,
                    m.grid.points(),
                    args.n,
                    k,
                    false,
                )?),
                base_seed: m.seeds.base_seed,
                batch: args.batch,
                dims,
                device: device.clone(),
                at: 0,
            };
            let online_t = time_training(
                &config,
                dims,
                &mut source,
                &args.dataset.with_file_name(".bench-train-online"),
                &device,
            )?;
            let per_update = |t: &Timed| (t.compute + t.wait) / t.steps as f64;
            let ratio = per_update(&online_t) / per_update(&streamed);
            println!(
                "  {method:<7} K={k}: online teacher ({} {solver}, {} grid points): {:.3} s per student update against {:.3} s streamed from the store: the store is {ratio:.1}x cheaper",
                built.info.kind,
                m.grid.sigmas.len(),
                per_update(&online_t),
                per_update(&streamed),
            );
            reuse.push(ratio);
        }
        let traj_s = (memory.steps as f64 * args.batch as f64) / memory.compute;
        per_traj.push(1.0 / traj_s);
        let streamed_total = streamed.compute + streamed.wait;
        println!(
            "  {method:<7} K={k}: {traj_s:>7.1} traj/s in memory; streamed: {:>7.1} traj/s, waiting on the stream {:.1}% of step time ({:+.1}% vs in-memory)",
            (streamed.steps as f64 * args.batch as f64) / streamed_total,
            100.0 * streamed.wait / streamed_total,
            100.0 * (streamed_total / memory.compute - 1.0)
        );
    }
    println!(
        "bench train done: bdense K={} costs {:.2}x sfd per trajectory",
        args.k,
        per_traj[1] / per_traj[0]
    );
    if !reuse.is_empty() {
        println!(
            "bench train: streaming from the store costs 1/{:.1} (sfd) and 1/{:.1} (bdense) of an online teacher per student update",
            reuse[0],
            reuse[reuse.len() - 1]
        );
    }
    Ok(ExitCode::SUCCESS)
}
