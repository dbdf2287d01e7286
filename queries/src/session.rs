//! A DataFusion session over a store: one table per dataset, plus `manifest` (one row per
//! dataset) and `grid` (dataset, step, sigma), with the vector UDFs registered.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bdense_store::Dataset;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt16Array, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Visit, Visitor};

use crate::error::{QueryError, Result};
use crate::table::StepTable;
use crate::udf;

pub const MANIFEST_TABLE: &str = "manifest";
pub const GRID_TABLE: &str = "grid";

pub struct StoreSession {
    ctx: SessionContext,
    store: PathBuf,
    datasets: BTreeMap<String, Dataset>,
}

impl StoreSession {
    /// Opens every dataset in `store` (a path, `file://PATH` or `s3://BUCKET/PREFIX`), each at
    /// its committed snapshot.
    pub fn open(store: &Path) -> Result<StoreSession> {
        Self::open_in(store, SessionContext::new_with_config(config()))
    }

    /// Opens every dataset in `store` as tables of `ctx`, a context built on [`config`] (a
    /// cluster client's, say), registering the vector functions there too.
    pub fn open_in(store: &Path, ctx: SessionContext) -> Result<StoreSession> {
        let mut datasets = BTreeMap::new();
        for name in bdense_store::list_datasets(store)? {
            datasets.insert(name.clone(), Dataset::open(&store.join(&name))?);
        }
        Self::with_datasets(store, datasets, ctx)
    }

    /// A session holding just `dataset`.
    pub fn for_dataset(dataset: Dataset) -> Result<StoreSession> {
        let name = dataset.name();
        let store = dataset
            .dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let ctx = SessionContext::new_with_config(config());
        Self::with_datasets(&store, BTreeMap::from([(name, dataset)]), ctx)
    }

    fn with_datasets(
        store: &Path,
        datasets: BTreeMap<String, Dataset>,
        ctx: SessionContext,
    ) -> Result<StoreSession> {
        udf::register_all(&ctx);
        for (name, ds) in &datasets {
            if name == MANIFEST_TABLE || name == GRID_TABLE {
                return Err(QueryError::Dataset {
                    dataset: ds.dir().display().to_string(),
                    detail: format!("a dataset may not be called {name:?} (a reserved table name)"),
                });
            }
            if let Some(remote) = ds.backend().object_dir() {
                // DataFusion reads byte ranges through the same client the store uses.
                let url = crate::table::store_url(ds);
                ctx.runtime_env()
                    .register_object_store(url.as_ref(), remote.store());
            }
            ctx.register_table(name.as_str(), Arc::new(StepTable::new(ds)))?;
        }
        ctx.register_table(MANIFEST_TABLE, Arc::new(manifest_table(&datasets)?))?;
        ctx.register_table(GRID_TABLE, Arc::new(grid_table(&datasets)?))?;
        Ok(StoreSession {
            ctx,
            store: store.to_path_buf(),
            datasets,
        })
    }

    pub fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.get(name)
    }

    /// Every table a query may name.
    pub fn table_names(&self) -> Vec<String> {
        self.datasets
            .keys()
            .cloned()
            .chain([MANIFEST_TABLE.to_string(), GRID_TABLE.to_string()])
            .collect()
    }

    /// Plans `query`. Statements that write or create anything are refused unless
    /// `allow_writes`; an unknown table is reported with the list of tables.
    /// Expressions nested deeper than [`MAX_EXPR_DEPTH`] are refused before planning.
    pub async fn sql(&self, query: &str, allow_writes: bool) -> Result<DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(allow_writes)
            .with_allow_dml(allow_writes)
            .with_allow_statements(allow_writes);
        let explain = |e| self.explain_error(e, allow_writes);
        // `SessionContext::sql_with_options` in steps, with the depth check between parsing
        // and planning.
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(query, &dialect).map_err(explain)?;
        check_depth(&statement)?;
        let plan = state.statement_to_plan(statement).await.map_err(explain)?;
        options.verify_plan(&plan).map_err(explain)?;
        self.ctx.execute_logical_plan(plan).await.map_err(explain)
    }

    fn explain_error(
        &self,
        e: datafusion::error::DataFusionError,
        allow_writes: bool,
    ) -> QueryError {
        let root = e.find_root().strip_backtrace();
        if root.contains("not found") && root.contains("table") {
            let tables = self.table_names().join(", ");
            return QueryError::Refused(format!(
                "{root}; tables in {}: {tables}",
                self.store.display()
            ));
        }
        if !allow_writes
            && (root.contains("not supported: ")
                && (root.contains("DDL") || root.contains("DML") || root.contains("Statement")))
        {
            return QueryError::Refused(format!(
                "{root}: `bdense sql` is read-only; pass --allow-writes to run statements that write or create"
            ));
        }
        if let datafusion::error::DataFusionError::SQL(parse, _) = e.find_root() {
            return QueryError::Refused(format!("SQL parse error: {parse}"));
        }
        QueryError::DataFusion(e)
    }
}

/// The settings of every store session: one partition per core, `information_schema` on,
/// and filters evaluated inside the Parquet scan, so that a query such as the README's
/// `WHERE a.traj_id < 4` decodes the state vectors of the matching rows only.
pub fn config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .with_information_schema(true);
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.pushdown_filters = true;
    parquet.reorder_filters = true;
    config
}

/// The deepest expression nesting a query may have. DataFusion plans, optimises and evaluates
/// expressions recursively, so a long chain such as `1+1+...+1` (each `+` one level) would
/// overflow the stack and abort the process; with [`WORKER_STACK`] this many levels plan
/// with room to spare, and no hand-written query comes near.
pub const MAX_EXPR_DEPTH: usize = 1000;

/// Stack of each runtime thread: queries are planned and run there, and deep expressions
/// need far more than tokio's 2 MiB default. A 1000-level chain overflows 16 MiB and runs in
/// 64 MiB (debug build); this leaves room for heavier levels. Only touched pages are committed.
pub const WORKER_STACK: usize = 256 << 20;

/// Refuses a statement whose expressions nest deeper than [`MAX_EXPR_DEPTH`].
fn check_depth(statement: &DFStatement) -> Result<()> {
    let mut depth = ExprDepth::default();
    let stopped = match statement {
        DFStatement::Statement(s) => s.visit(&mut depth),
        DFStatement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(q) => q.visit(&mut depth),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::Explain(explain) => return check_depth(&explain.statement),
        _ => ControlFlow::Continue(()),
    };
    if stopped.is_break() {
        return Err(QueryError::Refused(format!(
            "expression too deeply nested (more than {MAX_EXPR_DEPTH} levels; each operator \
             of a chain like `a OR b OR ...` adds one): split the query, or use IN (...) for \
             a list of values"
        )));
    }
    Ok(())
}

/// Tracks the expression nesting of a visit, stopping it past [`MAX_EXPR_DEPTH`].
#[derive(Default)]
struct ExprDepth {
    depth: usize,
}

impl Visitor for ExprDepth {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

fn manifest_table(datasets: &BTreeMap<String, Dataset>) -> Result<MemTable> {
    let ms: Vec<(&String, &bdense_store::Manifest)> =
        datasets.iter().map(|(n, d)| (n, d.manifest())).collect();
    let strings = |f: &dyn Fn(&bdense_store::Manifest) -> String| -> ArrayRef {
        Arc::new(ms.iter().map(|(_, m)| Some(f(m))).collect::<StringArray>())
    };
    let u32s = |f: &dyn Fn(&bdense_store::Manifest) -> u32| -> ArrayRef {
        Arc::new(ms.iter().map(|(_, m)| f(m)).collect::<UInt32Array>())
    };
    let u64s = |f: &dyn Fn(&bdense_store::Manifest) -> u64| -> ArrayRef {
        Arc::new(ms.iter().map(|(_, m)| f(m)).collect::<UInt64Array>())
    };
    let f64s = |f: &dyn Fn(&bdense_store::Manifest) -> f64| -> ArrayRef {
        Arc::new(ms.iter().map(|(_, m)| f(m)).collect::<Float64Array>())
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "dataset",
            Arc::new(
                ms.iter()
                    .map(|(n, _)| Some(n.as_str()))
                    .collect::<StringArray>(),
            ),
        ),
        ("c", u32s(&|m| m.dims.c)),
        ("h", u32s(&|m| m.dims.h)),
        ("w", u32s(&|m| m.dims.w)),
        ("dtype", strings(&|m| m.dtype.to_string())),
        ("steps", u32s(&|m| m.steps() as u32)),
        ("grid_points", u32s(&|m| m.grid.points() as u32)),
        ("sigma_max", f64s(&|m| m.grid.sigma_max)),
        ("sigma_min", f64s(&|m| m.grid.sigma_min)),
        ("rho", f64s(&|m| m.grid.rho)),
        (
            "appends_zero",
            Arc::new(
                ms.iter()
                    .map(|(_, m)| Some(m.grid.appends_zero))
                    .collect::<BooleanArray>(),
            ),
        ),
        ("teacher", strings(&|m| m.teacher.kind.clone())),
        ("solver", strings(&|m| m.teacher.solver.clone())),
        ("solver_order", u32s(&|m| m.teacher.order)),
        (
            "checkpoint_hash",
            strings(&|m| m.teacher.checkpoint_hash.clone().unwrap_or_default()),
        ),
        ("base_seed", u64s(&|m| m.seeds.base_seed)),
        (
            "has_denoised",
            Arc::new(
                ms.iter()
                    .map(|(_, m)| Some(m.has_denoised))
                    .collect::<BooleanArray>(),
            ),
        ),
        ("trajectories", u64s(&|m| m.trajectories())),
        ("planned", u64s(&|m| m.planned_count)),
        ("shards", u32s(&|m| m.shards.len() as u32)),
        ("bytes", u64s(&|m| m.bytes())),
        ("snapshot", strings(&|m| m.snapshot_hash())),
    ];
    mem_table(columns)
}

fn grid_table(datasets: &BTreeMap<String, Dataset>) -> Result<MemTable> {
    let rows: Vec<(&str, u16, f64)> = datasets
        .iter()
        .flat_map(|(n, d)| {
            d.manifest()
                .grid
                .sigmas
                .iter()
                .enumerate()
                .map(move |(i, &s)| (n.as_str(), i as u16, s))
        })
        .collect();
    mem_table(vec![
        (
            "dataset",
            Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
        ),
        (
            "step",
            Arc::new(rows.iter().map(|r| r.1).collect::<UInt16Array>()),
        ),
        (
            "sigma",
            Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
        ),
    ])
}

fn mem_table(columns: Vec<(&str, ArrayRef)>) -> Result<MemTable> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| {
            Field::new(
                *n,
                a.data_type().clone(),
                matches!(a.data_type(), DataType::Utf8),
            )
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )?;
    Ok(MemTable::try_new(schema, vec![vec![batch]])?)
}

/// A multi-threaded runtime sized to the machine, for callers outside async code. Run
/// queries on it with `spawn` rather than in `block_on`, which polls on the caller's thread
/// and so without the [`WORKER_STACK`] they may need.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_stack_size(WORKER_STACK)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
