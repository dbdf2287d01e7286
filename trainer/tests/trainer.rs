//! The trainer's numeric contract: solver orders against the closed-form Gaussian ODE, the
//! mixture denoiser against a brute-force f64 posterior mean, and the K-branch student.

use bdense_trainer::backend::cpu;
use bdense_trainer::edm::EdmNet;
use bdense_trainer::method::{Distance, Objective, interval_loss};
use bdense_trainer::precond::sigma_batch;
use bdense_trainer::schedule::Grid;
use bdense_trainer::solvers::{Denoiser, Solver, host};
use bdense_trainer::teachers::gmm::{Component, GmmParams};
use bdense_trainer::unet::UNetConfig;
use burn::prelude::*;
use nalgebra::{DMatrix, DVector};

/// A deterministic pseudo-random stream for test data.
fn stream(seed: u64) -> impl FnMut() -> f64 {
    let mut next = bdense_trainer::rng::centered_uniform(seed);
    move || 2.0 * next()
}

/// `r` orthonormal columns in `d` dimensions (Gram-Schmidt on random vectors), row-major.
fn orthonormal(d: usize, r: usize, rnd: &mut impl FnMut() -> f64) -> Vec<f32> {
    let mut cols: Vec<Vec<f64>> = Vec::new();
    while cols.len() < r {
        let mut v: Vec<f64> = (0..d).map(|_| rnd()).collect();
        for c in &cols {
            let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        cols.push(v.iter().map(|a| a / n).collect());
    }
    (0..d)
        .flat_map(|j| (0..r).map(move |i| (j, i)))
        .map(|(j, i)| cols[i][j] as f32)
        .collect()
}

fn component(d: usize, r: usize, weight: f64, rnd: &mut impl FnMut() -> f64) -> Component {
    Component {
        weight,
        mean: (0..d).map(|_| 0.8 * rnd() as f32).collect(),
        basis: orthonormal(d, r, rnd),
        lambda: (0..r).map(|i| (1.5 / (i + 1) as f64) as f32).collect(),
        rest: vec![0.04; d],
    }
}

fn gaussian(d: usize) -> GmmParams {
    let mut rnd = stream(1);
    GmmParams {
        dims: [1, 1, d],
        components: vec![component(d, 3, 1.0, &mut rnd)],
        conditional: false,
    }
}

fn tensor(values: Vec<f32>, shape: [usize; 4], dev: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, shape), dev)
}

/// Max error at the final state against the closed form, for a solver on a G-point grid.
fn final_error(params: &GmmParams, solver: Solver, points: usize) -> f64 {
    final_error_with(params, points, &|den, x, sigmas| {
        solver.run(den, x, sigmas, None, &mut |_, _, _| {})
    })
}

type Run<'a> = dyn Fn(&dyn Denoiser, Tensor<4>, &[f64]) -> Tensor<4> + 'a;

fn final_error_with(params: &GmmParams, points: usize, run: &Run) -> f64 {
    let dev = cpu();
    let d = params.dim();
    let sigmas = Grid::edm(points).sigmas;
    let mut rnd = stream(7);
    let rows = 8;
    let x0: Vec<f32> = (0..rows * d).map(|_| (80.0 * rnd()) as f32).collect();
    let den = params.denoiser(&dev);
    let out = host(&run(
        &den,
        tensor(x0.clone(), [rows, 1, 1, d], &dev),
        &sigmas,
    ));
    let mut err = 0f64;
    for r in 0..rows {
        let exact = params.exact_ode_state(&x0[r * d..(r + 1) * d], 80.0, 0.002);
        for j in 0..d {
            err = err.max((out[r * d + j] as f64 - exact[j] as f64).abs());
        }
    }
    err
}

/// The error ratio when the grid is refined from `coarse` to `fine` points (about 2x the steps).
fn ratio(run: &dyn Fn(usize) -> f64, coarse: usize, fine: usize) -> (f64, f64, f64) {
    let (a, b) = (run(coarse), run(fine));
    (a, b, a / b)
}

#[test]
fn solver_orders_match_theory_on_the_gaussian_ode() {
    let params = &gaussian(12);
    let solver = |s: Solver| move |g: usize| final_error(params, s, g);
    let pure = |order: usize| {
        move |g: usize| {
            final_error_with(params, g, &|den, x, s| {
                bdense_trainer::solvers::dpmpp_multistep(
                    den,
                    x,
                    s,
                    None,
                    order,
                    false,
                    &mut |_, _, _| {},
                )
            })
        }
    };
    // Global error over the whole 80 -> 0.002 grid: doubling the steps divides it by about
    // 2^order. (The multistep methods start with a first-order step, which caps their
    // asymptotic global order at 2; their own order is checked locally below.)
    type Case<'a> = (&'a str, Box<dyn Fn(usize) -> f64 + 'a>, f64, f64);
    let cases: Vec<Case> = vec![
        ("euler", Box::new(solver(Solver::Euler)), 1.7, 2.3),
        ("heun", Box::new(solver(Solver::Heun)), 3.4, 4.8),
        ("dpm-solver++ 2m", Box::new(pure(2)), 3.4, 5.0),
    ];
    for (name, run, lo, hi) in &cases {
        let (a, b, r) = ratio(run.as_ref(), 25, 49);
        println!("{name}: error {a:.3e} on 25 points, {b:.3e} on 49: ratio {r:.2}");
        assert!(
            r > *lo && r < *hi,
            "{name}: doubling the steps divided the error by {r:.2}, expected [{lo}, {hi}]"
        );
    }
    // 3M (with SFD's lower-order final steps) is far more accurate than 2M on the same grid
    // and still converges faster than first order.
    let e = |s| final_error(params, s, 25);
    println!(
        "on 25 points: euler {:.3e}, dpmpp2m {:.3e}, dpmpp3m {:.3e}",
        e(Solver::Euler),
        e(Solver::Dpmpp2m),
        e(Solver::Dpmpp3m)
    );
    assert!(e(Solver::Dpmpp3m) < 0.1 * e(Solver::Dpmpp2m));
    assert!(e(Solver::Dpmpp2m) < e(Solver::Euler) && e(Solver::Heun) < e(Solver::Euler));
    let (_, _, r) = ratio(&solver(Solver::Dpmpp3m), 25, 49);
    assert!(r > 1.9, "3M converges: ratio {r:.2}");
}

/// Error of one DPM-Solver++ update of `order` from the exact state and exact history, over
/// a step of `h` in log-sigma around sigma = 1.
fn local_error(params: &GmmParams, order: usize, h: f64) -> f64 {
    let dev = cpu();
    let d = params.dim();
    let mut rnd = stream(13);
    let rows = 4;
    let start: Vec<f32> = (0..rows * d).map(|_| (80.0 * rnd()) as f32).collect();
    let den = params.denoiser(&dev);
    // sigma at log-sigma offsets -2h, -h, 0 (the current point) and +h... descending: 2h, h, 0, -h.
    let sigma = |k: f64| (k * h).exp();
    let exact = |s: f64| -> Vec<f32> {
        (0..rows)
            .flat_map(|r| params.exact_ode_state(&start[r * d..(r + 1) * d], 80.0, s))
            .collect()
    };
    let state = |s: f64| tensor(exact(s), [rows, 1, 1, d], &dev);
    let denoised = |s: f64| den.denoise(state(s), s, None);
    let history: Vec<(Tensor<4>, f64)> = vec![(denoised(sigma(1.0)), h), (denoised(sigma(2.0)), h)];
    let x1 = bdense_trainer::solvers::dpmpp_update(
        state(sigma(0.0)),
        &denoised(sigma(0.0)),
        &history[..order - 1],
        h,
        order,
    );
    let (got, want) = (host(&x1), exact(sigma(-1.0)));
    got.iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max)
}

#[test]
fn dpm_solver_updates_have_their_local_order() {
    // One step of an order-p method from exact history errs by O(h^(p+1)): halving h
    // divides it by 2^(p+1) = 4, 8, 16.
    let params = &gaussian(12);
    for (order, lo, hi) in [(1usize, 3.4, 4.6), (2, 6.5, 9.5), (3, 10.5, 20.0)] {
        let (a, b) = (
            local_error(params, order, 0.2),
            local_error(params, order, 0.1),
        );
        println!(
            "dpm-solver++ order {order}: local error {a:.3e} at h=0.2, {b:.3e} at h=0.1: ratio {:.2}",
            a / b
        );
        assert!(
            a / b > lo && a / b < hi,
            "order {order}: ratio {:.2}, expected [{lo}, {hi}]",
            a / b
        );
    }
}

#[test]
fn every_solver_reports_every_grid_state() {
    let params = gaussian(4);
    let dev = cpu();
    let den = params.denoiser(&dev);
    let sigmas = Grid::edm(9).sigmas;
    for solver in [
        Solver::Euler,
        Solver::Heun,
        Solver::Dpmpp2m,
        Solver::Dpmpp3m,
    ] {
        let mut seen = Vec::new();
        solver.run(
            &den,
            tensor(vec![1.0; 8], [2, 1, 1, 4], &dev),
            &sigmas,
            None,
            &mut |i, _, d| seen.push((i, d.is_some())),
        );
        assert_eq!(seen.len(), 9, "{solver}");
        assert!(seen.iter().enumerate().all(|(i, &(j, _))| i == j));
        assert!(
            seen[..8].iter().all(|s| s.1) && !seen[8].1,
            "{solver}: denoised at every state but the last"
        );
    }
}

/// `E[x0 | x]` for the mixture, by brute force in f64 with full covariance matrices.
fn brute_force_posterior(params: &GmmParams, x: &[f32], sigma: f64) -> Vec<f64> {
    let d = params.dim();
    let x = DVector::from_iterator(d, x.iter().map(|&v| v as f64));
    let mut logs = Vec::new();
    let mut means = Vec::new();
    for c in &params.components {
        let r = c.rank();
        let u = DMatrix::from_fn(d, r, |j, i| c.basis[j * r + i] as f64);
        let tau = c.rest[0] as f64;
        let lam = DMatrix::from_diagonal(&DVector::from_iterator(
            r,
            c.lambda.iter().map(|&l| l as f64 - tau),
        ));
        let cov = &u * lam * u.transpose() + DMatrix::identity(d, d) * tau;
        let noisy = &cov + DMatrix::identity(d, d) * (sigma * sigma);
        let chol = noisy.clone().cholesky().expect("SPD");
        let mu = DVector::from_iterator(d, c.mean.iter().map(|&v| v as f64));
        let v = &x - &mu;
        let solved = chol.solve(&v);
        let logdet: f64 = 2.0 * chol.l().diagonal().iter().map(|l| l.ln()).sum::<f64>();
        logs.push(c.weight.ln() - 0.5 * (v.dot(&solved) + logdet));
        means.push(&mu + &cov * solved);
    }
    let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = w.iter().sum();
    (0..d)
        .map(|j| means.iter().zip(&w).map(|(m, wi)| m[j] * wi / z).sum())
        .collect()
}

#[test]
fn mixture_denoiser_matches_brute_force_posterior_mean() {
    let mut rnd = stream(3);
    let d = 6;
    let params = GmmParams {
        dims: [1, 2, 3],
        components: (0..3)
            .map(|i| component(d, 2, [0.5, 0.3, 0.2][i], &mut rnd))
            .collect(),
        conditional: false,
    };
    let dev = cpu();
    let den = params.denoiser(&dev);
    for sigma in [0.02, 0.3, 1.0, 4.0, 30.0] {
        let rows = 5;
        let x: Vec<f32> = (0..rows * d)
            .map(|_| ((1.0 + sigma) * rnd()) as f32)
            .collect();
        let out = host(&den.denoise(tensor(x.clone(), [rows, 1, 2, 3], &dev), sigma, None));
        for r in 0..rows {
            let exact = brute_force_posterior(&params, &x[r * d..(r + 1) * d], sigma);
            for j in 0..d {
                let err = (out[r * d + j] as f64 - exact[j]).abs();
                assert!(
                    err < 2e-4 * (1.0 + exact[j].abs()),
                    "sigma {sigma} row {r}: {} vs {}",
                    out[r * d + j],
                    exact[j]
                );
            }
        }
    }
}

#[test]
fn conditional_mixture_uses_the_labelled_component() {
    let mut rnd = stream(5);
    let d = 6;
    let params = GmmParams {
        dims: [1, 2, 3],
        components: (0..2).map(|_| component(d, 2, 0.5, &mut rnd)).collect(),
        conditional: true,
    };
    let single = |c: usize| GmmParams {
        components: vec![Component {
            weight: 1.0,
            ..params.components[c].clone()
        }],
        conditional: false,
        ..params.clone()
    };
    let dev = cpu();
    let x: Vec<f32> = (0..2 * d).map(|_| rnd() as f32).collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &dev);
    let out = host(&params.denoiser(&dev).denoise(
        tensor(x.clone(), [2, 1, 2, 3], &dev),
        0.7,
        Some(&labels),
    ));
    let a = host(&single(1).denoiser(&dev).denoise(
        tensor(x[..d].to_vec(), [1, 1, 2, 3], &dev),
        0.7,
        None,
    ));
    let b = host(&single(0).denoiser(&dev).denoise(
        tensor(x[d..].to_vec(), [1, 1, 2, 3], &dev),
        0.7,
        None,
    ));
    for j in 0..d {
        assert!((out[j] - a[j]).abs() < 1e-6 && (out[d + j] - b[j]).abs() < 1e-6);
    }
}

fn tiny_net(k: usize, seed: u64, dev: &Device) -> EdmNet {
    let config = UNetConfig::new()
        .with_base(8)
        .with_mults(vec![1, 2])
        .with_emb(16)
        .with_fourier(4)
        .with_out_channels(k);
    EdmNet::new(&config, 1, dev, seed)
}

#[test]
fn widened_student_equals_its_teacher_on_every_branch() {
    let dev = cpu();
    let teacher = tiny_net(1, 3, &dev);
    let student = teacher.clone().widen(4);
    assert_eq!(student.branches(), 4);
    let mut rnd = stream(9);
    let x = tensor(
        (0..2 * 64).map(|_| rnd() as f32).collect(),
        [2, 1, 8, 8],
        &dev,
    );
    for sigma in [0.01, 1.0, 50.0] {
        let t = host(&teacher.denoise(x.clone(), sigma, None));
        for (k, branch) in student
            .denoise_branches(x.clone(), sigma_batch(sigma, 2, &dev), None)
            .iter()
            .enumerate()
        {
            let b = host(branch);
            let err = t
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(
                err <= 1e-6,
                "branch {k} at sigma {sigma} differs from the teacher by {err}"
            );
        }
    }
}

#[test]
fn seeded_init_is_reproducible_and_seed_dependent() {
    let dev = cpu();
    let h = |seed| bdense_trainer::optim::weights_hash(&tiny_net(2, seed, &dev));
    assert_eq!(h(1), h(1));
    assert_ne!(h(1), h(2));
}

fn targets(k: usize, rnd: &mut impl FnMut() -> f64, dev: &Device) -> Vec<Tensor<4>> {
    (0..k)
        .map(|_| {
            tensor(
                (0..2 * 64).map(|_| rnd() as f32).collect(),
                [2, 1, 8, 8],
                dev,
            )
        })
        .collect()
}

#[test]
fn endpoint_only_weights_reproduce_the_sfd_loss() {
    // A K = 4 student started from a teacher, with weights (0, 0, 0, 1), has exactly the loss
    // of the K = 1 student started from the same teacher: the last branch is the endpoint and
    // its target is the interval's end.
    let dev = cpu().autodiff();
    let teacher = tiny_net(1, 5, &dev);
    let sfd = teacher.clone().widen(1);
    let bdense = teacher.widen(4);
    let mut rnd = stream(2);
    let x = tensor(
        (0..2 * 64).map(|_| (10.0 * rnd()) as f32).collect(),
        [2, 1, 8, 8],
        &dev,
    );
    let ts = targets(4, &mut rnd, &dev);
    let sig = [8.0, 6.0, 4.5, 3.0];
    for distance in [Distance::L1, Distance::L2] {
        let a = interval_loss(
            &sfd,
            x.clone(),
            10.0,
            &ts[3..],
            &sig[3..],
            &Objective {
                weights: vec![1.0],
                distance,
            },
            None,
        );
        let b = interval_loss(
            &bdense,
            x.clone(),
            10.0,
            &ts,
            &sig,
            &Objective {
                weights: vec![0.0, 0.0, 0.0, 1.0],
                distance,
            },
            None,
        );
        let (a, b) = (a.loss.into_scalar::<f64>(), b.loss.into_scalar::<f64>());
        assert!(
            (a - b).abs() <= 1e-6 * a.abs(),
            "{distance:?}: sfd {a} vs bdense endpoint {b}"
        );
    }
}

#[test]
fn every_branch_gradient_reaches_the_shared_backbone() {
    let dev = cpu().autodiff();
    let k = 3;
    let net = tiny_net(k, 8, &dev);
    let mut rnd = stream(4);
    let x = tensor(
        (0..2 * 64).map(|_| (5.0 * rnd()) as f32).collect(),
        [2, 1, 8, 8],
        &dev,
    );
    let ts = targets(k, &mut rnd, &dev);
    for branch in 0..k {
        let mut w = vec![0.0; k];
        w[branch] = 1.0;
        let out = interval_loss(
            &net,
            x.clone(),
            5.0,
            &ts,
            &[4.0, 3.0, 2.0],
            &Objective {
                weights: w,
                distance: Distance::L1,
            },
            None,
        );
        let grads = out.loss.backward();
        let backbone = net
            .net
            .first_conv_weight()
            .grad(&grads)
            .expect("backbone gradient");
        assert!(
            host(&backbone).iter().any(|g| g.abs() > 0.0),
            "branch {branch} does not reach the backbone"
        );
        let head = host(&net.net.conv_out.weight.grad(&grads).expect("head gradient"));
        let per_branch = head.len() / k;
        for other in 0..k {
            let norm: f32 = head[other * per_branch..(other + 1) * per_branch]
                .iter()
                .map(|g| g.abs())
                .sum();
            assert_eq!(
                norm > 0.0,
                other == branch,
                "branch {branch}'s loss moves head rows of branch {other}: {norm}"
            );
        }
    }
}

#[test]
fn only_the_endpoint_branch_drives_sampling() {
    use burn::module::Param;
    let dev = cpu();
    let net = tiny_net(3, 6, &dev);
    let sigmas = [80.0, 5.0, 0.5, 0.002];
    let x = tensor(vec![40.0; 2 * 64], [2, 1, 8, 8], &dev);
    let base = sample_last(&net, x.clone(), &sigmas);
    let perturb = |rows: std::ops::Range<usize>| {
        let mut n = net.clone();
        let w = n.net.conv_out.weight.val();
        let [o, i, kh, kw] = w.dims();
        let mut values = host(&w);
        let per = i * kh * kw;
        rows.for_each(|r| {
            values[r * per..(r + 1) * per]
                .iter_mut()
                .for_each(|v| *v += 0.5)
        });
        n.net.conv_out.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(values, [o, i, kh, kw]),
            &dev,
        ));
        sample_last(&n, x.clone(), &sigmas)
    };
    // The head holds K blocks of output channels; the endpoint branch is the last block.
    let rows = net.net.conv_out.weight.dims()[0];
    let per_branch = rows / 3;
    assert_eq!(
        perturb(0..2 * per_branch),
        base,
        "non-endpoint branches changed the sample"
    );
    assert_ne!(
        perturb(2 * per_branch..rows),
        base,
        "the endpoint branch did not change the sample"
    );
}

fn sample_last(net: &EdmNet, x: Tensor<4>, sigmas: &[f64]) -> Vec<f32> {
    host(
        bdense_trainer::sample::sample(net, x, sigmas, false, None)
            .last()
            .unwrap(),
    )
}

#[test]
fn unet_teacher_learns_and_reloads_bit_identically() {
    use bdense_trainer::data::DatasetSource;
    use bdense_trainer::teachers::unet::{TeacherTrainConfig, UnetTeacher, train_teacher};
    let dir = tempfile::tempdir().unwrap();
    let mut config = TeacherTrainConfig::new(DatasetSource::Procedural { seed: 1 }, 40, 16, 3);
    config.net = config.net.with_base(8);
    config.limit = Some(512);
    config.checkpoint_every = 20;
    let mut losses = Vec::new();
    let card = train_teacher(&config, dir.path(), &cpu(), false, &mut |r| {
        losses.push(r.loss)
    })
    .unwrap();
    let (first, last) = (
        losses[..5].iter().sum::<f64>() / 5.0,
        losses[35..].iter().sum::<f64>() / 5.0,
    );
    assert!(last < 0.7 * first, "EDM loss {first:.3} -> {last:.3}");
    let a = UnetTeacher::load(dir.path(), &cpu()).unwrap();
    let b = UnetTeacher::load(dir.path(), &cpu()).unwrap();
    assert_eq!(
        bdense_trainer::optim::weights_hash(&a.net),
        card.weights_hash
    );
    let x = tensor(
        (0..2 * 256)
            .map(|i| ((i % 17) as f32 - 8.0) / 4.0)
            .collect(),
        [2, 1, 16, 16],
        &cpu(),
    );
    for sigma in [0.05, 2.0] {
        assert_eq!(
            host(&a.denoise(x.clone(), sigma, None)),
            host(&b.denoise(x.clone(), sigma, None)),
            "reloads give bit-identical outputs"
        );
    }
    // A flipped byte in the weights is caught by the recorded hash.
    let path = dir.path().join("model.bpk");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let err = UnetTeacher::load(dir.path(), &cpu())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.bpk"), "{err}");
}

/// A tiny U-Net teacher trained for a few steps on procedural images, in `dir`.
fn tiny_teacher(
    dir: &std::path::Path,
    target: bdense_trainer::teachers::unet::TeacherTarget,
    steps: u64,
    on_loss: &mut dyn FnMut(f64),
) -> bdense_trainer::teachers::unet::TeacherCard {
    use bdense_trainer::data::DatasetSource;
    use bdense_trainer::teachers::unet::{TeacherTrainConfig, train_teacher};
    let mut config = TeacherTrainConfig::new(DatasetSource::Procedural { seed: 1 }, steps, 16, 3);
    config.net = config.net.with_base(8);
    config.limit = Some(512);
    config.checkpoint_every = steps.max(1);
    config.target = target;
    // A few steps: the saved (EMA) weights must be the trained ones.
    config.optim.ema_decay = 0.0;
    train_teacher(&config, dir, &cpu(), false, &mut |r| on_loss(r.loss)).unwrap()
}

#[test]
fn teacher_initialised_student_reproduces_the_teacher_on_every_branch() {
    use bdense_trainer::method::{BranchWeights, Method, MethodConfig, MethodSpec};
    use bdense_trainer::student::{Init, StudentConfig, StudentState};
    use bdense_trainer::teachers::unet::{TeacherTarget, UnetTeacher};
    let dir = tempfile::tempdir().unwrap();
    let card = tiny_teacher(dir.path(), TeacherTarget::Data, 3, &mut |_| {});
    let config = StudentConfig {
        method: MethodConfig::with_spec(
            MethodSpec::new(Method::Bdense, Some(4), BranchWeights::Uniform).unwrap(),
        ),
        n: 4,
        steps: 1,
        batch: 2,
        seed: 0,
        optim: Default::default(),
        net: card.net.clone().with_out_channels(4),
        init: Init::Teacher(dir.path().to_path_buf()),
        checkpoint_every: 1,
    };
    let student = StudentState::fresh(&config, 1, &cpu()).unwrap();
    let teacher = UnetTeacher::load(dir.path(), &cpu()).unwrap();
    let mut rnd = stream(4);
    let x = tensor(
        (0..2 * 256).map(|_| 3.0 * rnd() as f32).collect(),
        [2, 1, 16, 16],
        &cpu(),
    );
    for sigma in [0.002, 0.5, 80.0] {
        let want = host(&teacher.denoise(x.clone(), sigma, None));
        let branches =
            student
                .model
                .denoise_branches(x.clone(), sigma_batch(sigma, 2, &cpu()), None);
        assert_eq!(branches.len(), 4);
        for (k, branch) in branches.iter().enumerate() {
            let err = host(branch)
                .iter()
                .zip(&want)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(err <= 1e-5, "branch {k} at sigma {sigma}: {err}");
        }
    }
    // The store's provenance must name this very teacher.
    assert!(UnetTeacher::card_matching(dir.path(), Some(&card.weights_hash)).is_ok());
    let wrong = "0123456789abcdef";
    let err = UnetTeacher::card_matching(dir.path(), Some(wrong))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(wrong) && err.contains(&card.weights_hash),
        "both hashes named: {err}"
    );
}

#[test]
fn a_teacher_regressed_onto_the_gaussian_approaches_its_exact_denoiser() {
    use bdense_trainer::data::{DatasetSource, Split};
    use bdense_trainer::teachers::unet::{TeacherTarget, UnetTeacher};
    use bdense_trainer::teachers::{self, TeacherSpec};
    let dir = tempfile::tempdir().unwrap();
    let target = TeacherTarget::parse("gaussian").unwrap();
    assert!(TeacherTarget::parse("unet:x").is_err());
    let mut losses = Vec::new();
    tiny_teacher(dir.path(), target, 60, &mut |l| losses.push(l));
    let (first, last) = (
        losses[..5].iter().sum::<f64>() / 5.0,
        losses[55..].iter().sum::<f64>() / 5.0,
    );
    assert!(
        last < 0.5 * first,
        "regression loss {first:.4} -> {last:.4}"
    );
    // The copy is closer to the analytic denoiser than an untrained net of the same shape.
    let images = DatasetSource::Procedural { seed: 1 }
        .load(Split::Train)
        .unwrap();
    let exact = teachers::load(&TeacherSpec::Gaussian { rank: 32 }, &images, &cpu()).unwrap();
    let trained = UnetTeacher::load(dir.path(), &cpu()).unwrap();
    let untrained_dir = tempfile::tempdir().unwrap();
    tiny_teacher(untrained_dir.path(), TeacherTarget::Data, 0, &mut |_| {});
    // Same budget on the images themselves: at high sigma both learn the mean, so only a net
    // that really saw the analytic targets is closer to them at every sigma.
    let data_dir = tempfile::tempdir().unwrap();
    tiny_teacher(data_dir.path(), TeacherTarget::Data, 60, &mut |_| {});
    let on_data = UnetTeacher::load(data_dir.path(), &cpu()).unwrap();
    let untrained = UnetTeacher::load(untrained_dir.path(), &cpu()).unwrap();
    let mut rnd = stream(8);
    let clean: Vec<f32> = images
        .image(0)
        .iter()
        .chain(images.image(1))
        .copied()
        .collect();
    // (At small sigma both are close to x itself: c_skip carries the denoiser there.)
    for sigma in [1.0, 3.0, 10.0] {
        let noisy: Vec<f32> = clean
            .iter()
            .map(|v| v + sigma as f32 * 3.4 * rnd() as f32)
            .collect();
        let x = tensor(noisy, [2, 1, 16, 16], &cpu());
        let want = host(&exact.denoise(x.clone(), sigma, None));
        let rmse = |net: &UnetTeacher| {
            let got = host(&net.denoise(x.clone(), sigma, None));
            (got.iter()
                .zip(&want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / got.len() as f64)
                .sqrt()
        };
        let (t, u, d) = (rmse(&trained), rmse(&untrained), rmse(&on_data));
        assert!(
            t < 0.7 * u,
            "sigma {sigma}: trained {t:.4} vs untrained {u:.4}"
        );
        assert!(
            t < d,
            "sigma {sigma}: regressed {t:.4} vs trained on images {d:.4}"
        );
    }
}
