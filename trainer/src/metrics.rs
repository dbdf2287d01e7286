//! Sample-quality metrics: RMSE/PSNR against the teacher, and the Frechet distance between
//! Gaussian fits of feature sets (computed in f64 with nalgebra).

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Root mean squared error over all values.
pub fn rmse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    mse.sqrt()
}

/// PSNR in dB for data in [-1, 1] (peak-to-peak 2): `10 log10(2^2 / mse)`.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let r = rmse(a, b);
    10.0 * (4.0 / (r * r)).log10()
}

/// Mean and covariance (unbiased) of `n` feature vectors of length `d`, row-major.
#[derive(Debug, Clone)]
pub struct Gaussian {
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
}

impl Gaussian {
    /// From a mean and a row-major covariance (as stored).
    pub fn from_parts(mean: Vec<f64>, cov: Vec<f64>) -> Gaussian {
        let d = mean.len();
        Gaussian {
            mean: DVector::from_vec(mean),
            cov: DMatrix::from_row_slice(d, d, &cov),
        }
    }

    /// The mean and the row-major covariance.
    pub fn parts(&self) -> (Vec<f64>, Vec<f64>) {
        (
            self.mean.iter().copied().collect(),
            self.cov.transpose().iter().copied().collect(),
        )
    }

    pub fn fit(features: &[f32], d: usize) -> Gaussian {
        let n = features.len() / d;
        assert!(n >= 2, "need at least two feature vectors");
        let x = DMatrix::from_row_slice(
            n,
            d,
            &features.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        let mean = x.row_mean().transpose();
        let centered = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
        let cov = centered.transpose() * &centered / (n as f64 - 1.0);
        Gaussian { mean, cov }
    }
}

/// The symmetric PSD square root `V diag(sqrt(max(l, 0))) V^T`.
pub fn sqrtm_psd(a: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (a + a.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// `|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`, with `Tr (S1 S2)^(1/2)` computed as the
/// trace of the PSD root of `S1^(1/2) S2 S1^(1/2)` (same eigenvalues, but symmetric).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let root1 = sqrtm_psd(&a.cov);
    let middle = &root1 * &b.cov * &root1;
    let eig = SymmetricEigen::new((&middle + middle.transpose()) * 0.5);
    let tr_sqrt: f64 = eig.eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
    let diff = &a.mean - &b.mean;
    (diff.dot(&diff) + a.cov.trace() + b.cov.trace() - 2.0 * tr_sqrt).max(0.0)
}

/// Entropy (nats) of the predicted-class histogram, and the share of classes predicted for
/// at least half their fair share of samples.
pub fn label_entropy_coverage(predicted: &[usize], classes: usize) -> (f64, f64) {
    let mut counts = vec![0usize; classes];
    predicted
        .iter()
        .for_each(|&c| counts[c.min(classes - 1)] += 1);
    let n = predicted.len().max(1) as f64;
    let entropy = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum();
    let fair = n / classes as f64;
    let covered =
        counts.iter().filter(|&&c| c as f64 >= 0.5 * fair).count() as f64 / classes as f64;
    (entropy, covered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_spd(d: usize, seed: u64) -> DMatrix<f64> {
        let mut next = crate::rng::centered_uniform(seed);
        let m = DMatrix::from_fn(d, d, |_, _| next());
        &m * m.transpose() + DMatrix::identity(d, d) * 0.1
    }

    /// Denman-Beavers iteration: an independent reference for the square root.
    fn sqrtm_reference(a: &DMatrix<f64>) -> DMatrix<f64> {
        let (mut y, mut z) = (a.clone(), DMatrix::identity(a.nrows(), a.ncols()));
        for _ in 0..60 {
            let y_inv = y.clone().try_inverse().unwrap();
            let z_inv = z.clone().try_inverse().unwrap();
            (y, z) = ((&y + z_inv) * 0.5, (&z + y_inv) * 0.5);
        }
        y
    }

    #[test]
    fn sqrtm_matches_denman_beavers_on_random_spd() {
        for (d, seed) in [(2, 1), (5, 2), (12, 3), (30, 4)] {
            let a = random_spd(d, seed);
            let (ours, reference) = (sqrtm_psd(&a), sqrtm_reference(&a));
            let err = (&ours - &reference).abs().max();
            assert!(err < 1e-9 * a.abs().max().max(1.0), "d={d}: {err}");
            assert!((&ours * &ours - &a).abs().max() < 1e-9 * a.abs().max());
        }
    }

    #[test]
    fn frechet_distance_closed_forms() {
        // Same Gaussian: 0. Shifted mean: |shift|^2. Scaled isotropic covariances s1 I, s2 I:
        // d (sqrt(s1) - sqrt(s2))^2.
        let d = 4;
        let g = |mean: f64, var: f64| Gaussian {
            mean: DVector::from_element(d, mean),
            cov: DMatrix::identity(d, d) * var,
        };
        assert!(frechet_distance(&g(0.0, 2.0), &g(0.0, 2.0)).abs() < 1e-12);
        assert!((frechet_distance(&g(0.0, 1.0), &g(0.5, 1.0)) - 4.0 * 0.25).abs() < 1e-12);
        let expect = d as f64 * (1f64.sqrt() - 4f64.sqrt()).powi(2);
        assert!((frechet_distance(&g(0.0, 1.0), &g(0.0, 4.0)) - expect).abs() < 1e-12);
        // Symmetric for general covariances.
        let (a, b) = (random_spd(6, 7), random_spd(6, 8));
        let ga = Gaussian {
            mean: DVector::zeros(6),
            cov: a,
        };
        let gb = Gaussian {
            mean: DVector::from_element(6, 0.3),
            cov: b,
        };
        assert!((frechet_distance(&ga, &gb) - frechet_distance(&gb, &ga)).abs() < 1e-9);
    }

    #[test]
    fn psnr_and_rmse_by_hand() {
        let a = [0.0f32, 0.5, -1.0, 1.0];
        let b = [0.0f32, 0.0, -1.0, 0.0];
        // Squared errors 0, 0.25, 0, 1: mse 0.3125.
        assert!((rmse(&a, &b) - 0.3125f64.sqrt()).abs() < 1e-12);
        assert!((psnr(&a, &b) - 10.0 * (4.0 / 0.3125f64).log10()).abs() < 1e-9);
        assert!((psnr(&[0.1; 8], &[0.0; 8]) - 26.0206).abs() < 1e-3);
    }

    #[test]
    fn label_entropy_and_coverage() {
        let (h, c) = label_entropy_coverage(&[0, 1, 2, 3], 4);
        assert!((h - 4f64.ln()).abs() < 1e-12 && c == 1.0);
        let (h, c) = label_entropy_coverage(&[2; 10], 4);
        assert!(h.abs() < 1e-12 && c == 0.25);
    }
}
