//! Which stored steps a student with N timestamps and K branches per interval uses.
//!
//! A polynomial grid of G points sampled every r-th point is the polynomial grid of
//! (G-1)/r + 1 points, so a store on a fine grid serves every student with
//! `K (N-1) | G-1`: with stride `r = (G-1) / (K (N-1))`, student timestamp `i` is step
//! `i K r` and branch `k` of interval `i` targets step `(i K + k) r`, `k = 1..=K` (the last
//! one is the next timestamp).

use serde::{Deserialize, Serialize};

use crate::grid::Grid;

/// Why (N, K) cannot be laid over a grid; says which pairs can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "N = {n}, K = {k} does not fit this dataset's grid of {points} points: K (N-1) must divide {}. Supported: {supported}",
    .points.saturating_sub(1)
)]
pub struct LayoutError {
    pub n: usize,
    pub k: usize,
    pub points: usize,
    /// [`supported_pairs`] for this grid.
    pub supported: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentLayout {
    pub n: usize,
    pub k: usize,
    pub afs: bool,
    pub stride: usize,
    /// Stored step of each student timestamp (N).
    pub timestamps: Vec<u16>,
    /// `targets[i][k - 1]`: stored step of branch k's target on interval i.
    pub targets: Vec<Vec<u16>>,
    /// Sigma of each timestamp.
    pub sigmas: Vec<f64>,
    /// `target_sigmas[i][k - 1]`.
    pub target_sigmas: Vec<Vec<f64>>,
}

impl StudentLayout {
    /// The layout for (N, K) on a stored grid (an appended sigma = 0 step is not used).
    pub fn for_grid(
        grid: &Grid,
        n: usize,
        k: usize,
        afs: bool,
    ) -> Result<StudentLayout, LayoutError> {
        StudentLayout::new(&grid.sigmas, grid.points(), n, k, afs)
    }

    /// The layout for (N, K) on a grid whose first `points` sigmas are the polynomial grid
    /// (an appended sigma = 0 step, if any, comes after them and is not used).
    pub fn new(
        sigmas: &[f64],
        points: usize,
        n: usize,
        k: usize,
        afs: bool,
    ) -> Result<StudentLayout, LayoutError> {
        let intervals = points.saturating_sub(1);
        if n < 2 || k < 1 || intervals == 0 || !intervals.is_multiple_of(k * (n - 1)) {
            return Err(LayoutError {
                n,
                k,
                points,
                supported: supported_pairs(points, 9),
            });
        }
        let stride = intervals / (k * (n - 1));
        let timestamps: Vec<u16> = (0..n).map(|i| (i * k * stride) as u16).collect();
        let targets: Vec<Vec<u16>> = (0..n - 1)
            .map(|i| (1..=k).map(|b| ((i * k + b) * stride) as u16).collect())
            .collect();
        Ok(StudentLayout {
            n,
            k,
            afs,
            stride,
            sigmas: timestamps.iter().map(|&s| sigmas[s as usize]).collect(),
            target_sigmas: targets
                .iter()
                .map(|row| row.iter().map(|&s| sigmas[s as usize]).collect())
                .collect(),
            timestamps,
            targets,
        })
    }

    pub fn intervals(&self) -> usize {
        self.n - 1
    }

    /// Every step the stream reads: the start, then each interval's targets in order.
    pub fn steps(&self) -> Vec<u16> {
        std::iter::once(self.timestamps[0])
            .chain(self.targets.iter().flatten().copied())
            .collect()
    }

    /// Network evaluations the student spends at inference (the endpoint branch only).
    pub fn nfe(&self) -> usize {
        self.intervals() - usize::from(self.afs)
    }
}

/// "N=3: K in {1, 2, ...}; N=4: ..." for N up to `max_n`.
pub fn supported_pairs(points: usize, max_n: usize) -> String {
    let intervals = points.saturating_sub(1);
    let rows: Vec<String> = (2..=max_n)
        .filter_map(|n| {
            let ks: Vec<String> = (1..=intervals)
                .filter(|k| intervals.is_multiple_of(k * (n - 1)))
                .map(|k| k.to_string())
                .collect();
            (!ks.is_empty()).then(|| format!("N={n}: K in {{{}}}", ks.join(", ")))
        })
        .collect();
    if rows.is_empty() {
        "none".into()
    } else {
        rows.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(points: usize) -> Vec<f64> {
        Grid::edm(points).sigmas
    }

    #[test]
    fn layout_steps_for_the_default_grid() {
        let g = grid(49);
        let l = StudentLayout::new(&g, 49, 4, 4, false).unwrap();
        assert_eq!(l.stride, 4);
        assert_eq!(l.timestamps, vec![0, 16, 32, 48]);
        assert_eq!(l.targets[1], vec![20, 24, 28, 32]);
        assert_eq!(l.steps().len(), 1 + 12);
        // The student's timestamps are the N-point polynomial grid.
        let coarse = grid(4);
        for (a, b) in l.sigmas.iter().zip(&coarse) {
            assert!((a - b).abs() < 1e-9 * b, "{a} vs {b}");
        }
        // Every target sigma is the K(N-1)+1-point polynomial grid.
        let fine = grid(13);
        let flat: Vec<f64> = l.target_sigmas.iter().flatten().copied().collect();
        for (a, b) in flat.iter().zip(&fine[1..]) {
            assert!((a - b).abs() < 1e-9 * b);
        }
        assert_eq!(l.nfe(), 3);
        assert_eq!(StudentLayout::new(&g, 49, 4, 4, true).unwrap().nfe(), 2);
    }

    #[test]
    fn a_grid_with_zero_lays_out_like_its_points() {
        let g = Grid::edm(49);
        let with_zero = g.clone().with_zero();
        assert_eq!(
            StudentLayout::for_grid(&g, 4, 4, false).unwrap(),
            StudentLayout::for_grid(&with_zero, 4, 4, false).unwrap()
        );
    }

    #[test]
    fn unsupported_pairs_list_what_works() {
        let g = grid(49);
        let err = StudentLayout::new(&g, 49, 6, 1, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("K (N-1) must divide 48"), "{err}");
        assert!(err.contains("N=5: K in {1, 2, 3, 4, 6, 12}"), "{err}");
        assert!(!err.contains("N=6:"), "{err}");
        assert!(StudentLayout::new(&g, 49, 1, 1, false).is_err());
        assert!(StudentLayout::new(&g, 49, 3, 0, false).is_err());
    }
}
