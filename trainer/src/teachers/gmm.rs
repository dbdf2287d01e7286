//! Gaussian-mixture teachers with the exact posterior-mean denoiser.
//!
//! Each component `c` is `N(mu_c, Sigma_c)` with `Sigma_c = U diag(lambda) U^T + rest`, where
//! `U` holds the top PCA directions and `rest` is the variance left over: isotropic (one value
//! repeated) when `U` is not empty, per-pixel when it is (a diagonal Gaussian). Under noise,
//! `Sigma_c + sigma^2 I` keeps the same eigenbasis, so the posterior mean
//! `E[x0 | x] = sum_c p(c | x) (mu_c + Sigma_c (Sigma_c + sigma^2 I)^{-1} (x - mu_c))`
//! costs two thin matrix products per component, with no matrix inverse.
//!
//! One component is the `gaussian` teacher (its ODE has the closed form in
//! [`GmmParams::exact_ode_state`]); one component per class is the `gmm` teacher.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::data::ImageSet;
use crate::solvers::Denoiser;

/// Variance floor: constant pixels (Fashion-MNIST's borders) would otherwise give a singular
/// covariance and an infinitely sharp posterior.
pub const MIN_VARIANCE: f64 = 1e-4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub weight: f64,
    pub mean: Vec<f32>,
    /// `D x r`, row-major, orthonormal columns.
    pub basis: Vec<f32>,
    pub lambda: Vec<f32>,
    /// Per-pixel variance outside the basis (`D` values; all equal when `r > 0`).
    pub rest: Vec<f32>,
}

impl Component {
    pub fn rank(&self) -> usize {
        self.lambda.len()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GmmParams {
    /// `[C, H, W]`.
    pub dims: [usize; 3],
    pub components: Vec<Component>,
    /// With labels, component `label` alone is the prior (class-conditional generation).
    pub conditional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitConfig {
    /// One component per class (`gmm`) or one for all data (`gaussian`).
    pub per_class: bool,
    /// PCA directions per component; 0 fits a diagonal (per-pixel) covariance.
    pub rank: usize,
}

impl GmmParams {
    pub fn dim(&self) -> usize {
        self.dims.iter().product()
    }

    /// Fits means and low-rank-plus-rest covariances to `set` (f64 throughout).
    pub fn fit(set: &ImageSet, config: FitConfig, conditional: bool) -> GmmParams {
        let groups: Vec<Vec<usize>> = if config.per_class {
            (0..set.classes as i32)
                .map(|c| (0..set.len()).filter(|&i| set.labels[i] == c).collect())
                .collect()
        } else {
            vec![(0..set.len()).collect()]
        };
        let total = set.len() as f64;
        let components = groups
            .iter()
            .filter(|g| g.len() > 1)
            .map(|g| fit_component(set, g, config.rank, g.len() as f64 / total))
            .collect();
        GmmParams {
            dims: [set.channels, set.height, set.width],
            components,
            conditional: conditional && config.per_class,
        }
    }

    /// xxh3 of every parameter's bytes, in order: the teacher's checkpoint hash.
    pub fn content_hash(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for c in &self.components {
            h.update(&c.weight.to_le_bytes());
            for v in [&c.mean, &c.basis, &c.lambda, &c.rest] {
                v.iter().for_each(|x| h.update(&x.to_le_bytes()));
            }
        }
        format!("{:016x}", h.digest())
    }

    /// Uploads the parameters to `device` as a denoiser.
    pub fn denoiser(&self, device: &Device) -> GmmDenoiser {
        let d = self.dim();
        let components = self
            .components
            .iter()
            .map(|c| DeviceComponent {
                log_weight: c.weight.ln(),
                mean: Tensor::from_data(TensorData::new(c.mean.clone(), [1, d]), device),
                basis: (c.rank() > 0).then(|| {
                    Tensor::from_data(TensorData::new(c.basis.clone(), [d, c.rank()]), device)
                }),
                lambda: c.lambda.iter().map(|&v| v as f64).collect(),
                rest: Tensor::from_data(TensorData::new(c.rest.clone(), [1, d]), device),
                rest_host: c.rest.iter().map(|&v| v as f64).collect(),
            })
            .collect();
        GmmDenoiser {
            components,
            conditional: self.conditional,
            device: device.clone(),
        }
    }

    /// For one component: the exact probability-flow ODE state at `sigma` from `x0` at
    /// `sigma0` (`x - mu` scales by `sqrt((v + sigma^2) / (v + sigma0^2))` along each
    /// eigendirection of variance `v`). Host f64; the reference for solver tests.
    pub fn exact_ode_state(&self, x0: &[f32], sigma0: f64, sigma: f64) -> Vec<f32> {
        assert_eq!(
            self.components.len(),
            1,
            "closed form holds for one Gaussian"
        );
        let c = &self.components[0];
        let (d, r) = (self.dim(), c.rank());
        let scale = |v: f64| ((v + sigma * sigma) / (v + sigma0 * sigma0)).sqrt();
        let v: Vec<f64> = (0..d).map(|j| x0[j] as f64 - c.mean[j] as f64).collect();
        let mut out: Vec<f64> = (0..d).map(|j| scale(c.rest[j] as f64) * v[j]).collect();
        for i in 0..r {
            let p: f64 = (0..d).map(|j| c.basis[j * r + i] as f64 * v[j]).sum();
            let coef = p * (scale(c.lambda[i] as f64) - scale(c.rest[0] as f64));
            (0..d).for_each(|j| out[j] += coef * c.basis[j * r + i] as f64);
        }
        (0..d).map(|j| (c.mean[j] as f64 + out[j]) as f32).collect()
    }
}

fn fit_component(set: &ImageSet, rows: &[usize], rank: usize, weight: f64) -> Component {
    let d = set.dim();
    let n = rows.len() as f64;
    let mut mean = vec![0f64; d];
    for &i in rows {
        set.image(i)
            .iter()
            .zip(mean.iter_mut())
            .for_each(|(&x, m)| *m += x as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let centered = DMatrix::from_fn(rows.len(), d, |r, j| set.image(rows[r])[j] as f64 - mean[j]);
    let cov = (centered.transpose() * &centered) / (n - 1.0).max(1.0);
    let mean32 = mean.iter().map(|&m| m as f32).collect();
    if rank == 0 {
        let rest = (0..d)
            .map(|j| cov[(j, j)].max(MIN_VARIANCE) as f32)
            .collect();
        return Component {
            weight,
            mean: mean32,
            basis: vec![],
            lambda: vec![],
            rest,
        };
    }
    let r = rank.min(d - 1);
    let (values, vectors) = top_eigenpairs(&cov, r);
    let rest = ((cov.trace() - values.iter().sum::<f64>()) / (d - r) as f64).max(MIN_VARIANCE);
    let mut basis = vec![0f32; d * r];
    for col in 0..r {
        for j in 0..d {
            basis[j * r + col] = vectors[(j, col)] as f32;
        }
    }
    Component {
        weight,
        mean: mean32,
        basis,
        lambda: values.iter().map(|&v| v.max(rest) as f32).collect(),
        rest: vec![rest as f32; d],
    }
}

/// The `r` largest eigenpairs of the symmetric PSD matrix `a` (descending), by randomized
/// subspace iteration (Halko, Martinsson, Tropp 2011): a seeded Gaussian sketch, a few power
/// iterations with re-orthonormalisation, then an exact eigendecomposition of the small
/// projected matrix. Orders of magnitude cheaper than a full eigendecomposition of a 784x784
/// covariance, and deterministic.
pub fn top_eigenpairs(a: &DMatrix<f64>, r: usize) -> (Vec<f64>, DMatrix<f64>) {
    let d = a.nrows();
    let k = (r + 16).min(d);
    let mut next = crate::rng::centered_uniform(0x5EED);
    let mut q = DMatrix::from_fn(d, k, |_, _| next()).qr().q();
    for _ in 0..8 {
        q = (a * &q).qr().q();
    }
    let small = q.transpose() * a * &q;
    let eig = SymmetricEigen::new((&small + small.transpose()) * 0.5);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let values = order[..r]
        .iter()
        .map(|&i| eig.eigenvalues[i].max(0.0))
        .collect();
    let rotated = &q * &eig.eigenvectors;
    let vectors = DMatrix::from_fn(d, r, |row, col| rotated[(row, order[col])]);
    (values, vectors)
}

struct DeviceComponent {
    log_weight: f64,
    mean: Tensor<2>,
    basis: Option<Tensor<2>>,
    lambda: Vec<f64>,
    rest: Tensor<2>,
    rest_host: Vec<f64>,
}

/// The mixture's posterior mean on a device.
pub struct GmmDenoiser {
    components: Vec<DeviceComponent>,
    conditional: bool,
    device: Device,
}

impl GmmDenoiser {
    pub fn components(&self) -> usize {
        self.components.len()
    }

    /// Per-component (log-likelihood, posterior mean given the component) of `x: [B, D]`.
    fn component_terms(
        &self,
        c: &DeviceComponent,
        x: &Tensor<2>,
        s2: f64,
    ) -> (Tensor<2>, Tensor<2>) {
        let v = x.clone() - c.mean.clone();
        let rest_noisy = c.rest.clone() + s2;
        let mut maha = (v.clone().square() / rest_noisy.clone()).sum_dim(1);
        let mut logdet: f64 = c.rest_host.iter().map(|r| (r + s2).ln()).sum();
        let mut mean = c.mean.clone() + v.clone() * c.rest.clone() / rest_noisy;
        if let Some(basis) = &c.basis {
            let tau = c.rest_host[0];
            let r = c.lambda.len();
            let row = |f: &dyn Fn(f64) -> f64| {
                let vals: Vec<f32> = c.lambda.iter().map(|&l| f(l) as f32).collect();
                Tensor::<2>::from_data(TensorData::new(vals, [1, r]), &self.device)
            };
            let p = v.matmul(basis.clone());
            let inv = row(&|l| 1.0 / (l + s2) - 1.0 / (tau + s2));
            maha = maha + (p.clone().square() * inv).sum_dim(1);
            logdet += c
                .lambda
                .iter()
                .map(|l| (l + s2).ln() - (tau + s2).ln())
                .sum::<f64>();
            let shrink = row(&|l| l / (l + s2) - tau / (tau + s2));
            mean = mean + (p * shrink).matmul(basis.clone().transpose());
        }
        let loglik = (maha + logdet) * -0.5 + c.log_weight;
        (loglik, mean)
    }
}

impl Denoiser for GmmDenoiser {
    fn denoise(&self, x: Tensor<4>, sigma: f64, labels: Option<&Tensor<1, Int>>) -> Tensor<4> {
        let [b, ch, h, w] = x.dims();
        let flat: Tensor<2> = x.reshape([b, ch * h * w]);
        let s2 = sigma * sigma;
        let (logliks, means): (Vec<_>, Vec<_>) = self
            .components
            .iter()
            .map(|c| self.component_terms(c, &flat, s2))
            .unzip();
        let posterior = match labels {
            Some(l) if self.conditional => {
                // The class label picks its component outright.
                let k = self.components.len();
                let classes = Tensor::<1, Int>::arange(0..k as i64, &self.device).reshape([1, k]);
                l.clone().reshape([b, 1]).equal(classes).float()
            }
            _ => softmax(Tensor::cat(logliks, 1), 1),
        };
        let mut out = Tensor::<2>::zeros([b, ch * h * w], &self.device);
        for (k, mean) in means.into_iter().enumerate() {
            out = out + mean * posterior.clone().narrow(1, k, 1);
        }
        out.reshape([b, ch, h, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomized_eigenpairs_match_the_full_decomposition() {
        // A covariance with a decaying spectrum, like image data's.
        let d = 60;
        let mut next = crate::rng::centered_uniform(1);
        let basis = DMatrix::from_fn(d, d, |_, _| next()).qr().q();
        let spectrum = DMatrix::from_diagonal(&nalgebra::DVector::from_fn(d, |i, _| {
            5.0 * 0.8f64.powi(i as i32)
        }));
        let a = &basis * spectrum * basis.transpose();
        let (values, vectors) = top_eigenpairs(&a, 8);
        for (i, v) in values.iter().enumerate() {
            let expect = 5.0 * 0.8f64.powi(i as i32);
            assert!(
                (v - expect).abs() < 1e-8 * expect,
                "eigenvalue {i}: {v} vs {expect}"
            );
            // Same direction as the true eigenvector (up to sign), and A v = lambda v.
            let dot = vectors.column(i).dot(&basis.column(i)).abs();
            assert!((dot - 1.0).abs() < 1e-6, "eigenvector {i}: |cos| = {dot}");
        }
    }
}
