//! Synthetic trajectories with a closed form, for tests and benchmarks that should not wait for
//! a real teacher.
//!
//! Data are Gaussian with a diagonal covariance, `x0 ~ N(mu, diag(s^2))`. The EDM denoiser is
//! then `D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu)` and the probability-flow ODE
//! `dx/dsigma = (x - D) / sigma` has the exact solution
//! `x(sigma) = mu + (x(sigma_0) - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_0^2)`.

use std::path::Path;

use crate::error::Result;
use crate::grid::Grid;
use crate::manifest::{Dims, Dtype, Provenance, SeedPolicy};
use crate::reader::Dataset;
use crate::seeds;
use crate::writer::{DatasetSpec, DatasetWriter, ShardData, WriteOptions};

/// A diagonal Gaussian over `dim` values with a fixed, varied mean and spread.
#[derive(Debug, Clone)]
pub struct GaussianData {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl GaussianData {
    pub fn for_dim(dim: usize) -> Self {
        GaussianData {
            mean: (0..dim).map(|j| 0.5 * (j as f64 * 0.37).sin()).collect(),
            std: (0..dim)
                .map(|j| 0.05 + 0.45 * ((j * 7 % 10) as f64 / 9.0))
                .collect(),
        }
    }

    /// Exact ODE state at `sigma`, starting from `x0` at `sigma0`.
    pub fn ode_state(&self, x0: &[f32], sigma0: f64, sigma: f64, out: &mut [f32]) {
        for j in 0..out.len() {
            let (mu, s2) = (self.mean[j], self.std[j] * self.std[j]);
            let scale = ((s2 + sigma * sigma) / (s2 + sigma0 * sigma0)).sqrt();
            out[j] = (mu + (x0[j] as f64 - mu) * scale) as f32;
        }
    }

    /// Exact posterior mean E[x0 | x_sigma = x].
    pub fn denoise(&self, x: &[f32], sigma: f64, out: &mut [f32]) {
        for j in 0..out.len() {
            let (mu, s2) = (self.mean[j], self.std[j] * self.std[j]);
            out[j] = (mu + s2 / (s2 + sigma * sigma) * (x[j] as f64 - mu)) as f32;
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub name: String,
    pub dims: Dims,
    pub count: u64,
    /// Descending sigma grid, one per step.
    pub sigmas: Vec<f64>,
    pub rows_per_shard: u32,
    pub dtype: Dtype,
    pub base_seed: u64,
    /// Labels are `traj_id % classes`; 0 stores no labels.
    pub classes: u32,
    pub with_denoised: bool,
}

impl SyntheticSpec {
    pub fn dataset_spec(&self) -> DatasetSpec {
        DatasetSpec {
            name: self.name.clone(),
            dims: self.dims,
            dtype: self.dtype,
            has_denoised: self.with_denoised,
            grid: Grid::explicit(self.sigmas.clone()),
            teacher: Provenance {
                kind: "synthetic-gaussian".into(),
                checkpoint_hash: None,
                solver: "exact".into(),
                order: 0,
                params: Default::default(),
            },
            seeds: SeedPolicy {
                base_seed: self.base_seed,
                scheme: seeds::SCHEME.into(),
            },
            rows_per_shard: self.rows_per_shard,
            planned_count: self.count,
            pd: None,
        }
    }
}

/// The shard's trajectories, laid out for [`DatasetWriter::write_shard`].
pub struct SyntheticShard {
    pub index: u32,
    pub seeds: Vec<u64>,
    pub labels: Option<Vec<i32>>,
    pub states: Vec<f32>,
    pub denoised: Option<Vec<f32>>,
}

impl SyntheticShard {
    pub fn data(&self) -> ShardData<'_> {
        ShardData {
            index: self.index,
            seeds: &self.seeds,
            labels: self.labels.as_deref(),
            states: &self.states,
            denoised: self.denoised.as_deref(),
        }
    }
}

/// Computes shard `index` of the dataset `spec` describes.
pub fn gaussian_shard(spec: &SyntheticSpec, index: u32) -> SyntheticShard {
    let data = GaussianData::for_dim(spec.dims.len());
    let dim = spec.dims.len();
    let start = index as u64 * spec.rows_per_shard as u64;
    let ids: Vec<u64> = (start..(start + spec.rows_per_shard as u64).min(spec.count)).collect();
    let rows = ids.len();
    let steps = spec.sigmas.len();
    let seeds: Vec<u64> = ids
        .iter()
        .map(|&i| seeds::trajectory_seed(spec.base_seed, i))
        .collect();
    let mut states = vec![0f32; steps * rows * dim];
    let mut denoised = spec.with_denoised.then(|| vec![0f32; steps * rows * dim]);
    let sigma0 = spec.sigmas[0];
    for (row, &seed) in seeds.iter().enumerate() {
        let mut x0 = seeds::standard_normal(seed, dim);
        x0.iter_mut().for_each(|v| *v *= sigma0 as f32);
        for (step, &sigma) in spec.sigmas.iter().enumerate() {
            let at = (step * rows + row) * dim..(step * rows + row + 1) * dim;
            data.ode_state(&x0, sigma0, sigma, &mut states[at.clone()]);
            if let Some(d) = denoised.as_mut() {
                let (x, d) = (&states[at.clone()], &mut d[at]);
                data.denoise(x, sigma.max(1e-12), d);
            }
        }
    }
    let labels = (spec.classes > 0).then(|| {
        ids.iter()
            .map(|&i| (i % spec.classes as u64) as i32)
            .collect()
    });
    SyntheticShard {
        index,
        seeds,
        labels,
        states,
        denoised,
    }
}

/// Writes the whole synthetic dataset into `dir` and opens it.
pub fn write_gaussian(dir: &Path, spec: &SyntheticSpec, options: WriteOptions) -> Result<Dataset> {
    let mut writer = DatasetWriter::create(dir, spec.dataset_spec(), options)?;
    for index in writer.manifest().missing_shards() {
        writer.write_shard(&gaussian_shard(spec, index).data())?;
    }
    Dataset::open(dir)
}
