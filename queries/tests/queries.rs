//! The query layer against direct computation: every UDF, the README's example questions,
//! and branch targets checked value by value against the store.

use std::collections::HashSet;
use std::path::Path;

use bdense_queries::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use bdense_queries::datafusion::arrow::datatypes::{Float64Type, UInt64Type};
use bdense_queries::session::{StoreSession, runtime};
use bdense_queries::{StudentLayout, TargetSpec, TargetStream};
use bdense_store::synthetic::{SyntheticSpec, gaussian_shard, write_gaussian};
use bdense_store::{Dataset, DatasetWriter, Dims, Dtype, WriteOptions};

fn sigmas(points: usize) -> Vec<f64> {
    bdense_store::Grid::edm(points).sigmas
}

fn spec(name: &str, count: u64, points: usize, dtype: Dtype) -> SyntheticSpec {
    SyntheticSpec {
        name: name.into(),
        dims: Dims { c: 1, h: 2, w: 3 },
        count,
        sigmas: sigmas(points),
        rows_per_shard: 16,
        dtype,
        base_seed: 5,
        classes: 3,
        with_denoised: false,
    }
}

fn sql(session: &StoreSession, query: &str) -> Vec<RecordBatch> {
    runtime().block_on(async {
        session
            .sql(query, false)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
    })
}

fn f64_column(batches: &[RecordBatch], i: usize) -> Vec<Option<f64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(i).as_primitive::<Float64Type>();
            (0..c.len()).map(move |r| c.is_valid(r).then(|| c.value(r)))
        })
        .collect()
}

fn u64_column(batches: &[RecordBatch], i: usize) -> Vec<u64> {
    batches
        .iter()
        .flat_map(|b| b.column(i).as_primitive::<UInt64Type>().values().to_vec())
        .collect()
}

/// `x` of every trajectory at `step`, by id, read from the store directly.
fn states(ds: &Dataset, step: u16) -> Vec<Vec<f32>> {
    let d = ds.dim();
    let mut out = vec![Vec::new(); ds.manifest().trajectories() as usize];
    for shard in ds.shards() {
        let b = ds.read_step(shard, step).unwrap();
        for (r, &id) in b.traj_ids().iter().enumerate() {
            out[id as usize] = b.x()[r * d..(r + 1) * d].to_vec();
        }
    }
    out
}

fn store_with(dir: &Path, dtype: Dtype, with_nan: bool) -> Dataset {
    let s = spec("g", 40, 9, dtype);
    let path = dir.join("g");
    let mut w = DatasetWriter::create(&path, s.dataset_spec(), WriteOptions::default()).unwrap();
    for index in w.manifest().missing_shards() {
        let mut shard = gaussian_shard(&s, index);
        if with_nan && index == 1 {
            // Trajectory 21 holds a NaN at step 3, trajectory 17 an Inf at step 5.
            shard.states[(3 * 16 + 5) * 6 + 2] = f32::NAN;
            shard.states[(5 * 16 + 1) * 6] = f32::INFINITY;
        }
        w.write_shard(&shard.data()).unwrap();
    }
    Dataset::open(&path).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-5 * (1.0 + b.abs()) || (a.is_nan() && b.is_nan())
}

fn check_udfs(dtype: Dtype) {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store_with(tmp.path(), dtype, true);
    let session = StoreSession::open(tmp.path()).unwrap();
    let rows = sql(
        &session,
        "SELECT a.traj_id, l2(a.x), l2_dist(a.x, b.x), cos_sim(a.x, b.x), vmean(a.x), vstd(a.x), all_finite(a.x)
         FROM g a JOIN g b ON a.traj_id = b.traj_id AND a.step = 3 AND b.step = 5 ORDER BY a.traj_id",
    );
    let (x3, x5) = (states(&ds, 3), states(&ds, 5));
    let ids = u64_column(&rows, 0);
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    let (l2, dist, cos, mean, std) = (
        f64_column(&rows, 1),
        f64_column(&rows, 2),
        f64_column(&rows, 3),
        f64_column(&rows, 4),
        f64_column(&rows, 5),
    );
    let finite: Vec<bool> = rows
        .iter()
        .flat_map(|b| {
            b.column(6)
                .as_boolean()
                .iter()
                .map(|v| v.unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    for id in 0..40 {
        let (a, b) = (&x3[id], &x5[id]);
        let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let m = a64.iter().sum::<f64>() / 6.0;
        let expect = [
            norm(&a64),
            a64.iter()
                .zip(&b64)
                .map(|(p, q)| (p - q).powi(2))
                .sum::<f64>()
                .sqrt(),
            a64.iter().zip(&b64).map(|(p, q)| p * q).sum::<f64>() / (norm(&a64) * norm(&b64)),
            m,
            (a64.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 6.0).sqrt(),
        ];
        let got = [
            l2[id].unwrap(),
            dist[id].unwrap(),
            cos[id].unwrap(),
            mean[id].unwrap(),
            std[id].unwrap(),
        ];
        for (name, (g, e)) in ["l2", "l2_dist", "cos_sim", "vmean", "vstd"]
            .iter()
            .zip(got.iter().zip(expect))
        {
            assert!(
                close(*g, e),
                "{dtype} {name} of trajectory {id}: {g} vs {e}"
            );
        }
        assert_eq!(
            finite[id],
            a.iter().all(|v| v.is_finite()),
            "all_finite of {id}"
        );
    }
    assert!(
        l2[21].unwrap().is_nan() && !finite[21],
        "a NaN propagates into l2 and all_finite"
    );

    // The aggregate: the element-wise mean of the final states.
    let rows = sql(&session, "SELECT vec_avg(x) FROM g WHERE step = 8");
    let avg = rows[0].column(0).as_fixed_size_list();
    let got = avg
        .values()
        .as_primitive::<bdense_queries::datafusion::arrow::datatypes::Float32Type>()
        .values();
    let x8 = states(&ds, 8);
    for j in 0..6 {
        let e = x8.iter().map(|v| v[j] as f64).sum::<f64>() / 40.0;
        assert!(close(got[j] as f64, e), "vec_avg[{j}]: {} vs {e}", got[j]);
    }
}

#[test]
fn vector_udfs_match_direct_computation_f32() {
    check_udfs(Dtype::F32);
}

#[test]
fn vector_udfs_match_direct_computation_f16() {
    check_udfs(Dtype::F16);
}

#[test]
fn udf_names_are_unique_and_literals_work() {
    let names = bdense_queries::udf::names();
    assert_eq!(
        names.iter().collect::<HashSet<_>>().len(),
        names.len(),
        "{names:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    write_gaussian(
        &tmp.path().join("g"),
        &spec("g", 16, 5, Dtype::F32),
        WriteOptions::default(),
    )
    .unwrap();
    let session = StoreSession::open(tmp.path()).unwrap();
    let rows = sql(
        &session,
        "SELECT l2_dist(x, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]) - l2(x) FROM g WHERE step = 2",
    );
    assert!(f64_column(&rows, 0).iter().all(|v| v.unwrap().abs() < 1e-9));
}

#[test]
fn readme_questions_answer_what_direct_reads_give() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = store_with(tmp.path(), Dtype::F32, true);
    let session = StoreSession::open(tmp.path()).unwrap();

    // Norm of x per step.
    let rows = sql(
        &session,
        "SELECT step, avg(l2(x)) FROM g GROUP BY step ORDER BY step",
    );
    let got = f64_column(&rows, 1);
    for step in [0u16, 4, 8] {
        let xs = states(&ds, step);
        let finite: Vec<f64> = xs
            .iter()
            .map(|v| v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt())
            .collect();
        let e = finite.iter().sum::<f64>() / finite.len() as f64;
        assert!(
            close(got[step as usize].unwrap(), e)
                || (e.is_nan() && got[step as usize].unwrap().is_nan()),
            "step {step}"
        );
    }

    // Straightness of each trajectory: endpoint displacement over path length.
    let rows = sql(
        &session,
        "WITH path AS (SELECT a.traj_id, sum(l2_dist(a.x, b.x)) AS len FROM g a JOIN g b ON a.traj_id = b.traj_id AND b.step = a.step + 1 GROUP BY a.traj_id)
         SELECT e.traj_id, l2_dist(s.x, e.x) / p.len AS straightness
         FROM g s JOIN g e ON s.traj_id = e.traj_id AND s.step = 0 AND e.step = 8
         JOIN path p ON p.traj_id = s.traj_id ORDER BY e.traj_id",
    );
    let all: Vec<Vec<Vec<f32>>> = (0..9).map(|s| states(&ds, s)).collect();
    let got = f64_column(&rows, 1);
    let dist = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    for id in [0usize, 7, 33] {
        let path: f64 = (0..8).map(|s| dist(&all[s][id], &all[s + 1][id])).sum();
        let e = dist(&all[0][id], &all[8][id]) / path;
        assert!(
            close(got[id].unwrap(), e),
            "straightness of {id}: {:?} vs {e}",
            got[id]
        );
        assert!(e > 0.0 && e <= 1.0 + 1e-9);
    }

    // Which trajectories hold NaN or Inf.
    let rows = sql(
        &session,
        "SELECT DISTINCT traj_id FROM g WHERE NOT all_finite(x) ORDER BY traj_id",
    );
    assert_eq!(u64_column(&rows, 0), vec![17, 21]);

    // Duplicate seeds: none in a healthy dataset.
    let rows = sql(
        &session,
        "SELECT seed, count(*) FROM g WHERE step = 0 GROUP BY seed HAVING count(*) > 1",
    );
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

    // Per-label statistics: labels are traj_id % 3.
    let rows = sql(
        &session,
        "SELECT label, count(*) AS n, avg(vmean(x)) FROM g WHERE step = 8 GROUP BY label ORDER BY label",
    );
    let counts: Vec<i64> = rows
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_primitive::<bdense_queries::datafusion::arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(counts, vec![14, 13, 13]);
    let x8 = states(&ds, 8);
    let e: f64 = (0..40)
        .filter(|i| i % 3 == 1)
        .map(|i| x8[i].iter().map(|&v| v as f64).sum::<f64>() / 6.0)
        .sum::<f64>()
        / 13.0;
    assert!(close(f64_column(&rows, 2)[1].unwrap(), e));
}

#[test]
fn queries_read_only_committed_files_and_prune_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset_g(tmp.path(), 32, 9, 128);
    // A stray file in a partition must not show up.
    std::fs::copy(
        ds.file_path(&ds.shards()[0].files[2]),
        tmp.path().join("g/step=2/shard-00007.parquet"),
    )
    .unwrap();
    let session = StoreSession::open(tmp.path()).unwrap();
    let rows = sql(&session, "SELECT count(*) FROM g WHERE step = 2");
    assert_eq!(
        rows[0]
            .column(0)
            .as_primitive::<bdense_queries::datafusion::arrow::datatypes::Int64Type>()
            .value(0),
        32
    );
    // Pruning: only the files of the selected steps are scanned.
    let text = explain(&session, "SELECT count(seed) FROM g WHERE step IN (1, 7)");
    assert!(
        text.contains("step=1/") && text.contains("step=7/"),
        "{text}"
    );
    assert!(
        !text.contains("step=2/") && !text.contains("step=0/"),
        "{text}"
    );
    let grid = sql(
        &session,
        "SELECT sigma FROM grid WHERE dataset = 'g' ORDER BY step",
    );
    assert_eq!(
        f64_column(&grid, 0)
            .iter()
            .map(|v| v.unwrap())
            .collect::<Vec<_>>(),
        sigmas(9)
    );
    // The vector scan (the store's fast decoder) prunes the same way: with a step=2 file
    // gone, steps 1 and 7 still read, and step 2 is refused by name.
    std::fs::remove_file(ds.file_path(&ds.shards()[1].files[2])).unwrap();
    let n = sql(
        &session,
        "SELECT CAST(count(x) AS BIGINT) FROM g WHERE step IN (1, 7)",
    );
    let n = n[0]
        .column(0)
        .as_primitive::<bdense_queries::datafusion::arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, 64);
    let err = sql_error(&session, "SELECT count(x) FROM g WHERE step = 2");
    assert!(err.contains("step=2/shard-00001.parquet"), "{err}");
}

/// Dataset `g` under `dir`: `count` f32 trajectories on a `points`-point grid, in shards of 16
/// and row groups of `row_group_rows`.
fn dataset_g(dir: &Path, count: u64, points: usize, row_group_rows: usize) -> Dataset {
    let options = WriteOptions {
        row_group_rows,
        ..WriteOptions::default()
    };
    write_gaussian(
        &dir.join("g"),
        &spec("g", count, points, Dtype::F32),
        options,
    )
    .unwrap()
}

/// Every batch of one epoch of the stream.
fn epoch(ds: &Dataset, spec: &TargetSpec) -> Vec<bdense_queries::TargetBatch> {
    let mut s = spec.clone();
    s.epochs = Some(1);
    TargetStream::open(ds.clone(), &s, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

#[test]
fn branch_targets_equal_the_stored_states() {
    let tmp = tempfile::tempdir().unwrap();
    // 25 points: K (N-1) | 24 for all four layouts below.
    let ds = dataset_g(tmp.path(), 70, 25, 8);
    let all: Vec<Vec<Vec<f32>>> = (0..25).map(|s| states(&ds, s)).collect();
    // Seeds and labels come from the first slot's files only: they must still be each
    // trajectory's own.
    let mut stored = vec![(0u64, None); 70];
    for shard in ds.shards() {
        let b = ds.read_step(shard, 0).unwrap();
        for (r, &id) in b.traj_ids().iter().enumerate() {
            stored[id as usize] = (b.seeds()[r], b.label(r));
        }
    }
    assert!(
        stored.iter().all(|(_, l)| l.is_some()),
        "the store has labels"
    );
    for (n, k) in [(4, 4), (3, 4), (4, 2), (4, 1)] {
        let mut spec = TargetSpec::new(n, k, 16, 7);
        spec.shuffle_buffer = 20;
        spec.teacher_forcing = true;
        let batches = epoch(&ds, &spec);
        let layout = StudentLayout::new(&sigmas(25), 25, n, k, false).unwrap();
        let coarse = sigmas(k * (n - 1) + 1);
        for (i, s) in layout.timestamps.iter().enumerate() {
            assert!(
                (sigmas(25)[*s as usize] - coarse[i * k]).abs() < 1e-9,
                "timestamp {i} follows the student grid formula"
            );
        }
        let mut seen = Vec::new();
        for b in &batches {
            assert!(b.len() <= 16);
            let (start, targets, starts) = (b.start(), b.targets(), b.interval_starts().unwrap());
            let seeds = b
                .batch
                .column_by_name("seed")
                .unwrap()
                .as_primitive::<UInt64Type>();
            let labels = b.labels().unwrap();
            for (r, &id) in b.traj_ids().iter().enumerate() {
                let id = id as usize;
                assert_eq!(
                    (seeds.value(r), Some(labels[r])),
                    stored[id],
                    "seed, label of {id}"
                );
                assert_eq!(&start[r * 6..(r + 1) * 6], &all[0][id][..], "start of {id}");
                for i in 0..n - 1 {
                    for j in 0..k {
                        let step = layout.targets[i][j] as usize;
                        let at = ((r * (n - 1) + i) * k + j) * 6;
                        assert_eq!(
                            &targets[at..at + 6],
                            &all[step][id][..],
                            "(N,K)=({n},{k}) target {i},{j} of {id}"
                        );
                    }
                    let at = (r * (n - 1) + i) * 6;
                    assert_eq!(
                        &starts[at..at + 6],
                        &all[layout.timestamps[i] as usize][id][..]
                    );
                }
                seen.push(id);
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            (0..70).collect::<Vec<_>>(),
            "(N,K)=({n},{k}): every trajectory exactly once per epoch"
        );
    }
}

#[test]
fn target_order_is_reproducible_by_seed_and_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset_g(tmp.path(), 80, 13, 8);
    let order = |seed: u64| -> Vec<u64> {
        let mut s = TargetSpec::new(4, 2, 16, seed);
        s.shuffle_buffer = 24;
        epoch(&ds, &s)
            .iter()
            .flat_map(|b| b.traj_ids().to_vec())
            .collect()
    };
    assert_eq!(order(3), order(3));
    assert_ne!(order(3), order(4));
    assert_ne!(order(3), (0..80).collect::<Vec<_>>(), "shuffled");
    // Batches 7.. of an infinite stream equal the same batches after reopening at 7.
    let mut s = TargetSpec::new(4, 2, 16, 3);
    s.shuffle_buffer = 24;
    let mut whole = TargetStream::open(ds.clone(), &s, 0).unwrap();
    let first: Vec<Vec<u64>> = (0..12)
        .map(|_| whole.next_batch().unwrap().unwrap().traj_ids().to_vec())
        .collect();
    let mut resumed = TargetStream::open(ds.clone(), &s, 7).unwrap();
    let rest: Vec<Vec<u64>> = (0..5)
        .map(|_| resumed.next_batch().unwrap().unwrap().traj_ids().to_vec())
        .collect();
    assert_eq!(&first[7..], &rest[..]);
    assert_eq!(resumed.position(), 12);
}

/// Across epochs (whose shard loads overlap: the next epoch's first shards decode while the
/// last batches of this one are cut), every epoch emits each trajectory once, with the same
/// start and targets, in its own order, and batches count on across the boundaries.
#[test]
fn every_epoch_of_a_stream_emits_each_trajectory_once_with_its_states() {
    let tmp = tempfile::tempdir().unwrap();
    // Shards of 16, 16, 16, 5: more shards than the loads decoded ahead.
    let ds = dataset_g(tmp.path(), 53, 13, 8);
    let mut s = TargetSpec::new(4, 2, 7, 11);
    s.shuffle_buffer = 10;
    s.epochs = Some(4);
    let batches: Vec<_> = TargetStream::open(ds.clone(), &s, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 4 * 8, "53 trajectories in batches of 7");
    let per_state = |b: &bdense_queries::TargetBatch| b.targets().len() / b.len();
    let mut first: std::collections::HashMap<u64, (Vec<f32>, Vec<f32>)> = Default::default();
    let mut orders = vec![Vec::new(); 4];
    for (i, b) in batches.iter().enumerate() {
        assert_eq!((b.index, b.epoch), (i as u64, i as u64 / 8));
        let t = per_state(b);
        for (r, &id) in b.traj_ids().iter().enumerate() {
            orders[b.epoch as usize].push(id);
            let cell = (
                b.start()[r * 6..(r + 1) * 6].to_vec(),
                b.targets()[r * t..(r + 1) * t].to_vec(),
            );
            let seen = first.entry(id).or_insert_with(|| cell.clone());
            assert_eq!(seen, &cell, "trajectory {id} in epoch {}", b.epoch);
        }
    }
    for order in &orders {
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..53).collect::<Vec<_>>());
    }
    assert_ne!(orders[0], orders[1], "each epoch shuffles anew");
}

#[test]
fn bad_layouts_and_datasets_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset_g(tmp.path(), 32, 13, 128);
    let err = TargetStream::open(ds.clone(), &TargetSpec::new(5, 2, 8, 0), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("K (N-1) must divide 12") && err.contains("N=4: K in {1, 2, 4}"),
        "{err}"
    );

    let empty_spec = spec("e", 32, 13, Dtype::F32);
    DatasetWriter::create(
        &tmp.path().join("e"),
        empty_spec.dataset_spec(),
        WriteOptions::default(),
    )
    .unwrap();
    let err = TargetStream::open(
        Dataset::open(&tmp.path().join("e")).unwrap(),
        &TargetSpec::new(4, 1, 8, 0),
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no committed trajectories"), "{err}");

    std::fs::remove_dir_all(tmp.path().join("g/step=8")).unwrap();
    let err = TargetStream::open(ds, &TargetSpec::new(4, 2, 8, 0), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("step=8/shard-00000.parquet is missing"),
        "{err}"
    );
}

/// The first row of `query`'s answer, every column cast to BIGINT by the query itself.
fn ints(session: &StoreSession, query: &str) -> Vec<i64> {
    let batches = sql(session, query);
    let b = &batches[0];
    (0..b.num_columns())
        .map(|i| {
            b.column(i)
                .as_primitive::<bdense_queries::datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .collect()
}

/// The error `query` ends in, as text.
fn sql_error(session: &StoreSession, query: &str) -> String {
    runtime()
        .block_on(async {
            let df = session.sql(query, false).await?;
            Ok::<_, bdense_queries::QueryError>(df.collect().await?)
        })
        .unwrap_err()
        .to_string()
}

fn explain(session: &StoreSession, query: &str) -> String {
    let plan = sql(session, &format!("EXPLAIN {query}"));
    bdense_queries::datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string()
}

/// `count(*)` and the ranges of `traj_id`, `step` and `shard` come from the manifest (the
/// plan opens no file) and equal what a scan of the same files gives, with and without
/// partition filters; a filter on another column scans; a damaged file is still an error
/// naming it, because the files are checked before the statistics are given.
#[test]
fn counts_and_id_ranges_come_from_the_manifest_and_match_a_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset_g(tmp.path(), 40, 9, 128);
    let session = StoreSession::open(tmp.path()).unwrap();
    let cast = |e: &str| format!("CAST({e} AS BIGINT)");
    let aggregates = |id: &str| {
        [
            cast("count(*)"),
            cast(&format!("min({id})")),
            cast(&format!("max({id})")),
            cast("min(step)"),
            cast("max(step)"),
            cast("min(shard)"),
            cast("max(shard)"),
        ]
        .join(", ")
    };
    // 40 trajectories in shards of 16, 16 and 8, 9 steps.
    for (filter, want) in [
        ("", vec![360, 0, 39, 0, 8, 0, 2]),
        (
            " WHERE step = 8 AND shard = 1",
            vec![16, 16, 31, 8, 8, 1, 1],
        ),
        (
            " WHERE step IN (2, 5) AND shard >= 1",
            vec![48, 16, 39, 2, 5, 1, 2],
        ),
    ] {
        let from_manifest = format!("SELECT {} FROM g{filter}", aggregates("traj_id"));
        let plan = explain(&session, &from_manifest);
        assert!(!plan.contains("DataSourceExec"), "{plan}");
        assert_eq!(ints(&session, &from_manifest), want, "{from_manifest}");
        // `traj_id + 0` has no statistics: DataFusion reads every id.
        let scanned = format!("SELECT {} FROM g{filter}", aggregates("traj_id + 0"));
        assert!(explain(&session, &scanned).contains("DataSourceExec"));
        assert_eq!(ints(&session, &scanned), want, "{scanned}");
    }
    let by_label = "SELECT CAST(count(*) AS BIGINT) FROM g WHERE label = 1";
    assert!(explain(&session, by_label).contains("DataSourceExec"));
    let counted = "SELECT CAST(sum(CASE WHEN label = 1 THEN 1 ELSE 0 END) AS BIGINT) FROM g";
    assert_eq!(ints(&session, by_label), ints(&session, counted));

    // Same size, other content: named, not counted.
    let path = ds.file_path(&ds.shards()[1].files[8]);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let fresh = StoreSession::open(tmp.path()).unwrap();
    let err = sql_error(&fresh, "SELECT count(*) FROM g WHERE step = 8");
    assert!(err.contains("step=8/shard-00001.parquet"), "{err}");
}

/// A filter on `traj_id` leaves out the shards whose manifest id range cannot match before
/// any file is checked or opened: with a file of every other shard moved away, the query
/// still answers, and counts the ids asked for; a filter nothing matches reads nothing; a
/// shard the filter needs is still checked, and its missing file named.
#[test]
fn traj_id_filters_prune_shards_by_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    // 40 trajectories in shards of 16, 16 and 8 (ids 0-15, 16-31, 32-39), 9 steps.
    let ds = dataset_g(tmp.path(), 40, 9, 128);
    let session = StoreSession::open(tmp.path()).unwrap();
    let moved = tmp.path().join("moved.parquet");
    for (filter, ids, steps, shards) in [
        ("traj_id < 4", 4, 9, vec![0]),
        ("traj_id BETWEEN 15 AND 16", 2, 9, vec![0, 1]),
        ("traj_id >= 32 AND step = 3", 8, 1, vec![2]),
        ("traj_id IN (1, 35)", 2, 9, vec![0, 2]),
        ("traj_id > 1000", 0, 9, vec![]),
        // Shapes the pruning must read right or leave alone: a float, a negation, arithmetic.
        ("traj_id = 3.0", 1, 9, vec![0]),
        ("traj_id = 3.5", 0, 9, vec![0]), // within shard 0's range: a range cannot say more
        ("NOT (traj_id < 32)", 8, 9, vec![2]),
        ("traj_id + 1 < 4", 3, 9, vec![0, 1, 2]), // arithmetic: not pruned, still counted right
    ] {
        for other in (0..3).filter(|s| !shards.contains(s)) {
            let file = ds.file_path(&ds.shards()[other].files[4]);
            std::fs::rename(&file, &moved).unwrap();
            for column in ["seed", "x"] {
                let query = format!("SELECT CAST(count({column}) AS BIGINT) FROM g WHERE {filter}");
                assert_eq!(ints(&session, &query), vec![ids * steps], "{query}");
            }
            std::fs::rename(&moved, &file).unwrap();
        }
    }
    std::fs::remove_file(ds.file_path(&ds.shards()[1].files[4])).unwrap();
    let near = "SELECT DISTINCT a.traj_id FROM g a JOIN g b ON a.traj_id = b.traj_id \
                AND b.step = a.step + 1 WHERE a.traj_id < 3 AND l2_dist(a.x, b.x) > 0 \
                ORDER BY a.traj_id";
    assert_eq!(u64_column(&sql(&session, near), 0), vec![0, 1, 2]);
    let err = sql_error(&session, "SELECT count(x) FROM g WHERE traj_id = 20");
    assert!(err.contains("step=4/shard-00001.parquet"), "{err}");
}

/// Vector scans read through the store's fast decoder and answer as DataFusion's Parquet scan
/// of the same files does, f32 and f16, with a NaN and an Inf in the data; a filter on a
/// stored column keeps DataFusion's scan (it prunes row groups by their statistics).
#[test]
fn vector_scans_through_the_fast_decoder_answer_as_datafusion_does() {
    use bdense_queries::table::StepTable;
    for dtype in [Dtype::F32, Dtype::F16] {
        let tmp = tempfile::tempdir().unwrap();
        let ds = store_with(tmp.path(), dtype, true);
        let session = StoreSession::open(tmp.path()).unwrap();
        let general = StepTable::new(&ds).with_datafusion_scans_only();
        session
            .ctx()
            .register_table("g_df", std::sync::Arc::new(general))
            .unwrap();
        for query in [
            "SELECT step, CAST(count(*) AS BIGINT), sum(l2(x)), sum(vmean(x)) FROM {t} GROUP BY step ORDER BY step",
            "SELECT traj_id, CAST(step AS BIGINT) AS s, CAST(shard AS BIGINT) AS sh, vstd(x), label FROM {t} WHERE NOT all_finite(x) ORDER BY traj_id, s",
            "SELECT vec_avg(x) FROM {t} WHERE step = 8 AND shard < 2",
            "SELECT a.traj_id, sum(l2_dist(a.x, b.x)) FROM {t} a JOIN {t} b ON a.traj_id = b.traj_id AND b.step = a.step + 1 GROUP BY a.traj_id ORDER BY a.traj_id",
        ] {
            let fast = query.replace("{t}", "g");
            let plan = explain(&session, &fast);
            assert!(
                plan.contains("StreamingTableExec") && !plan.contains("DataSourceExec"),
                "{plan}"
            );
            let want = query.replace("{t}", "g_df");
            assert!(explain(&session, &want).contains("DataSourceExec"));
            // Past the header, which names the table; sums may add in another order.
            let (got, want) = (csv_rows(&session, &fast), csv_rows(&session, &want));
            assert!(
                bdense_tests::csv_answers_agree(&got, &want, 1e-12),
                "{dtype:?} {query}:\n{got}\n{want}"
            );
        }
        let filtered = "SELECT l2(x) FROM g WHERE traj_id < 4";
        assert!(explain(&session, filtered).contains("DataSourceExec"));
    }
}

/// `query`'s answer as CSV rows, without the header line.
fn csv_rows(session: &StoreSession, query: &str) -> String {
    use bdense_queries::format::{Format, write};
    let mut out = Vec::new();
    write(&sql(session, query), Format::Csv, None, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    text.lines().skip(1).collect::<Vec<_>>().join("\n")
}
