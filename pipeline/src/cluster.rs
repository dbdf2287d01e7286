//! SQL on an Apache DataFusion Ballista cluster: `bdense cluster scheduler`, `bdense cluster
//! executor` and the client behind `bdense sql --cluster df://HOST:PORT`, all inside this
//! binary so every part knows the store's tables and vector functions
//! ([`bdense_queries::cluster`]'s codecs). Built with the `cluster` feature; without it the
//! commands say how to get one that has it.
//!
//! Executors pull tasks from the scheduler (Ballista's pull-staged policy), so each needs one
//! port, its Arrow Flight service for the shuffle, and the scheduler needs none of theirs.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use bdense_queries::datafusion::arrow::record_batch::RecordBatch;
use bdense_queries::datafusion::dataframe::DataFrame;

/// Ballista's default scheduler port.
pub const DEFAULT_PORT: u16 = 50050;

/// After this long without an answer, `sql --cluster` says what it may be waiting for.
const QUIET: Duration = Duration::from_secs(10);

/// The scheduler a `df://HOST[:PORT]` URL names, as `HOST:PORT`.
pub fn scheduler_address(url: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("df://") else {
        bail!("{url}: a cluster URL is df://HOST:PORT (a `bdense cluster scheduler`)");
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        bail!("{url}: a cluster URL is df://HOST:PORT, with no path");
    }
    Ok(match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
            let port: u16 = port
                .parse()
                .map_err(|_| anyhow::anyhow!("{url}: {port:?} is not a port number"))?;
            format!("{host}:{port}")
        }
        _ => format!("{rest}:{DEFAULT_PORT}"),
    })
}

/// Fails, naming `url`, unless something accepts connections at `address`: without a
/// scheduler Ballista's client would retry and end in a multi-line transport error.
pub fn check_reachable(url: &str, address: &str) -> anyhow::Result<()> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {address}"))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    let why = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
    bail!(
        "{url}: cannot reach the Ballista scheduler ({why}); start one with `bdense cluster scheduler`"
    )
}

/// `df`'s batches, with a note on stderr if none have come after [`QUIET`]: while no executor
/// is registered, Ballista keeps the job queued and says nothing. Failures name `url` (a task's
/// error or a lost scheduler arrives as Ballista's text alone).
pub async fn collect(url: &str, df: DataFrame) -> anyhow::Result<Vec<RecordBatch>> {
    let failed = || format!("{url}: the query failed on the cluster");
    let answer = df.collect();
    tokio::pin!(answer);
    tokio::select! {
        batches = &mut answer => return batches.with_context(failed),
        () = tokio::time::sleep(QUIET) => eprintln!(
            "{url}: no answer after {}s, still waiting; a query waits while the scheduler has \
             no executor (`bdense cluster executor --scheduler HOST:PORT`)",
            QUIET.as_secs()
        ),
    }
    answer.await.with_context(failed)
}

#[cfg(feature = "cluster")]
mod ballista_parts {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::ExitCode;
    use std::sync::Arc;

    use anyhow::{Context, anyhow};
    use ballista::prelude::{SessionConfigExt, SessionContextExt};
    use ballista_core::config::TaskSchedulingPolicy;
    use ballista_core::registry::BallistaFunctionRegistry;
    use ballista_core::utils::default_session_builder;
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    use ballista_scheduler::scheduler_process::{
        create_scheduler, start_grpc_service_with_listener,
    };
    use bdense_queries::StoreSession;
    use bdense_queries::cluster::{StoreLogicalCodec, StorePhysicalCodec};
    use bdense_queries::datafusion::execution::FunctionRegistry;
    use bdense_queries::datafusion::execution::SessionStateBuilder;
    use bdense_queries::datafusion::prelude::{SessionConfig, SessionContext};
    use bdense_queries::session::{config, runtime};
    use bdense_queries::udf;
    use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

    use crate::cli::{ExecutorArgs, SchedulerArgs};

    /// A session over `store` whose queries run on the scheduler at `url`.
    pub async fn session(url: &str, store: &Path) -> anyhow::Result<StoreSession> {
        let address = super::scheduler_address(url)?;
        super::check_reachable(url, &address)?;
        let config = config()
            .with_ballista_logical_extension_codec(Arc::new(StoreLogicalCodec::default()))
            .with_ballista_physical_extension_codec(Arc::new(StorePhysicalCodec::default()));
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .build();
        let ctx = SessionContext::remote_with_state(&format!("df://{address}"), state)
            .await
            .with_context(|| format!("{url}: cannot set up a cluster session"))?;
        Ok(StoreSession::open_in(store, ctx)?)
    }

    pub fn scheduler(args: &SchedulerArgs) -> anyhow::Result<ExitCode> {
        let rt = runtime();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(args.bind)
                .await
                .with_context(|| format!("cannot listen on {}", args.bind))?;
            let bound = listener.local_addr()?;
            let config = Arc::new(scheduler_config(bound));
            let cluster = BallistaCluster::new_from_config(&config).await?;
            let server =
                create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config).await?;
            eprintln!("bdense cluster scheduler: listening on df://{bound}");
            start_grpc_service_with_listener(listener, server).await?;
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(ExitCode::SUCCESS)
    }

    fn scheduler_config(bound: SocketAddr) -> SchedulerConfig {
        SchedulerConfig {
            bind_host: bound.ip().to_string(),
            external_host: bound.ip().to_string(),
            bind_port: bound.port(),
            scheduling_policy: TaskSchedulingPolicy::PullStaged,
            override_logical_codec: Some(Arc::new(StoreLogicalCodec::default())),
            override_physical_codec: Some(Arc::new(StorePhysicalCodec::default())),
            override_session_builder: Some(Arc::new(|config: SessionConfig| {
                let mut state = default_session_builder(config)?;
                for f in udf::scalar_functions() {
                    state.register_udf(Arc::new(f))?;
                }
                for f in udf::aggregate_functions() {
                    state.register_udaf(Arc::new(f))?;
                }
                Ok(state)
            })),
            ..SchedulerConfig::default()
        }
    }

    pub fn executor(args: &ExecutorArgs) -> anyhow::Result<ExitCode> {
        let url = if args.scheduler.starts_with("df://") {
            args.scheduler.clone()
        } else {
            format!("df://{}", args.scheduler)
        };
        let scheduler = super::scheduler_address(&url)?;
        let (scheduler_host, scheduler_port) = scheduler
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            .ok_or_else(|| anyhow!("{url}: expected HOST:PORT"))?;
        super::check_reachable(&url, &scheduler)?;
        let host = args.bind.ip().to_string();
        let config = ExecutorProcessConfig {
            bind_host: host.clone(),
            external_host: Some(host),
            port: args.bind.port(),
            scheduler_host,
            scheduler_port,
            vcores: args.tasks,
            task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
            print_thread_info: false,
            override_function_registry: Some(Arc::new(function_registry())),
            override_logical_codec: Some(Arc::new(StoreLogicalCodec::default())),
            override_physical_codec: Some(Arc::new(StorePhysicalCodec::default())),
            ..ExecutorProcessConfig::default()
        };
        eprintln!(
            "bdense cluster executor: serving on {} for the scheduler at {url}",
            args.bind
        );
        runtime().block_on(start_executor_process(Arc::new(config)))?;
        Ok(ExitCode::SUCCESS)
    }

    /// DataFusion's functions and bdense's vector functions, by name.
    fn function_registry() -> BallistaFunctionRegistry {
        let mut registry = BallistaFunctionRegistry::default();
        let scalar: HashMap<_, _> = udf::scalar_functions()
            .into_iter()
            .map(|f| (f.name().to_string(), Arc::new(f)))
            .collect();
        registry.scalar_functions.extend(scalar);
        let aggregate: HashMap<_, _> = udf::aggregate_functions()
            .into_iter()
            .map(|f| (f.name().to_string(), Arc::new(f)))
            .collect();
        registry.aggregate_functions.extend(aggregate);
        registry
    }
}

#[cfg(feature = "cluster")]
pub use ballista_parts::{executor, scheduler, session};

#[cfg(not(feature = "cluster"))]
mod without {
    use std::path::Path;
    use std::process::ExitCode;

    use bdense_queries::StoreSession;

    use crate::cli::{ExecutorArgs, SchedulerArgs};

    fn missing() -> anyhow::Error {
        anyhow::anyhow!(
            "this bdense was built without the cluster feature; build one with \
             `cargo build --release --features bdense-pipeline/cluster` (see .ci/cluster)"
        )
    }

    pub async fn session(url: &str, _store: &Path) -> anyhow::Result<StoreSession> {
        super::scheduler_address(url)?;
        Err(missing())
    }

    pub fn scheduler(_: &SchedulerArgs) -> anyhow::Result<ExitCode> {
        Err(missing())
    }

    pub fn executor(_: &ExecutorArgs) -> anyhow::Result<ExitCode> {
        Err(missing())
    }
}

#[cfg(not(feature = "cluster"))]
pub use without::{executor, scheduler, session};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(
            scheduler_address("df://10.0.0.5:50070").unwrap(),
            "10.0.0.5:50070"
        );
        assert_eq!(scheduler_address("df://head/").unwrap(), "head:50050");
        for bad in ["http://x:1", "df://", "df://x:port", "df://x:1/path", "x:1"] {
            let err = scheduler_address(bad).unwrap_err().to_string();
            assert!(err.starts_with(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn unreachable_scheduler_is_named() {
        // A port just released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("df://127.0.0.1:{port}");
        let err = check_reachable(&url, &scheduler_address(&url).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&url), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
