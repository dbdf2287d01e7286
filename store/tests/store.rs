//! The store's contract: round trips, every bad input named, crash safety, snapshot isolation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bdense_store::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, UInt64Array,
};
use bdense_store::arrow::datatypes::{DataType, Field, Schema};
use bdense_store::gc::{GcOptions, collect_garbage_with as collect_garbage};
use bdense_store::manifest::{FORMAT_VERSION, Manifest, TRAJECTORY_FORMAT_VERSION};
use bdense_store::parquet::arrow::ArrowWriter;
use bdense_store::synthetic::{SyntheticSpec, gaussian_shard, write_gaussian};
use bdense_store::verify::verify;
use bdense_store::writer::hash_file;
use bdense_store::{Dataset, DatasetWriter, Dims, Dtype, StoreError, WriteOptions};

const DIMS: Dims = Dims { c: 1, h: 4, w: 4 };

fn spec(name: &str, count: u64, dtype: Dtype) -> SyntheticSpec {
    SyntheticSpec {
        name: name.into(),
        dims: DIMS,
        count,
        sigmas: vec![80.0, 20.0, 5.0, 1.0, 0.2, 0.002],
        rows_per_shard: 8,
        dtype,
        base_seed: 3,
        classes: 10,
        with_denoised: true,
    }
}

fn small(dir: &Path) -> Dataset {
    write_gaussian(
        &dir.join("g"),
        &spec("g", 20, Dtype::F32),
        WriteOptions::default(),
    )
    .unwrap()
}

/// Every committed file with its hash: "nothing committed changed" compares these.
fn snapshot(ds: &Dataset) -> Vec<(PathBuf, String)> {
    let ds = Dataset::open(ds.dir()).unwrap();
    ds.shards()
        .iter()
        .flat_map(|s| s.files.iter())
        .map(|f| (ds.file_path(f), hash_file(&ds.file_path(f)).unwrap().1))
        .collect()
}

fn problems(ds: &Dataset) -> Vec<String> {
    let ds = Dataset::open(ds.dir()).unwrap();
    verify(&ds)
        .unwrap()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn round_trip_f32_is_exact_and_zero_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let s = spec("g", 20, Dtype::F32);
    assert_eq!(ds.manifest().trajectories(), 20);
    assert_eq!(ds.shards().len(), 3, "20 rows at 8 per shard");
    let expected = gaussian_shard(&s, 1);
    let shard = &ds.shards()[1];
    for step in 0..6u16 {
        let b = ds.read_step(shard, step).unwrap();
        assert_eq!(b.traj_ids(), &(8..16).collect::<Vec<u64>>()[..]);
        assert_eq!(b.seeds(), &expected.seeds[..]);
        let x = b.x();
        assert!(
            matches!(x, std::borrow::Cow::Borrowed(_)),
            "f32 states are borrowed"
        );
        let at = step as usize * 8 * 16..(step as usize + 1) * 8 * 16;
        assert_eq!(&x[..], &expected.states[at.clone()]);
        assert_eq!(
            &b.denoised().unwrap()[..],
            &expected.denoised.as_ref().unwrap()[at]
        );
        assert_eq!(b.label(3), Some(11 % 10));
    }
    let t = ds.read_trajectory(13).unwrap();
    assert_eq!(t.seed, expected.seeds[5]);
    assert_eq!(t.states.len(), 6 * 16);
    for step in 0..6 {
        let row = (step * 8 + 5) * 16;
        assert_eq!(
            &t.states[step * 16..(step + 1) * 16],
            &expected.states[row..row + 16]
        );
    }
    assert!(verify(&ds).unwrap().ok());
}

#[test]
fn f16_round_trip_error_is_within_half_an_ulp() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("h", 16, Dtype::F16);
    let ds = write_gaussian(&tmp.path().join("h"), &s, WriteOptions::default()).unwrap();
    let exact = gaussian_shard(&s, 0);
    let (mut max_rel, mut max_abs) = (0f64, 0f64);
    for step in 0..6u16 {
        let b = ds.read_step(&ds.shards()[0], step).unwrap();
        let at = step as usize * 8 * 16;
        for (i, &v) in b.x().iter().enumerate() {
            let e = exact.states[at + i] as f64;
            let err = (v as f64 - e).abs();
            max_abs = max_abs.max(err);
            if e.abs() > 6.2e-5 {
                // f16 normal range: round to nearest keeps the relative error <= 2^-11.
                max_rel = max_rel.max(err / e.abs());
            } else {
                assert!(err <= 2f64.powi(-25), "subnormal error {err}");
            }
        }
    }
    println!("f16 round trip: max relative error {max_rel:.3e}, max absolute {max_abs:.3e}");
    assert!(max_rel <= 2f64.powi(-11), "relative error {max_rel}");
    assert!(max_rel > 0.0, "f16 storage must actually round");
    assert!(verify(&ds).unwrap().ok());
}

/// The `x` leaf column chunk of a dataset's first file: its codec and encodings.
fn vector_column_codec(ds: &Dataset) -> (String, Vec<String>) {
    use bdense_store::parquet::file::reader::{FileReader, SerializedFileReader};
    let path = ds.file_path(&ds.shards()[0].files[2]);
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let rg = reader.metadata().row_group(0);
    let col = (0..rg.num_columns())
        .map(|i| rg.column(i))
        .find(|c| c.column_path().string() == "x.list.item")
        .expect("x leaf column");
    let encodings = col.encodings().map(|e| format!("{e:?}")).collect();
    (format!("{:?}", col.compression()), encodings)
}

#[test]
fn byte_stream_split_is_applied_to_vector_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let (codec, encodings) = vector_column_codec(&small(tmp.path()));
    assert!(codec.starts_with("ZSTD"), "{codec}");
    assert!(
        encodings.iter().any(|e| e == "BYTE_STREAM_SPLIT"),
        "{encodings:?}"
    );
}

/// `--compression` names: zstd and zstd:LEVEL byte-split their floats, none stores them
/// PLAIN; every choice reads back the same values; a bad name says what is accepted.
#[test]
fn compression_names_choose_codec_and_encoding() {
    let tmp = tempfile::tempdir().unwrap();
    let mut states = Vec::new();
    for (name, codec, split) in [
        // A file does not record its zstd level: the metadata reads back a default one.
        ("zstd", "ZSTD", true),
        ("zstd:7", "ZSTD", true),
        ("none", "UNCOMPRESSED", false),
    ] {
        let options = WriteOptions::default().with_compression(name).unwrap();
        let dir = tmp.path().join(name.replace(':', "-"));
        let ds = write_gaussian(&dir, &spec("g", 20, Dtype::F32), options).unwrap();
        let (got, encodings) = vector_column_codec(&ds);
        assert!(got.starts_with(codec), "{name}: {got}");
        let has_split = encodings.iter().any(|e| e == "BYTE_STREAM_SPLIT");
        assert_eq!(has_split, split, "{name}: {encodings:?}");
        states.push(ds.read_step(&ds.shards()[1], 3).unwrap().x().to_vec());
    }
    assert!(states.iter().all(|s| s == &states[0]));
    for bad in ["lz4", "zstd:0", "zstd:23", "zstd:x", "zstd1", ""] {
        let err = WriteOptions::default().with_compression(bad).unwrap_err();
        assert!(err.contains("zstd") && err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn truncated_file_is_named_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let victim = ds.file_path(&ds.shards()[2].files[4]);
    let len = std::fs::metadata(&victim).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = ds.read_step(&ds.shards()[2], 4).unwrap_err();
    assert!(
        err.to_string().contains(&victim.display().to_string()),
        "{err}"
    );
    let p = problems(&ds);
    assert!(
        p.iter()
            .any(|p| p.contains("step=4/shard-00002.parquet") && p.contains("size")),
        "{p:?}"
    );
}

#[test]
fn flipped_bytes_are_caught_by_the_hash_and_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let victim = ds.file_path(&ds.shards()[0].files[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    for i in (n / 4..n / 2).step_by(7) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&victim, bytes).unwrap();
    // The reader checks the hash before decoding: an error naming the file, never altered
    // numbers, never a panic.
    let err = ds.read_step(&ds.shards()[0], 1).unwrap_err().to_string();
    assert!(
        err.contains("step=1/shard-00000.parquet") && err.contains("content hash"),
        "{err}"
    );
    let p = problems(&ds);
    assert!(
        p.iter()
            .any(|p| p.contains("step=1/shard-00000.parquet") && p.contains("content hash")),
        "{p:?}"
    );
}

/// Writes `batch` as a Parquet file at `path` and points the manifest entry at its new hash, so
/// that only the content check (not the hash) can catch what is wrong with it.
fn replace_file(ds: &Dataset, shard: usize, step: usize, batch: &RecordBatch) -> PathBuf {
    let path = ds.file_path(&ds.shards()[shard].files[step]);
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    let mut m = Manifest::load(ds.dir()).unwrap();
    let (bytes, hash) = hash_file(&path).unwrap();
    m.shards[shard].files[step].bytes = bytes;
    m.shards[shard].files[step].xxh3 = hash;
    std::fs::write(Manifest::path(ds.dir()), serde_json_vec(&m)).unwrap();
    path
}

fn serde_json_vec(m: &Manifest) -> Vec<u8> {
    serde_json::to_vec_pretty(m).unwrap()
}

fn vector(dim: usize, values: Vec<f32>) -> ArrayRef {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Arc::new(FixedSizeListArray::new(
        item,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    ))
}

fn step_batch(
    ids: Vec<u64>,
    seeds: Vec<u64>,
    sigma: f32,
    dim: usize,
    x: Vec<f32>,
    denoised: Vec<f32>,
) -> RecordBatch {
    let n = ids.len();
    let schema = bdense_store::schema::step_schema(Dtype::F32, dim, true);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(ids)),
        Arc::new(UInt64Array::from(seeds)),
        Arc::new(Float32Array::from(vec![sigma; n])),
        Arc::new(Int32Array::from((0..n as i32).collect::<Vec<_>>())),
        vector(dim, x),
        vector(dim, denoised),
    ];
    // Built against a schema with dim possibly != the dataset's: that is the point of some tests.
    RecordBatch::try_new(schema, cols).unwrap()
}

#[test]
fn foreign_parquet_file_is_named_with_its_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let schema = Arc::new(Schema::new(vec![Field::new(
        "city",
        DataType::Int32,
        false,
    )]));
    let foreign =
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2, 3]))]).unwrap();
    let path = replace_file(&ds, 1, 3, &foreign);
    let ds = Dataset::open(ds.dir()).unwrap();
    let err = ds.read_step(&ds.shards()[1], 3).unwrap_err();
    assert!(matches!(err, StoreError::Schema { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()) && err.to_string().contains("city"),
        "{err}"
    );
    assert!(
        problems(&ds)
            .iter()
            .any(|p| p.contains("shard-00001") && p.contains("schema"))
    );
}

#[test]
fn wrong_vector_length_is_a_schema_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let b = step_batch(
        (0..8).collect(),
        vec![0; 8],
        20.0,
        10,
        vec![0.0; 80],
        vec![0.0; 80],
    );
    let path = replace_file(&ds, 0, 1, &b);
    let ds = Dataset::open(ds.dir()).unwrap();
    let err = ds.read_step(&ds.shards()[0], 1).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("column x"),
        "{err}"
    );
}

#[test]
fn unsorted_duplicate_and_misplaced_ids_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let good = ds.read_step(&ds.shards()[0], 1).unwrap();
    let seeds = good.seeds().to_vec();
    let x = good.x().to_vec();
    let d = good.denoised().unwrap().to_vec();
    let mut ids: Vec<u64> = (0..8).collect();
    ids.swap(2, 5);
    replace_file(
        &ds,
        0,
        1,
        &step_batch(ids, seeds.clone(), 20.0, 16, x.clone(), d.clone()),
    );
    let p = problems(&ds);
    assert!(
        p.iter()
            .any(|p| p.contains("step=1/shard-00000") && p.contains("not strictly increasing")),
        "{p:?}"
    );

    let dup = vec![0, 1, 2, 3, 3, 5, 6, 7];
    replace_file(
        &ds,
        0,
        1,
        &step_batch(dup, seeds.clone(), 20.0, 16, x.clone(), d.clone()),
    );
    assert!(
        problems(&ds)
            .iter()
            .any(|p| p.contains("not strictly increasing"))
    );

    let shifted: Vec<u64> = (100..108).collect();
    replace_file(&ds, 0, 1, &step_batch(shifted, seeds, 20.0, 16, x, d));
    let p = problems(&ds);
    assert!(p.iter().any(|p| p.contains("expected 0..8")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("differ from step 0")), "{p:?}");
}

#[test]
fn missing_step_partition_and_missing_file_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    std::fs::remove_dir_all(ds.dir().join("step=5")).unwrap();
    let p = problems(&ds);
    assert_eq!(
        p.iter().filter(|p| p.contains("step=5")).count(),
        3,
        "{p:?}"
    );
    let err = ds.read_step(&ds.shards()[0], 5).unwrap_err().to_string();
    assert!(err.contains("step=5/shard-00000.parquet"), "{err}");

    // A manifest that forgets a step of a shard is refused at open.
    let mut m = Manifest::load(ds.dir()).unwrap();
    m.shards[1].files.pop();
    std::fs::write(Manifest::path(ds.dir()), serde_json_vec(&m)).unwrap();
    let err = Dataset::open(ds.dir()).unwrap_err().to_string();
    assert!(
        err.contains("_bdense/manifests/") && err.contains("shard 1 lists 5 step files"),
        "{err}"
    );
}

#[test]
fn nan_and_inf_are_reported_with_their_trajectory() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("n", 16, Dtype::F32);
    let dir = tmp.path().join("n");
    let mut w = DatasetWriter::create(&dir, s.dataset_spec(), WriteOptions::default()).unwrap();
    let mut shard = gaussian_shard(&s, 1);
    shard.states[(2 * 8 + 6) * 16 + 3] = f32::NAN;
    shard.states[(4 * 8 + 1) * 16] = f32::INFINITY;
    w.write_shard(&gaussian_shard(&s, 0).data()).unwrap();
    w.write_shard(&shard.data()).unwrap();
    let ds = Dataset::open(&dir).unwrap();
    let p = problems(&ds);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains("step=2/shard-00001") && p[0].contains("trajectory 14"),
        "{p:?}"
    );
    assert!(
        p[1].contains("step=4/shard-00001") && p[1].contains("trajectory 9"),
        "{p:?}"
    );
}

#[test]
fn newer_format_and_garbage_manifests_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let path = Manifest::path(ds.dir());
    let text = std::fs::read_to_string(&path).unwrap();
    let newer = text.replace(
        &format!("\"format_version\": {TRAJECTORY_FORMAT_VERSION}"),
        &format!("\"format_version\": {}", FORMAT_VERSION + 1),
    );
    std::fs::write(&path, newer + "\n").unwrap();
    let err = Dataset::open(ds.dir()).unwrap_err();
    assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
    assert!(err.to_string().contains("_bdense/manifests/") && err.to_string().contains("upgrade"));
    std::fs::write(&path, "{ not json").unwrap();
    let err = Dataset::open(ds.dir()).unwrap_err().to_string();
    assert!(
        err.contains("_bdense/manifests/") && err.contains("not valid JSON"),
        "{err}"
    );
    let err = Dataset::open(&tmp.path().join("nothing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no dataset here"), "{err}");
}

#[test]
fn bad_writes_change_nothing_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("w", 24, Dtype::F32);
    let dir = tmp.path().join("w");
    let mut w = DatasetWriter::create(&dir, s.dataset_spec(), WriteOptions::default()).unwrap();
    w.write_shard(&gaussian_shard(&s, 0).data()).unwrap();
    let ds = Dataset::open(&dir).unwrap();
    let before = snapshot(&ds);
    let manifest_before = std::fs::read(Manifest::path(&dir)).unwrap();

    let mut short = gaussian_shard(&s, 1);
    short.states.truncate(100);
    let err = w.write_shard(&short.data()).unwrap_err().to_string();
    assert!(err.contains("shard 1: states has 100 values"), "{err}");
    let err = w.write_shard(&gaussian_shard(&s, 0).data()).unwrap_err();
    assert!(
        matches!(err, StoreError::ShardCommitted { shard: 0, .. }),
        "{err}"
    );
    let mut bad_index = gaussian_shard(&s, 2);
    bad_index.index = 9;
    assert!(
        w.write_shard(&bad_index.data())
            .unwrap_err()
            .to_string()
            .contains("outside the planned 3 shards")
    );
    let err = DatasetWriter::create(&dir, s.dataset_spec(), WriteOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::AlreadyExists { .. }));

    assert_eq!(snapshot(&ds), before);
    assert_eq!(
        std::fs::read(Manifest::path(&dir)).unwrap(),
        manifest_before
    );
}

#[test]
fn writer_stopped_between_files_leaves_last_snapshot_and_resumes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("c", 24, Dtype::F32);
    let reference = write_gaussian(&tmp.path().join("ref"), &s, WriteOptions::default()).unwrap();

    let dir = tmp.path().join("c");
    let mut w = DatasetWriter::create(&dir, s.dataset_spec(), WriteOptions::default()).unwrap();
    w.write_shard(&gaussian_shard(&s, 0).data()).unwrap();
    let committed = snapshot(&Dataset::open(&dir).unwrap());
    drop(w); // a live writer's staged files are never garbage
    let crashing = WriteOptions {
        fail_after_files: Some(4),
        ..WriteOptions::default()
    };
    let mut w = DatasetWriter::open(&dir, crashing).unwrap();
    let err = w.write_shard(&gaussian_shard(&s, 1).data()).unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    drop(w);

    // The last committed snapshot: one shard, readable, verifiable, unchanged.
    let ds = Dataset::open(&dir).unwrap();
    assert_eq!(ds.manifest().trajectories(), 8);
    assert_eq!(snapshot(&ds), committed);
    assert!(verify(&ds).unwrap().ok());
    let stray: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert_eq!(
        stray.len(),
        4,
        "staged files of the dead writer stay until gc: {stray:?}"
    );

    // gc removes exactly them; a new writer continues from the manifest.
    let report = collect_garbage(&dir, &now(false)).unwrap();
    assert_eq!(report.removed.len(), 4);
    let mut w = DatasetWriter::open(&dir, WriteOptions::default()).unwrap();
    assert_eq!(w.manifest().missing_shards(), vec![1, 2]);
    for i in w.manifest().missing_shards() {
        w.write_shard(&gaussian_shard(&s, i).data()).unwrap();
    }
    let resumed = Dataset::open(&dir).unwrap();
    let strip = |v: Vec<(PathBuf, String)>, root: &Path| {
        v.into_iter()
            .map(|(p, h)| (p.strip_prefix(root).unwrap().to_path_buf(), h))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(snapshot(&resumed), &dir),
        strip(snapshot(&reference), reference.dir())
    );
}

/// gc without a grace period: what tests that play a dead writer use.
fn now(dry_run: bool) -> GcOptions {
    GcOptions {
        dry_run,
        grace: std::time::Duration::ZERO,
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn gc_removes_strays_and_keeps_every_committed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let before = snapshot(&ds);
    std::fs::write(ds.dir().join("step=2/shard-00099.parquet"), b"stray").unwrap();
    std::fs::create_dir_all(ds.dir().join("step=42")).unwrap();
    std::fs::write(ds.dir().join("step=42/shard-00000.parquet"), b"stray").unwrap();
    let dry = collect_garbage(ds.dir(), &now(true)).unwrap();
    assert_eq!(dry.removed.len(), 2);
    assert!(ds.dir().join("step=42").exists());
    let report = collect_garbage(ds.dir(), &now(false)).unwrap();
    assert_eq!(report.removed.len(), 2);
    assert_eq!(report.bytes, 10);
    assert!(!ds.dir().join("step=42").exists());
    assert_eq!(snapshot(&ds), before);
    assert!(verify(&ds).unwrap().ok());
}

#[test]
fn readers_during_commits_see_whole_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let s = SyntheticSpec {
        count: 8 * 12,
        ..spec("r", 0, Dtype::F32)
    };
    let dir = tmp.path().join("r");
    let mut w = DatasetWriter::create(&dir, s.dataset_spec(), WriteOptions::default()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Vec::new();
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        let ds = Dataset::open(&dir).unwrap();
                        let n = ds.shards().len();
                        // Every shard the snapshot names is complete and readable.
                        for shard in ds.shards() {
                            for step in [0u16, 5] {
                                let b = ds.read_step(shard, step).unwrap();
                                assert_eq!(b.rows(), 8);
                            }
                        }
                        seen.push(n);
                    }
                    seen
                })
            })
            .collect();
        for i in 0..12 {
            w.write_shard(&gaussian_shard(&s, i).data()).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            let seen = r.join().unwrap();
            assert!(
                seen.windows(2).all(|p| p[0] <= p[1]),
                "snapshots only grow: {seen:?}"
            );
        }
    });
    assert!(verify(&Dataset::open(&dir).unwrap()).unwrap().ok());
}

/// Rewrites the manifest of `ds` through `edit` on its JSON.
fn edit_manifest(ds: &Dataset, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = Manifest::path(ds.dir());
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn open_error(ds: &Dataset) -> String {
    Dataset::open(ds.dir()).unwrap_err().to_string()
}

/// Finding 7: numbers from a manifest are range-checked at load, with the file and field named;
/// nothing overflows and nothing allocates in proportion to them.
#[test]
fn manifest_integers_are_range_checked_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let original = std::fs::read(Manifest::path(ds.dir())).unwrap();
    let restore = || std::fs::write(Manifest::path(ds.dir()), &original).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|m| m["dims"] = serde_json::json!({"c": 65536, "h": 65536, "w": 65536})),
            "values per state",
        ),
        (
            Box::new(|m| m["shards"][1]["first_id"] = u64::MAX.into()),
            "first_id",
        ),
        (
            Box::new(|m| m["shards"][1]["rows"] = u64::MAX.into()),
            "rows",
        ),
        (Box::new(|m| m["shards"][1]["rows"] = 0.into()), "rows 0"),
        (
            Box::new(|m| m["planned_count"] = 10_000_000_000_000_000_000u64.into()),
            "planned_count",
        ),
        (
            Box::new(|m| m["shards"][0]["index"] = 7.into()),
            "outside the planned 3 shards",
        ),
        (
            Box::new(|m| {
                m["shards"][0]["files"][0]["bytes"] = u64::MAX.into();
                m["shards"][0]["files"][1]["bytes"] = u64::MAX.into();
            }),
            "overflow",
        ),
    ];
    for (edit, needle) in cases {
        edit_manifest(&ds, edit);
        let err = open_error(&ds);
        assert!(
            err.contains("_bdense/manifests/") && err.contains(needle),
            "{needle}: {err}"
        );
        restore();
    }
    // One file's byte count beyond its size is a size mismatch when read, not a huge read.
    edit_manifest(&ds, |m| {
        m["shards"][0]["files"][2]["bytes"] = (1u64 << 40).into()
    });
    let ds2 = Dataset::open(ds.dir()).unwrap();
    let err = ds2.read_step(&ds2.shards()[0], 2).unwrap_err().to_string();
    assert!(
        err.contains("step=2/shard-00000.parquet") && err.contains("size"),
        "{err}"
    );
    assert_eq!(problems(&ds2).len(), 1);
}

/// Finding 6: manifest paths must be relative, normalised and name regular files inside the
/// dataset; a file listed twice is refused.
#[test]
fn manifest_paths_cannot_escape_the_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let original = std::fs::read(Manifest::path(ds.dir())).unwrap();
    for evil in [
        "../../../../etc/passwd",
        "/etc/hostname",
        "/dev/zero",
        "step=1//x",
        "./a",
        "",
    ] {
        edit_manifest(&ds, |m| m["shards"][0]["files"][1]["path"] = evil.into());
        let err = open_error(&ds);
        assert!(
            err.contains("_bdense/manifests/") && err.contains("file path"),
            "{evil:?}: {err}"
        );
        std::fs::write(Manifest::path(ds.dir()), &original).unwrap();
    }
    edit_manifest(&ds, |m| {
        m["shards"][1]["files"][1]["path"] = "step=1/shard-00000.parquet".into()
    });
    assert!(open_error(&ds).contains("listed twice"));
    std::fs::write(Manifest::path(ds.dir()), &original).unwrap();
    edit_manifest(&ds, |m| {
        let first = m["shards"][0].clone();
        m["shards"].as_array_mut().unwrap().insert(1, first);
    });
    assert!(open_error(&ds).contains("unique and increasing"));
    std::fs::write(Manifest::path(ds.dir()), &original).unwrap();

    // Symlinks (even to a device that never ends) are refused, not followed.
    let victim = ds.file_path(&ds.shards()[0].files[3]);
    std::fs::remove_file(&victim).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &victim).unwrap();
    let err = ds.read_step(&ds.shards()[0], 3).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let p = problems(&ds);
    assert!(
        p.iter()
            .any(|p| p.contains("step=3/shard-00000") && p.contains("not a regular file")),
        "{p:?}"
    );
}

/// Finding 5: a file rewritten consistently with a re-hashed manifest entry but holding other
/// rows or ids is still refused by the reader (row counts and ids are checked, not only the
/// hash).
#[test]
fn reader_checks_rows_and_ids_against_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let good = ds.read_step(&ds.shards()[0], 1).unwrap();
    let seeds = good.seeds().to_vec();
    let x = good.x().to_vec();
    let d = good.denoised().unwrap().to_vec();
    let shifted: Vec<u64> = (100..108).collect();
    replace_file(
        &ds,
        0,
        1,
        &step_batch(shifted, seeds.clone(), 20.0, 16, x.clone(), d.clone()),
    );
    let ds = Dataset::open(ds.dir()).unwrap();
    let err = ds.read_step(&ds.shards()[0], 1).unwrap_err().to_string();
    assert!(
        err.contains("step=1/shard-00000") && err.contains("trajectory ids"),
        "{err}"
    );
    let err = ds
        .check_file(&ds.shards()[0], &ds.shards()[0].files[1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("step=1/shard-00000") && err.contains("trajectory ids"),
        "{err}"
    );

    let few: Vec<u64> = (0..4).collect();
    replace_file(
        &ds,
        0,
        1,
        &step_batch(
            few,
            seeds[..4].to_vec(),
            20.0,
            16,
            x[..64].to_vec(),
            d[..64].to_vec(),
        ),
    );
    let ds = Dataset::open(ds.dir()).unwrap();
    let err = ds.read_step(&ds.shards()[0], 1).unwrap_err().to_string();
    assert!(err.contains("holds 4 rows") && err.contains("8"), "{err}");
    let err = ds
        .check_file(&ds.shards()[0], &ds.shards()[0].files[1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds 4 rows"), "{err}");
}

/// Finding 1: a dataset is created only in a new or empty directory.
#[test]
fn create_refuses_a_directory_of_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path());
    std::fs::write(tmp.path().join("README"), "mine").unwrap();
    let s = spec("root", 8, Dtype::F32);
    let err = DatasetWriter::create(tmp.path(), s.dataset_spec(), WriteOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::NotEmpty { .. }), "{err}");
    assert!(!tmp.path().join("_bdense").exists());
    let file = tmp.path().join("README");
    let err = DatasetWriter::create(&file, s.dataset_spec(), WriteOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("README"), "{err}");
    // An empty directory is fine.
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    DatasetWriter::create(
        &tmp.path().join("empty"),
        s.dataset_spec(),
        WriteOptions::default(),
    )
    .unwrap();
}

/// Findings 1 and 3: gc deletes the temporary files of dead writers and of unknown writers
/// past the grace period, keeps those of a live writer, and never touches other names.
#[test]
fn gc_keeps_live_writers_files_and_foreign_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let before = snapshot(&ds);
    let step = ds.dir().join("step=1");
    let mine = step.join(format!(".shard-00009.parquet.tmp-{}", std::process::id()));
    let dead = step.join(".shard-00010.parquet.tmp-999999999");
    let unknown = step.join(".shard-00011.parquet.tmp-999999998");
    let foreign = [
        ds.dir().join("notes.txt"),
        step.join("plot.png"),
        step.join("shard-1.csv"),
    ];
    for f in [&mine, &dead, &unknown].into_iter().chain(&foreign) {
        std::fs::write(f, b"x").unwrap();
    }
    // A lock file nobody holds: its writer (pid 999999999) died.
    std::fs::write(ds.dir().join("_bdense/writer-999999999-0.lock"), b"").unwrap();
    let writer = DatasetWriter::open(ds.dir(), WriteOptions::default()).unwrap();
    let report = collect_garbage(ds.dir(), &GcOptions::default()).unwrap();
    assert_eq!(report.removed, vec![dead.clone()], "{report:?}");
    let kept: Vec<&PathBuf> = report.kept.iter().map(|(p, _)| p).collect();
    assert_eq!(kept, vec![&mine, &unknown], "{report:?}");
    // No grace: the unknown writer's file goes, the live writer's stays.
    let report = collect_garbage(ds.dir(), &now(false)).unwrap();
    assert_eq!(report.removed, vec![unknown.clone()], "{report:?}");
    assert!(mine.exists());
    drop(writer);
    let report = collect_garbage(ds.dir(), &now(false)).unwrap();
    assert_eq!(report.removed, vec![mine.clone()], "{report:?}");
    assert!(
        foreign.iter().all(|f| f.exists()),
        "gc deleted a file it does not own"
    );
    assert_eq!(snapshot(&ds), before);

    // Not a dataset: refused, and no lock file is created there.
    let err = collect_garbage(tmp.path(), &now(false)).unwrap_err();
    assert!(matches!(err, StoreError::NotADataset { .. }), "{err}");
    assert!(!tmp.path().join("_bdense").exists());
}

/// A damaged footer that a rewritten manifest vouches for (its hash updated to match) makes
/// the Arrow schema decoder panic for some bit flips: every read is an error naming the file
/// or the data as written, never a panic.
#[test]
fn damaged_footers_never_panic_a_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let path = ds.file_path(&ds.shards()[0].files[1]);
    let good = std::fs::read(&path).unwrap();
    let written = ds.read_step(&ds.shards()[0], 1).unwrap().batch;
    let key = good
        .windows(12)
        .position(|w| w == b"ARROW:schema")
        .expect("an embedded Arrow schema");
    for at in (key + 12..good.len().min(key + 400)).step_by(3) {
        let mut bytes = good.clone();
        bytes[at] ^= 0x04;
        std::fs::write(&path, &bytes).unwrap();
        let mut m = Manifest::load(ds.dir()).unwrap();
        let (size, hash) = hash_file(&path).unwrap();
        (m.shards[0].files[1].bytes, m.shards[0].files[1].xxh3) = (size, hash);
        std::fs::write(Manifest::path(ds.dir()), serde_json_vec(&m)).unwrap();
        let ds = Dataset::open(ds.dir()).unwrap();
        match ds.read_step(&ds.shards()[0], 1) {
            Ok(b) => assert_eq!(b.batch.columns(), written.columns(), "byte {at}"),
            Err(e) => assert!(
                e.to_string().contains("shard-00000.parquet"),
                "byte {at}: {e}"
            ),
        }
        let _ = ds.check_file(&ds.shards()[0], &ds.shards()[0].files[1]);
        let _ = verify(&ds).unwrap();
    }
}

/// Turns a dataset written now into the layout an older bdense wrote: one `manifest.json` at
/// the top and zero-padded step partitions (`step=0007`), named so by the manifest.
fn make_legacy(dir: &Path) {
    let newest = Manifest::path(dir);
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
    for shard in m["shards"].as_array_mut().unwrap() {
        for f in shard["files"].as_array_mut().unwrap() {
            let step = f["step"].as_u64().unwrap();
            let path = f["path"].as_str().unwrap().to_string();
            let old = path.replace(&format!("step={step}/"), &format!("step={step:04}/"));
            std::fs::create_dir_all(dir.join(format!("step={step:04}"))).unwrap();
            std::fs::rename(dir.join(&path), dir.join(&old)).unwrap();
            f["path"] = old.into();
        }
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    std::fs::remove_dir_all(dir.join("_bdense")).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() && std::fs::read_dir(&p).unwrap().next().is_none() {
            std::fs::remove_dir(&p).unwrap();
        }
    }
}

#[test]
fn an_older_layout_opens_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small(tmp.path());
    let hashes = |ds: &Dataset| snapshot(ds).into_iter().map(|(_, h)| h).collect::<Vec<_>>();
    let before = hashes(&ds);
    make_legacy(ds.dir());
    assert!(ds.dir().join("step=0003").is_dir() && !ds.dir().join("step=3").exists());
    let old = Dataset::open(ds.dir()).unwrap();
    assert_eq!(
        old.shards()[0].files[3].path,
        "step=0003/shard-00000.parquet"
    );
    assert_eq!(hashes(&old), before);
    assert!(verify(&old).unwrap().ok());
    assert_eq!(bdense_store::list_datasets(tmp.path()).unwrap(), vec!["g"]);
    // Writing and gc need the versioned layout: refused, by name, with the way out.
    let err = DatasetWriter::open(ds.dir(), WriteOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::LegacyLayout { .. }), "{err}");
    assert!(err.to_string().contains("bdense store upgrade"), "{err}");
    let err = collect_garbage(ds.dir(), &now(false)).unwrap_err();
    assert!(matches!(err, StoreError::LegacyLayout { .. }), "{err}");
    assert!(!ds.dir().join("_bdense").exists());

    // `bdense store upgrade`, killed after linking some files to their new names (as a
    // first attempt leaves them) and run again: the current layout, the same snapshot hash.
    let snapshot_before = old.manifest().snapshot_hash();
    std::fs::create_dir_all(ds.dir().join("step=3")).unwrap();
    std::fs::hard_link(
        ds.dir().join("step=0003/shard-00000.parquet"),
        ds.dir().join("step=3/shard-00000.parquet"),
    )
    .unwrap();
    let report = bdense_store::upgrade::upgrade(ds.dir()).unwrap();
    assert_eq!(report.files_moved, 3 * 6, "{report:?}");
    let new = Dataset::open(ds.dir()).unwrap();
    assert_eq!(new.shards()[0].files[3].path, "step=3/shard-00000.parquet");
    assert_eq!(new.manifest().snapshot_hash(), snapshot_before);
    assert_eq!(hashes(&new), before);
    assert!(verify(&new).unwrap().ok());
    let mut top: Vec<String> = std::fs::read_dir(ds.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            "_bdense", "step=0", "step=1", "step=2", "step=3", "step=4", "step=5"
        ]
    );
    assert!(bdense_store::upgrade::upgrade(ds.dir()).unwrap().already);
    drop(DatasetWriter::open(ds.dir(), WriteOptions::default()).unwrap());
    assert!(
        collect_garbage(ds.dir(), &now(false))
            .unwrap()
            .removed
            .is_empty()
    );
}

/// The commit protocol (docs/STORE-PROTOCOL.md) with several writers at once: each commit
/// lands in a new manifest version, a writer that loses the race for one merges into the
/// winner's snapshot, and the result is what one writer writes.
#[test]
fn concurrent_writers_commit_every_shard_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = SyntheticSpec {
        count: 8 * 16,
        ..spec("c", 0, Dtype::F32)
    };
    let options = || WriteOptions {
        threads: 1,
        ..WriteOptions::default()
    };
    let files = |ds: &Dataset| -> Vec<(String, String)> {
        ds.shards()
            .iter()
            .flat_map(|s| s.files.iter().map(|f| (f.path.clone(), f.xxh3.clone())))
            .collect()
    };
    let one = write_gaussian(&tmp.path().join("one/c"), &s, options()).unwrap();
    let dir = tmp.path().join("many/c");
    drop(DatasetWriter::create(&dir, s.dataset_spec(), options()).unwrap());
    std::thread::scope(|scope| {
        for w in 0..4u32 {
            let (dir, s) = (&dir, &s);
            scope.spawn(move || {
                let mut writer = DatasetWriter::open(dir, options()).unwrap();
                for i in (w..16).step_by(4) {
                    writer.write_shard(&gaussian_shard(s, i).data()).unwrap();
                }
            });
        }
    });
    let many = Dataset::open(&dir).unwrap();
    assert_eq!(files(&many), files(&one));
    assert!(verify(&many).unwrap().ok());
    let versions = || {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("_bdense/manifests"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // Version 1 is the empty dataset, then one per shard; no temporary is left.
    assert_eq!(versions().len(), 17, "{:?}", versions());
    assert_eq!(versions()[16], "00000000000000000017.json");

    // gc prunes all but the newest 8 versions; the snapshot stays.
    let report = collect_garbage(&dir, &now(false)).unwrap();
    assert_eq!(report.removed.len(), 9, "{report:?}");
    assert_eq!(versions()[0], "00000000000000000010.json");
    assert_eq!(files(&Dataset::open(&dir).unwrap()), files(&one));

    // A version put below the newest (what a writer holding a pruned, outdated snapshot
    // could write into the hole) is never taken as the snapshot; such a writer sees the
    // newer version after its put and merges into it (writer.rs, `commit_shard`).
    std::fs::write(
        dir.join("_bdense/manifests/00000000000000000006.json"),
        std::fs::read(dir.join("_bdense/manifests/00000000000000000010.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        Manifest::path(&dir),
        dir.join("_bdense/manifests/00000000000000000017.json")
    );
    assert_eq!(Dataset::open(&dir).unwrap().shards().len(), 16);
}

/// A writer killed after publishing a shard's files and before committing leaves them under
/// their final names: gc keeps them while any writer lives, a rerun of the shard uses them
/// (same bytes), and other bytes in the way are an error naming the file.
#[test]
fn published_but_uncommitted_files_are_kept_for_live_writers_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = spec("u", 24, Dtype::F32);
    let dir = tmp.path().join("u");
    let mut w = DatasetWriter::create(&dir, s.dataset_spec(), WriteOptions::default()).unwrap();
    w.write_shard(&gaussian_shard(&s, 0).data()).unwrap();
    // What a dead writer of shard 1 left: its files, published, never committed.
    let other = write_gaussian(&tmp.path().join("ref/u"), &s, WriteOptions::default()).unwrap();
    for f in &other.shards()[1].files {
        let to = dir.join(&f.path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(other.file_path(f), &to).unwrap();
    }
    let leftover = dir.join(&other.shards()[1].files[2].path);
    let report = collect_garbage(&dir, &now(false)).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(
        report
            .kept
            .iter()
            .any(|(p, why)| p == &leftover && why.contains("writer")),
        "{report:?}"
    );
    // The rerun finds its own bytes there and commits them.
    w.write_shard(&gaussian_shard(&s, 1).data()).unwrap();
    // Other bytes in the way: refused by name, nothing committed.
    let f16 = write_gaussian(
        &tmp.path().join("f16/u"),
        &spec("u", 24, Dtype::F16),
        WriteOptions::default(),
    )
    .unwrap();
    let in_way = dir.join(&f16.shards()[2].files[0].path);
    std::fs::create_dir_all(in_way.parent().unwrap()).unwrap();
    std::fs::copy(f16.file_path(&f16.shards()[2].files[0]), &in_way).unwrap();
    let err = w
        .write_shard(&gaussian_shard(&s, 2).data())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("step=0/shard-00002.parquet") && err.contains("other content"),
        "{err}"
    );
    assert_eq!(Dataset::open(&dir).unwrap().shards().len(), 2);
    drop(w);
    // With no writer alive and no grace, gc removes it; the shard then commits.
    let report = collect_garbage(&dir, &now(false)).unwrap();
    assert_eq!(report.removed, vec![in_way], "{report:?}");
    let mut w = DatasetWriter::open(&dir, WriteOptions::default()).unwrap();
    w.write_shard(&gaussian_shard(&s, 2).data()).unwrap();
    let ds = Dataset::open(&dir).unwrap();
    assert!(verify(&ds).unwrap().ok());
    let hashes = |d: &Dataset| -> Vec<String> {
        d.shards()
            .iter()
            .flat_map(|s| s.files.iter().map(|f| f.xxh3.clone()))
            .collect()
    };
    assert_eq!(hashes(&ds), hashes(&other));
}

/// Every step file of two datasets decodes to the same batch (ids, seeds, sigmas, labels,
/// states, denoised), shard by shard.
fn same_contents(a: &Dataset, b: &Dataset) {
    assert_eq!(a.shards().len(), b.shards().len());
    for (sa, sb) in a.shards().iter().zip(b.shards()) {
        assert_eq!(sa.index, sb.index);
        for step in 0..a.manifest().steps() as u16 {
            let (x, y) = (
                a.read_step(sa, step).unwrap(),
                b.read_step(sb, step).unwrap(),
            );
            assert_eq!(x.batch, y.batch, "shard {} step {step}", sa.index);
        }
    }
}

/// `store copy` re-encodes a dataset: f32 and f16, labels and denoised outputs, the same
/// batches and manifest fields under another codec; a source with shards still missing is
/// copied as far as it goes, and the rerun after the source grew copies only the new shard.
#[test]
fn a_copy_holds_the_same_values_under_another_codec() {
    use bdense_store::copy::{CopyReport, copy_dataset};
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [Dtype::F32, Dtype::F16] {
        let s = spec("c", 20, dtype);
        let src_dir = tmp.path().join(format!("src-{dtype}"));
        let mut w =
            DatasetWriter::create(&src_dir, s.dataset_spec(), WriteOptions::default()).unwrap();
        for index in [0, 2] {
            w.write_shard(&gaussian_shard(&s, index).data()).unwrap();
        }
        let plain = WriteOptions::default().with_compression("none").unwrap();
        let dst = tmp.path().join(format!("plain-{dtype}"));
        let rows = std::sync::atomic::AtomicU64::new(0);
        let count = |n| {
            rows.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let src = Dataset::open(&src_dir).unwrap();
        // Cut short between files of the first shard: nothing is committed, and the rerun
        // starts over what the cut left staged.
        let cut = WriteOptions {
            fail_after_files: Some(3),
            ..plain.clone()
        };
        assert!(copy_dataset(&src, &dst, cut, &count).is_err());
        assert!(Dataset::open(&dst).unwrap().shards().is_empty());
        let first = copy_dataset(&src, &dst, plain.clone(), &count).unwrap();
        assert_eq!((first.written, first.kept), (2, 0));
        assert_eq!(rows.load(std::sync::atomic::Ordering::Relaxed), 12);
        same_contents(&src, &Dataset::open(&dst).unwrap());

        w.write_shard(&gaussian_shard(&s, 1).data()).unwrap();
        let src = Dataset::open(&src_dir).unwrap();
        let again = copy_dataset(&src, &dst, plain, &|_| {}).unwrap();
        let copy = Dataset::open(&dst).unwrap();
        assert_eq!(
            again,
            CopyReport {
                written: 1,
                kept: 2,
                bytes: copy.manifest().bytes()
            }
        );
        same_contents(&src, &copy);
        let (m, c) = (src.manifest(), copy.manifest());
        assert_eq!(
            (c.dims, c.dtype, c.has_denoised),
            (m.dims, m.dtype, m.has_denoised)
        );
        assert_eq!(
            (&c.grid, &c.teacher, &c.seeds),
            (&m.grid, &m.teacher, &m.seeds)
        );
        assert!(c.bytes() > m.bytes(), "{dtype}: none must not compress");
        assert!(verify(&copy).unwrap().ok());
    }
}

/// A copy into a dataset of other contents, or into its own source, is refused by name and
/// leaves it as it was.
#[test]
fn a_copy_never_writes_into_another_dataset() {
    use bdense_store::copy::copy_dataset;
    let tmp = tempfile::tempdir().unwrap();
    let src = small(tmp.path());
    let other = write_gaussian(
        &tmp.path().join("other"),
        &spec("other", 12, Dtype::F16),
        WriteOptions::default(),
    )
    .unwrap();
    let before = snapshot(&other);
    let err = copy_dataset(&src, other.dir(), WriteOptions::default(), &|_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&other.dir().display().to_string()) && msg.contains("copy into a new name"),
        "{msg}"
    );
    assert_eq!(snapshot(&other), before);
    let again = tmp.path().join("g/../g");
    let err = copy_dataset(&src, &again, WriteOptions::default(), &|_| {}).unwrap_err();
    assert!(
        err.to_string().contains("is the dataset being copied"),
        "{err}"
    );
}

/// A PD round's dataset (per-row sigmas, three roles per example) copies with its round and
/// every row's sigmas.
#[test]
fn a_pd_round_copies_with_its_per_row_sigmas() {
    use bdense_store::PdRound;
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec("pd", 16, Dtype::F32);
    s.sigmas = vec![2.0, 1.0, 0.5];
    let mut pd_spec = s.dataset_spec();
    pd_spec.pd = Some(PdRound {
        round: 2,
        // Two Euler steps of the teacher: its grid is the three sigmas.
        student_steps: 1,
        images: 100,
    });
    let src_dir = tmp.path().join("pd");
    let mut w = DatasetWriter::create(&src_dir, pd_spec, WriteOptions::default()).unwrap();
    for index in 0..2 {
        let shard = gaussian_shard(&s, index);
        let sigmas: Vec<f32> = (0..3 * 8).map(|i| 0.1 + i as f32 + index as f32).collect();
        w.write_pd_shard(&shard.data(), &sigmas).unwrap();
    }
    let src = Dataset::open(&src_dir).unwrap();
    let dst = tmp.path().join("pd-plain");
    let plain = WriteOptions::default().with_compression("none").unwrap();
    bdense_store::copy::copy_dataset(&src, &dst, plain, &|_| {}).unwrap();
    let copy = Dataset::open(&dst).unwrap();
    assert_eq!(copy.manifest().pd, src.manifest().pd);
    same_contents(&src, &copy);
    let sigmas = copy.read_step(&copy.shards()[1], 2).unwrap();
    assert_eq!(sigmas.sigmas()[3], 0.1 + 16.0 + 3.0 + 1.0);
}
