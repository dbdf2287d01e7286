//! A preconditioned network with K output branches: the U-Net teacher (K = 1) and the
//! B-DENSE student (K branches on one shared backbone) are the same module.

use burn::prelude::*;

use crate::precond::{EdmPrecond, sigma_batch};
use crate::solvers::Denoiser;
use crate::unet::{UNet, UNetConfig};

#[derive(Module, Debug)]
pub struct EdmNet {
    pub net: UNet,
    /// Data channels C; the net emits `branches x C`.
    channels: usize,
    sigma_data: f64,
}

impl EdmNet {
    /// A fresh net for `config` (whose `out_channels` must be `branches x channels`).
    pub fn new(config: &UNetConfig, channels: usize, device: &Device, seed: u64) -> EdmNet {
        assert_eq!(
            config.out_channels % channels,
            0,
            "output channels are branches x data channels"
        );
        EdmNet {
            net: config.init(device, seed),
            channels,
            sigma_data: EdmPrecond::default().sigma_data,
        }
    }

    pub fn from_net(net: UNet, channels: usize) -> EdmNet {
        EdmNet {
            net,
            channels,
            sigma_data: EdmPrecond::default().sigma_data,
        }
    }

    pub fn branches(&self) -> usize {
        self.net.out_channels() / self.channels
    }

    fn precond(&self) -> EdmPrecond {
        EdmPrecond {
            sigma_data: self.sigma_data,
        }
    }

    /// Every branch's `D_k(x; sigma) = c_skip x + c_out F_k(c_in x; c_noise)`.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `sigma`: `[B]`
    /// - returns K tensors `[B, C, H, W]`, branch 1 first, the endpoint branch last
    pub fn denoise_branches(
        &self,
        x: Tensor<4>,
        sigma: Tensor<1>,
        labels: Option<&Tensor<1, Int>>,
    ) -> Vec<Tensor<4>> {
        let s = self.precond().scalings(sigma);
        let f = self.net.forward(x.clone() * s.c_in, s.c_noise, labels);
        let skip = x * s.c_skip;
        f.chunk(self.branches(), 1)
            .into_iter()
            .map(|fk| skip.clone() + fk * s.c_out.clone())
            .collect()
    }

    /// The endpoint branch only: what inference uses.
    pub fn denoise_endpoint(
        &self,
        x: Tensor<4>,
        sigma: Tensor<1>,
        labels: Option<&Tensor<1, Int>>,
    ) -> Tensor<4> {
        self.denoise_branches(x, sigma, labels)
            .pop()
            .expect("at least one branch")
    }

    /// This net's output layer repeated into `k` branches (student init from a teacher).
    pub fn widen(self, k: usize) -> EdmNet {
        EdmNet {
            net: self.net.widen_output(k),
            channels: self.channels,
            sigma_data: self.sigma_data,
        }
    }

    /// The endpoint branch alone, as a K = 1 net (what a distilled student is when it
    /// teaches the next round).
    pub fn endpoint_net(self) -> EdmNet {
        let k = self.branches();
        EdmNet {
            net: self.net.endpoint_output(k),
            channels: self.channels,
            sigma_data: self.sigma_data,
        }
    }
}

impl Denoiser for EdmNet {
    fn denoise(&self, x: Tensor<4>, sigma: f64, labels: Option<&Tensor<1, Int>>) -> Tensor<4> {
        let sigma = sigma_batch(sigma, x.dims()[0], &x.device());
        self.denoise_endpoint(x, sigma, labels)
    }
}
