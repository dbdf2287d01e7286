//! A small U-Net for 1-channel 28x28 (or 16x16) images, the network under every neural
//! teacher and student. Preconditioning is not here: see [`crate::precond`]; the layer
//! arithmetic is in [`crate::conv`].

use burn::module::{ModuleMapper, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use rand::{Rng, SeedableRng};

use crate::conv::{conv_same, group_norm, pixel_shuffle, pixel_unshuffle, silu, upsample2};

#[derive(Config, Debug, PartialEq)]
pub struct UNetConfig {
    #[config(default = 1)]
    pub in_channels: usize,
    /// `K x C` for a K-branch student.
    #[config(default = 1)]
    pub out_channels: usize,
    #[config(default = 32)]
    pub base: usize,
    /// Channel multiplier per resolution; each level after the first halves H and W.
    #[config(default = "vec![1, 2]")]
    pub mults: Vec<usize>,
    /// p x p pixel patches become channels before the first layer (and back after the last),
    /// so every layer runs at H/p x W/p: the main lever on CPU cost.
    #[config(default = 2)]
    pub patch: usize,
    /// 0: unconditional; otherwise a class embedding joins the noise embedding.
    #[config(default = 0)]
    pub num_classes: usize,
    #[config(default = 64)]
    pub emb: usize,
    #[config(default = 16)]
    pub fourier: usize,
}

impl UNetConfig {
    /// Builds the net on `device` with weights drawn from `seed` (not from burn's global RNG,
    /// so that initialisation is reproducible even with other threads drawing numbers).
    pub fn init(&self, device: &Device, seed: u64) -> UNet {
        let chans: Vec<usize> = self.mults.iter().map(|m| m * self.base).collect();
        let mut down = Vec::new();
        let mut prev = self.base;
        for &c in &chans {
            down.push(ResBlockConfig::new(prev, c, self.emb).init(device));
            prev = c;
        }
        let mid = ResBlockConfig::new(prev, prev, self.emb).init(device);
        let mut up = Vec::new();
        for l in (0..chans.len() - 1).rev() {
            up.push(ResBlockConfig::new(prev, chans[l], self.emb).init(device));
            prev = chans[l];
        }
        let p2 = self.patch * self.patch;
        let net = UNet {
            conv_in: conv3(self.in_channels * p2, self.base, device),
            emb_in: LinearConfig::new(2 * self.fourier, self.emb).init(device),
            emb_out: LinearConfig::new(self.emb, self.emb).init(device),
            class_emb: (self.num_classes > 0)
                .then(|| EmbeddingConfig::new(self.num_classes, self.emb).init(device)),
            down,
            mid,
            up,
            norm_out: group_norm_layer(chans[0], device),
            conv_out: conv3(chans[0], self.out_channels * p2, device),
            fourier: self.fourier,
            patch: self.patch,
        };
        net.map(&mut SeededInit::new(seed, device))
    }
}

/// An additive-skip U-Net: per level a residual block conditioned on the noise embedding,
/// average pooling down, nearest upsampling up, skips added.
#[derive(Module, Debug)]
pub struct UNet {
    conv_in: Conv2d,
    emb_in: Linear,
    emb_out: Linear,
    class_emb: Option<Embedding>,
    down: Vec<ResBlock>,
    mid: ResBlock,
    up: Vec<ResBlock>,
    norm_out: GroupNorm,
    /// The output layer: `K x C x patch^2` channels, branch k's in a contiguous block.
    pub conv_out: Conv2d,
    fourier: usize,
    patch: usize,
}

impl UNet {
    /// `F(x; c_noise)`.
    ///
    /// # Shapes
    /// - `x`: `[B, C_in, H, W]` (already scaled by c_in), H and W divisible by
    ///   `patch * 2^(levels - 1)`
    /// - `c_noise`: `[B]`
    /// - `labels`: `[B]` when the net is class-conditional
    /// - returns `[B, C_out, H, W]`
    pub fn forward(
        &self,
        x: Tensor<4>,
        c_noise: Tensor<1>,
        labels: Option<&Tensor<1, Int>>,
    ) -> Tensor<4> {
        let emb = self.embedding(c_noise, labels); // [B, E]
        let mut h = conv_same(&self.conv_in, pixel_unshuffle(x, self.patch));
        let mut skips = Vec::with_capacity(self.down.len());
        for (l, block) in self.down.iter().enumerate() {
            if l > 0 {
                h = avg_pool2d(h, AvgPoolOptions::new([2, 2]));
            }
            h = block.forward(h, &emb);
            skips.push(h.clone());
        }
        skips.pop(); // the deepest level feeds `mid` directly
        h = self.mid.forward(h, &emb);
        for block in &self.up {
            let skip = skips.pop().expect("one skip per up block");
            h = block.forward(upsample2(h), &emb) + skip;
        }
        let out = conv_same(&self.conv_out, silu(group_norm(&self.norm_out, h)));
        pixel_shuffle(out, self.patch)
    }

    fn embedding(&self, c_noise: Tensor<1>, labels: Option<&Tensor<1, Int>>) -> Tensor<2> {
        let [b] = c_noise.dims();
        let device = c_noise.device();
        // Fourier features of c_noise at log-spaced frequencies 1 .. 100.
        let n = self.fourier;
        let freqs: Vec<f32> = (0..n)
            .map(|i| 100f32.powf(i as f32 / (n - 1).max(1) as f32))
            .collect();
        let freqs = Tensor::<2>::from_data(TensorData::new(freqs, [1, n]), &device);
        let phase = c_noise.reshape([b, 1]) * freqs;
        let mut e = self
            .emb_in
            .forward(Tensor::cat(vec![phase.clone().cos(), phase.sin()], 1));
        if let (Some(table), Some(l)) = (&self.class_emb, labels) {
            let d = e.dims()[1];
            e = e + table.forward(l.clone().reshape([b, 1])).reshape([b, d]);
        }
        self.emb_out.forward(silu(e))
    }

    /// The same net with its output layer repeated `k` times along the output channels: the
    /// K-branch head of a student started from this teacher, every branch equal to it.
    pub fn widen_output(mut self, k: usize) -> UNet {
        // A new leaf (detached copy) with its own parameter id, trainable where autodiff is on.
        fn repeat<const D: usize>(p: &Param<Tensor<D>>, k: usize) -> Param<Tensor<D>> {
            let t = Tensor::cat(vec![p.val().detach(); k], 0).detach();
            let trainable = t.is_autodiff();
            Param::from_tensor(t.set_require_grad(trainable))
        }
        self.conv_out.weight = repeat(&self.conv_out.weight, k);
        self.conv_out.bias = self.conv_out.bias.as_ref().map(|b| repeat(b, k));
        self
    }

    /// The same net with only the last of its `k` output branches (the endpoint branch that
    /// sampling uses): the K = 1 teacher a K-branch student becomes in the next distillation
    /// round. The inverse of [`UNet::widen_output`] on a widened net.
    pub fn endpoint_output(mut self, k: usize) -> UNet {
        fn last<const D: usize>(p: &Param<Tensor<D>>, k: usize) -> Param<Tensor<D>> {
            let rows = p.dims()[0] / k;
            let t = p.val().detach().narrow(0, (k - 1) * rows, rows).detach();
            let trainable = t.is_autodiff();
            Param::from_tensor(t.set_require_grad(trainable))
        }
        assert_eq!(
            self.conv_out.weight.dims()[0] % k,
            0,
            "the output layer holds k equal branch blocks"
        );
        self.conv_out.weight = last(&self.conv_out.weight, k);
        self.conv_out.bias = self.conv_out.bias.as_ref().map(|b| last(b, k));
        self
    }

    /// The first layer's weight: part of the backbone every branch shares.
    pub fn first_conv_weight(&self) -> &Param<Tensor<4>> {
        &self.conv_in.weight
    }

    /// Output channels at full resolution (`K x C`).
    pub fn out_channels(&self) -> usize {
        self.conv_out.weight.dims()[0] / (self.patch * self.patch)
    }

    pub fn patch(&self) -> usize {
        self.patch
    }
}

#[derive(Config, Debug)]
struct ResBlockConfig {
    in_channels: usize,
    out_channels: usize,
    emb: usize,
}

impl ResBlockConfig {
    fn init(&self, device: &Device) -> ResBlock {
        let (i, o) = (self.in_channels, self.out_channels);
        ResBlock {
            norm1: group_norm_layer(i, device),
            conv1: conv3(i, o, device),
            emb_proj: LinearConfig::new(self.emb, o).init(device),
            norm2: group_norm_layer(o, device),
            conv2: conv3(o, o, device),
            skip: (i != o).then(|| Conv2dConfig::new([i, o], [1, 1]).init(device)),
        }
    }
}

/// GroupNorm, SiLU, conv, plus the embedding as a per-channel shift, twice; residual.
#[derive(Module, Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn forward(&self, x: Tensor<4>, emb: &Tensor<2>) -> Tensor<4> {
        let [b, _, _, _] = x.dims();
        let h = conv_same(&self.conv1, silu(group_norm(&self.norm1, x.clone())));
        let shift = self.emb_proj.forward(silu(emb.clone()));
        let [_, c] = shift.dims();
        let h = h + shift.reshape([b, c, 1, 1]);
        let h = conv_same(&self.conv2, silu(group_norm(&self.norm2, h)));
        let x = match &self.skip {
            Some(conv) => conv_same(conv, x),
            None => x,
        };
        x + h
    }
}

fn conv3(i: usize, o: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([i, o], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

fn group_norm_layer(channels: usize, device: &Device) -> GroupNorm {
    let groups = [8, 4, 2, 1]
        .into_iter()
        .find(|g| channels.is_multiple_of(*g))
        .unwrap_or(1);
    GroupNormConfig::new(groups, channels).init(device)
}

/// Replaces every weight with a seeded draw: uniform in +-1/sqrt(fan_in) for conv and linear
/// weights (burn's default Kaiming-uniform bound), N(0, 1) for embeddings, zero biases, and
/// GroupNorm's ones and zeros left as they are.
struct SeededInit {
    rng: rand_chacha::ChaCha8Rng,
    path: Vec<String>,
    device: Device,
}

impl SeededInit {
    fn new(seed: u64, device: &Device) -> Self {
        SeededInit {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            path: Vec::new(),
            device: device.clone(),
        }
    }
}

impl ModuleMapper for SeededInit {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let shape = param.lazy_shape();
        let dims: Vec<usize> = shape.iter().copied().collect();
        let n: usize = dims.iter().product();
        let name = self.path.last().map(String::as_str).unwrap_or("");
        let in_embedding = self.path.iter().any(|p| p == "class_emb");
        let values: Vec<f32> = match (name, D) {
            ("weight", _) if in_embedding => (0..n).map(|_| normal(&mut self.rng)).collect(),
            ("weight", 4) => uniform(&mut self.rng, n, (dims[1] * dims[2] * dims[3]) as f32),
            ("weight", 2) => uniform(&mut self.rng, n, dims[0] as f32),
            ("bias", _) => vec![0.0; n],
            _ => return param, // GroupNorm gamma/beta keep their defaults
        };
        let tensor = Tensor::<D>::from_data(TensorData::new(values, dims), &self.device)
            .set_require_grad(self.device.is_autodiff());
        Param::initialized(param.id, tensor)
    }
}

fn uniform(rng: &mut impl Rng, n: usize, fan_in: f32) -> Vec<f32> {
    let bound = 1.0 / fan_in.sqrt();
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

fn normal(rng: &mut impl Rng) -> f32 {
    let (u1, u2): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}
