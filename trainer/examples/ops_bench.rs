use bdense_trainer::backend::cpu;
use burn::nn::GroupNormConfig;
use burn::prelude::*;
use burn::tensor::module::{avg_pool2d, interpolate};
use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions};
use std::time::Instant;

fn time(name: &str, f: &dyn Fn() -> f32) {
    let _ = f();
    let t = Instant::now();
    let reps = 10;
    for _ in 0..reps {
        let _ = f();
    }
    println!(
        "{name:<28} {:8.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

fn main() {
    let dev = cpu().autodiff();
    let x = Tensor::<4>::random(
        [32, 16, 28, 28],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    )
    .require_grad();
    let gn = GroupNormConfig::new(8, 16).init(&dev);
    let s = |t: Tensor<4>| t.sum().into_scalar::<f32>();
    let fb = |t: Tensor<4>| {
        let g = t.sum().backward();
        x.grad(&g).unwrap().sum().into_scalar::<f32>()
    };
    time("copy (x + 0)", &|| s(x.clone() + 0.0));
    time("silu fwd", &|| s(burn::tensor::activation::silu(x.clone())));
    time("silu fwd+bwd", &|| {
        fb(burn::tensor::activation::silu(x.clone()))
    });
    time("groupnorm fwd", &|| s(gn.forward(x.clone())));
    time("groupnorm fwd+bwd", &|| fb(gn.forward(x.clone())));
    time("avgpool fwd+bwd", &|| {
        let y = avg_pool2d(x.clone(), AvgPoolOptions::new([2, 2]));
        let g = y.sum().backward();
        x.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    let small = Tensor::<4>::random(
        [32, 16, 14, 14],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    )
    .require_grad();
    time("interpolate fwd+bwd", &|| {
        let y = interpolate(
            small.clone(),
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([28, 28]),
        );
        let g = y.sum().backward();
        small.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    time("cat fwd+bwd", &|| {
        fb(Tensor::cat(vec![x.clone(), x.clone()], 1))
    });
    time("pad+9 slices+stack fwd+bwd", &|| {
        let p = x
            .clone()
            .pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
        let v: Vec<Tensor<4>> = (0..9)
            .map(|i| {
                p.clone()
                    .slice([0..32, 0..16, i / 3..i / 3 + 28, i % 3..i % 3 + 28])
            })
            .collect();
        let y = Tensor::stack::<5>(v, 2);
        let g = y.sum().backward();
        x.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    time("flat-window im2col fwd+bwd", &|| {
        let (b, c, h, w) = (32, 16, 28, 28);
        let p = x
            .clone()
            .pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0))
            .reshape([b, c, (h + 2) * (w + 2)]);
        let p = Tensor::cat(vec![p, Tensor::zeros([b, c, 2], &dev)], 2);
        let l = h * (w + 2);
        let v: Vec<Tensor<3>> = (0..9)
            .map(|i| {
                p.clone().slice([
                    0..b,
                    0..c,
                    (i / 3) * (w + 2) + i % 3..(i / 3) * (w + 2) + i % 3 + l,
                ])
            })
            .collect();
        let y = Tensor::stack::<4>(v, 2);
        let g = y.sum().backward();
        x.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    time("flat windows cat(dim 1) fwd+bwd", &|| {
        let (b, c, h, w) = (32, 16, 28, 28);
        let p = x
            .clone()
            .pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0))
            .reshape([b, c, (h + 2) * (w + 2)]);
        let p = Tensor::cat(vec![p, Tensor::zeros([b, c, 2], &dev)], 2);
        let l = h * (w + 2);
        let v: Vec<Tensor<3>> = (0..9)
            .map(|i| {
                p.clone().slice([
                    0..b,
                    0..c,
                    (i / 3) * (w + 2) + i % 3..(i / 3) * (w + 2) + i % 3 + l,
                ])
            })
            .collect();
        let y = Tensor::cat(v, 1);
        let g = y.sum().backward();
        x.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    time("pad fwd+bwd", &|| {
        fb(x.clone()
            .pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0)))
    });
    time("one slice fwd+bwd", &|| {
        fb(x.clone().slice([0..32, 0..16, 1..27, 1..27]))
    });
    time("relu fwd+bwd", &|| {
        fb(burn::tensor::activation::relu(x.clone()))
    });
    time("pixel unshuffle fwd+bwd", &|| {
        fb(x.clone()
            .reshape([32, 16, 14, 2, 14, 2])
            .permute([0, 1, 3, 5, 2, 4])
            .reshape([32, 64, 14, 14]))
    });
    let w9 = Tensor::<3>::random(
        [9, 16, 16],
        burn::tensor::Distribution::Normal(0.0, 0.1),
        &dev,
    )
    .require_grad();
    time("9 slices + 9 matmuls fwd+bwd", &|| {
        let (b, c, h, w) = (32, 16, 28, 28);
        let p = x
            .clone()
            .pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
        let mut acc: Option<Tensor<3>> = None;
        for i in 0..9 {
            let s = p
                .clone()
                .slice([0..b, 0..c, i / 3..i / 3 + h, i % 3..i % 3 + w])
                .reshape([b, c, h * w]);
            let wi = w9.clone().narrow(0, i, 1);
            let y = wi.matmul(s);
            acc = Some(match acc {
                Some(a) => a + y,
                None => y,
            });
        }
        let g = acc.unwrap().sum().backward();
        x.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    time("sigmoid*x fwd+bwd", &|| {
        fb(x.clone() * burn::tensor::activation::sigmoid(x.clone()))
    });
    time("upsample via expand fwd+bwd", &|| {
        let y = small
            .clone()
            .reshape([32, 16, 14, 1, 14, 1])
            .expand([32, 16, 14, 2, 14, 2])
            .reshape([32, 16, 28, 28]);
        let g = y.sum().backward();
        small.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    time("avgpool via reshape fwd+bwd", &|| {
        let y = x
            .clone()
            .reshape([32, 16, 14, 2, 14, 2])
            .mean_dim(5)
            .mean_dim(3)
            .reshape([32, 16, 14, 14]);
        let g = y.sum().backward();
        x.grad(&g).unwrap().sum().into_scalar::<f32>()
    });
    time("add (skip) fwd+bwd", &|| fb(x.clone() + x.clone()));
    time("manual groupnorm fwd+bwd", &|| {
        let t = x.clone().reshape([32, 8, 2 * 784]);
        let m = t.clone().mean_dim(2);
        let c = t - m;
        let v = c.clone().square().mean_dim(2);
        fb((c / (v + 1e-5).sqrt()).reshape([32, 16, 28, 28]))
    });
    time("mul by [B,1,1,1] fwd+bwd", &|| {
        let c = Tensor::<4>::ones([32, 1, 1, 1], &dev);
        fb(x.clone() * c)
    });
}
