//! burn-ndarray and burn-tch (libtorch on the CPU) agree: same initial weights, same batch,
//! the same losses. Runs only in a build with `--features tch` (`.ci/tch`).
#![cfg(feature = "tch")]

use bdense_trainer::backend::{cpu, parse_device};
use bdense_trainer::edm::EdmNet;
use bdense_trainer::method::{Distance, Objective, interval_loss};
use bdense_trainer::solvers::{Denoiser, host};
use bdense_trainer::unet::UNetConfig;
use burn::prelude::*;

fn net(device: &Device, k: usize) -> EdmNet {
    let config = UNetConfig::new().with_base(8).with_out_channels(k);
    EdmNet::new(&config, 1, device, 7)
}

fn input(device: &Device, scale: f32, salt: usize) -> Tensor<4> {
    let values: Vec<f32> = (0..4 * 256)
        .map(|i| (((i * 37 + salt) % 101) as f32 / 50.0 - 1.0) * scale)
        .collect();
    Tensor::from_data(TensorData::new(values, [4, 1, 16, 16]), device)
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

#[test]
fn denoiser_outputs_agree_across_backends() {
    let (nd, tc) = (cpu(), parse_device("tch-cpu").unwrap());
    let (a, b) = (net(&nd, 1), net(&tc, 1));
    assert_eq!(
        bdense_trainer::optim::weights_hash(&a),
        bdense_trainer::optim::weights_hash(&b),
        "same initial weights"
    );
    for sigma in [0.01, 1.0, 60.0] {
        let (ya, yb) = (
            host(&a.denoise(input(&nd, 3.0, 0), sigma, None)),
            host(&b.denoise(input(&tc, 3.0, 0), sigma, None)),
        );
        let err = max_rel(&ya, &yb);
        assert!(
            err < 1e-5,
            "sigma {sigma}: ndarray and libtorch differ by {err}"
        );
    }
}

#[test]
fn bdense_losses_agree_across_backends() {
    let objective = Objective {
        weights: vec![1.0, 1.0, 1.0, 1.0],
        distance: Distance::L1,
    };
    let loss = |device: Device| -> (f64, Vec<f64>) {
        let dev = device.autodiff();
        let model = net(&dev, 4);
        let targets: Vec<Tensor<4>> = (0..4).map(|k| input(&dev, 1.0, k + 1)).collect();
        let out = interval_loss(
            &model,
            input(&dev, 10.0, 0),
            10.0,
            &targets,
            &[8.0, 6.0, 4.0, 2.5],
            &objective,
            None,
        );
        (out.loss.into_scalar::<f64>(), out.per_branch)
    };
    let (a, b) = (loss(cpu()), loss(parse_device("tch-cpu").unwrap()));
    assert!(
        (a.0 - b.0).abs() <= 1e-5 * a.0.abs(),
        "loss: ndarray {} vs libtorch {}",
        a.0,
        b.0
    );
    for (k, (x, y)) in a.1.iter().zip(&b.1).enumerate() {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "branch {k}: {x} vs {y}");
    }
}
