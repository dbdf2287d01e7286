//! burn-ndarray's own ops against the replacements in `bdense_trainer::conv`, forward +
//! backward on one U-Net activation `[32, 16, 28, 28]`: why the U-Net spells its layers the
//! way it does (docs/perf.md).
//!     cargo build --workspace --all-targets && $CARGO_TARGET_DIR/debug/examples/ops_bench
use std::time::Instant;

use bdense_trainer::backend::cpu;
use bdense_trainer::conv::{group_norm, silu, upsample2};
use burn::nn::GroupNormConfig;
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Milliseconds per forward + backward of `f` (best of 10 after a warm-up).
fn time(x: &Tensor<4>, f: &dyn Fn(Tensor<4>) -> Tensor<4>) -> f64 {
    let run = || {
        let t = Instant::now();
        let g = f(x.clone()).sum().backward();
        let _ = x.grad(&g).unwrap().sum().into_scalar::<f32>();
        t.elapsed().as_secs_f64() * 1e3
    };
    run();
    (0..10).map(|_| run()).fold(f64::MAX, f64::min)
}

fn main() {
    let dev = cpu().autodiff();
    let big = Tensor::<4>::random(
        [32, 16, 28, 28],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    )
    .require_grad();
    let small = Tensor::<4>::random(
        [32, 16, 14, 14],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    )
    .require_grad();
    let gn = GroupNormConfig::new(8, 16).init(&dev);
    let nearest = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([28, 28]);
    type Op<'a> = &'a dyn Fn(Tensor<4>) -> Tensor<4>;
    let pairs: [(&str, &Tensor<4>, Op, Op); 4] = [
        ("group norm", &big, &|t| gn.forward(t), &|t| {
            group_norm(&gn, t)
        }),
        ("silu", &big, &|t| burn::tensor::activation::silu(t), &|t| {
            silu(t)
        }),
        (
            "2x nearest upsample",
            &small,
            &|t| interpolate(t, nearest.clone()),
            &|t| upsample2(t),
        ),
        (
            "skip: cat vs add",
            &big,
            &|t| Tensor::cat(vec![t.clone(), t], 1),
            &|t| t.clone() + t,
        ),
    ];
    println!(
        "{:<22} {:>12} {:>12} {:>8}",
        "op (fwd + bwd)", "burn", "bdense", "ratio"
    );
    for (name, x, theirs, ours) in pairs {
        let (a, b) = (time(x, theirs), time(x, ours));
        println!("{name:<22} {a:>9.2} ms {b:>9.2} ms {:>7.1}x", a / b);
    }
}
