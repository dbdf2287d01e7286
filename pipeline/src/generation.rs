//! Teacher trajectories for a range of trajectory ids: the generate stage's core, also used
//! to produce held-out teacher endpoints for evaluation.

use std::ops::Range;

use bdense_store::seeds;
use bdense_trainer::solvers::{self, Solver};
use bdense_trainer::teachers::Teacher;
use burn::prelude::*;

use crate::parallel;

/// States laid out as the store writes them: `[steps][rows][D]`.
pub struct Trajectories {
    pub seeds: Vec<u64>,
    pub labels: Option<Vec<i32>>,
    pub states: Vec<f32>,
    pub denoised: Option<Vec<f32>>,
}

/// The start noise `sigma_0 * eps(seed)` of each id, `[rows, D]`.
pub fn start_noise(
    base_seed: u64,
    ids: Range<u64>,
    dim: usize,
    sigma0: f64,
) -> (Vec<u64>, Vec<f32>) {
    let seeds: Vec<u64> = ids.map(|i| seeds::trajectory_seed(base_seed, i)).collect();
    let mut noise = vec![0f32; seeds.len() * dim];
    for (row, &seed) in seeds.iter().enumerate() {
        let out = &mut noise[row * dim..(row + 1) * dim];
        seeds::fill_standard_normal(seed, out);
        out.iter_mut().for_each(|v| *v *= sigma0 as f32);
    }
    (seeds, noise)
}

/// Labels of `ids` for a class-conditional teacher, `None` otherwise.
pub fn labels_for(teacher: &dyn Teacher, base_seed: u64, ids: Range<u64>) -> Option<Vec<i32>> {
    let info = teacher.info();
    info.conditional.then(|| {
        ids.map(|i| seeds::trajectory_label(base_seed, i, info.num_classes as u32))
            .collect()
    })
}

/// Runs the teacher over `sigmas` from each id's noise, `batch` trajectories at a time, the
/// batches spread over the machine's cores (`parallel::workers`). Each batch is solved alone,
/// so the result does not depend on how many workers there are.
#[allow(clippy::too_many_arguments)]
pub fn teacher_trajectories(
    teacher: &dyn Teacher,
    solver: Solver,
    sigmas: &[f64],
    ids: Range<u64>,
    base_seed: u64,
    batch: usize,
    keep_denoised: bool,
    device: &Device,
    on_batch: &(dyn Fn(usize) + Sync),
) -> Trajectories {
    let [c, h, w] = teacher.info().dims;
    let dim = c * h * w;
    let rows = (ids.end - ids.start) as usize;
    let steps = sigmas.len();
    let (seeds, noise) = start_noise(base_seed, ids.clone(), dim, sigmas[0]);
    let labels = labels_for(teacher, base_seed, ids);
    let firsts: Vec<usize> = (0..rows).step_by(batch.max(1)).collect();
    let solved = parallel::map(&firsts, parallel::workers(), |&first| {
        let b = batch.min(rows - first);
        let solved = solve_batch(
            teacher,
            solver,
            sigmas,
            &noise[first * dim..(first + b) * dim],
            labels.as_ref().map(|l| &l[first..first + b]),
            keep_denoised,
            device,
        );
        on_batch(b);
        Ok(solved)
    })
    .expect("solving a batch cannot fail");
    let mut states = vec![0f32; steps * rows * dim];
    let mut denoised = keep_denoised.then(|| vec![0f32; steps * rows * dim]);
    for (&first, batch) in firsts.iter().zip(solved) {
        let b = batch.states[0].len() / dim;
        for (step, values) in batch.states.iter().enumerate() {
            let at = (step * rows + first) * dim;
            states[at..at + b * dim].copy_from_slice(values);
        }
        if let (Some(out), Some(d)) = (denoised.as_mut(), batch.denoised) {
            for (step, values) in d.iter().enumerate() {
                let at = (step * rows + first) * dim;
                out[at..at + b * dim].copy_from_slice(values);
            }
        }
    }
    Trajectories {
        seeds,
        labels,
        states,
        denoised,
    }
}

/// One batch's states (and denoised outputs) per step, `[steps][b * D]`.
struct SolvedBatch {
    states: Vec<Vec<f32>>,
    denoised: Option<Vec<Vec<f32>>>,
}

/// Solves one batch of start noises `[b * D]` over `sigmas`.
fn solve_batch(
    teacher: &dyn Teacher,
    solver: Solver,
    sigmas: &[f64],
    noise: &[f32],
    labels: Option<&[i32]>,
    keep_denoised: bool,
    device: &Device,
) -> SolvedBatch {
    let [c, h, w] = teacher.info().dims;
    let b = noise.len() / (c * h * w);
    let x = Tensor::<4>::from_data(TensorData::new(noise.to_vec(), [b, c, h, w]), device);
    let label_tensor = labels.map(|l| {
        Tensor::<1, Int>::from_data(
            TensorData::new(l.iter().map(|&v| v as i64).collect(), [b]),
            device,
        )
    });
    let rec = solvers::record(
        solver,
        teacher,
        x,
        sigmas,
        label_tensor.as_ref(),
        keep_denoised,
    );
    let denoised = keep_denoised.then(|| {
        rec.denoised
            .into_iter()
            .enumerate()
            .map(|(step, d)| {
                d.unwrap_or_else(|| {
                    final_denoised(
                        teacher,
                        &rec.states[step],
                        [b, c, h, w],
                        sigmas[step],
                        label_tensor.as_ref(),
                        device,
                    )
                })
            })
            .collect()
    });
    SolvedBatch {
        states: rec.states,
        denoised,
    }
}

/// D(x; sigma) at a state the solver did not evaluate (the last one); at sigma = 0, x itself.
fn final_denoised(
    teacher: &dyn Teacher,
    x: &[f32],
    shape: [usize; 4],
    sigma: f64,
    labels: Option<&Tensor<1, Int>>,
    device: &Device,
) -> Vec<f32> {
    if sigma == 0.0 {
        return x.to_vec();
    }
    let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), device);
    solvers::host(&teacher.denoise(x, sigma, labels))
}
