//! burn-ndarray's Conv2d against the U-Net's tap-wise convolution (`bdense_trainer::conv`),
//! forward + backward, same numbers.
//!     cargo build --workspace --all-targets && $CARGO_TARGET_DIR/debug/examples/conv_bench
use std::time::Instant;

use bdense_trainer::backend::cpu;
use bdense_trainer::conv::conv_same;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;

fn main() {
    let dev = cpu().autodiff();
    println!(
        "{:<24} {:>14} {:>14} {:>8}",
        "shape [B, C, H, W]", "burn conv2d", "conv_same", "ratio"
    );
    for (bs, c, hw) in [(16, 16, 28), (32, 32, 14), (32, 64, 7), (16, 8, 16)] {
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&dev);
        let x = Tensor::<4>::random(
            [bs, c, hw, hw],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        )
        .require_grad();
        let time = |ours: bool| {
            let reps = 5;
            let t = Instant::now();
            let mut check = 0.0;
            for _ in 0..reps {
                let y = if ours {
                    conv_same(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let g = y.square().sum().backward();
                check += x.grad(&g).unwrap().sum().into_scalar::<f64>();
            }
            (t.elapsed().as_secs_f64() * 1e3 / reps as f64, check)
        };
        let ((burn_ms, a), (ours_ms, b)) = (time(false), time(true));
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "gradients differ: {a} vs {b}"
        );
        println!(
            "{:<24} {:>11.1} ms {:>11.1} ms {:>7.1}x",
            format!("[{bs}, {c}, {hw}, {hw}]"),
            burn_ms,
            ours_ms,
            burn_ms / ours_ms
        );
    }
}
