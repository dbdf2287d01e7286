//! `bdense pd`: progressive distillation rounds from the shipped U-Net teacher, PD against
//! PD + B-DENSE (K = 2) at the same budget per round, each round's student evaluated against
//! the original teacher from the same noise (endpoint RMSE) and by FD-cls.
//!
//! Each round's examples are written to the store first (`OUT/stores/`, what `bdense generate
//! --pd-round` writes; round 1's, whose teacher every chain shares, once per seed for both
//! methods and all budgets), then the round trains from them. A chain's round r trains in
//! `OUT/<method>-b<budget>-s<seed>/round-<r>`; a finished round with the same settings and
//! data is reused and an interrupted one continues from its newest checkpoint (as does a
//! store from its committed shards), so a killed comparison, rerun, ends where an
//! uninterrupted one would, bit for bit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_store::seeds;
use bdense_trainer::data::{DatasetSource, Split};
use bdense_trainer::edm::EdmNet;
use bdense_trainer::metrics;
use bdense_trainer::optim::{LrSchedule, OptimConfig};
use bdense_trainer::pd::{self, NetFile, PdConfig, PdMethod, RoundGrid};
use bdense_trainer::solvers::host;
use burn::prelude::*;
use clap::Args;
use serde::Serialize;

use crate::cli::DeviceName;
use crate::evaluation::{self, EvalContext, HELDOUT_SEED_OFFSET};
use crate::parallel;
use crate::pd_store::{self, RoundPlan, RoundTeacher, StoredRound};

/// Examples per shard of a round's store, and per teacher call while writing it.
const ROWS_PER_SHARD: u32 = 256;
const GENERATE_BATCH: usize = 32;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  bdense pd --preset quick --out runs/pd-quick\n  bdense pd --from-steps 16 --rounds 3 --budgets 25,100 --seeds 0,1,2 --out runs/pd"
)]
pub struct PdArgs {
    /// quick (a couple of minutes; what the tests run) or default (16 -> 8 -> 4 -> 2 steps).
    #[arg(long, default_value = "default", value_parser = ["quick", "default"])]
    pub preset: String,
    /// The U-Net teacher directory (default: the shipped models/fashion-mnist-unet).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Where chains and the report go.
    #[arg(long, default_value = "runs/pd")]
    pub out: PathBuf,
    /// The original teacher's Euler steps; round r's student takes from_steps / 2^r.
    #[arg(long)]
    pub from_steps: Option<usize>,
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Optimiser steps per round, comma-separated: one chain per budget.
    #[arg(long, value_delimiter = ',')]
    pub budgets: Option<Vec<u64>>,
    /// Examples per optimiser step.
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// pd, pd-bdense or both.
    #[arg(long, value_delimiter = ',', default_value = "pd,pd-bdense")]
    pub methods: Vec<PdMethod>,
    /// Adam learning rate (x0.1 half-way through each round).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Held-out noises for the RMSE and FD-cls of each round's student.
    #[arg(long)]
    pub eval_count: Option<usize>,
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceName,
    /// Fault injection for crash tests: abort the process during the Nth optimiser step of
    /// this invocation (after it is logged, before its checkpoint).
    #[arg(long, hide = true)]
    pub abort_after_steps: Option<u64>,
}

/// The settings a preset fills in where the command line is silent.
struct Plan {
    from_steps: usize,
    rounds: usize,
    budgets: Vec<u64>,
    batch: usize,
    seeds: Vec<u64>,
    lr: f64,
    eval_count: usize,
}

fn plan(args: &PdArgs) -> anyhow::Result<Plan> {
    let base = match args.preset.as_str() {
        "quick" => Plan {
            from_steps: 8,
            rounds: 2,
            budgets: vec![3],
            batch: 8,
            seeds: vec![0],
            lr: 2e-4,
            eval_count: 96,
        },
        _ => Plan {
            from_steps: 16,
            rounds: 3,
            budgets: vec![25],
            batch: 16,
            seeds: vec![0],
            lr: 2e-4,
            eval_count: 256,
        },
    };
    let p = Plan {
        from_steps: args.from_steps.unwrap_or(base.from_steps),
        rounds: args.rounds.unwrap_or(base.rounds),
        budgets: args.budgets.clone().unwrap_or(base.budgets),
        batch: args.batch.unwrap_or(base.batch),
        seeds: args.seeds.clone().unwrap_or(base.seeds),
        lr: args.lr.unwrap_or(base.lr),
        eval_count: args.eval_count.unwrap_or(base.eval_count),
    };
    if p.rounds == 0 || p.from_steps >> p.rounds == 0 || !p.from_steps.is_multiple_of(1 << p.rounds)
    {
        bail!(
            "--from-steps {} --rounds {}: every round halves the steps, so from-steps must be a multiple of 2^rounds",
            p.from_steps,
            p.rounds
        );
    }
    if p.budgets.contains(&0) || p.batch == 0 || p.seeds.is_empty() || args.methods.is_empty() {
        bail!("--budgets, --batch, --seeds and --methods must be non-empty and positive");
    }
    if !(p.lr.is_finite() && p.lr > 0.0) {
        bail!("--lr {}: expected a positive number", p.lr);
    }
    if p.eval_count < 2 {
        bail!(
            "--eval-count {}: FD-cls needs at least 2 samples",
            p.eval_count
        );
    }
    Ok(p)
}

/// One evaluated sampler: a round's student, or the original teacher with fewer Euler steps
/// (no distillation: what PD has to beat).
#[derive(Debug, Clone, Serialize)]
pub struct PdRow {
    pub method: String,
    /// Optimiser steps per round (0 for the undistilled teacher).
    pub budget: u64,
    pub seed: u64,
    pub round: usize,
    /// Euler steps of the sampler (its NFE).
    pub sampling_steps: usize,
    /// Endpoint RMSE against the original teacher's `from_steps` Euler sampler, same noise.
    pub rmse: f64,
    pub fd_cls: f64,
    /// Final training loss of the round and of each branch (the endpoint branch last).
    pub loss: Option<f64>,
    pub branch_loss: Vec<f64>,
    pub train_s: f64,
    /// Seconds the teacher's passes into the round's store took, when this row wrote them.
    pub generate_s: Option<f64>,
}

#[derive(Serialize)]
struct PdReport {
    teacher: String,
    teacher_hash: String,
    from_steps: usize,
    rounds: usize,
    batch: usize,
    lr: f64,
    eval_count: usize,
    weighting: &'static str,
    rows: Vec<PdRow>,
}

pub fn run(args: &PdArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let p = plan(args)?;
    let device = args.device.device();
    let teacher_dir = args
        .teacher
        .clone()
        .unwrap_or_else(super::demo::shipped_teacher);
    let start = NetFile::teacher(&teacher_dir)
        .with_context(|| format!("--teacher {}", teacher_dir.display()))?;
    let source: DatasetSource = args.dataset.parse().context("--dataset")?;
    let images = source.load(Split::Train)?;
    let dims = [images.channels, images.height, images.width];
    let ctx = evaluation::eval_context(&source, &device)?;
    let eval = Evaluator::new(&start, &p, dims, &ctx, &device);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let mut rows = Vec::new();
    for r in 0..=p.rounds {
        let steps = p.from_steps >> r;
        let key = format!(
            "teacher {} in {steps} Euler steps from reference {} ({} steps) on {} held-out noises",
            start.hash, start.hash, p.from_steps, p.eval_count
        );
        let cache = args.out.join(format!("teacher-euler-{steps}.json"));
        let (rmse, fd) = eval.cached_scores(&cache, key, || {
            eval.sample(&start.teacher_net(&device)?, steps)
        })?;
        rows.push(eval.row("teacher-euler", 0, 0, r, steps, rmse, fd));
    }
    let stores = args.out.join("stores");
    let max_budget = *p.budgets.iter().max().expect("budgets checked non-empty");
    let mut steps_taken = 0u64;
    for &budget in &p.budgets {
        for &seed in &p.seeds {
            for &method in &args.methods {
                let chain = args.out.join(format!("{method}-b{budget}-s{seed}"));
                let config = PdConfig {
                    method,
                    weights: vec![1.0; method.k()],
                    steps: budget,
                    batch: p.batch,
                    seed,
                    // The project's SFD recipe for teacher-initialised students: Adam, x0.1
                    // half-way, no EMA (the next round's teacher is the trained weights), no
                    // clipping.
                    optim: OptimConfig {
                        lr: p.lr,
                        schedule: LrSchedule::StepHalf { factor: 0.1 },
                        grad_clip: None,
                        ema_decay: 0.0,
                        ..OptimConfig::default()
                    },
                    // Often enough that a killed run loses little (it resumes from the newest).
                    checkpoint_every: (budget / 4).max(1),
                };
                let mut teacher = start.clone();
                for r in 1..=p.rounds {
                    let steps = p.from_steps >> r;
                    let round_dir = chain.join(format!("round-{r}"));
                    // Round 1's teacher is every chain's: its examples serve both methods and
                    // every budget of a seed (as many as the largest budget takes).
                    let (store, count) = if r == 1 {
                        (format!("round-1-s{seed}"), max_budget * p.batch as u64)
                    } else {
                        (
                            format!("{method}-b{budget}-s{seed}-round-{r}"),
                            budget * p.batch as u64,
                        )
                    };
                    let plan = RoundPlan {
                        round: r as u32,
                        student_steps: steps as u32,
                        data_seed: pd::round_data_seed(seed, r),
                        count,
                        rows_per_shard: ROWS_PER_SHARD,
                    };
                    let round_teacher = RoundTeacher {
                        file: teacher.clone(),
                        kind: if r == 1 { "unet" } else { "pd-student" }.into(),
                    };
                    let t = Instant::now();
                    let store = stores.join(store);
                    let written = if pd_store::holds(&store, &round_teacher, &plan) {
                        0
                    } else {
                        pd_store::write_round(
                            &store,
                            &round_teacher,
                            &images,
                            &plan,
                            true,
                            GENERATE_BATCH,
                            parallel::workers(),
                            &device,
                            &|_| {},
                        )?
                        .examples
                    };
                    let generate_s = t.elapsed().as_secs_f64();
                    let mut data = StoredRound::load(&store)?;
                    let t = Instant::now();
                    let mut last = (f64::NAN, Vec::new());
                    let (student, reused) = pd::train_round(
                        &config,
                        pd::RoundInput {
                            round: r,
                            student_steps: steps,
                            teacher: &teacher,
                            data: &mut data,
                        },
                        &round_dir,
                        &device,
                        &mut |_| {
                            steps_taken += 1;
                            if args.abort_after_steps == Some(steps_taken) {
                                // Crash simulation: no cleanup, no summary.
                                std::process::abort();
                            }
                        },
                    )?;
                    let train_s = t.elapsed().as_secs_f64();
                    if let Some(l) = last_log_row(&round_dir)? {
                        last = l;
                    }
                    let mut row = eval.student_row(
                        &student,
                        &round_dir,
                        (&method.to_string(), budget, seed, r, steps),
                    )?;
                    row.loss = Some(last.0);
                    row.branch_loss = last.1;
                    row.train_s = if reused { f64::NAN } else { train_s };
                    row.generate_s = (written > 0).then_some(generate_s);
                    println!(
                        "{method} budget {budget} seed {seed} round {r} ({} -> {steps} steps){}: RMSE to teacher {:.4}, FD-cls {:.3}, loss {:.5}",
                        2 * steps,
                        if reused { " (reused)" } else { "" },
                        row.rmse,
                        row.fd_cls,
                        last.0
                    );
                    rows.push(row);
                    teacher = student;
                }
            }
        }
    }
    let report = PdReport {
        teacher: teacher_dir.display().to_string(),
        teacher_hash: start.hash.clone(),
        from_steps: p.from_steps,
        rounds: p.rounds,
        batch: p.batch,
        lr: p.lr,
        eval_count: p.eval_count,
        weighting: "EDM lambda(sigma) on the denoised output, branches uniform",
        rows: rows.clone(),
    };
    let json = args.out.join("pd.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let csv = args.out.join("pd.csv");
    std::fs::write(&csv, to_csv(&rows)).with_context(|| format!("writing {}", csv.display()))?;
    let md = args.out.join("pd.md");
    let table = table(&rows);
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    println!("{table}");
    println!(
        "pd done in {:.0}s: {} rounds from {} Euler steps, {} chains; {} and {} written",
        started.elapsed().as_secs_f64(),
        p.rounds,
        p.from_steps,
        p.budgets.len() * p.seeds.len() * args.methods.len(),
        json.display(),
        csv.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The last row of a round's log: (loss, per-branch losses).
fn last_log_row(run: &Path) -> anyhow::Result<Option<(f64, Vec<f64>)>> {
    let path = run.join("log.csv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().skip(1).last().map(|line| {
        let v: Vec<f64> = line.split(',').filter_map(|s| s.parse().ok()).collect();
        (
            v.get(1).copied().unwrap_or(f64::NAN),
            v.get(4..).unwrap_or(&[]).to_vec(),
        )
    }))
}

/// Held-out noise, the original teacher's samples from it (made when first needed: a run whose
/// scores are all kept needs none), and the FD-cls scorer.
struct Evaluator<'a> {
    start: NetFile,
    from_steps: usize,
    noise: Vec<f32>,
    reference: std::cell::OnceCell<Vec<f32>>,
    dims: [usize; 3],
    count: usize,
    ctx: &'a EvalContext,
    device: Device,
}

const EVAL_BATCH: usize = 64;

/// A sampler's scores, kept beside what it scores, under a key naming what was scored how.
#[derive(Serialize, serde::Deserialize)]
struct EvalCache {
    key: String,
    rmse: f64,
    fd_cls: f64,
}

impl<'a> Evaluator<'a> {
    fn new(
        start: &NetFile,
        p: &Plan,
        dims: [usize; 3],
        ctx: &'a EvalContext,
        device: &Device,
    ) -> Evaluator<'a> {
        let d: usize = dims.iter().product();
        let sigma_max = RoundGrid::new(1).student[0];
        // Seeds no training example uses (those come from pd::round_data_seed).
        let noise: Vec<f32> = (0..p.eval_count as u64)
            .flat_map(|i| seeds::standard_normal(seeds::trajectory_seed(HELDOUT_SEED_OFFSET, i), d))
            .map(|v| v * sigma_max as f32)
            .collect();
        Evaluator {
            start: start.clone(),
            from_steps: p.from_steps,
            noise,
            reference: std::cell::OnceCell::new(),
            dims,
            count: p.eval_count,
            ctx,
            device: device.clone(),
        }
    }

    /// The original teacher's `from_steps` Euler endpoints from the held-out noise.
    fn reference(&self) -> anyhow::Result<&[f32]> {
        if let Some(r) = self.reference.get() {
            return Ok(r);
        }
        let teacher = self.start.teacher_net(&self.device)?;
        let samples = self.sample(&teacher, self.from_steps)?;
        Ok(self.reference.get_or_init(|| samples))
    }

    /// Endpoints of `net` (its endpoint branch) in `steps` Euler steps on EDM's grid, from the
    /// held-out noise: the student rollout, which for a K = 1 net is the teacher's Euler sampler.
    fn sample(&self, net: &EdmNet, steps: usize) -> anyhow::Result<Vec<f32>> {
        let sigmas = RoundGrid::new(steps).student;
        let d: usize = self.dims.iter().product();
        let [c, h, w] = self.dims;
        let mut out = Vec::with_capacity(self.noise.len());
        for chunk in self.noise.chunks(EVAL_BATCH * d) {
            let b = chunk.len() / d;
            let x =
                Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [b, c, h, w]), &self.device);
            let states = bdense_trainer::sample::sample(net, x, &sigmas, false, None);
            out.extend(host(states.last().expect("final state")));
        }
        Ok(out)
    }

    /// (RMSE to the reference, FD-cls) of the samples `make` returns, or the scores `path`
    /// keeps under the same `key` (several processes, one per seed, can fill one `--out`, and a
    /// last run over every seed then only collects their scores).
    fn cached_scores(
        &self,
        path: &Path,
        key: String,
        make: impl FnOnce() -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<(f64, f64)> {
        let cached: Option<EvalCache> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &EvalCache| c.key == key);
        if let Some(c) = cached {
            return Ok((c.rmse, c.fd_cls));
        }
        let samples = make()?;
        let cache = EvalCache {
            key,
            rmse: metrics::rmse(&samples, self.reference()?),
            fd_cls: evaluation::fd_cls(self.ctx, &samples, self.dims),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&cache)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok((cache.rmse, cache.fd_cls))
    }

    /// A round's student scored (kept in `round_dir/eval.json`).
    fn student_row(
        &self,
        student: &NetFile,
        round_dir: &Path,
        (method, budget, seed, round, steps): (&str, u64, u64, usize, usize),
    ) -> anyhow::Result<PdRow> {
        let key = format!(
            "student {} from reference {} ({} steps) on {} held-out noises",
            student.hash, self.start.hash, self.from_steps, self.count
        );
        let (rmse, fd) = self.cached_scores(&round_dir.join("eval.json"), key, || {
            self.sample(&student.load(&self.device.clone().inner())?, steps)
        })?;
        Ok(self.row(method, budget, seed, round, steps, rmse, fd))
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        method: &str,
        budget: u64,
        seed: u64,
        round: usize,
        steps: usize,
        rmse: f64,
        fd_cls: f64,
    ) -> PdRow {
        PdRow {
            method: method.into(),
            budget,
            seed,
            round,
            sampling_steps: steps,
            rmse,
            fd_cls,
            loss: None,
            branch_loss: Vec::new(),
            train_s: 0.0,
            generate_s: None,
        }
    }
}

fn to_csv(rows: &[PdRow]) -> String {
    let mut s = String::from(
        "method,budget,seed,round,sampling_steps,rmse,fd_cls,loss,branch_loss,train_s\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            r.method,
            r.budget,
            r.seed,
            r.round,
            r.sampling_steps,
            r.rmse,
            r.fd_cls,
            r.loss.map_or(String::new(), |l| l.to_string()),
            r.branch_loss
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(";"),
            r.train_s
        ));
    }
    s
}

fn mean_std(v: &[f64]) -> String {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return format!("{mean:.4}");
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    format!("{mean:.4} ± {:.4}", var.sqrt())
}

/// Markdown: one line per (budget, round, method), mean ± std over seeds.
fn table(rows: &[PdRow]) -> String {
    let mut keys: Vec<(u64, usize, String)> = rows
        .iter()
        .map(|r| (r.budget, r.round, r.method.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut s = String::from(
        "| budget | round | steps | method | seeds | RMSE to teacher ↓ | FD-cls ↓ |\n|---|---|---|---|---|---|---|\n",
    );
    for (budget, round, method) in keys {
        let group: Vec<&PdRow> = rows
            .iter()
            .filter(|r| r.budget == budget && r.round == round && r.method == method)
            .collect();
        let rmse: Vec<f64> = group.iter().map(|r| r.rmse).collect();
        let fd: Vec<f64> = group.iter().map(|r| r.fd_cls).collect();
        s.push_str(&format!(
            "| {} | {round} | {} | {method} | {} | {} | {} |\n",
            if budget == 0 {
                "–".into()
            } else {
                budget.to_string()
            },
            group[0].sampling_steps,
            group.len(),
            mean_std(&rmse),
            mean_std(&fd)
        ));
    }
    s
}
