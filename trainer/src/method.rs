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

/// B-DENSE's branch count in the paper's setting (K = M + 1 = 4).
pub const DEFAULT_K: usize = 4;

/// The method with what it needs, parsed once: SFD trains the endpoint alone, so it has no
/// branch count or weights to get wrong; B-DENSE has K branches, each with its weight.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodSpec {
    Sfd,
    Bdense { k: usize, weights: BranchWeights },
}

impl MethodSpec {
    /// The method `method` names with the user's `k` (B-DENSE's default: [`DEFAULT_K`]) and
    /// `weights`. SFD is refused a K other than 1, or a weight other than 1 for its one branch:
    /// nothing the user asked for is silently overridden.
    pub fn new(
        method: Method,
        k: Option<usize>,
        weights: BranchWeights,
    ) -> Result<MethodSpec, String> {
        let spec = match method {
            Method::Sfd => {
                if let Some(k) = k.filter(|&k| k != 1) {
                    return Err(format!(
                        "--k {k}: sfd trains one (endpoint) branch; leave out --k, or use --method bdense for {k} branches"
                    ));
                }
                MethodSpec::Sfd
            }
            Method::Bdense => MethodSpec::Bdense {
                k: k.unwrap_or(DEFAULT_K),
                weights: weights.clone(),
            },
        };
        let sfd_weight = resolve_weights(&weights, 1).ok();
        if spec.method() == Method::Sfd && sfd_weight.as_deref() != Some(&[1.0]) {
            return Err(
                "--weights: sfd has one branch, whose weight is 1; use --method bdense to weigh branches"
                    .into(),
            );
        }
        spec.branch_weights()
            .map_err(|e| format!("--weights: {e}"))?;
        Ok(spec)
    }

    pub fn method(&self) -> Method {
        match self {
            MethodSpec::Sfd => Method::Sfd,
            MethodSpec::Bdense { .. } => Method::Bdense,
        }
    }

    /// Branches per interval: 1 for SFD.
    pub fn k(&self) -> usize {
        match self {
            MethodSpec::Sfd => 1,
            MethodSpec::Bdense { k, .. } => *k,
        }
    }

    /// `w_k`, k = 1..=K (checked again here: a run.json may carry them).
    pub fn branch_weights(&self) -> Result<Vec<f64>, String> {
        match self {
            MethodSpec::Sfd => Ok(vec![1.0]),
            MethodSpec::Bdense { k, weights } => resolve_weights(weights, *k),
        }
    }
}

fn resolve_weights(weights: &BranchWeights, k: usize) -> Result<Vec<f64>, String> {
    match weights {
        BranchWeights::Uniform => Ok(vec![1.0; k]),
        BranchWeights::Linear => Ok((1..=k).map(|i| i as f64 / k as f64).collect()),
        BranchWeights::Custom(w) if w.len() == k => check_weights(w).map(|()| w.clone()),
        BranchWeights::Custom(w) => Err(format!("{} branch weights given for K = {k}", w.len())),
    }
}

/// How a student is distilled: the method and the knobs every method shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MethodRecord", into = "MethodRecord")]
pub struct MethodConfig {
    pub spec: MethodSpec,
    pub distance: Distance,
    /// Analytical first step: the first interval uses `d = x / sqrt(1 + s_0^2)`, no network.
    pub afs: bool,
    /// Start each interval from the teacher's state instead of the student's own rollout.
    pub teacher_forcing: bool,
    pub step_per: StepPer,
}

/// `MethodConfig` as run.json has always stored it (method, k and weights side by side), so
/// runs written before and after read alike.
#[derive(Serialize, Deserialize)]
struct MethodRecord {
    method: Method,
    k: usize,
    distance: Distance,
    weights: BranchWeights,
    afs: bool,
    teacher_forcing: bool,
    step_per: StepPer,
}

impl TryFrom<MethodRecord> for MethodConfig {
    type Error = String;
    fn try_from(r: MethodRecord) -> Result<Self, String> {
        Ok(MethodConfig {
            spec: MethodSpec::new(r.method, Some(r.k), r.weights)?,
            distance: r.distance,
            afs: r.afs,
            teacher_forcing: r.teacher_forcing,
            step_per: r.step_per,
        })
    }
}

impl From<MethodConfig> for MethodRecord {
    fn from(c: MethodConfig) -> Self {
        let (method, k) = (c.method(), c.k());
        let weights = match c.spec {
            MethodSpec::Sfd => BranchWeights::Uniform,
            MethodSpec::Bdense { weights, .. } => weights,
        };
        MethodRecord {
            method,
            k,
            distance: c.distance,
            weights,
            afs: c.afs,
            teacher_forcing: c.teacher_forcing,
            step_per: c.step_per,
        }
    }
}

impl MethodConfig {
    /// `spec` with L1, no AFS, no teacher forcing, a step per interval.
    pub fn with_spec(spec: MethodSpec) -> MethodConfig {
        MethodConfig {
            spec,
            distance: Distance::L1,
            afs: false,
            teacher_forcing: false,
            step_per: StepPer::Interval,
        }
    }

    pub fn method(&self) -> Method {
        self.spec.method()
    }

    /// Branches per interval (the student's head is K x C channels).
    pub fn k(&self) -> usize {
        self.spec.k()
    }

    /// The loss this method trains with.
    pub fn objective(&self) -> Result<Objective, String> {
        Ok(Objective {
            weights: self.spec.branch_weights()?,
            distance: self.distance,
        })
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
/// with the teacher's state there; `net` gives the branches.
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
    branch_loss(&x, s, &branches, targets, target_sigmas, objective)
}

/// [`interval_loss`] for branches already computed at `x` (the rollout's denoiser gave them).
pub fn branch_loss(
    x: &Tensor<4>,
    s: f64,
    branches: &[Tensor<4>],
    targets: &[Tensor<4>],
    target_sigmas: &[f64],
    objective: &Objective,
) -> IntervalLoss {
    assert_eq!(branches.len(), targets.len(), "one target per branch");
    let mut loss: Option<Tensor<1>> = None;
    let mut per_branch = Vec::with_capacity(targets.len());
    let mut endpoint = None;
    for (k, denoised) in branches.iter().enumerate() {
        let xhat = euler_step(
            x.clone(),
            to_d(x.clone(), denoised.clone(), s),
            s,
            target_sigmas[k],
        );
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
        let spec = MethodSpec::Bdense {
            k: 2,
            weights: BranchWeights::Custom(vec![0.0, 0.0]),
        };
        assert!(spec.branch_weights().is_err(), "a run.json is checked too");
    }

    #[test]
    fn sfd_is_refused_what_it_cannot_do() {
        let uniform = BranchWeights::Uniform;
        let err = MethodSpec::new(Method::Sfd, Some(4), uniform.clone()).unwrap_err();
        assert!(err.contains("--k 4") && err.contains("bdense"), "{err}");
        assert_eq!(
            MethodSpec::new(Method::Sfd, None, uniform.clone()),
            Ok(MethodSpec::Sfd)
        );
        assert_eq!(
            MethodSpec::new(Method::Sfd, Some(1), uniform.clone()),
            Ok(MethodSpec::Sfd)
        );
        let heavy = BranchWeights::Custom(vec![2.0]);
        assert!(MethodSpec::new(Method::Sfd, None, heavy).is_err());
        let bdense = MethodSpec::new(Method::Bdense, None, uniform).unwrap();
        assert_eq!(bdense.k(), DEFAULT_K);
    }
}
