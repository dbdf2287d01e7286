//! `bdense targets STORE/NAME --n N --k K`: the student's step layout, a preview of the
//! first batch, or one epoch of targets written as Parquet.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use bdense_queries::{StudentLayout, TargetSpec, TargetStream};
use bdense_store::Dataset;

use crate::cli::TargetsArgs;
use crate::progress::bytes;

pub fn run(args: &TargetsArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let dataset = Dataset::open(&args.dataset)?;
    let mut spec = TargetSpec::new(args.n, args.k, args.batch, args.seed);
    spec.afs = args.afs;
    spec.teacher_forcing = args.teacher_forcing;
    spec.epochs = Some(1);
    let mut stream = TargetStream::open(dataset, &spec, 0)?;
    if args.preview || args.out.is_none() {
        print_layout(stream.layout());
        let first = stream
            .next_batch()
            .context("the dataset yielded no batch")??;
        println!("first batch (epoch 0, seed {}):", args.seed);
        for (field, column) in first
            .batch
            .schema()
            .fields()
            .iter()
            .zip(first.batch.columns())
        {
            println!(
                "  {:<16} {:<40} {} rows",
                field.name(),
                short_type(field.data_type()),
                column.len()
            );
        }
        println!(
            "  start [{}, {}], targets [{}, {}, {}, {}], trajectory ids {:?}...",
            first.len(),
            first.dim,
            first.len(),
            stream.layout().intervals(),
            stream.layout().k,
            first.dim,
            &first.traj_ids()[..first.len().min(5)]
        );
    }
    if let Some(out) = &args.out {
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut writer: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
        let mut file = Some(file);
        let (mut rows, mut batches) = (0usize, 0usize);
        let mut stream = TargetStream::open(Dataset::open(&args.dataset)?, &spec, 0)?;
        while let Some(batch) = stream.next_batch() {
            let batch = batch?;
            if writer.is_none() {
                writer = Some(parquet::arrow::ArrowWriter::try_new(
                    file.take().expect("file"),
                    batch.batch.schema(),
                    None,
                )?);
            }
            writer.as_mut().expect("writer").write(&batch.batch)?;
            rows += batch.len();
            batches += 1;
        }
        let Some(writer) = writer else {
            bail!("no batches to write")
        };
        writer.close()?;
        let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        println!(
            "wrote {rows} trajectories in {batches} batches ({}) of N={} K={} targets to {} in {:.1}s",
            bytes(size),
            args.n,
            args.k,
            out.display(),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "layout N={} K={} stride {} on {}: {} steps read per trajectory, {} batches per epoch ({:.2}s)",
            args.n,
            args.k,
            stream.layout().stride,
            args.dataset.display(),
            stream.layout().steps().len(),
            stream.batches_per_epoch(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_layout(l: &StudentLayout) {
    println!(
        "student N={} (NFE {}{}), K={} branches, every {} grid steps",
        l.n,
        l.nfe(),
        if l.afs { ", analytical first step" } else { "" },
        l.k,
        l.stride
    );
    for i in 0..l.intervals() {
        let targets: Vec<String> = l.targets[i]
            .iter()
            .zip(&l.target_sigmas[i])
            .map(|(s, sigma)| format!("{s}@{sigma:.4}"))
            .collect();
        let note = if l.afs && i == 0 {
            "  (AFS: no network call)"
        } else {
            ""
        };
        println!(
            "  interval {i}: s={:.4} (step {}) -> targets {}{note}",
            l.sigmas[i],
            l.timestamps[i],
            targets.join(", ")
        );
    }
    println!(
        "  final: s={:.4} (step {})",
        l.sigmas[l.n - 1],
        l.timestamps[l.n - 1]
    );
}

fn short_type(t: &bdense_queries::datafusion::arrow::datatypes::DataType) -> String {
    use bdense_queries::datafusion::arrow::datatypes::DataType;
    match t {
        DataType::FixedSizeList(f, n) => format!("[{}; {n}]", short_type(f.data_type())),
        other => other.to_string(),
    }
}
