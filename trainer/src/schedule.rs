//! Noise schedules in EDM sigma space (Karras et al. 2022), computed in f64.

/// `sigma_i = (smax^(1/rho) + i/(G-1) (smin^(1/rho) - smax^(1/rho)))^rho`, `i = 0..G`,
/// descending from `sigma_max` to `sigma_min`.
pub fn polynomial_sigmas(points: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    assert!(points >= 2, "a grid needs at least 2 points");
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    let last = (points - 1) as f64;
    (0..points)
        .map(|i| (a + i as f64 / last * (b - a)).powf(rho))
        .collect()
}

/// The EDM defaults: sigma from 80 down to 0.002, rho = 7.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridSpec {
    pub points: usize,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
}

impl GridSpec {
    pub fn edm(points: usize) -> Self {
        GridSpec {
            points,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
        }
    }

    pub fn sigmas(&self) -> Vec<f64> {
        polynomial_sigmas(self.points, self.sigma_min, self.sigma_max, self.rho)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_monotone() {
        let s = polynomial_sigmas(49, 0.002, 80.0, 7.0);
        assert_eq!(s.len(), 49);
        assert!((s[0] - 80.0).abs() < 1e-12 && (s[48] - 0.002).abs() < 1e-15);
        assert!(s.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn every_rth_point_is_the_coarser_polynomial_grid() {
        // What lets one fine store serve every student with K (N-1) | G - 1.
        let fine = polynomial_sigmas(49, 0.002, 80.0, 7.0);
        for r in [2, 3, 4, 6, 8, 12, 16, 24, 48] {
            let coarse = polynomial_sigmas(48 / r + 1, 0.002, 80.0, 7.0);
            let sub: Vec<f64> = fine.iter().step_by(r).copied().collect();
            for (a, b) in sub.iter().zip(&coarse) {
                assert!((a - b).abs() <= 1e-12 * b.max(1.0), "r={r}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn rho_one_is_linear() {
        let s = polynomial_sigmas(5, 1.0, 5.0, 1.0);
        assert_eq!(s, vec![5.0, 4.0, 3.0, 2.0, 1.0]);
    }
}
