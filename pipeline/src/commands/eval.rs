//! `bdense eval RUN...`: teacher fidelity, FD-cls and label statistics on held-out seeds, and
//! Inception FID in a libtorch build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_store::Dataset;
use bdense_trainer::data::DatasetSource;

use crate::cli::{DeviceName, EvalArgs};
use crate::evaluation::{self, EvalContext, EvalResult};
use crate::parallel;
use crate::run::RunRecord;

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let inception = args
        .fid
        .as_deref()
        .map(evaluation::fid::inception_network)
        .transpose()?;
    let fid = inception.as_deref().map(|p| (p, args.fid_images));
    let results = evaluate_runs(
        &args.runs,
        args.nfe.as_deref(),
        args.heldout.as_deref(),
        args.count,
        &args.device,
        fid,
    )?;
    for (run, r) in args.runs.iter().zip(&results) {
        let inception = r
            .fid_inception
            .map(|f| format!(", Inception FID {f:.3}"))
            .unwrap_or_default();
        println!(
            "{}: {} N={} K={} NFE {}: RMSE {:.4} ({:.2} dB) to the teacher, FD-cls {:.3} (teacher {:.3}){inception}, label entropy {:.3}, coverage {:.2}, on {} held-out trajectories",
            run.display(),
            r.method,
            r.n,
            r.k,
            r.nfe,
            r.rmse,
            r.psnr,
            r.fd_cls,
            r.teacher_fd_cls,
            r.label_entropy + 0.0,
            r.label_coverage,
            r.samples
        );
    }
    println!(
        "evaluated {} runs in {:.1}s (results in RUN/eval.json and RUN/eval.parquet)",
        args.runs.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// One run to evaluate, with everything it needs resolved.
struct Job {
    run: PathBuf,
    record: RunRecord,
    heldout: Dataset,
    context: usize,
}

/// Evaluates `runs` (several at a time) and saves each one's results in its directory;
/// `fid` = (Inception TorchScript, images per side) adds Inception FID (libtorch build).
pub fn evaluate_runs(
    runs: &[PathBuf],
    nfe: Option<&[usize]>,
    heldout: Option<&Path>,
    count: u64,
    device_name: &DeviceName,
    fid: Option<(&Path, usize)>,
) -> anyhow::Result<Vec<EvalResult>> {
    let device = device_name.device();
    let mut contexts: Vec<(DatasetSource, EvalContext)> = Vec::new();
    let mut jobs = Vec::with_capacity(runs.len());
    for run in runs {
        let record = RunRecord::load(run)?;
        if let Some(nfes) = nfe
            && !nfes.contains(&record.layout.nfe())
        {
            bail!(
                "{}: the student takes NFE {}, not one of {nfes:?}",
                run.display(),
                record.layout.nfe()
            );
        }
        let dataset = Dataset::open(&record.dataset)?;
        let heldout = match heldout {
            Some(dir) => Dataset::open(dir)?,
            None => evaluation::heldout_dataset(&dataset, count, &device)?,
        };
        let source: DatasetSource = dataset
            .manifest()
            .teacher
            .params
            .get("dataset")
            .and_then(|v| v.as_str())
            .context("the dataset does not record which images its teacher was fitted on")?
            .parse()?;
        let context = match contexts.iter().position(|(s, _)| *s == source) {
            Some(i) => i,
            None => {
                contexts.push((source.clone(), evaluation::eval_context(&source, &device)?));
                contexts.len() - 1
            }
        };
        jobs.push(Job {
            run: run.clone(),
            record,
            heldout,
            context,
        });
    }
    if fid.is_some() && contexts.len() > 1 {
        bail!("--fid compares with one set of real images: evaluate runs of one dataset at a time");
    }
    let scorer = match fid {
        Some((inception, images)) => Some(inception_scorer(
            inception,
            images,
            &contexts[0].0,
            device_name.as_str(),
        )?),
        None => None,
    };
    // The Inception network takes a lock per batch, so FID runs go one at a time.
    let workers = if scorer.is_some() {
        1
    } else {
        parallel::workers()
    };
    parallel::map(&jobs, workers, |job| {
        let e = evaluation::evaluate(
            &job.run,
            &job.record,
            &job.heldout,
            &contexts[job.context].1,
            16,
            scorer.as_deref(),
        )?;
        evaluation::save(&job.run, &e, job.record.dims)?;
        Ok(e.result)
    })
}

type Scorer = Box<evaluation::FidScorer<'static>>;

/// FID against `images` real test images of `source`, whose statistics are computed once.
#[cfg(feature = "tch")]
fn inception_scorer(
    inception: &Path,
    images: usize,
    source: &DatasetSource,
    device: &str,
) -> anyhow::Result<Scorer> {
    use crate::evaluation::fid::statistics;
    use bdense_trainer::data::Split;
    let net = bdense_trainer::torch::InceptionFeatures::load(inception, device)?;
    let test = source.load(Split::Test)?.take(images);
    let dims = [test.channels, test.height, test.width];
    let real = statistics(&net, &test.images, dims);
    let net = std::sync::Mutex::new(net);
    Ok(Box::new(move |samples: &[f32], dims: [usize; 3]| {
        let n = (samples.len() / dims.iter().product::<usize>()).min(images);
        let d: usize = dims.iter().product();
        let stats = statistics(
            &net.lock().expect("inception lock"),
            &samples[..n * d],
            dims,
        );
        Ok(bdense_trainer::metrics::frechet_distance(&stats, &real))
    }))
}

#[cfg(not(feature = "tch"))]
fn inception_scorer(
    _inception: &Path,
    _images: usize,
    _source: &DatasetSource,
    _device: &str,
) -> anyhow::Result<Scorer> {
    bail!(evaluation::fid::NEEDS_TCH)
}
