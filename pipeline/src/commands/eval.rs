//! `bdense eval RUN...`: teacher fidelity, FD-cls and label statistics on held-out seeds.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_store::Dataset;
use bdense_trainer::data::DatasetSource;

use crate::cli::EvalArgs;
use crate::commands::train::RunRecord;
use crate::evaluation::{self, EvalContext};

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let device = bdense_trainer::backend::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let mut contexts: Vec<(std::path::PathBuf, EvalContext, DatasetSource)> = Vec::new();
    for run in &args.runs {
        let record = RunRecord::load(run)?;
        if let Some(nfes) = &args.nfe
            && !nfes.contains(&record.layout.nfe)
        {
            bail!("{}: the student takes NFE {}, not one of {nfes:?}", run.display(), record.layout.nfe);
        }
        let dataset = Dataset::open(&record.dataset)?;
        let heldout = match &args.heldout {
            Some(dir) => Dataset::open(dir)?,
            None => evaluation::heldout_dataset(&dataset, args.count, &device)?,
        };
        let source: DatasetSource = dataset
            .manifest()
            .teacher
            .params
            .get("dataset")
            .and_then(|v| v.as_str())
            .context("the dataset does not record which images its teacher was fitted on")?
            .parse()?;
        let store = dataset.dir().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let ctx = match contexts.iter().position(|(s, _, src)| *s == store && *src == source) {
            Some(i) => &contexts[i].1,
            None => {
                let (classifier, card) = evaluation::classifier_for(&store, &source, &device)?;
                let real = evaluation::real_features(&classifier, &source, &device)?;
                contexts.push((store.clone(), EvalContext { classifier, card, real, device: device.clone() }, source));
                &contexts.last().expect("just pushed").1
            }
        };
        let e = evaluation::evaluate(run, &record, &heldout, ctx, 16)?;
        evaluation::save(run, &e, record.dims)?;
        let r = &e.result;
        println!(
            "{}: {} N={} K={} NFE {}: RMSE {:.4} ({:.2} dB) to the teacher, FD-cls {:.3} (teacher {:.3}), label entropy {:.3}, coverage {:.2}, on {} held-out trajectories",
            run.display(), r.method, r.n, r.k, r.nfe, r.rmse, r.psnr, r.fd_cls, r.teacher_fd_cls, r.label_entropy, r.label_coverage, r.samples
        );
    }
    println!("evaluated {} runs in {:.1}s (results in RUN/eval.json and RUN/eval.parquet)", args.runs.len(), started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
