//! `verify`: re-reads every committed file and reports each problem on its own line.

use std::path::PathBuf;

use crate::error::Result;
use crate::integrity::RawFile;
use crate::manifest::{Manifest, ShardEntry};
use crate::reader::{Dataset, StepBatch};

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub files_checked: usize,
    pub rows_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The cheap check: every file the manifest names is a regular file of the manifest's size
/// (one `stat` each, nothing read). What `store info` runs; `verify` reads the contents.
pub fn stat_files(dataset: &Dataset) -> Vec<Problem> {
    let mut problems = Vec::new();
    for entry in dataset.shards().iter().flat_map(|s| &s.files) {
        let path = dataset.file_path(entry);
        let message = match dataset.backend().stat(&entry.path) {
            Err(e) => format!("cannot read: {}", root_message(&e)),
            Ok(None) => "cannot read: No such file or directory (os error 2)".to_string(),
            Ok(Some(m)) if !m.regular => "is not a regular file".to_string(),
            Ok(Some(m)) if m.bytes != entry.bytes => {
                format!("size {} bytes, manifest says {}", m.bytes, entry.bytes)
            }
            Ok(Some(_)) => continue,
        };
        problems.push(Problem { path, message });
    }
    problems
}

/// Checks every file the manifest names: size and hash, schema, ids sorted and equal across
/// steps, seeds and labels equal across steps, sigma equal to the grid, all values finite.
/// `Err` only when the manifest itself cannot be read; everything else is a [`Problem`].
pub fn verify(dataset: &Dataset) -> Result<Report> {
    let mut report = Report::default();
    let m = dataset.manifest();
    for shard in &m.shards {
        let expected = m.planned_range(shard.index);
        if shard.id_range() != expected {
            report.problems.push(Problem {
                path: crate::manifest::Manifest::path(dataset.dir()),
                message: format!(
                    "shard {} covers ids {:?}, expected {:?}",
                    shard.index,
                    shard.id_range(),
                    expected
                ),
            });
        }
        verify_shard(dataset, shard, &mut report);
    }
    Ok(report)
}

fn verify_shard(dataset: &Dataset, shard: &ShardEntry, report: &mut Report) {
    let m = dataset.manifest();
    let mut reference: Option<StepBatch> = None;
    for step in 0..m.steps() as u16 {
        let Some(entry) = shard.file(step) else {
            report.problems.push(Problem {
                path: dataset.backend().locate(&format!("step={step:04}")),
                message: format!("shard {} has no file for step {step}", shard.index),
            });
            continue;
        };
        let raw = match RawFile::read(dataset.backend(), entry) {
            Ok(raw) => raw,
            Err(e) => {
                report.problems.push(Problem {
                    path: dataset.file_path(entry),
                    message: format!("cannot read: {}", root_message(&e)),
                });
                continue;
            }
        };
        let path = raw.path.clone();
        let mut problem = |message: String| {
            report.problems.push(Problem {
                path: path.clone(),
                message,
            })
        };
        if let Some(mismatch) = raw.mismatch(entry) {
            problem(mismatch);
        }
        // Decoded without the reader's id checks: the checks below say more.
        let batch = match dataset.decode(raw.path, raw.bytes, shard, step, None, None) {
            Ok(b) => b,
            Err(e) => {
                problem(root_message(&e));
                continue;
            }
        };
        report.files_checked += 1;
        report.rows_checked += batch.rows() as u64;
        report.bytes_checked += entry.bytes;
        for message in check_batch(&batch, shard, m, reference.as_ref()) {
            problem(message);
        }
        reference.get_or_insert(batch);
    }
}

/// The problems of one decoded step file, compared with the shard's first step.
fn check_batch(
    batch: &StepBatch,
    shard: &ShardEntry,
    m: &Manifest,
    reference: Option<&StepBatch>,
) -> Vec<String> {
    let mut out = Vec::new();
    let ids = batch.traj_ids();
    if let Some(i) = ids.windows(2).position(|w| w[1] <= w[0]) {
        out.push(format!(
            "trajectory ids not strictly increasing at row {}: {} then {}",
            i + 1,
            ids[i],
            ids[i + 1]
        ));
    } else if ids.first() != Some(&shard.first_id) || !shard.id_range().eq(ids.iter().copied()) {
        out.push(format!(
            "holds trajectory ids {:?}..={:?}, expected {:?}",
            ids.first(),
            ids.last(),
            shard.id_range()
        ));
    }
    if let Some(r) = reference {
        if r.traj_ids() != ids {
            out.push(format!("trajectory ids differ from step {}", r.step));
        }
        if let Some(row) = (0..ids.len().min(r.rows())).find(|&i| r.seeds()[i] != batch.seeds()[i])
        {
            out.push(format!("seed of row {row} differs from step {}", r.step));
        }
        if let Some(row) = (0..ids.len().min(r.rows())).find(|&i| r.label(i) != batch.label(i)) {
            out.push(format!("label of row {row} differs from step {}", r.step));
        }
    }
    if let Some(message) = sigma_problem(batch, m, reference) {
        out.push(message);
    }
    let dim = batch.dim();
    for (name, values) in [("x", Some(batch.x())), ("denoised", batch.denoised())] {
        let Some(values) = values else { continue };
        let bad: Vec<usize> = values
            .chunks(dim)
            .enumerate()
            .filter(|(_, v)| v.iter().any(|x| !x.is_finite()))
            .map(|(row, _)| row)
            .collect();
        if let Some(&row) = bad.first() {
            out.push(format!(
                "{name} holds NaN or Inf in {} rows (first: row {row}, trajectory {})",
                bad.len(),
                ids.get(row).copied().unwrap_or_default()
            ));
        }
    }
    out
}

/// A row whose sigma is not the one its step (and, in a PD round's dataset, its start
/// interval, read from the sigma of its first step) gives it.
fn sigma_problem(batch: &StepBatch, m: &Manifest, reference: Option<&StepBatch>) -> Option<String> {
    let step = batch.step as usize;
    let sigmas = batch.sigmas();
    let Some(pd) = &m.pd else {
        let sigma = m.grid.sigmas[step] as f32;
        let row = sigmas.iter().position(|&s| s != sigma)?;
        return Some(format!(
            "sigma {} in row {row}, the grid says {sigma}",
            sigmas[row]
        ));
    };
    let starts = reference.map_or(sigmas, |r| r.sigmas());
    for (row, (&start, &sigma)) in starts.iter().zip(sigmas).enumerate() {
        let Some(i) = pd.interval_of(&m.grid, start) else {
            return Some(format!(
                "sigma {start} in row {row} of step 0 is none of the student's start sigmas"
            ));
        };
        let expected = m.grid.sigmas[2 * i + step] as f32;
        if sigma != expected {
            return Some(format!(
                "sigma {sigma} in row {row}, the round's grid says {expected} (start interval {i}, step {step})"
            ));
        }
    }
    None
}

/// The innermost message of an error chain, for one-line reports that already name the path.
fn root_message(e: &crate::StoreError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    // Variants already carry the path; avoid printing it twice.
    msg
}
