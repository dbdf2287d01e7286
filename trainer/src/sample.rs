//! The student rollout, written once in k-diffusion's callback style: Euler over the student's
//! timestamps, the analytical first step when trained so, and the endpoint branch's step
//! carried on (so NFE is the sparse baseline's). Training, sampling and evaluation are
//! callbacks of it: training's denoiser is the live (autodiff) model and its callback takes
//! the loss and the optimiser step; sampling and evaluation call the EMA weights.

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
    /// The state at `s_next`: the endpoint branch's (or AFS's) Euler step, detached from any
    /// graph (the next interval starts from it as from data).
    pub next: &'a Tensor<4>,
}

/// What the rollout asks of the network at a state: every branch's denoised output.
pub type Denoiser<'a> = dyn FnMut(&Tensor<4>, f64) -> Vec<Tensor<4>> + 'a;

/// Runs from `x` at `sigmas[0]` through every timestamp, calling `on_interval` after each
/// step; returns the final state. The callback may return the state the next interval starts
/// from instead of the rollout's own (teacher forcing); `None` carries the rollout on.
///
/// # Shapes
/// - `x`: `[B, C, H, W]`; each branch `[B, C, H, W]`
pub fn rollout(
    mut x: Tensor<4>,
    sigmas: &[f64],
    afs: bool,
    denoise: &mut Denoiser,
    on_interval: &mut dyn FnMut(&Interval) -> Option<Tensor<4>>,
) -> Tensor<4> {
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (s, s_next) = (pair[0], pair[1]);
        let branches = (!(afs && i == 0)).then(|| denoise(&x, s));
        let d = match &branches {
            None => afs_derivative(x.clone(), s),
            Some(all) => to_d(x.clone(), all.last().expect("a branch").clone(), s),
        };
        let next = euler_step(x.clone(), d, s, s_next).detach();
        let forced = on_interval(&Interval {
            index: i,
            x: &x,
            s,
            s_next,
            branches: branches.as_deref(),
            next: &next,
        });
        x = forced.unwrap_or(next);
    }
    x
}

/// `net`'s branches at a state, as the rollout asks for them. `labels` go to the network as
/// they are (the caller passes them for a class-conditional student only).
pub fn net_denoiser<'a>(
    net: &'a EdmNet,
    labels: Option<&'a Tensor<1, Int>>,
) -> impl FnMut(&Tensor<4>, f64) -> Vec<Tensor<4>> + 'a {
    move |x, s| {
        let b = x.dims()[0];
        net.denoise_branches(x.clone(), sigma_batch(s, b, &x.device()), labels)
    }
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
    rollout(
        x,
        sigmas,
        afs,
        &mut net_denoiser(net, labels),
        &mut |step| {
            states.push(step.next.clone());
            None
        },
    );
    states
}

/// Labels as the network takes them, `[B]`.
pub fn labels_tensor(labels: &[i32], device: &Device) -> Tensor<1, Int> {
    let values = labels.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(values, [labels.len()]), device)
}
