use bdense_trainer::backend::cpu;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use std::time::Instant;

fn im2col_conv(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let [bs, c, h, wd] = x.dims();
    let [o, _, _, _] = w.dims();
    let xp = x.pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
    let mut cols = Vec::with_capacity(9);
    for dh in 0..3 {
        for dw in 0..3 {
            cols.push(xp.clone().slice([0..bs, 0..c, dh..dh + h, dw..dw + wd]));
        }
    }
    let cols: Tensor<5> = Tensor::stack(cols, 2); // [B, C, 9, H, W]
    let cols = cols
        .reshape([bs, c * 9, h * wd])
        .swap_dims(1, 2)
        .reshape([bs * h * wd, c * 9]);
    let out = cols.matmul(w.reshape([o, c * 9]).transpose()) + b.reshape([1, o]);
    out.reshape([bs, h * wd, o])
        .swap_dims(1, 2)
        .reshape([bs, o, h, wd])
}

fn im2col_batched(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let [bs, c, h, wd] = x.dims();
    let [o, _, _, _] = w.dims();
    let xp = x.pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
    let cols: Vec<Tensor<4>> = (0..9)
        .map(|i| {
            xp.clone()
                .slice([0..bs, 0..c, i / 3..i / 3 + h, i % 3..i % 3 + wd])
        })
        .collect();
    let cols = Tensor::stack::<5>(cols, 2).reshape([bs, c * 9, h * wd]);
    let out = w.reshape([1, o, c * 9]).matmul(cols) + b.reshape([1, o, 1]);
    out.reshape([bs, o, h, wd])
}

fn main() {
    let dev = cpu().autodiff();
    for (bs, c, hw) in [(16, 16, 28), (32, 32, 14), (16, 8, 16)] {
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&dev);
        let x = Tensor::<4>::random(
            [bs, c, hw, hw],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        )
        .require_grad();
        for name in ["burn conv2d", "im2col", "batched"] {
            let t = Instant::now();
            let reps = 5;
            let mut out = vec![];
            for _ in 0..reps {
                let (w, b) = (conv.weight.val(), conv.bias.as_ref().unwrap().val());
                let y = match name {
                    "im2col" => im2col_conv(x.clone(), w, b),
                    "batched" => im2col_batched(x.clone(), w, b),
                    _ => conv.forward(x.clone()),
                };
                let g = y.clone().square().sum().backward();
                out.push(x.grad(&g).unwrap().sum().into_scalar::<f32>());
            }
            println!(
                "B={bs} C={c} {hw}x{hw} {name}: {:.1} ms per fwd+bwd (check {:.3})",
                t.elapsed().as_secs_f64() * 1000.0 / reps as f64,
                out[0]
            );
        }
    }
}
