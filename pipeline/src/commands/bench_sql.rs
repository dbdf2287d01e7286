//! `bdense bench sql STORE/NAME`: the README's questions in bdense (in-process, and as the CLI
//! a user runs) and in duckdb (`pipeline/bench/sql_duckdb.py`, same files, same thread
//! count), back to back per query, with both times, their ratio and whether the answers agree.

use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use bdense_queries::session::{StoreSession, runtime};
use bdense_store::Dataset;
use bdense_store::arrow::array::{Array, AsArray, RecordBatch};
use bdense_store::arrow::compute::cast;
use bdense_store::arrow::datatypes::{DataType, Float64Type};
use bdense_store::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::bench::best;
use super::bench_peer;
use crate::cli::BenchSqlArgs;

/// A question as the README asks it in bdense, and the same question in duckdb's dialect.
/// `{t}` is the table, `{last}` the dataset's last step. Queries without an ORDER BY in the
/// README get one on their key, so that both engines' rows come in one order. duckdb's
/// `list_distance` sums in f32: its vectors are cast to DOUBLE[] so that the distances
/// between the last, nearly equal steps agree to 1e-6 (bdense's functions sum in f64).
struct Question {
    name: &'static str,
    bdense: &'static str,
    duckdb: &'static str,
}

const QUESTIONS: [Question; 9] = [
    Question {
        name: "count, min, max",
        bdense: "SELECT count(*) AS n, min(traj_id) AS lo, max(traj_id) AS hi FROM {t}",
        duckdb: "SELECT count(*) AS n, min(traj_id) AS lo, max(traj_id) AS hi FROM {t}",
    },
    Question {
        name: "filtered count",
        bdense: "SELECT count(*) AS n FROM {t} WHERE step = {last}",
        duckdb: "SELECT count(*) AS n FROM {t} WHERE step = {last}",
    },
    Question {
        name: "norm per step",
        bdense: "SELECT step, avg(l2(x)) AS norm FROM {t} GROUP BY step ORDER BY step",
        duckdb: "SELECT step, avg(sqrt(list_inner_product(x, x))) AS norm FROM {t} GROUP BY step ORDER BY step",
    },
    Question {
        name: "consecutive-step distance",
        bdense: "SELECT a.traj_id, a.step, l2_dist(a.x, b.x) AS dist FROM {t} a JOIN {t} b ON a.traj_id = b.traj_id AND b.step = a.step + 1 WHERE a.traj_id < 4 ORDER BY a.traj_id, a.step",
        duckdb: "SELECT a.traj_id, a.step, list_distance(a.x::DOUBLE[], b.x::DOUBLE[]) AS dist FROM {t} a JOIN {t} b ON a.traj_id = b.traj_id AND b.step = a.step + 1 WHERE a.traj_id < 4 ORDER BY a.traj_id, a.step",
    },
    Question {
        name: "straightness",
        bdense: "WITH path AS (SELECT a.traj_id, sum(l2_dist(a.x, b.x)) AS len FROM {t} a JOIN {t} b ON a.traj_id = b.traj_id AND b.step = a.step + 1 GROUP BY a.traj_id) SELECT e.traj_id, l2_dist(s.x, e.x) / p.len AS straightness FROM {t} s JOIN {t} e ON s.traj_id = e.traj_id AND s.step = 0 AND e.step = {last} JOIN path p ON p.traj_id = s.traj_id ORDER BY straightness LIMIT 5",
        duckdb: "WITH path AS (SELECT a.traj_id, sum(list_distance(a.x::DOUBLE[], b.x::DOUBLE[])) AS len FROM {t} a JOIN {t} b ON a.traj_id = b.traj_id AND b.step = a.step + 1 GROUP BY a.traj_id) SELECT e.traj_id, list_distance(s.x::DOUBLE[], e.x::DOUBLE[]) / p.len AS straightness FROM {t} s JOIN {t} e ON s.traj_id = e.traj_id AND s.step = 0 AND e.step = {last} JOIN path p ON p.traj_id = s.traj_id ORDER BY straightness LIMIT 5",
    },
    Question {
        name: "NaN or Inf",
        bdense: "SELECT DISTINCT traj_id FROM {t} WHERE NOT all_finite(x) ORDER BY traj_id",
        duckdb: "SELECT DISTINCT traj_id FROM {t} WHERE NOT list_bool_and(list_transform(x, lambda v: isfinite(v))) ORDER BY traj_id",
    },
    Question {
        name: "duplicate seeds",
        bdense: "SELECT seed, count(*) AS n FROM {t} WHERE step = 0 GROUP BY seed HAVING count(*) > 1 ORDER BY seed",
        duckdb: "SELECT seed, count(*) AS n FROM {t} WHERE step = 0 GROUP BY seed HAVING count(*) > 1 ORDER BY seed",
    },
    Question {
        name: "per-label statistics",
        bdense: "SELECT label, count(*) AS n, avg(vmean(x)) AS mean, avg(vstd(x)) AS std FROM {t} WHERE step = {last} GROUP BY label ORDER BY label",
        duckdb: "SELECT label, count(*) AS n, avg(list_avg(x)) AS mean, avg(list_stddev_pop(x)) AS std FROM {t} WHERE step = {last} GROUP BY label ORDER BY label",
    },
    Question {
        name: "mean final image",
        bdense: "SELECT vec_avg(x) FROM {t} WHERE step = {last}",
        duckdb: "SELECT list(v ORDER BY i) FROM (SELECT i, avg(v) AS v FROM (SELECT unnest(x) AS v, generate_subscripts(x, 1) AS i FROM {t} WHERE step = {last}) GROUP BY i)",
    },
];

/// Relative tolerance for answers to agree.
const TOLERANCE: f64 = 1e-6;

/// One cell of an answer, as both engines' results are compared.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Num(f64),
    Text(String),
    List(Vec<f64>),
}

pub fn sql(args: &BenchSqlArgs) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(&args.dataset)?;
    let store = args
        .dataset
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let table = ds.name();
    let last = (ds.manifest().steps() - 1).to_string();
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let fill = |q: &str| q.replace("{t}", &quoted).replace("{last}", &last);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let python = bench_peer::python();
    let duckdb = bench_peer::versions(&python, &["duckdb"]);
    println!(
        "sql benchmark on {} ({} trajectories x {} steps), best of {}, {threads} threads; bdense in-process (one session: files hashed once) and its CLI (wall time, process start included){}:",
        args.dataset.display(),
        ds.manifest().trajectories(),
        ds.manifest().steps(),
        args.repeats,
        match &duckdb {
            Some(v) => format!(" against {v} ({}, same files)", python.display()),
            None => String::new(),
        }
    );
    if duckdb.is_none() {
        println!(
            "duckdb peer skipped: {} cannot import duckdb (set BDENSE_PYTHON to a python that can)",
            python.display()
        );
    }
    let files: Vec<String> = ds
        .shards()
        .iter()
        .flat_map(|s| s.files.iter())
        .map(|f| std::path::absolute(ds.file_path(f)).map(|p| p.to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let session = std::sync::Arc::new(StoreSession::open(&store)?);
    let rt = runtime();
    println!(
        "{:<26} {:>10} {:>8} {:>9} {:>14}  answers",
        "query", "bdense s", "CLI s", "duckdb s", "bdense/duckdb"
    );
    let mut within = 0;
    for q in &QUESTIONS {
        let sql = fill(q.bdense);
        let (secs, batches) = best(args.repeats, || {
            let (session, sql) = (session.clone(), sql.clone());
            Ok(rt.block_on(rt.spawn(async move {
                let df = session.sql(&sql, false).await?;
                Ok::<_, bdense_queries::QueryError>(df.collect().await?)
            }))??)
        })?;
        let (cli, _) = best(args.repeats, || cli_run(&store, &sql))?;
        let mine = cells(&batches)?;
        let peer = match &duckdb {
            Some(_) => Some(duckdb_run(
                &python,
                &files,
                &table,
                threads,
                args,
                &fill(q.duckdb),
            )?),
            None => None,
        };
        let (theirs, verdict) = match &peer {
            Some((s, rows)) => (format!("{s:>9.3}"), agreement(&mine, rows)),
            None => ("-".into(), "-".into()),
        };
        let ratio = match &peer {
            Some((s, _)) => {
                within += usize::from(secs <= 1.2 * s);
                format!("{:>13.2}x", secs / s)
            }
            None => "-".into(),
        };
        println!(
            "{:<26} {secs:>10.3} {cli:>8.3} {theirs:>9} {ratio:>14}  {verdict}",
            q.name
        );
    }
    match duckdb {
        Some(_) => println!(
            "bench sql done: bdense (in-process) within 1.2x of duckdb on {within} of {} queries",
            QUESTIONS.len()
        ),
        None => println!("bench sql done (bdense only)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `bdense sql STORE QUERY` as a user runs it, output discarded.
fn cli_run(store: &std::path::Path, sql: &str) -> anyhow::Result<()> {
    let status = Command::new(std::env::current_exe()?)
        .arg("sql")
        .arg(store)
        .arg(sql)
        .args(["--format", "csv"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "bdense sql failed ({status}) on {sql}");
    Ok(())
}

/// duckdb's best time and rows for `sql` over `files`.
fn duckdb_run(
    python: &std::path::PathBuf,
    files: &[String],
    table: &str,
    threads: usize,
    args: &BenchSqlArgs,
    sql: &str,
) -> anyhow::Result<(f64, Vec<Vec<Cell>>)> {
    let request = serde_json::json!({
        "files": files, "table": table, "threads": threads,
        "repeats": args.repeats, "sql": sql,
    });
    let out = bench_peer::run_script(
        python,
        include_str!("../../bench/sql_duckdb.py"),
        &[],
        &request.to_string(),
    )?;
    let last = out.lines().last().unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(last)
        .with_context(|| format!("duckdb peer's output is not JSON: {out}"))?;
    let secs = answer["seconds"]
        .as_f64()
        .context("duckdb peer gave no time")?;
    let rows = answer["rows"]
        .as_array()
        .context("duckdb peer gave no rows")?
        .iter()
        .map(|r| {
            r.as_array()
                .map(|cells| cells.iter().map(json_cell).collect())
                .unwrap_or_default()
        })
        .collect();
    Ok((secs, rows))
}

fn json_cell(v: &serde_json::Value) -> Cell {
    use serde_json::Value;
    match v {
        Value::Null => Cell::Null,
        Value::Bool(b) => Cell::Num(f64::from(u8::from(*b))),
        Value::Number(n) => Cell::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => match s.parse::<f64>() {
            Ok(f) if !f.is_finite() => Cell::Num(f),
            _ => Cell::Text(s.clone()),
        },
        Value::Array(a) => Cell::List(a.iter().map(|e| e.as_f64().unwrap_or(f64::NAN)).collect()),
        Value::Object(_) => Cell::Text(v.to_string()),
    }
}

/// bdense's answer as rows of cells: numbers as f64, vectors flattened, the rest as text.
fn cells(batches: &[RecordBatch]) -> anyhow::Result<Vec<Vec<Cell>>> {
    let mut rows = Vec::new();
    for b in batches {
        let columns = b
            .columns()
            .iter()
            .map(|c| column_cells(c.as_ref()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for r in 0..b.num_rows() {
            rows.push(columns.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok(rows)
}

fn column_cells(c: &dyn Array) -> anyhow::Result<Vec<Cell>> {
    let floats = |a: &dyn Array| -> anyhow::Result<Vec<f64>> {
        let f = cast(a, &DataType::Float64)?;
        Ok(f.as_primitive::<Float64Type>().values().to_vec())
    };
    Ok(match c.data_type() {
        DataType::FixedSizeList(..) => {
            let list = c.as_fixed_size_list();
            (0..list.len())
                .map(|r| match list.is_null(r) {
                    true => Ok(Cell::Null),
                    false => floats(list.value(r).as_ref()).map(Cell::List),
                })
                .collect::<anyhow::Result<_>>()?
        }
        t if t.is_numeric() || *t == DataType::Boolean => {
            let v = floats(c)?;
            (0..c.len())
                .map(|r| match c.is_null(r) {
                    true => Cell::Null,
                    false => Cell::Num(v[r]),
                })
                .collect()
        }
        _ => {
            let f = ArrayFormatter::try_new(c, &FormatOptions::default())?;
            (0..c.len())
                .map(|r| match c.is_null(r) {
                    true => Cell::Null,
                    false => Cell::Text(f.value(r).to_string()),
                })
                .collect()
        }
    })
}

/// "agree", or where the answers first differ by more than [`TOLERANCE`] relative.
fn agreement(mine: &[Vec<Cell>], theirs: &[Vec<Cell>]) -> String {
    if mine.len() != theirs.len() {
        return format!("DIFFER: {} rows against {}", mine.len(), theirs.len());
    }
    for (r, (a, b)) in mine.iter().zip(theirs).enumerate() {
        let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(x, y));
        if !same {
            return format!("DIFFER at row {r}: {a:?} against {b:?}");
        }
    }
    format!("agree ({} rows)", mine.len())
}

fn close(a: &Cell, b: &Cell) -> bool {
    let num = |x: f64, y: f64| {
        x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= TOLERANCE * x.abs().max(y.abs())
    };
    match (a, b) {
        (Cell::Num(x), Cell::Num(y)) => num(*x, *y),
        (Cell::List(x), Cell::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| num(*p, *q))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::{Cell, agreement};

    fn rows(v: &[f64]) -> Vec<Vec<Cell>> {
        v.iter().map(|&x| vec![Cell::Num(x)]).collect()
    }

    /// The verdict the report prints: equal within 1e-6 relative, NaN equal to NaN; a
    /// difference past the tolerance, a missing row or another kind of value is named.
    #[test]
    fn answers_agree_only_within_the_tolerance() {
        let base = [0.000601149, 1.0, f64::NAN];
        let close = [0.000601149 * (1.0 + 5e-7), 1.0, f64::NAN];
        assert_eq!(agreement(&rows(&base), &rows(&close)), "agree (3 rows)");
        let far = [0.000601149 * (1.0 + 2e-6), 1.0, f64::NAN];
        assert!(agreement(&rows(&base), &rows(&far)).starts_with("DIFFER at row 0"));
        assert!(agreement(&rows(&base), &rows(&base[..2])).starts_with("DIFFER: 3 rows"));
        let text = vec![vec![Cell::Text("1".into())]];
        assert!(agreement(&rows(&[1.0]), &text).starts_with("DIFFER at row 0"));
        let list = |v: &[f64]| vec![vec![Cell::List(v.to_vec())]];
        assert_eq!(
            agreement(&list(&[1.0, 2.0]), &list(&[1.0, 2.0])),
            "agree (1 rows)"
        );
        assert!(agreement(&list(&[1.0, 2.0]), &list(&[1.0, 2.1])).starts_with("DIFFER"));
    }
}
