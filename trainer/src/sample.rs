//! The student rollout, written once in k-diffusion's callback style: Euler over the student's
//! timestamps, the analytical first step when trained so, and the endpoint branch's step
//! carried on (so NFE is the sparse baseline's). Sampling and evaluation are callbacks of it.

use burn::prelude::*;

use crate::edm::EdmNet;
use crate::method::afs_derivative;
use crate::precond::sigma_batch;
use crate::solvers::{euler_step, to_d};

/// One interval of a rollout, as the callback sees it.
pub struct Interval<'a> {
    pub index: usize,
    /// The state at `s`, where the interval starts.
    pub x: &'a Tensor<4>,
    pub s: f64,
    pub s_next: f64,
    /// Every branch's `D_k(x; s)`, endpoint last; `None` on the analytical first step, which
    /// calls no network.
    pub branches: Option<&'a [Tensor<4>]>,
    /// The state at `s_next`: the endpoint branch's (or AFS's) Euler step.
    pub next: &'a Tensor<4>,
}

/// Runs the student from `x` at `sigmas[0]` through every timestamp, calling `on_interval`
/// after each step; returns the final state. `labels` go to the network as they are (the
/// caller passes them for a class-conditional student only).
///
/// # Shapes
/// - `x`: `[B, C, H, W]`; `labels`: `[B]`
pub fn rollout(
    net: &EdmNet,
    mut x: Tensor<4>,
    sigmas: &[f64],
    afs: bool,
    labels: Option<&Tensor<1, Int>>,
    on_interval: &mut dyn FnMut(&Interval),
) -> Tensor<4> {
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (s, s_next) = (pair[0], pair[1]);
        let branches = (!(afs && i == 0)).then(|| {
            let b = x.dims()[0];
            net.denoise_branches(x.clone(), sigma_batch(s, b, &x.device()), labels)
        });
        let d = match &branches {
            None => afs_derivative(x.clone(), s),
            Some(all) => to_d(x.clone(), all.last().expect("a branch").clone(), s),
        };
        let next = euler_step(x.clone(), d, s, s_next);
        on_interval(&Interval {
            index: i,
            x: &x,
            s,
            s_next,
            branches: branches.as_deref(),
            next: &next,
        });
        x = next;
    }
    x
}

/// Runs the student from `x` at `sigmas[0]` through every timestamp; returns the state at
/// each timestamp (the last is the sample).
pub fn sample(
    net: &EdmNet,
    x: Tensor<4>,
    sigmas: &[f64],
    afs: bool,
    labels: Option<&Tensor<1, Int>>,
) -> Vec<Tensor<4>> {
    let mut states = vec![x.clone()];
    rollout(net, x, sigmas, afs, labels, &mut |step| {
        states.push(step.next.clone())
    });
    states
}

/// Labels as the network takes them, `[B]`.
pub fn labels_tensor(labels: &[i32], device: &Device) -> Tensor<1, Int> {
    let values = labels.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(values, [labels.len()]), device)
}
