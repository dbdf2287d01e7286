//! ODE solvers in EDM sigma space, as small pure functions over a denoiser (k-diffusion style).
//!
//! Every solver walks consecutive pairs of a descending `sigmas` grid from `x` at `sigmas[0]`
//! and reports each state through `on_step(i, x_i, denoised_i)`: `i = 0` is the start, the
//! last call is the final state. `denoised_i` is `D(x_i; sigma_i)` when the solver evaluated
//! it there (it does not at the final state). A grid may end in 0: the last step then lands on
//! the denoised estimate, as in EDM.

use burn::prelude::*;

/// A denoiser `D(x; sigma)`: the posterior-mean estimate of clean data from `x` at noise `sigma`.
pub trait Denoiser {
    /// `x: [B, C, H, W]`, one `sigma > 0` for the batch, optional class labels `[B]`.
    fn denoise(&self, x: Tensor<4>, sigma: f64, labels: Option<&Tensor<1, Int>>) -> Tensor<4>;
}

impl<T: Denoiser + ?Sized> Denoiser for &T {
    fn denoise(&self, x: Tensor<4>, sigma: f64, labels: Option<&Tensor<1, Int>>) -> Tensor<4> {
        (**self).denoise(x, sigma, labels)
    }
}

/// The ODE derivative `dx/dsigma = (x - D) / sigma`.
pub fn to_d(x: Tensor<4>, denoised: Tensor<4>, sigma: f64) -> Tensor<4> {
    (x - denoised) / sigma
}

/// One Euler step from `sigma` to `sigma_next` given the derivative `d` at `x`.
pub fn euler_step(x: Tensor<4>, d: Tensor<4>, sigma: f64, sigma_next: f64) -> Tensor<4> {
    x + d * (sigma_next - sigma)
}

pub type OnStep<'a> = dyn FnMut(usize, &Tensor<4>, Option<&Tensor<4>>) + 'a;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    Euler,
    Heun,
    /// DPM-Solver++ multistep, data prediction, 2nd order.
    Dpmpp2m,
    /// DPM-Solver++ multistep, data prediction, 3rd order.
    Dpmpp3m,
}

impl Solver {
    pub fn order(&self) -> u32 {
        match self {
            Solver::Euler => 1,
            Solver::Heun | Solver::Dpmpp2m => 2,
            Solver::Dpmpp3m => 3,
        }
    }

    /// Runs the solver over the grid; see the module docs for `on_step`.
    pub fn run(
        &self,
        den: &dyn Denoiser,
        x: Tensor<4>,
        sigmas: &[f64],
        labels: Option<&Tensor<1, Int>>,
        on_step: &mut OnStep,
    ) -> Tensor<4> {
        match self {
            Solver::Euler => euler(den, x, sigmas, labels, on_step),
            Solver::Heun => heun(den, x, sigmas, labels, on_step),
            Solver::Dpmpp2m => dpmpp_multistep(den, x, sigmas, labels, 2, true, on_step),
            Solver::Dpmpp3m => dpmpp_multistep(den, x, sigmas, labels, 3, true, on_step),
        }
    }

    /// Denoiser evaluations for a grid of `points` sigmas (`ends_in_zero`: last one is 0).
    pub fn nfe(&self, points: usize, ends_in_zero: bool) -> usize {
        let steps = points - 1;
        match self {
            Solver::Heun => 2 * steps - usize::from(ends_in_zero),
            _ => steps,
        }
    }
}

impl std::str::FromStr for Solver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "euler" => Ok(Solver::Euler),
            "heun" => Ok(Solver::Heun),
            "dpmpp2m" => Ok(Solver::Dpmpp2m),
            "dpmpp3m" => Ok(Solver::Dpmpp3m),
            other => Err(format!(
                "unknown solver {other:?} (expected euler, heun, dpmpp2m or dpmpp3m)"
            )),
        }
    }
}

impl std::fmt::Display for Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Solver::Euler => "euler",
            Solver::Heun => "heun",
            Solver::Dpmpp2m => "dpmpp2m",
            Solver::Dpmpp3m => "dpmpp3m",
        })
    }
}

/// First-order Euler (EDM Algorithm 1 without churn).
pub fn euler(
    den: &dyn Denoiser,
    mut x: Tensor<4>,
    sigmas: &[f64],
    labels: Option<&Tensor<1, Int>>,
    on_step: &mut OnStep,
) -> Tensor<4> {
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (s, s_next) = (pair[0], pair[1]);
        let denoised = den.denoise(x.clone(), s, labels);
        on_step(i, &x, Some(&denoised));
        x = euler_step(x.clone(), to_d(x, denoised, s), s, s_next);
    }
    on_step(sigmas.len() - 1, &x, None);
    x
}

/// Heun's second-order method (EDM Algorithm 1); the step onto sigma = 0 stays first order.
pub fn heun(
    den: &dyn Denoiser,
    mut x: Tensor<4>,
    sigmas: &[f64],
    labels: Option<&Tensor<1, Int>>,
    on_step: &mut OnStep,
) -> Tensor<4> {
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (s, s_next) = (pair[0], pair[1]);
        let denoised = den.denoise(x.clone(), s, labels);
        on_step(i, &x, Some(&denoised));
        let d = to_d(x.clone(), denoised, s);
        let x_euler = euler_step(x.clone(), d.clone(), s, s_next);
        x = if s_next == 0.0 {
            x_euler
        } else {
            let d_next = to_d(
                x_euler.clone(),
                den.denoise(x_euler, s_next, labels),
                s_next,
            );
            euler_step(x, (d + d_next) * 0.5, s, s_next)
        };
    }
    on_step(sigmas.len() - 1, &x, None);
    x
}

/// DPM-Solver++ multistep (Lu et al. 2022) in data-prediction form, in `t = -ln sigma`.
///
/// Uses up to `order` previous denoised outputs, and lower orders at the start (no history
/// yet) and, with `lower_order_final` (what `Solver::Dpmpp2m/3m` and SFD's teacher use), on the
/// last steps, which stabilises few-step grids: step `i` of `n` then uses
/// `min(order, i + 1, n - i)`. The step onto sigma = 0 returns the denoised estimate.
pub fn dpmpp_multistep(
    den: &dyn Denoiser,
    mut x: Tensor<4>,
    sigmas: &[f64],
    labels: Option<&Tensor<1, Int>>,
    order: usize,
    lower_order_final: bool,
    on_step: &mut OnStep,
) -> Tensor<4> {
    let steps = sigmas.len() - 1;
    // (denoised, h) of the previous two steps, newest first.
    let mut history: Vec<(Tensor<4>, f64)> = Vec::with_capacity(2);
    for i in 0..steps {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = den.denoise(x.clone(), s, labels);
        on_step(i, &x, Some(&denoised));
        if s_next == 0.0 {
            x = denoised;
            break;
        }
        let h = s.ln() - s_next.ln();
        let step_order = order
            .min(i + 1)
            .min(if lower_order_final { steps - i } else { order });
        x = dpmpp_update(x, &denoised, &history, h, step_order);
        history.insert(0, (denoised, h));
        history.truncate(2);
    }
    on_step(steps, &x, None);
    x
}

/// One DPM-Solver++ step of the given order over `h = ln sigma - ln sigma_next`: the
/// exponential-integrator update `x <- e^{-h} x + (1 - e^{-h}) D` plus the phi_2 / phi_3
/// corrections from `history`, the previous (denoised, step size) pairs, newest first.
pub fn dpmpp_update(
    x: Tensor<4>,
    denoised: &Tensor<4>,
    history: &[(Tensor<4>, f64)],
    h: f64,
    order: usize,
) -> Tensor<4> {
    let x = x * (-h).exp() + denoised.clone() * (-(-h).exp_m1());
    let phi_2 = (-h).exp_m1() / h + 1.0;
    match (order, history) {
        (1, _) | (_, []) => x,
        (2, [(d1, h1), ..]) | (_, [(d1, h1)]) => {
            let r = h1 / h;
            x + (denoised.clone() - d1.clone()) * (phi_2 / r)
        }
        (_, [(d1, h1), (d2, h2), ..]) => {
            let (r0, r1) = (h1 / h, h2 / h);
            let d1_0 = (denoised.clone() - d1.clone()) / r0;
            let d1_1 = (d1.clone() - d2.clone()) / r1;
            let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()) * (r0 / (r0 + r1));
            let d2 = (d1_0 - d1_1) / (r0 + r1);
            let phi_3 = phi_2 / h - 0.5;
            x + d1 * phi_2 - d2 * phi_3
        }
    }
}

/// Runs a solver and collects every state: `[steps][B * C * H * W]` on the host, plus the
/// denoised outputs where evaluated.
pub struct Recorded {
    pub states: Vec<Vec<f32>>,
    pub denoised: Vec<Option<Vec<f32>>>,
}

pub fn record(
    solver: Solver,
    den: &dyn Denoiser,
    x: Tensor<4>,
    sigmas: &[f64],
    labels: Option<&Tensor<1, Int>>,
    keep_denoised: bool,
) -> Recorded {
    let mut states = Vec::with_capacity(sigmas.len());
    let mut denoised = Vec::with_capacity(sigmas.len());
    solver.run(den, x, sigmas, labels, &mut |_, x, d| {
        states.push(host(x));
        denoised.push(d.filter(|_| keep_denoised).map(host));
    });
    Recorded { states, denoised }
}

/// Copies a tensor's values to a host `Vec<f32>`.
pub fn host<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone()
        .try_into_vec_as::<f32>()
        .expect("float tensors convert to f32")
}
