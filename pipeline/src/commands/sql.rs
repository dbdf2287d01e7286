//! `bdense sql STORE "QUERY"`: DataFusion over every dataset of a store, read-only by default.

use std::process::ExitCode;
use std::time::Instant;

use bdense_queries::format;
use bdense_queries::session::{StoreSession, runtime};

use crate::cli::SqlArgs;

pub fn run(args: &SqlArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (query, allow_writes) = (args.query.clone(), args.allow_writes);
    let (store, cluster) = (args.store.clone(), args.cluster.clone());
    let rt = runtime();
    // Spawned, not polled in `block_on`: a worker thread has the stack deep queries need.
    let batches = rt.block_on(rt.spawn(async move {
        let session = match &cluster {
            Some(url) => crate::cluster::session(url, &store).await?,
            None => StoreSession::open(&store)?,
        };
        let df = session.sql(&query, allow_writes).await?;
        match &cluster {
            Some(url) => crate::cluster::collect(url, df).await,
            None => Ok(df.collect().await?),
        }
    }))??;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    format::write(
        &batches,
        args.format,
        args.out.as_deref(),
        &mut std::io::stdout(),
    )?;
    // The summary goes to stderr so that piped CSV/JSON stays clean.
    eprintln!(
        "{rows} rows in {:.2}s{}",
        started.elapsed().as_secs_f64(),
        args.out
            .as_ref()
            .map(|p| format!(", written to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
