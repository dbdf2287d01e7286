//! A progressive-distillation round's examples in the store (`bdense generate --pd-round`):
//! for each example of the round's data schedule, the noised training image at its start
//! sigma and the teacher's two Euler steps from it, as a dataset of three role steps
//! (`bdense_store::PdRound` describes the layout). A PD and a PD + B-DENSE student of the same
//! round (same teacher, same data seed) train from one such dataset, and so does every budget
//! up to its size: the teacher's passes are paid once.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use bdense_store::{
    Dataset, DatasetSpec, DatasetWriter, Dims, Dtype, Grid, Manifest, PdRound, Provenance,
    SeedPolicy, ShardData, StoreError, WriteOptions, seeds,
};
use bdense_trainer::data::ImageSet;
use bdense_trainer::pd::{self, NetFile, PdData, PdExamples, RoundGrid};
use burn::prelude::*;

use crate::parallel;

/// Which round's examples, how many, and how they are sharded.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    pub round: u32,
    pub student_steps: u32,
    /// The data schedule's seed (`pd::example`).
    pub data_seed: u64,
    pub count: u64,
    pub rows_per_shard: u32,
}

/// The network that takes the two steps: the shipped U-Net teacher, or a finished round's
/// student.
pub struct RoundTeacher {
    pub file: NetFile,
    /// "unet" or "pd-student".
    pub kind: String,
}

impl RoundTeacher {
    /// `unet:DIR` (a U-Net teacher directory) or `pd:DIR` (a finished `bdense pd` round).
    pub fn parse(spec: &str) -> anyhow::Result<RoundTeacher> {
        let (kind, dir) = spec.split_once(':').with_context(|| {
            format!("--teacher {spec}: a PD round's teacher is unet:DIR or pd:ROUND_DIR")
        })?;
        let dir = Path::new(dir);
        let file = match kind {
            "unet" => NetFile::teacher(dir).with_context(|| format!("--teacher {spec}"))?,
            "pd" => pd::finished_round(dir).with_context(|| format!("--teacher {spec}"))?,
            other => bail!("--teacher {spec}: {other:?} is not unet or pd"),
        };
        Ok(RoundTeacher {
            file,
            kind: if kind == "unet" { "unet" } else { "pd-student" }.into(),
        })
    }
}

/// Whether the complete round dataset at `dir` already holds `plan`'s examples: the same
/// round, teacher and data seed, and at least `plan.count` examples (a larger store holds the
/// data schedule's first `count` too, so it serves smaller budgets).
pub fn holds(dir: &Path, teacher: &RoundTeacher, plan: &RoundPlan) -> bool {
    let Ok(ds) = Dataset::open(dir) else {
        return false;
    };
    let m = ds.manifest();
    m.trajectories() == m.planned_count
        && m.planned_count >= plan.count
        && m.pd
            .as_ref()
            .is_some_and(|pd| pd.round == plan.round && pd.student_steps == plan.student_steps)
        && m.teacher.checkpoint_hash.as_deref() == Some(teacher.file.hash.as_str())
        && m.seeds.base_seed == plan.data_seed
}

/// What a write added.
pub struct Written {
    pub examples: u64,
    pub shards: usize,
    pub bytes: u64,
    pub manifest: Manifest,
}

/// The dataset a round's plan describes (everything but its shards).
fn spec(dir: &Path, teacher: &RoundTeacher, images: &ImageSet, plan: &RoundPlan) -> DatasetSpec {
    let params = BTreeMap::from([
        ("round".to_string(), serde_json::json!(plan.round)),
        ("images".to_string(), serde_json::json!(images.name)),
        (
            "data_schedule".to_string(),
            serde_json::json!("bdense_trainer::pd::example(data seed, index)"),
        ),
    ]);
    DatasetSpec {
        name: bdense_store::dataset_name(dir).unwrap_or_else(|| "dataset".into()),
        dims: Dims {
            c: images.channels as u32,
            h: images.height as u32,
            w: images.width as u32,
        },
        dtype: Dtype::F32,
        has_denoised: false,
        grid: Grid::edm(2 * plan.student_steps as usize + 1),
        teacher: Provenance {
            kind: teacher.kind.clone(),
            checkpoint_hash: Some(teacher.file.hash.clone()),
            solver: "euler".into(),
            order: 1,
            params,
        },
        seeds: SeedPolicy {
            base_seed: plan.data_seed,
            scheme: seeds::SCHEME.into(),
        },
        rows_per_shard: plan.rows_per_shard,
        planned_count: plan.count,
        pd: Some(PdRound {
            round: plan.round,
            student_steps: plan.student_steps,
            images: images.len() as u64,
        }),
    }
}

/// Writes round `plan`'s examples into `dir`: a new dataset, or (with `resume`) the shards an
/// existing one of the same plan is missing. The teacher's passes run on `workers` threads,
/// `batch` examples per call; neither changes a byte (each example is a function of the data
/// seed and its index, and the network treats the rows of a batch independently).
#[allow(clippy::too_many_arguments)]
pub fn write_round(
    dir: &Path,
    teacher: &RoundTeacher,
    images: &ImageSet,
    plan: &RoundPlan,
    resume: bool,
    batch: usize,
    workers: usize,
    device: &Device,
    on_rows: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Written> {
    let spec = spec(dir, teacher, images, plan);
    let options = WriteOptions::default();
    let mut writer = match DatasetWriter::create(dir, spec.clone(), options.clone()) {
        Err(StoreError::AlreadyExists { .. }) if resume => {
            let w = DatasetWriter::open(dir, options)?;
            if let Some(why) = spec.mismatch(w.manifest()) {
                bail!(
                    "{}: holds another PD round's examples ({why}); choose another name",
                    dir.display()
                );
            }
            w
        }
        Err(e @ StoreError::AlreadyExists { .. }) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{} exists: pass --resume to continue it, or choose another name",
                dir.display()
            )));
        }
        other => other?,
    };
    let net = teacher.file.teacher_net(device)?;
    let grid = RoundGrid::new(plan.student_steps as usize);
    let manifest = writer.manifest().clone();
    let (mut examples, mut shards, mut bytes) = (0u64, 0usize, 0u64);
    for index in manifest.missing_shard_iter() {
        let ids = manifest.planned_range(index);
        let chunks: Vec<std::ops::Range<u64>> = (ids.start..ids.end)
            .step_by(batch.max(1))
            .map(|s| s..(s + batch as u64).min(ids.end))
            .collect();
        let parts = parallel::map(&chunks, workers, |range| {
            let part =
                pd::teacher_examples(&net, images, &grid, plan.data_seed, range.clone(), device);
            on_rows(range.end - range.start);
            Ok(part)
        })?;
        let ex = PdExamples::concat([images.channels, images.height, images.width], parts);
        let rows = ex.len();
        let grid = &manifest.grid.sigmas;
        let sigmas: Vec<f32> = (0..PdRound::ROLES)
            .flat_map(|role| ex.interval.iter().map(move |&i| grid[2 * i + role] as f32))
            .collect();
        let states = [ex.x, ex.mid, ex.end].concat();
        let entry = writer.write_pd_shard(
            &ShardData {
                index,
                seeds: &ex.seeds,
                labels: Some(&ex.labels),
                states: &states,
                denoised: None,
            },
            &sigmas,
        )?;
        examples += rows as u64;
        shards += 1;
        bytes += entry.bytes();
    }
    Ok(Written {
        examples,
        shards,
        bytes,
        manifest: writer.manifest().clone(),
    })
}

/// A round's dataset read whole into memory (every file checked against the manifest), as
/// the data a round trains from.
pub struct StoredRound {
    examples: PdExamples,
    identity: String,
}

impl StoredRound {
    /// Reads the complete round dataset at `dir`, refusing one of another kind, an incomplete
    /// one, or one whose round, teacher or data seed is not `expect`'s.
    pub fn load(dir: &Path) -> anyhow::Result<StoredRound> {
        let ds = Dataset::open(dir)?;
        let m = ds.manifest();
        let Some(pd) = &m.pd else {
            bail!(
                "{}: holds teacher trajectories, not a PD round's examples (make one with `bdense generate --pd-round`)",
                dir.display()
            );
        };
        if m.trajectories() != m.planned_count {
            bail!(
                "{}: holds {} of its {} examples; complete it with `bdense generate ... --resume`",
                dir.display(),
                m.trajectories(),
                m.planned_count
            );
        }
        let dims = [m.dims.c as usize, m.dims.h as usize, m.dims.w as usize];
        let mut parts = Vec::new();
        for shard in &m.shards {
            let [x, mid, end] = [0u16, 1, 2].map(|step| ds.read_step(shard, step));
            let (x, mid, end) = (x?, mid?, end?);
            let interval = x
                .sigmas()
                .iter()
                .enumerate()
                .map(|(row, &s)| {
                    pd.interval_of(&m.grid, s).with_context(|| {
                        format!(
                            "{}: row {row} starts at sigma {s}, none of the round's start sigmas",
                            x.path.display()
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<usize>>>()?;
            parts.push(PdExamples {
                dims,
                labels: (0..x.rows()).map(|r| x.label(r).unwrap_or(-1)).collect(),
                seeds: x.seeds().to_vec(),
                interval,
                x: x.x().into_owned(),
                mid: mid.x().into_owned(),
                end: end.x().into_owned(),
            });
        }
        Ok(StoredRound {
            examples: PdExamples::concat(dims, parts),
            identity: format!(
                "store {} (round {}, teacher {}, data seed {}): snapshot {}",
                m.name,
                pd.round,
                m.teacher.checkpoint_hash.as_deref().unwrap_or("-"),
                m.seeds.base_seed,
                m.snapshot_hash()
            ),
        })
    }

    pub fn len(&self) -> u64 {
        self.examples.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

impl PdData for StoredRound {
    fn examples(
        &mut self,
        indices: std::ops::Range<u64>,
    ) -> bdense_trainer::error::Result<PdExamples> {
        if indices.end > self.len() {
            return Err(bdense_trainer::error::TrainerError::Config(format!(
                "the round needs examples up to {}, its store ({}) holds {}",
                indices.end,
                self.identity,
                self.len()
            )));
        }
        Ok(self
            .examples
            .slice(indices.start as usize..indices.end as usize))
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }
}
