//! Few-step sampling with a student: Euler over the student's timestamps with the endpoint
//! branch only (so NFE is the sparse baseline's), the analytical first step when trained so.

use burn::prelude::*;

use crate::edm::EdmNet;
use crate::method::afs_derivative;
use crate::precond::sigma_batch;
use crate::solvers::{euler_step, to_d};

/// Runs the student from `x` at `sigmas[0]` through every timestamp; returns the state at
/// each timestamp (the last is the sample).
pub fn sample(
    net: &EdmNet,
    mut x: Tensor<4>,
    sigmas: &[f64],
    afs: bool,
    labels: Option<&Tensor<1, Int>>,
) -> Vec<Tensor<4>> {
    let mut states = vec![x.clone()];
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (s, s_next) = (pair[0], pair[1]);
        let d = if afs && i == 0 {
            afs_derivative(x.clone(), s)
        } else {
            let b = x.dims()[0];
            let denoised = net.denoise_endpoint(x.clone(), sigma_batch(s, b, &x.device()), labels);
            to_d(x.clone(), denoised, s)
        };
        x = euler_step(x, d, s, s_next);
        states.push(x.clone());
    }
    states
}
