//! `bdense sql STORE "QUERY"`: DataFusion over every dataset of a store, read-only by default.

use std::process::ExitCode;
use std::time::Instant;

use bdense_queries::format::{self, Format};
use bdense_queries::session::{StoreSession, runtime};

use crate::cli::SqlArgs;

pub fn run(args: &SqlArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let session = StoreSession::open(&args.store)?;
    let rt = runtime();
    let batches = rt.block_on(async {
        let df = session.sql(&args.query, args.allow_writes).await?;
        Ok::<_, bdense_queries::QueryError>(df.collect().await?)
    })?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    format::write(
        &batches,
        format,
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
