//! The teacher's sigma grid: the one definition of the EDM polynomial schedule, and the form the
//! manifest records it in (a store's steps are indexed by it, so it is a store-level fact).

use serde::{Deserialize, Serialize};

/// `sigma_i = (smax^(1/rho) + i/(G-1) (smin^(1/rho) - smax^(1/rho)))^rho`, `i = 0..G`,
/// descending from `sigma_max` to `sigma_min` (Karras et al. 2022, eq. 5), computed in f64.
pub fn polynomial_sigmas(points: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    assert!(points >= 2, "a grid needs at least 2 points");
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    let last = (points - 1) as f64;
    (0..points)
        .map(|i| (a + i as f64 / last * (b - a)).powf(rho))
        .collect()
}

/// A sigma grid: one sigma per stored step, descending, with the parameters it was built from.
/// The manifest's `grid` field is this type, so its JSON form is the on-disk format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// `sigmas[step]`; the last entry is 0 when the solver appends the sigma = 0 state.
    pub sigmas: Vec<f64>,
    /// How the grid was built ("polynomial", or "explicit" for a given list), with its parameters.
    pub kind: String,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    /// True when the final sigma = 0 state is stored as the last step.
    pub appends_zero: bool,
}

impl Grid {
    /// The polynomial grid of `points` sigmas from `sigma_max` down to `sigma_min`.
    pub fn polynomial(points: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Grid {
        Grid {
            sigmas: polynomial_sigmas(points, sigma_min, sigma_max, rho),
            kind: "polynomial".into(),
            sigma_min,
            sigma_max,
            rho,
            appends_zero: false,
        }
    }

    /// EDM's defaults: sigma from 80 down to 0.002, rho = 7.
    pub fn edm(points: usize) -> Grid {
        Grid::polynomial(points, 0.002, 80.0, 7.0)
    }

    /// A grid given as a list (e.g. a closed-form test teacher's); rho 0 says "no polynomial".
    pub fn explicit(sigmas: Vec<f64>) -> Grid {
        Grid {
            kind: "explicit".into(),
            sigma_min: *sigmas.last().expect("non-empty grid"),
            sigma_max: sigmas[0],
            rho: 0.0,
            appends_zero: sigmas.last() == Some(&0.0),
            sigmas,
        }
    }

    /// The same grid with the solver's final sigma = 0 state stored as one more step.
    pub fn with_zero(mut self) -> Grid {
        if !self.appends_zero {
            self.sigmas.push(0.0);
            self.appends_zero = true;
        }
        self
    }

    /// Number of points on the sigma grid proper (without an appended zero).
    pub fn points(&self) -> usize {
        self.sigmas.len() - usize::from(self.appends_zero)
    }

    /// How `other` differs from this grid beyond float noise, if it does. A manifest's floats
    /// come back from JSON within an ulp or so (serde_json's default parser is not exact), so
    /// equal grids are compared with a relative tolerance far below any real change.
    pub fn difference(&self, other: &Grid) -> Option<String> {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
        if self.appends_zero != other.appends_zero {
            return Some("one stores the sigma = 0 state, the other does not".into());
        }
        for (what, a, b) in [
            ("sigma_min", self.sigma_min, other.sigma_min),
            ("sigma_max", self.sigma_max, other.sigma_max),
            ("rho", self.rho, other.rho),
        ] {
            if !close(a, b) {
                return Some(format!("{what}: dataset has {a}, arguments give {b}"));
            }
        }
        let step = self
            .sigmas
            .iter()
            .zip(&other.sigmas)
            .position(|(&a, &b)| !close(a, b))?;
        Some(format!(
            "step {step}: dataset has sigma {}, arguments give {}",
            self.sigmas[step], other.sigmas[step]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_monotone() {
        let s = Grid::edm(49).sigmas;
        assert_eq!(s.len(), 49);
        assert!((s[0] - 80.0).abs() < 1e-12 && (s[48] - 0.002).abs() < 1e-15);
        assert!(s.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn every_rth_point_is_the_coarser_polynomial_grid() {
        // What lets one fine store serve every student with K (N-1) | G - 1.
        let fine = Grid::edm(49).sigmas;
        for r in [2, 3, 4, 6, 8, 12, 16, 24, 48] {
            let coarse = Grid::edm(48 / r + 1).sigmas;
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

    #[test]
    fn appended_zero_is_a_step_but_not_a_point() {
        let g = Grid::edm(9).with_zero();
        assert_eq!((g.sigmas.len(), g.points()), (10, 9));
        assert_eq!(g.sigmas[9], 0.0);
        assert_eq!(g.clone().with_zero(), g);
    }

    #[test]
    fn differences_are_named() {
        let g = Grid::edm(9);
        assert_eq!(g.difference(&g.clone()), None);
        let other = Grid::polynomial(9, 0.002, 80.0, 5.0);
        assert!(g.difference(&other).unwrap().starts_with("rho"));
        let zero = g.clone().with_zero();
        assert!(g.difference(&zero).unwrap().contains("sigma = 0"));
    }
}
