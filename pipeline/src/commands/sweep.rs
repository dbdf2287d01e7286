//! `bdense sweep`: the paper tuned B-DENSE's branch weights by a search at NFE 2; this does
//! that honestly. Each method gets the same number of trials (same steps and batch each),
//! scored on a validation split of the teacher's trajectories; the best setting of each is
//! then trained again with fresh seeds and reported on held-out trajectories the search never
//! saw. Every trial is an ordinary run directory, made from the command line a user would
//! type (logged in `search.csv`), so any of them can be rerun or resumed by hand.
//!
//! ```text
//! OUT/search/<method>-t<trial>/   the search's runs (eval.json: scored on NAME-val)
//! OUT/final/<method>-s<seed>/     the chosen settings, fresh seeds (eval.json: NAME-heldout)
//! OUT/search.csv                  trial, method, flags, validation RMSE and FD-cls
//! OUT/sweep.json, OUT/summary.md  chosen settings, held-out mean ± std, the verdict
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bdense_store::Dataset;
use bdense_trainer::method::Method;
use bdense_trainer::rng::Stream;
use serde::Serialize;

use crate::cli::{Command, EvalArgs, SweepArgs};
use crate::evaluation::{self, EvalResult, TrajectorySplit};
use crate::{dispatch, parallel};

/// Final runs take seeds from here up; search trial t trains with seed t.
const FINAL_SEED_BASE: u64 = 1_000_000;
const LR_RANGE: (f64, f64) = (5e-5, 1e-3);
const MAX_WEIGHT_POWER: f64 = 3.0;

/// One point of a method's search space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    pub method: Method,
    pub lr: f64,
    pub lr_schedule: &'static str,
    /// `--weights` (B-DENSE only).
    pub weights: Option<String>,
}

impl Setting {
    /// The paper's recipe for a teacher-initialised student (trial 0 of each method).
    fn paper(method: Method) -> Setting {
        Setting {
            method,
            lr: 2e-4,
            lr_schedule: "step-half",
            weights: (method == Method::Bdense).then(|| "uniform".into()),
        }
    }

    /// Trial `t` of `method`: a seeded draw, independent of every other trial.
    fn draw(method: Method, t: usize, k: usize, seed: u64) -> Setting {
        if t == 0 {
            return Setting::paper(method);
        }
        let mut rng = Stream::new(seed ^ ((method as u64 + 1) << 32) ^ t as u64);
        let (lo, hi) = (LR_RANGE.0.ln(), LR_RANGE.1.ln());
        let lr = round_sig((lo + (hi - lo) * rng.unit()).exp());
        let lr_schedule = if rng.unit() < 0.5 {
            "step-half"
        } else {
            "constant"
        };
        let power = MAX_WEIGHT_POWER * rng.unit();
        let weights = (method == Method::Bdense).then(|| {
            (1..=k)
                .map(|j| format!("{:.4}", (j as f64 / k as f64).powf(power)))
                .collect::<Vec<_>>()
                .join(",")
        });
        Setting {
            method,
            lr,
            lr_schedule,
            weights,
        }
    }

    /// The `bdense train` flags of this setting (DATASET, --out and --steps aside).
    fn flags(&self, args: &SweepArgs, seed: u64) -> Vec<String> {
        let mut f = vec![
            format!("--method={}", self.method),
            format!("--n={}", args.n),
            format!("--batch={}", args.batch),
            format!("--seed={seed}"),
            format!("--lr={}", self.lr),
            format!("--lr-schedule={}", self.lr_schedule),
            format!("--checkpoint-every={}", args.steps),
            format!("--device={}", args.device),
        ];
        if let Some(w) = &self.weights {
            f.push(format!("--k={}", args.k));
            f.push(format!("--weights={w}"));
        }
        f
    }
}

/// Three significant digits: the logged flag is what was run, and reads as a human wrote it.
fn round_sig(v: f64) -> f64 {
    let scale = 10f64.powi(2 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

struct Job {
    run: PathBuf,
    flags: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Trial {
    method: Method,
    trial: usize,
    setting: Setting,
    run: PathBuf,
    val_rmse: f64,
    val_fd_cls: f64,
}

#[derive(Debug, Serialize)]
struct Outcome {
    method: Method,
    chosen: Setting,
    chosen_trial: usize,
    seeds: Vec<u64>,
    heldout_rmse: Vec<f64>,
    heldout_fd_cls: Vec<f64>,
    rmse: MeanStd,
    fd_cls: MeanStd,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct MeanStd {
    mean: f64,
    /// Sample standard deviation (n - 1); 0 for one seed.
    std: f64,
    n: usize,
}

impl MeanStd {
    fn of(v: &[f64]) -> MeanStd {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        MeanStd {
            mean,
            std: var.sqrt(),
            n,
        }
    }

    /// `(self - other) / standard error of the difference`; `None` when both spreads are 0.
    fn z_against(&self, other: &MeanStd) -> Option<f64> {
        let se = (self.std.powi(2) / self.n as f64 + other.std.powi(2) / other.n as f64).sqrt();
        (se > 0.0).then(|| (self.mean - other.mean) / se)
    }
}

pub fn run(args: &SweepArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset)?;
    let device = args.device.device();
    let val = evaluation::split_dataset(
        &dataset,
        TrajectorySplit::Validation,
        args.val_count,
        &device,
    )?;
    // Made up front so that a search cannot run into a missing test set at its end.
    evaluation::split_dataset(
        &dataset,
        TrajectorySplit::Heldout,
        args.heldout_count,
        &device,
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;

    let methods = [Method::Sfd, Method::Bdense];
    let settings: Vec<(usize, Setting)> = methods
        .iter()
        .flat_map(|&m| (0..args.trials).map(move |t| (t, m)))
        .map(|(t, m)| (t, Setting::draw(m, t, args.k, args.seed)))
        .collect();
    let search: Vec<Job> = settings
        .iter()
        .map(|(t, s)| Job {
            run: args.out.join("search").join(format!("{}-t{t}", s.method)),
            flags: s.flags(args, *t as u64),
        })
        .collect();
    println!(
        "searching: {} trials per method, {} steps of batch {} each, scored on {} validation trajectories",
        args.trials,
        args.steps,
        args.batch,
        val.manifest().trajectories()
    );
    let scores = train_and_score(args, &search, Some(val.dir()), args.val_count)?;
    let trials: Vec<Trial> = settings
        .into_iter()
        .zip(search)
        .zip(scores)
        .map(|(((t, setting), job), r)| Trial {
            method: setting.method,
            trial: t,
            setting,
            run: job.run,
            val_rmse: r.rmse,
            val_fd_cls: r.fd_cls,
        })
        .collect();
    write_search_csv(&args.out.join("search.csv"), &trials, args)?;

    let chosen: Vec<&Trial> = methods
        .iter()
        .map(|&m| best(&trials, m))
        .collect::<anyhow::Result<_>>()?;
    let seeds: Vec<u64> = (0..args.final_seeds as u64)
        .map(|s| FINAL_SEED_BASE + s)
        .collect();
    let finals: Vec<Job> = chosen
        .iter()
        .flat_map(|c| seeds.iter().map(move |&s| (c, s)))
        .map(|(c, s)| Job {
            run: args.out.join("final").join(format!("{}-s{s}", c.method)),
            flags: c.setting.flags(args, s),
        })
        .collect();
    println!(
        "final: the chosen settings with {} fresh seeds, reported on held-out trajectories",
        seeds.len()
    );
    let held = train_and_score(args, &finals, None, args.heldout_count)?;
    let outcomes: Vec<Outcome> = chosen
        .iter()
        .zip(held.chunks(seeds.len()))
        .map(|(c, rs)| {
            let rmse: Vec<f64> = rs.iter().map(|r| r.rmse).collect();
            let fd: Vec<f64> = rs.iter().map(|r| r.fd_cls).collect();
            Outcome {
                method: c.method,
                chosen: c.setting.clone(),
                chosen_trial: c.trial,
                seeds: seeds.clone(),
                rmse: MeanStd::of(&rmse),
                fd_cls: MeanStd::of(&fd),
                heldout_rmse: rmse,
                heldout_fd_cls: fd,
            }
        })
        .collect();
    let summary = summary_md(args, &val, &outcomes, held.first());
    bdense_trainer::checkpoint::write_atomic(
        &args.out.join("sweep.json"),
        &serde_json::to_vec_pretty(&serde_json::json!({
            "format": "bdense-sweep-v1",
            "dataset": args.dataset,
            "n": args.n,
            "k": args.k,
            "trials_per_method": args.trials,
            "steps": args.steps,
            "batch": args.batch,
            "search_seed": args.seed,
            "validation": val.dir(),
            "trials": trials,
            "outcomes": outcomes,
        }))?,
    )?;
    bdense_trainer::checkpoint::write_atomic(&args.out.join("summary.md"), summary.as_bytes())?;
    print!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// Trains every job (several at a time), then evaluates them on `heldout` (the held-out
/// split when `None`); their results in job order.
fn train_and_score(
    args: &SweepArgs,
    jobs: &[Job],
    heldout: Option<&Path>,
    count: u64,
) -> anyhow::Result<Vec<EvalResult>> {
    parallel::map(jobs, parallel::workers(), |job| {
        let line = crate::run::ensure_trained(&args.dataset, &job.run, args.steps, &job.flags)?;
        println!("{line}");
        Ok(())
    })?;
    let runs: Vec<PathBuf> = jobs.iter().map(|j| j.run.clone()).collect();
    dispatch(Command::Eval(EvalArgs {
        runs: runs.clone(),
        nfe: None,
        heldout: heldout.map(Path::to_path_buf),
        count,
        fid: None,
        fid_images: 0,
        device: args.device.clone(),
    }))?;
    runs.iter().map(|r| read_eval(r)).collect()
}

fn read_eval(run: &Path) -> anyhow::Result<EvalResult> {
    let path = run.join("eval.json");
    let text = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not an eval result", path.display()))
}

/// The method's trial with the lowest validation RMSE to the teacher (ties: the earlier).
fn best(trials: &[Trial], method: Method) -> anyhow::Result<&Trial> {
    trials
        .iter()
        .filter(|t| t.method == method && t.val_rmse.is_finite())
        .min_by(|a, b| a.val_rmse.total_cmp(&b.val_rmse))
        .with_context(|| format!("no {method} trial gave a finite validation RMSE"))
}

fn write_search_csv(path: &Path, trials: &[Trial], args: &SweepArgs) -> anyhow::Result<()> {
    let mut csv = String::from("method,trial,lr,lr_schedule,weights,val_rmse,val_fd_cls,command\n");
    for t in trials {
        let s = &t.setting;
        writeln!(
            csv,
            "{},{},{},{},\"{}\",{},{},\"bdense train {} --out {} --steps {} {}\"",
            t.method,
            t.trial,
            s.lr,
            s.lr_schedule,
            s.weights.as_deref().unwrap_or(""),
            t.val_rmse,
            t.val_fd_cls,
            args.dataset.display(),
            t.run.display(),
            args.steps,
            s.flags(args, t.trial as u64).join(" ")
        )?;
    }
    Ok(bdense_trainer::checkpoint::write_atomic(
        path,
        csv.as_bytes(),
    )?)
}

fn summary_md(
    args: &SweepArgs,
    val: &Dataset,
    outcomes: &[Outcome],
    any: Option<&EvalResult>,
) -> String {
    let mut md = String::new();
    let nfe = any.map_or(0, |r| r.nfe);
    let _ = writeln!(
        md,
        "# Sweep: {} (N = {}, NFE {nfe}, K = {} for B-DENSE)\n\n{} trials per method of {} steps x batch {}, scored on {} ({} trajectories, seeds the store and the report never use); chosen settings retrained with seeds {}..{} and measured on {} held-out trajectories.\n",
        args.dataset.display(),
        args.n,
        args.k,
        args.trials,
        args.steps,
        args.batch,
        val.dir().display(),
        val.manifest().trajectories(),
        FINAL_SEED_BASE,
        FINAL_SEED_BASE + args.final_seeds as u64 - 1,
        args.heldout_count,
    );
    let _ = writeln!(
        md,
        "| method | chosen (trial) | lr | schedule | weights | held-out RMSE | FD-cls |\n|---|---|---|---|---|---|---|"
    );
    for o in outcomes {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.4} ± {:.4} | {:.2} ± {:.2} |",
            o.method,
            o.chosen_trial,
            o.chosen.lr,
            o.chosen.lr_schedule,
            o.chosen.weights.as_deref().unwrap_or("-"),
            o.rmse.mean,
            o.rmse.std,
            o.fd_cls.mean,
            o.fd_cls.std
        );
    }
    if let [sfd, bdense] = outcomes {
        let _ = writeln!(md, "\n{}", verdict(sfd, bdense));
    }
    md
}

/// Which method is better on held-out trajectories, for teacher fidelity (RMSE) and for
/// sample quality (FD-cls), each by how many standard errors of the difference.
fn verdict(sfd: &Outcome, bdense: &Outcome) -> String {
    let line = |what: &str, a: (&Outcome, MeanStd), b: (&Outcome, MeanStd)| {
        let (better, worse) = if b.1.mean < a.1.mean { (b, a) } else { (a, b) };
        let gap = worse.1.mean - better.1.mean;
        match better.1.z_against(&worse.1) {
            Some(z) => format!(
                "{what}: {} is lower by {gap:.4} ({:.1} standard errors of the difference, {} seeds each).",
                better.0.method, -z, better.1.n
            ),
            None => format!(
                "{what}: {} is lower by {gap:.4} (one seed each: no spread to compare with; use --final-seeds 3).",
                better.0.method
            ),
        }
    };
    format!(
        "{}\n{}",
        line(
            "Held-out RMSE to the teacher",
            (sfd, sfd.rmse),
            (bdense, bdense.rmse)
        ),
        line("FD-cls", (sfd, sfd.fd_cls), (bdense, bdense.fd_cls))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_zero_is_the_paper_recipe_and_draws_stay_in_the_space() {
        assert_eq!(
            Setting::draw(Method::Sfd, 0, 4, 7),
            Setting::paper(Method::Sfd)
        );
        for t in 1..200 {
            let s = Setting::draw(Method::Bdense, t, 4, 7);
            assert!(
                s.lr >= LR_RANGE.0 * 0.99 && s.lr <= LR_RANGE.1 * 1.01,
                "{s:?}"
            );
            let w: Vec<f64> = s
                .weights
                .as_deref()
                .unwrap()
                .split(',')
                .map(|v| v.parse().unwrap())
                .collect();
            // w_k = (k/K)^p with p >= 0: non-decreasing, endpoint weight 1.
            assert_eq!(w.len(), 4);
            assert!(w.windows(2).all(|p| p[0] <= p[1]) && w[3] == 1.0, "{w:?}");
            assert!(w[0] >= 0.25f64.powf(MAX_WEIGHT_POWER) - 1e-4, "{w:?}");
            assert!(Setting::draw(Method::Sfd, t, 4, 7).weights.is_none());
        }
        // Seeded: the same draw twice, a different one for another search seed.
        assert_eq!(
            Setting::draw(Method::Bdense, 3, 4, 7),
            Setting::draw(Method::Bdense, 3, 4, 7)
        );
        assert_ne!(
            Setting::draw(Method::Bdense, 3, 4, 7),
            Setting::draw(Method::Bdense, 3, 4, 8)
        );
    }

    #[test]
    fn spread_and_verdict_count_standard_errors() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0]);
        assert!((m.mean - 2.0).abs() < 1e-12 && (m.std - 1.0).abs() < 1e-12);
        let o = MeanStd::of(&[4.0, 5.0, 6.0]);
        // se = sqrt(1/3 + 1/3); (2 - 5) / se = -3.674...
        let z = m.z_against(&o).unwrap();
        assert!((z + 3.0 / (2.0f64 / 3.0).sqrt()).abs() < 1e-9, "{z}");
        assert!(
            MeanStd::of(&[1.0])
                .z_against(&MeanStd::of(&[2.0]))
                .is_none()
        );
        assert_eq!(round_sig(0.000123456), 0.000123);
        assert_eq!(round_sig(0.000987654), 0.000988);
    }
}
