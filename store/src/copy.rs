//! `bdense store copy`: a dataset re-encoded into a new one (another compression), so a store
//! generated once can be read uncompressed without running its teacher again.
//!
//! The copy is a dataset like any other: the source's manifest fields (dims, dtype, grid,
//! teacher provenance, seed policy, shard layout, PD round), its committed shards written
//! shard by shard through [`DatasetWriter`] and committed as they go. Values are copied
//! exactly: f16 states pass through f32, which holds every f16. A copy that was interrupted
//! continues where it stopped when run again; a destination holding another dataset is refused.

use std::path::Path;

use crate::error::{Result, StoreError};
use crate::manifest::{Manifest, ShardEntry};
use crate::reader::{Dataset, StepBatch};
use crate::writer::{DatasetSpec, DatasetWriter, ShardData, WriteOptions};

/// What a copy did.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyReport {
    /// Shards written by this call.
    pub written: usize,
    /// Shards the destination already held (an interrupted copy rerun).
    pub kept: usize,
    /// Bytes of the destination's files.
    pub bytes: u64,
}

/// Copies every committed shard of `src` into the dataset at `dst`, written with `options`.
/// `on_rows` hears each shard's rows once it is committed.
pub fn copy_dataset(
    src: &Dataset,
    dst: &Path,
    options: WriteOptions,
    on_rows: &dyn Fn(u64),
) -> Result<CopyReport> {
    if same_place(src.dir(), dst) {
        return Err(StoreError::invalid(
            dst,
            "is the dataset being copied; copy into a new name",
        ));
    }
    let spec = spec_of(src.manifest(), dst);
    let mut writer = match DatasetWriter::create(dst, spec.clone(), options.clone()) {
        Err(StoreError::AlreadyExists { .. }) => {
            let w = DatasetWriter::open(dst, options)?;
            if let Some(why) = spec.mismatch(w.manifest()) {
                return Err(StoreError::invalid(
                    dst,
                    format!(
                        "holds another dataset than {} ({why}); copy into a new name",
                        src.dir().display()
                    ),
                ));
            }
            w
        }
        other => other?,
    };
    let (mut written, mut kept) = (0, 0);
    for shard in src.shards() {
        if writer.manifest().shard(shard.index).is_some() {
            kept += 1;
            continue;
        }
        let rows = copy_shard(src, shard, &mut writer)?;
        written += 1;
        on_rows(rows as u64);
    }
    Ok(CopyReport {
        written,
        kept,
        bytes: writer.manifest().bytes(),
    })
}

/// Whether two names are one directory (URLs: one string).
fn same_place(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Everything in `m` a new dataset is made from, named after its directory `dst`.
fn spec_of(m: &Manifest, dst: &Path) -> DatasetSpec {
    DatasetSpec {
        name: crate::dataset_name(dst).unwrap_or_else(|| m.name.clone()),
        dims: m.dims,
        dtype: m.dtype,
        has_denoised: m.has_denoised,
        grid: m.grid.clone(),
        teacher: m.teacher.clone(),
        seeds: m.seeds.clone(),
        rows_per_shard: m.rows_per_shard,
        planned_count: m.planned_count,
        pd: m.pd.clone(),
    }
}

/// Reads one shard's steps and writes them as the same shard of `writer`'s dataset; returns
/// its rows.
fn copy_shard(src: &Dataset, shard: &ShardEntry, writer: &mut DatasetWriter) -> Result<usize> {
    let steps: Vec<u16> = (0..src.manifest().steps() as u16).collect();
    let batches = src.read_steps(shard, &steps, None)?;
    let first = &batches[0];
    let rows = first.rows();
    let labels = labels_of(first)?;
    let states = step_major(&batches, |b| Some(b.x()));
    let denoised = src
        .manifest()
        .has_denoised
        .then(|| step_major(&batches, |b| b.denoised()));
    let data = ShardData {
        index: shard.index,
        seeds: first.seeds(),
        labels: labels.as_deref(),
        states: &states,
        denoised: denoised.as_deref(),
    };
    match src.manifest().pd {
        Some(_) => {
            let sigmas: Vec<f32> = batches.iter().flat_map(|b| b.sigmas().to_vec()).collect();
            writer.write_pd_shard(&data, &sigmas)?
        }
        None => writer.write_shard(&data)?,
    };
    Ok(rows)
}

/// One vector column of every step, concatenated step after step (the writer's layout).
fn step_major<'a>(
    batches: &'a [StepBatch],
    column: impl Fn(&'a StepBatch) -> Option<crate::StateView<'a>>,
) -> Vec<f32> {
    let mut out = Vec::new();
    for b in batches {
        out.extend_from_slice(&column(b).unwrap_or_default());
    }
    out
}

/// The shard's labels: one per row, or none stored. A file with some rows labelled and some
/// not was not written by this store, which labels all or none.
fn labels_of(batch: &StepBatch) -> Result<Option<Vec<i32>>> {
    let labels: Vec<Option<i32>> = (0..batch.rows()).map(|r| batch.label(r)).collect();
    if labels.iter().all(Option::is_none) {
        return Ok(None);
    }
    labels
        .into_iter()
        .collect::<Option<Vec<i32>>>()
        .map(Some)
        .ok_or_else(|| StoreError::invalid(&batch.path, "labels some rows and not others"))
}
