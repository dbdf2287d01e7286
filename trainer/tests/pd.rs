//! Progressive distillation's contract on closed forms: on Gaussian data (the analytic
//! teacher's exact denoiser is a per-pixel shrinkage, so two Euler steps are arithmetic), one
//! student step with the PD target lands on the teacher's two steps; a K = 2 student copied from
//! a U-Net teacher reproduces it on both branches before any optimiser step.

use bdense_trainer::backend::cpu;
use bdense_trainer::data::DatasetSource;
use bdense_trainer::pd::{
    self, NetFile, PdConfig, PdMethod, RoundGrid, branch_targets, denoised_for_step, pd_batch,
    pd_loss,
};
use bdense_trainer::precond::sigma_batch;
use bdense_trainer::solvers::{Denoiser, euler_step, host, to_d};
use bdense_trainer::teachers::gmm::{Component, GmmParams};
use bdense_trainer::teachers::unet::{TeacherTrainConfig, UnetTeacher, train_teacher};
use burn::prelude::*;

const D: usize = 16;

/// A Gaussian with per-pixel variances from 0.01 to 2.26 and a non-zero mean: its exact
/// denoiser is `mu + v / (v + s^2) (x - mu)`, pixel by pixel.
fn gaussian() -> GmmParams {
    let mean: Vec<f32> = (0..D).map(|j| 0.3 * (j as f32 - 7.5) / 7.5).collect();
    let rest: Vec<f32> = (0..D).map(|j| 0.01 + 0.15 * j as f32).collect();
    GmmParams {
        dims: [1, 4, 4],
        components: vec![Component {
            weight: 1.0,
            mean,
            basis: vec![],
            lambda: vec![],
            rest,
        }],
        conditional: false,
    }
}

/// The closed-form denoiser in f64.
fn exact_denoised(p: &GmmParams, x: &[f64], s: f64) -> Vec<f64> {
    let c = &p.components[0];
    (0..D)
        .map(|j| {
            let (mu, v) = (c.mean[j] as f64, c.rest[j] as f64);
            mu + v / (v + s * s) * (x[j] - mu)
        })
        .collect()
}

/// One Euler step in f64 with the exact denoiser.
fn exact_euler(p: &GmmParams, x: &[f64], s: f64, s_next: f64) -> Vec<f64> {
    let den = exact_denoised(p, x, s);
    (0..D)
        .map(|j| x[j] + (s_next - s) * (x[j] - den[j]) / s)
        .collect()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn one_student_step_with_the_pd_target_equals_two_teacher_steps() {
    let dev = cpu();
    let params = gaussian();
    let teacher = params.denoiser(&dev);
    let grid = RoundGrid::new(4);
    let rows = 3;
    let mut rnd = bdense_trainer::rng::centered_uniform(11);
    let (mut coarse_gap, mut no_factor_gap) = (0f64, 0f64);
    for i in 0..grid.intervals() {
        let [s, s_mid, s_next] = grid.triple(i);
        // States at s_i of the size the ODE has there.
        let x: Vec<f32> = (0..rows * D)
            .map(|_| (2.0 * rnd() * (1.0 + s)) as f32)
            .collect();
        let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), [rows, 1, 4, 4]), &dev);
        let targets = branch_targets(&teacher, xt.clone(), [s, s_mid, s_next], 2, None);
        assert_eq!(targets.len(), 2);
        let student_end = host(&euler_step(
            xt.clone(),
            to_d(xt.clone(), targets[1].clone(), s),
            s,
            s_next,
        ));
        let student_mid = host(&euler_step(
            xt.clone(),
            to_d(xt.clone(), targets[0].clone(), s),
            s,
            s_mid,
        ));
        let d_mid = host(&targets[0]);
        let d_end = host(&targets[1]);
        for r in 0..rows {
            let row = |v: &[f32]| to_f64(&v[r * D..(r + 1) * D]);
            let x0 = row(&x);
            let mid = exact_euler(&params, &x0, s, s_mid);
            let two = exact_euler(&params, &mid, s_mid, s_next);
            let one = exact_euler(&params, &x0, s, s_next);
            // Float32 arithmetic on states of size ~(1 + s): a relative tolerance.
            let scale = 1.0 + s;
            let tol = 2e-5 * scale;
            let err = max_abs(&row(&student_end), &two);
            assert!(
                err < tol,
                "interval {i} (s {s:.3}): student lands {err:e} away"
            );
            let err_mid = max_abs(&row(&student_mid), &mid);
            assert!(
                err_mid < tol,
                "interval {i}: branch 1 misses s_mid by {err_mid:e}"
            );
            // Branch 1's target is the teacher's own denoised output at (x, s).
            let den = exact_denoised(&params, &x0, s);
            assert!(max_abs(&row(&d_mid), &den) < tol, "interval {i}: D_mid");
            // The test can tell: the teacher's one coarse step lands elsewhere, and the Euler
            // inversion with a wrong sign or without its factor s misses by far more than tol.
            // (At high sigma Euler is nearly exact for a Gaussian: checked over all intervals.)
            coarse_gap = coarse_gap.max(max_abs(&one, &two) / tol);
            let pd_target = row(&d_end);
            let wrong_sign: Vec<f64> = (0..D)
                .map(|j| x0[j] + s * (two[j] - x0[j]) / (s_next - s))
                .collect();
            let no_factor: Vec<f64> = (0..D)
                .map(|j| x0[j] - (two[j] - x0[j]) / (s_next - s))
                .collect();
            let land = |den: &[f64]| -> Vec<f64> {
                (0..D)
                    .map(|j| x0[j] + (s_next - s) * (x0[j] - den[j]) / s)
                    .collect()
            };
            assert!(max_abs(&land(&pd_target), &two) < tol);
            assert!(max_abs(&land(&wrong_sign), &two) > 100.0 * tol);
            no_factor_gap = no_factor_gap.max(max_abs(&land(&no_factor), &two) / tol);
        }
    }
    assert!(
        coarse_gap > 100.0,
        "one and two teacher steps agree everywhere ({coarse_gap} tol): nothing is tested"
    );
    assert!(no_factor_gap > 100.0, "a missing factor s goes unseen");
    // K = 1 gets the endpoint target alone, the same one.
    let x = Tensor::<4>::ones([1, 1, 4, 4], &dev);
    let one = branch_targets(&teacher, x.clone(), grid.triple(1), 1, None);
    let two = branch_targets(&teacher, x, grid.triple(1), 2, None);
    assert_eq!(one.len(), 1);
    assert_eq!(host(&one[0]), host(&two[1]));
}

#[test]
fn the_euler_inversion_is_exact_onto_sigma_zero() {
    let dev = cpu();
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0], [1, 1, 2, 2]),
        &dev,
    );
    let x_next = Tensor::<4>::from_data(
        TensorData::new(vec![0.2f32, -0.1, 0.4, 0.9], [1, 1, 2, 2]),
        &dev,
    );
    // A step onto sigma 0 lands on D itself.
    let d = host(&denoised_for_step(x, x_next.clone(), 0.7, 0.0));
    for (a, b) in d.iter().zip(host(&x_next)) {
        assert!((a - b).abs() < 1e-6, "{a} against {b}");
    }
}

/// Procedural 16x16 images (no dataset needed) and a U-Net teacher trained a few steps on them.
fn tiny_teacher(dir: &std::path::Path) -> NetFile {
    let mut config = TeacherTrainConfig::new(DatasetSource::Procedural { seed: 1 }, 3, 8, 5);
    config.net = config.net.with_base(8);
    config.limit = Some(64);
    config.checkpoint_every = 3;
    config.optim.ema_decay = 0.0;
    train_teacher(&config, dir, &cpu(), false, &mut |_| {}).unwrap();
    NetFile::teacher(dir).unwrap()
}

fn images() -> bdense_trainer::data::ImageSet {
    DatasetSource::Procedural { seed: 1 }
        .load(bdense_trainer::data::Split::Train)
        .unwrap()
        .take(256)
}

fn max_diff(a: &Tensor<4>, b: &Tensor<4>) -> f32 {
    host(a)
        .iter()
        .zip(host(b))
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max)
}

#[test]
fn a_k2_student_from_the_teacher_reproduces_it_on_both_branches() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_teacher(dir.path());
    let dev = cpu();
    let teacher = UnetTeacher::load(dir.path(), &dev).unwrap();
    let student = file.student_net(2, &dev).unwrap();
    assert_eq!(student.branches(), 2);
    let batch = pd_batch(&teacher, &images(), &RoundGrid::new(4), 2, 7, 0..6, &dev);
    let x = Tensor::<4>::from_data(TensorData::new(batch.x.clone(), [6, 1, 16, 16]), &dev);
    for sigma in [0.002, 0.5, 80.0] {
        let want = teacher.denoise(x.clone(), sigma, None);
        let branches = student.denoise_branches(x.clone(), sigma_batch(sigma, 6, &dev), None);
        for (k, b) in branches.iter().enumerate() {
            let err = max_diff(b, &want);
            assert!(err <= 1e-5, "branch {} at sigma {sigma}: {err}", k + 1);
        }
    }
    // So before any step branch 1's loss is 0 (its target is the teacher's own output at s_i)
    // and branch 2's is not (one teacher step is not two).
    let sigma = Tensor::<1>::from_data(TensorData::new(batch.sigma.clone(), [6]), &dev);
    let t = |v: &Vec<f32>| Tensor::<4>::from_data(TensorData::new(v.clone(), [6, 1, 16, 16]), &dev);
    let targets: Vec<Tensor<4>> = batch.targets.iter().map(t).collect();
    let (_, per_branch) = pd_loss(&student, t(&batch.x), sigma, &targets, &[1.0, 1.0]);
    assert!(per_branch[0] < 1e-8, "branch 1 at init: {}", per_branch[0]);
    assert!(
        per_branch[1] > 1e3 * per_branch[0].max(1e-12),
        "{per_branch:?}"
    );
    // The next round's teacher is the endpoint branch, and its K = 2 student copies that.
    let endpoint = student.clone().endpoint_net();
    assert_eq!(endpoint.branches(), 1);
    let again = endpoint.clone().widen(2);
    let s = sigma_batch(1.3, 6, &dev);
    let last = student
        .denoise_branches(x.clone(), s.clone(), None)
        .pop()
        .unwrap();
    for b in again.denoise_branches(x.clone(), s.clone(), None) {
        assert!(max_diff(&b, &last) <= 1e-6);
    }
}

#[test]
fn the_k1_loss_is_edm_loss_towards_the_pd_target() {
    use bdense_trainer::teachers::unet::{EdmBatch, edm_loss};
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_teacher(dir.path());
    let dev = cpu();
    let net = file.load(&dev).unwrap();
    let mut rnd = bdense_trainer::rng::centered_uniform(3);
    let mut v = |n: usize, a: f64| -> Vec<f32> { (0..n).map(|_| (a * rnd()) as f32).collect() };
    let shape = [4, 1, 16, 16];
    let t = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, shape), &dev);
    let (clean, noise, target) = (t(v(1024, 2.0)), t(v(1024, 4.0)), t(v(1024, 2.0)));
    let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.01f32, 0.3, 2.0, 40.0], [4]), &dev);
    let noisy = clean.clone() + noise.clone() * sigma.clone().reshape([4, 1, 1, 1]);
    let (ours, _) = pd_loss(
        &net,
        noisy,
        sigma.clone(),
        std::slice::from_ref(&target),
        &[1.0],
    );
    let edm = edm_loss(
        &net,
        &EdmBatch {
            clean,
            noise,
            sigma,
            labels: None,
            target,
        },
    );
    let (a, b) = (ours.into_scalar::<f64>(), edm.into_scalar::<f64>());
    assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} against {b}");
}

#[test]
fn batches_do_not_depend_on_batch_size() {
    let dev = cpu();
    let params = GmmParams {
        dims: [1, 16, 16],
        components: vec![Component {
            weight: 1.0,
            mean: vec![0.1; 256],
            basis: vec![],
            lambda: vec![],
            rest: vec![0.3; 256],
        }],
        conditional: false,
    };
    let teacher = params.denoiser(&dev);
    let (set, grid) = (images(), RoundGrid::new(8));
    let whole = pd_batch(&teacher, &set, &grid, 2, 5, 0..10, &dev);
    let a = pd_batch(&teacher, &set, &grid, 2, 5, 0..3, &dev);
    let b = pd_batch(&teacher, &set, &grid, 2, 5, 3..10, &dev);
    let cat = |f: &dyn Fn(&pd::PdBatch) -> Vec<f32>| [f(&a), f(&b)].concat();
    assert_eq!(whole.x, cat(&|p| p.x.clone()));
    assert_eq!(whole.sigma, cat(&|p| p.sigma.clone()));
    for k in 0..2 {
        let (w, c) = (&whole.targets[k], cat(&|p| p.targets[k].clone()));
        let err = w
            .iter()
            .zip(&c)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        // The teacher runs on other groupings of rows: equal up to float reassociation.
        assert!(err <= 1e-5, "branch {k}: {err}");
    }
    let steps: std::collections::BTreeSet<u32> = whole.sigma.iter().map(|s| s.to_bits()).collect();
    assert!(steps.len() > 2, "a batch mixes start steps");
}

/// Round 1's examples from `file`, online, with data seed 0.
fn online<'a>(file: &NetFile, set: &'a bdense_trainer::data::ImageSet) -> pd::OnlineData<'a> {
    pd::OnlineData {
        teacher: file.teacher_net(&cpu()).unwrap(),
        images: set,
        grid: RoundGrid::new(2),
        data_seed: 0,
        teacher_hash: file.hash.clone(),
        device: cpu(),
    }
}

fn round_config(checkpoint_every: u64) -> PdConfig {
    PdConfig {
        method: PdMethod::PdBdense,
        weights: vec![1.0, 1.0],
        steps: 8,
        batch: 8,
        seed: 0,
        optim: bdense_trainer::optim::OptimConfig {
            lr: 2e-3,
            grad_clip: None,
            ema_decay: 0.0,
            ..Default::default()
        },
        checkpoint_every,
    }
}

fn train(
    config: &PdConfig,
    file: &NetFile,
    set: &bdense_trainer::data::ImageSet,
    run: &std::path::Path,
    on_step: &mut dyn FnMut(&pd::RoundStep),
) -> bdense_trainer::error::Result<(NetFile, bool)> {
    let mut data = online(file, set);
    let input = pd::RoundInput {
        round: 1,
        student_steps: 2,
        teacher: file,
        data: &mut data,
    };
    pd::train_round(config, input, run, &cpu(), on_step)
}

#[test]
fn a_round_trains_checkpoints_and_is_reused_when_finished() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_teacher(&dir.path().join("teacher"));
    let set = images();
    let config = round_config(8);
    let run = dir.path().join("round-1");
    let mut losses = Vec::new();
    let (student, reused) =
        train(&config, &file, &set, &run, &mut |s| losses.push(s.loss)).unwrap();
    assert!(!reused && losses.len() == 8);
    assert!(losses.iter().all(|l| l.is_finite()));
    let net = student.load(&cpu()).unwrap();
    assert_eq!(net.branches(), 2);
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    assert!(
        log.starts_with("step,loss,lr,grad_norm,branch_1,branch_2\n"),
        "{log}"
    );
    let (again, reused) = train(&config, &file, &set, &run, &mut |_| {}).unwrap();
    assert!(reused && again == student);
    let other = PdConfig {
        steps: 9,
        ..config.clone()
    };
    let err = train(&other, &file, &set, &run, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another round"), "{err}");
}

#[test]
fn an_interrupted_round_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_teacher(&dir.path().join("teacher"));
    let set = images();
    let config = round_config(3);
    let whole = dir.path().join("whole");
    let (student, _) = train(&config, &file, &set, &whole, &mut |_| {}).unwrap();
    // The state of a run stopped after step 6's checkpoint: later checkpoints gone, and the
    // log holding rows past it (written before the stop), which the resumed run replaces.
    let cut = dir.path().join("cut");
    std::fs::create_dir_all(cut.join("checkpoints")).unwrap();
    for f in ["round.json", "log.csv"] {
        std::fs::copy(whole.join(f), cut.join(f)).unwrap();
    }
    for step in [3, 6] {
        let name = format!("checkpoints/step-{step:06}");
        std::fs::create_dir_all(cut.join(&name)).unwrap();
        for e in std::fs::read_dir(whole.join(&name)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), cut.join(&name).join(e.file_name())).unwrap();
        }
    }
    let mut steps = Vec::new();
    let (resumed, reused) = train(&config, &file, &set, &cut, &mut |s| steps.push(s.step)).unwrap();
    assert!(!reused);
    assert_eq!(steps, vec![7, 8], "continues after the last checkpoint");
    assert_eq!(resumed.hash, student.hash, "bit-identical weights");
    assert_eq!(
        std::fs::read_to_string(cut.join("log.csv")).unwrap(),
        std::fs::read_to_string(whole.join("log.csv")).unwrap()
    );
}
