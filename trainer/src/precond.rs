//! EDM preconditioning (Karras et al. 2022, Table 1), the one place the c_* terms live.
//!
//! `D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`: the network F sees unit-variance inputs
//! and predicts a unit-variance target at every noise level.

use burn::prelude::*;

/// Standard deviation of the data the network is tuned for ([-1, 1] images: 0.5).
pub const SIGMA_DATA: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdmPrecond {
    pub sigma_data: f64,
}

impl Default for EdmPrecond {
    fn default() -> Self {
        EdmPrecond {
            sigma_data: SIGMA_DATA,
        }
    }
}

/// The four scalings for a batch of noise levels, each `[B, 1, 1, 1]` (c_noise: `[B]`).
#[derive(Debug, Clone)]
pub struct Scalings {
    pub c_skip: Tensor<4>,
    pub c_out: Tensor<4>,
    pub c_in: Tensor<4>,
    pub c_noise: Tensor<1>,
}

impl EdmPrecond {
    /// Scalings for per-sample noise levels `sigma: [B]`.
    pub fn scalings(&self, sigma: Tensor<1>) -> Scalings {
        let [b] = sigma.dims();
        let sd2 = self.sigma_data * self.sigma_data;
        let s2 = sigma.clone().square();
        let norm = (s2.clone() + sd2).sqrt();
        let col = |t: Tensor<1>| t.reshape([b, 1, 1, 1]);
        Scalings {
            c_skip: col((s2 + sd2).recip() * sd2),
            c_out: col(sigma.clone() * self.sigma_data / norm.clone()),
            c_in: col(norm.recip()),
            c_noise: sigma.log() * 0.25,
        }
    }

    /// EDM's loss weight `lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2`, `[B, 1, 1, 1]`.
    pub fn loss_weight(&self, sigma: Tensor<1>) -> Tensor<4> {
        let [b] = sigma.dims();
        let sd2 = self.sigma_data * self.sigma_data;
        let s2 = sigma.square();
        ((s2.clone() + sd2) / (s2 * sd2)).reshape([b, 1, 1, 1])
    }
}

/// A batch-wide sigma as the `[B]` tensor the scalings take.
pub fn sigma_batch(sigma: f64, batch: usize, device: &Device) -> Tensor<1> {
    Tensor::full([batch], sigma, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalings_match_the_edm_table() {
        let dev = crate::backend::cpu();
        let p = EdmPrecond::default();
        let s = p.scalings(Tensor::from_floats([0.002, 0.5, 80.0], &dev));
        let v = |t: Tensor<4>| t.try_into_vec_as::<f32>().unwrap();
        for (i, sigma) in [0.002f64, 0.5, 80.0].iter().enumerate() {
            let n = (sigma * sigma + 0.25).sqrt();
            assert!((v(s.c_skip.clone())[i] as f64 - 0.25 / (n * n)).abs() < 1e-6);
            assert!((v(s.c_out.clone())[i] as f64 - sigma * 0.5 / n).abs() < 1e-6);
            assert!((v(s.c_in.clone())[i] as f64 - 1.0 / n).abs() < 1e-6 / n);
            let c_noise = s.c_noise.clone().try_into_vec_as::<f32>().unwrap()[i] as f64;
            assert!((c_noise - sigma.ln() / 4.0).abs() < 1e-6);
        }
        // D = c_skip x + c_out F must give the clean target when F is the ideal output: at
        // sigma = sd, c_skip = 1/2 and c_out = sd / sqrt(2).
        let half = p.scalings(Tensor::from_floats([0.5], &dev));
        assert!((v(half.c_skip)[0] - 0.5).abs() < 1e-7);
        assert!((v(half.c_out)[0] as f64 - 0.5 / 2f64.sqrt()).abs() < 1e-7);
    }
}
