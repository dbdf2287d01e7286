//! Distillation methods as data: B-DENSE (K branches, dense targets) and SFD (K = 1, the
//! endpoint only) share one loss and one loop.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::edm::EdmNet;
use crate::precond::sigma_batch;
use crate::solvers::{euler_step, to_d};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Dense multi-branch trajectory alignment.
    Bdense,
    /// Simple and Fast Distillation: the sparse baseline, one (endpoint) branch.
    Sfd,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bdense" => Ok(Method::Bdense),
            "sfd" => Ok(Method::Sfd),
            other => Err(format!("unknown method {other:?} (bdense or sfd)")),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Bdense => "bdense",
            Method::Sfd => "sfd",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Mean absolute error (SFD's choice).
    L1,
    /// Mean squared error.
    L2,
}

impl std::str::FromStr for Distance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "l1" => Ok(Distance::L1),
            "l2" => Ok(Distance::L2),
            other => Err(format!("unknown distance {other:?} (l1 or l2)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BranchWeights {
    /// Every branch weighs 1 (the endpoint weighs what it weighs in SFD).
    Uniform,
    /// Branch k weighs k / K: later targets count more, the endpoint 1.
    Linear,
    Custom(Vec<f64>),
}

impl std::str::FromStr for BranchWeights {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(BranchWeights::Uniform),
            "linear" => Ok(BranchWeights::Linear),
            list => {
                let bad = || format!("bad branch weights {list:?} (uniform, linear or w1,w2,...)");
                let weights = list
                    .split(',')
                    .map(|w| w.trim().parse::<f64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| bad())?;
                check_weights(&weights)?;
                Ok(BranchWeights::Custom(weights))
            }
        }
    }
}

/// Weights the loss can use: a negative weight rewards a branch for missing its target, and
/// all zeros make the loss 0 whatever the network does (nothing would be trained).
fn check_weights(weights: &[f64]) -> Result<(), String> {
    if let Some(w) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
        return Err(format!("branch weight {w} must be a finite number >= 0"));
    }
    if weights.iter().all(|w| *w == 0.0) {
        return Err("branch weights are all 0: the loss would be 0 and nothing trained".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepPer {
    /// One optimiser step per student interval (SFD).
    Interval,
    /// One optimiser step per trajectory batch, on the sum over intervals.
    Trajectory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    pub method: Method,
    /// Branches per interval; SFD is K = 1.
    pub k: usize,
    pub distance: Distance,
    pub weights: BranchWeights,
    /// Analytical first step: the first interval uses `d = x / sqrt(1 + s_0^2)`, no network.
    pub afs: bool,
    /// Start each interval from the teacher's state instead of the student's own rollout.
    pub teacher_forcing: bool,
    pub step_per: StepPer,
}

impl MethodConfig {
    pub fn new(method: Method, k: usize) -> MethodConfig {
        MethodConfig {
            method,
            k: if method == Method::Sfd { 1 } else { k },
            distance: Distance::L1,
            weights: BranchWeights::Uniform,
            afs: false,
            teacher_forcing: false,
            step_per: StepPer::Interval,
        }
    }

    /// The loss this method trains with.
    pub fn objective(&self) -> Result<Objective, String> {
        Ok(Objective {
            weights: self.branch_weights()?,
            distance: self.distance,
        })
    }

    /// `w_k`, k = 1..=K (checked again here: a run.json may carry them).
    pub fn branch_weights(&self) -> Result<Vec<f64>, String> {
        let k = self.k;
        match &self.weights {
            BranchWeights::Uniform => Ok(vec![1.0; k]),
            BranchWeights::Linear => Ok((1..=k).map(|i| i as f64 / k as f64).collect()),
            BranchWeights::Custom(w) if w.len() == k => check_weights(w).map(|()| w.clone()),
            BranchWeights::Custom(w) => {
                Err(format!("{} branch weights given for K = {k}", w.len()))
            }
        }
    }
}

/// The analytical first step's derivative.
pub fn afs_derivative(x: Tensor<4>, sigma: f64) -> Tensor<4> {
    x / (1.0 + sigma * sigma).sqrt()
}

/// How the branches' errors combine into one loss: `sum_k weights[k] distance(xhat_k, target_k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub weights: Vec<f64>,
    pub distance: Distance,
}

/// One interval's loss, with what the loop needs next.
pub struct IntervalLoss {
    /// `sum_k w_k dist(xhat_k, target_k)`.
    pub loss: Tensor<1>,
    /// Unweighted `dist` of each branch, on the host.
    pub per_branch: Vec<f64>,
    /// The endpoint branch's state, detached: the next interval's start under rollout.
    pub endpoint: Tensor<4>,
}

/// Branch k takes its own Euler step from `x` at `s` to `target_sigmas[k]` and is compared
/// with the teacher's state there.
///
/// # Shapes
/// - `x`: `[B, C, H, W]`; `targets`: K tensors `[B, C, H, W]`
pub fn interval_loss(
    net: &EdmNet,
    x: Tensor<4>,
    s: f64,
    targets: &[Tensor<4>],
    target_sigmas: &[f64],
    objective: &Objective,
    labels: Option<&Tensor<1, Int>>,
) -> IntervalLoss {
    let [b, _, _, _] = x.dims();
    let branches = net.denoise_branches(x.clone(), sigma_batch(s, b, &x.device()), labels);
    assert_eq!(branches.len(), targets.len(), "one target per branch");
    let mut loss: Option<Tensor<1>> = None;
    let mut per_branch = Vec::with_capacity(targets.len());
    let mut endpoint = None;
    for (k, denoised) in branches.into_iter().enumerate() {
        let xhat = euler_step(x.clone(), to_d(x.clone(), denoised, s), s, target_sigmas[k]);
        let diff = xhat.clone() - targets[k].clone();
        let d = match objective.distance {
            Distance::L1 => diff.abs().mean(),
            Distance::L2 => diff.square().mean(),
        };
        per_branch.push(d.clone().inner().into_scalar::<f64>());
        let term = d * objective.weights[k];
        loss = Some(match loss {
            Some(l) => l + term,
            None => term,
        });
        endpoint = Some(xhat);
    }
    IntervalLoss {
        loss: loss.expect("at least one branch"),
        per_branch,
        endpoint: endpoint.expect("at least one branch").detach(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_weights_refuse_a_loss_that_trains_nothing() {
        let parse = |s: &str| s.parse::<BranchWeights>();
        assert!(parse("0,0,0,0").unwrap_err().contains("all 0"));
        for bad in ["1,-1", "1,NaN", "1,inf", "1,x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("0,1"), Ok(BranchWeights::Custom(vec![0.0, 1.0])));
        let mut config = MethodConfig::new(Method::Bdense, 2);
        config.weights = BranchWeights::Custom(vec![0.0, 0.0]);
        assert!(
            config.branch_weights().is_err(),
            "a run.json is checked too"
        );
    }
}
