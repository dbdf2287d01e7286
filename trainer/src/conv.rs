//! The U-Net's layer arithmetic, written with the burn-ndarray operations that are fast.
//!
//! burn-ndarray 0.22 computes a conv's input gradient with a naive transposed convolution, and
//! its `cat`/`stack`, `interpolate`, `GroupNorm` and `silu` run several times slower than the
//! same maths spelled with slices, matmuls and element-wise ops (measured with the
//! `ops_bench` and `conv_bench` examples; docs/perf.md). Parameters stay in burn's modules
//! (`Conv2d`, `GroupNorm`), so checkpoints do not depend on which path computed a layer.

use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::ops::PadMode;

/// `conv` on `x: [B, C, H, W]` with "same" padding (odd square kernels, stride 1), as one
/// small batched matmul per kernel tap on a shifted view: no im2col buffer, no `cat`.
pub fn conv_same(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let w = conv.weight.val();
    let [o, c, k, _] = w.dims();
    let [b, _, h, wd] = x.dims();
    let tap = |kh: usize, kw: usize| {
        w.clone()
            .slice([0..o, 0..c, kh..kh + 1, kw..kw + 1])
            .reshape([1, o, c])
    };
    let mut out = if k == 1 {
        tap(0, 0).matmul(x.reshape([b, c, h * wd]))
    } else {
        let p = k / 2;
        let padded = x.pad((p, p, p, p), PadMode::Constant(0.0));
        let mut acc: Option<Tensor<3>> = None;
        for kh in 0..k {
            for kw in 0..k {
                let shifted = padded
                    .clone()
                    .slice([0..b, 0..c, kh..kh + h, kw..kw + wd])
                    .reshape([b, c, h * wd]);
                let term = tap(kh, kw).matmul(shifted);
                acc = Some(match acc {
                    Some(a) => a + term,
                    None => term,
                });
            }
        }
        acc.expect("a kernel has taps")
    };
    if let Some(bias) = &conv.bias {
        out = out + bias.val().reshape([1, o, 1]);
    }
    out.reshape([b, o, h, wd])
}

/// GroupNorm with `gn`'s groups, epsilon and affine parameters.
pub fn group_norm(gn: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let g = gn.num_groups;
    let t = x.reshape([b, g, (c / g) * h * w]);
    let centered = t.clone() - t.mean_dim(2);
    let var = centered.clone().square().mean_dim(2);
    let mut y = (centered / (var + gn.epsilon).sqrt()).reshape([b, c, h, w]);
    if let Some(gamma) = &gn.gamma {
        y = y * gamma.val().reshape([1, c, 1, 1]);
    }
    if let Some(beta) = &gn.beta {
        y = y + beta.val().reshape([1, c, 1, 1]);
    }
    y
}

/// SiLU, `x * sigmoid(x)`.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * sigmoid(x)
}

/// Nearest-neighbour 2x upsampling as a broadcast.
pub fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

/// `[B, C, H, W] -> [B, C p^2, H/p, W/p]`: each p x p patch becomes channels.
pub fn pixel_unshuffle(x: Tensor<4>, p: usize) -> Tensor<4> {
    if p == 1 {
        return x;
    }
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / p, p, w / p, p])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([b, c * p * p, h / p, w / p])
}

/// The inverse of [`pixel_unshuffle`].
pub fn pixel_shuffle(x: Tensor<4>, p: usize) -> Tensor<4> {
    if p == 1 {
        return x;
    }
    let [b, cp, h, w] = x.dims();
    let c = cp / (p * p);
    x.reshape([b, c, p, p, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([b, c, h * p, w * p])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{GroupNormConfig, PaddingConfig2d};
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    fn input(dev: &Device, shape: [usize; 4]) -> Tensor<4> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        Tensor::<4>::from_data(TensorData::new(values, shape), dev)
            .set_require_grad(dev.is_autodiff())
    }

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn conv_matches_burn_values_and_gradients() {
        let dev = crate::backend::cpu().autodiff();
        for k in [1, 3] {
            let conv = Conv2dConfig::new([3, 5], [k, k])
                .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                .init(&dev);
            let x = input(&dev, [2, 3, 6, 7]);
            let (ours, theirs) = (conv_same(&conv, x.clone()), conv.forward(x.clone()));
            assert!(
                max_diff(ours.clone(), theirs.clone()) < 1e-5,
                "k={k}: forward"
            );
            let g1 = (ours * theirs.clone().detach()).sum().backward();
            let g2 = (theirs.clone() * theirs.detach()).sum().backward();
            assert!(
                max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4,
                "k={k}: input gradient"
            );
            assert!(
                max_diff(
                    conv.weight.grad(&g1).unwrap(),
                    conv.weight.grad(&g2).unwrap()
                ) < 1e-3,
                "k={k}: weight gradient"
            );
        }
    }

    #[test]
    fn norm_activation_and_resampling_match_burn() {
        let dev = crate::backend::cpu();
        let x = input(&dev, [2, 8, 4, 6]);
        let gn = GroupNormConfig::new(4, 8).init(&dev);
        assert!(max_diff(group_norm(&gn, x.clone()), gn.forward(x.clone())) < 1e-5);
        assert!(max_diff(silu(x.clone()), burn::tensor::activation::silu(x.clone())) < 1e-6);
        let up = interpolate(
            x.clone(),
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([8, 12]),
        );
        assert!(max_diff(upsample2(x.clone()), up) == 0.0);
        let round = pixel_shuffle(pixel_unshuffle(x.clone(), 2), 2);
        assert!(max_diff(round, x.clone()) == 0.0);
        // Channel c*4 + dy*2 + dx of the unshuffled image is pixel (2i + dy, 2j + dx) of c.
        let un = crate::solvers::host(&pixel_unshuffle(x.clone(), 2));
        let orig = crate::solvers::host(&x);
        // Batch 0: channel 2*4 + 0*2 + 1 = 9 at (1, 0) is pixel (2, 1) of channel 2.
        assert_eq!(un[(9 * 2 + 1) * 3], orig[(2 * 4 + 2) * 6 + 1]);
        assert_ne!(un[(9 * 2 + 1) * 3], orig[(9 * 2 + 1) * 3]);
    }
}
