//! Fuzzing the manifest parser and the shard reader with mutations of real datasets.
//!
//! Each case takes a small dataset written by the store's own writer, applies seeded random
//! mutations to its manifest or to its Parquet files, drives the public read paths (open, the
//! manifest's summaries, verify, gc's dry run, step reads, trajectory reads) and holds them to:
//!
//! - **no panic**: a panic is caught and reported with its location, the seed and the mutation;
//! - **no hang**: each case runs on a worker thread with a deadline;
//! - **nothing silently wrong**:
//!   - P1: when `verify` finds no problem, every read returns exactly what was written;
//!   - P2: every read that succeeds returns the ids the manifest promises for the shard, and,
//!     where the manifest's entry for the file is the one the writer committed (so its content
//!     hash still vouches for the bytes), exactly the values that were written;
//!   - every error and every verify problem names a path inside the dataset.
//!
//! A mutation that also rewrites the manifest's hash of a changed file ("rehash") can only be
//! caught by the checks that do not rely on the hash: ids and row counts on read, everything
//! in verify. Byte-level changes to stored floats with a matching hash are undetectable by
//! design (the manifest is the root of trust), so no mutation does that.
//!
//! CI runs a short seeded pass of each tier (seconds) and the seeds of every failure found so
//! far. Longer campaigns (under `ulimit -v`, so that unbounded allocation fails instead of
//! exhausting the machine) and single cases:
//!
//! ```text
//! BDENSE_FUZZ_CASES=1000000 cargo test --workspace --test fuzz -- --nocapture --exact manifest_parser
//! BDENSE_FUZZ_SEED=141 BDENSE_FUZZ_CASES=1 BDENSE_FUZZ_VERBOSE=1 \
//!     cargo test --workspace --test fuzz -- --nocapture --exact verify_on_damaged_shards
//! ```
//! (`BDENSE_FUZZ_VERBOSE=1`: print each case, its time, why it was rejected and panic
//! backtraces; `BDENSE_FUZZ_TIMEOUT_MS`: the hang deadline, 20 s; `BDENSE_FUZZ_MAX_HANGS`:
//! stop after that many hangs, since a hung thread cannot be stopped and keeps a core busy.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bdense_store::arrow::array::RecordBatch;
use bdense_store::gc::collect_garbage;
use bdense_store::manifest::Manifest;
use bdense_store::parquet::arrow::ArrowWriter;
use bdense_store::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use bdense_store::synthetic::{SyntheticSpec, write_gaussian};
use bdense_store::verify::verify;
use bdense_store::{Dataset, Dims, Dtype, ShardEntry, StepBatch, Trajectory, WriteOptions};
use serde_json::{Value, json};

#[test]
fn manifest_parser() {
    campaign(Tier::Parser, 500);
}

#[test]
fn manifest_then_reads() {
    campaign(Tier::ManifestReads, 100);
}

#[test]
fn shard_reader() {
    campaign(Tier::ShardReads, 100);
}

#[test]
fn verify_on_damaged_shards() {
    campaign(Tier::ShardVerify, 100);
}

/// Cases the campaigns found, one per distinct failure, kept so they are rerun on every CI
/// run whatever the default pass draws: `verify` decoding damaged step files reached seven
/// panic sites in parquet and arrow-ipc (5000-case `shard_reader` campaign, 2026-11-27).
#[test]
fn verify_on_damaged_shards_known_cases() {
    let seeds = [141, 358, 653, 1908, 3093, 3763, 4128];
    campaign_over(Tier::ShardVerify, &config(0), seeds);
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness (splitmix64: tiny, good enough, and the same on every platform).

struct Rng(u64);

impl Rng {
    fn new(seed: u64, salt: u64) -> Rng {
        Rng(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus: real datasets written by the store's writer, and what reading them must give.

/// One stored row of one step, floats as bits so NaN compares equal to itself.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    seed: u64,
    label: Option<i32>,
    sigma: u32,
    x: Vec<u32>,
    denoised: Option<Vec<u32>>,
}

struct Corpus {
    /// The pristine dataset directory (inside `_tmp`).
    dir: PathBuf,
    /// Every file of the dataset, relative path and bytes: each case starts from a copy.
    files: Vec<(PathBuf, Vec<u8>)>,
    manifest_rel: PathBuf,
    manifest: Value,
    pristine: Manifest,
    /// Manifest paths of the step files.
    data_files: Vec<String>,
    /// A valid Parquet file with the dataset's schema and no rows.
    empty_file: Vec<u8>,
    rows: HashMap<(u64, u16), Row>,
    trajectories: HashMap<u64, Trajectory>,
    _tmp: tempfile::TempDir,
}

fn corpus_specs() -> [(SyntheticSpec, usize); 2] {
    let f32_labels = SyntheticSpec {
        name: "a".into(),
        dims: Dims { c: 1, h: 3, w: 3 },
        count: 20,
        sigmas: vec![80.0, 10.0, 1.0, 0.002],
        rows_per_shard: 8,
        dtype: Dtype::F32,
        base_seed: 5,
        classes: 10,
        with_denoised: false,
    };
    // f16 with denoised outputs, an appended zero sigma and several row groups per file.
    let f16_denoised = SyntheticSpec {
        name: "b".into(),
        dims: Dims { c: 2, h: 2, w: 1 },
        count: 12,
        sigmas: vec![80.0, 2.0, 0.0],
        rows_per_shard: 6,
        dtype: Dtype::F16,
        base_seed: 9,
        classes: 0,
        with_denoised: true,
    };
    [(f32_labels, 128), (f16_denoised, 4)]
}

fn build_corpora() -> Vec<Corpus> {
    corpus_specs()
        .into_iter()
        .map(|(spec, row_group_rows)| build_corpus(&spec, row_group_rows))
        .collect()
}

fn build_corpus(spec: &SyntheticSpec, row_group_rows: usize) -> Corpus {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(&spec.name);
    let options = WriteOptions {
        row_group_rows,
        threads: 1,
        ..WriteOptions::default()
    };
    let ds = write_gaussian(&dir, spec, options).unwrap();
    let manifest_path = Manifest::path(&dir);
    let manifest_rel = manifest_path.strip_prefix(&dir).unwrap().to_path_buf();
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let data_files = ds
        .shards()
        .iter()
        .flat_map(|s| s.files.iter().map(|f| f.path.clone()))
        .collect();
    let (rows, trajectories) = read_truth(&ds);
    Corpus {
        files: list_files(&dir),
        empty_file: empty_parquet(&ds),
        pristine: ds.manifest().clone(),
        dir,
        manifest_rel,
        manifest,
        data_files,
        rows,
        trajectories,
        _tmp: tmp,
    }
}

type Truth = (HashMap<(u64, u16), Row>, HashMap<u64, Trajectory>);

/// Everything the pristine dataset holds, read through the store's own reader.
fn read_truth(ds: &Dataset) -> Truth {
    let mut rows = HashMap::new();
    let mut trajectories = HashMap::new();
    for shard in ds.shards() {
        for step in 0..ds.manifest().steps() as u16 {
            let b = ds.read_step(shard, step).unwrap();
            rows.extend(rows_of(&b).map(|(id, r)| ((id, step), r)));
        }
        for id in shard.first_id..shard.first_id + shard.rows {
            trajectories.insert(id, ds.read_trajectory(id).unwrap());
        }
    }
    (rows, trajectories)
}

fn list_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// A zero-row file with the exact schema (and metadata) of the dataset's first step file.
fn empty_parquet(ds: &Dataset) -> Vec<u8> {
    let first = std::fs::File::open(ds.file_path(&ds.shards()[0].files[0])).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(first).unwrap();
    let schema = reader.schema().clone();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), None).unwrap();
    writer.write(&RecordBatch::new_empty(schema)).unwrap();
    writer.into_inner().unwrap()
}

fn rows_of(b: &StepBatch) -> impl Iterator<Item = (u64, Row)> + '_ {
    let dim = b.dim().max(1);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let x = bits(&b.x());
    let denoised = b.denoised().map(|d| bits(&d));
    let ids = b.traj_ids();
    (0..ids.len()).map(move |i| {
        let slice = |v: &[u32]| v.get(i * dim..(i + 1) * dim).unwrap_or(&[]).to_vec();
        let row = Row {
            seed: b.seeds().get(i).copied().unwrap_or(u64::MAX),
            label: (i < b.rows()).then(|| b.label(i)).flatten(),
            sigma: b.sigmas().get(i).map_or(u32::MAX, |s| s.to_bits()),
            x: slice(&x),
            denoised: denoised.as_deref().map(slice),
        };
        (ids[i], row)
    })
}

// ---------------------------------------------------------------------------------------------
// Mutations. Each returns a description that, with the seed, reproduces the case.

/// Values that break parsers and arithmetic: limits, signs, non-numbers, hostile paths.
fn interesting(rng: &mut Rng, raws: &mut Vec<String>) -> (Value, String) {
    const RAW: &[&str] = &[
        "18446744073709551616",
        "1e999",
        "-1e999",
        "NaN",
        "Infinity",
        "-0",
        "1e-999",
        "0.0000",
        "99999999999999999999999999999",
    ];
    let v = match rng.below(5) {
        0 => json!(*rng.pick(&[
            0u64,
            1,
            2,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            1 << 32,
            1 << 53,
            i64::MAX as u64,
            1 << 63,
            u64::MAX
        ])),
        1 => json!(*rng.pick(&[-1i64, -2, i64::MIN, i32::MIN as i64])),
        2 => json!(*rng.pick(&[0.5f64, -0.0, 1e308, 5e-324, -1e308, 80.0000001])),
        3 => {
            let raw = rng.pick(RAW).to_string();
            raws.push(raw.clone());
            return (Value::String(format!("@@RAW{}@@", raws.len() - 1)), raw);
        }
        _ => rng.pick(&other_values()).clone(),
    };
    let desc = v.to_string();
    (v, desc)
}

fn other_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(""),
        json!("NaN"),
        json!("inf"),
        json!("f64"),
        json!([]),
        json!({}),
        json!([1, 2, 3]),
        json!({"a": 1}),
        json!("x".repeat(10_000)),
    ]
}

fn hostile_path(rng: &mut Rng) -> String {
    let long = "a/".repeat(3000);
    let paths = [
        "../../etc/passwd",
        "../../../../../../../../etc/passwd",
        "/etc/hostname",
        "/dev/zero",
        "../../../../../../../../dev/zero",
        "/proc/self/mem",
        "../a/step=0000/shard-00000.parquet",
        "step=0000/../step=0001/shard-00000.parquet",
        "step=0000/shard-00000.parquet/",
        "./step=0000/shard-00000.parquet",
        "step=0000//shard-00000.parquet",
        "step=0000\\shard-00000.parquet",
        "step=0000/shard-00000.parquet\u{0}",
        "",
        ".",
        "..",
        "step=0000",
        "manifest.json",
        "üñ%20#?/x.parquet",
        long.as_str(),
    ];
    rng.pick(&paths).to_string()
}

/// JSON pointers of every node of `v`.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(c, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn split_pointer(p: &str) -> (&str, &str) {
    p.rsplit_once('/').unwrap_or(("", ""))
}

/// One structural change at a random node; the description names the node.
fn mutate_node(rng: &mut Rng, doc: &mut Value, raws: &mut Vec<String>) -> String {
    let mut all = Vec::new();
    pointers(doc, "", &mut all);
    let at = rng.pick(&all).clone();
    let node = doc.pointer(&at).unwrap();
    // Mostly values of the node's own type: a type error stops at the parser, a well-typed
    // hostile value reaches the checks and everything after them.
    match (rng.below(6), node) {
        (0..=2, Value::Number(_)) => tweak_number(rng, doc, &at),
        (0..=2, Value::String(_)) => {
            let v = if rng.chance(50) {
                hostile_path(rng)
            } else {
                rng.pick(&STRINGS).to_string()
            };
            *doc.pointer_mut(&at).unwrap() = json!(v);
            format!("set {at} = {}", short(&format!("{v:?}"), 60))
        }
        (0..=3, _) => {
            let (v, desc) = interesting(rng, raws);
            *doc.pointer_mut(&at).unwrap() = v;
            format!("set {at} = {}", short(&desc, 60))
        }
        _ => edit_parent(rng, doc, &at),
    }
}

const STRINGS: [&str; 8] = [
    "",
    "f16",
    "f32",
    "NaN",
    "0000000000000000",
    "ffffffffffffffff",
    "é",
    "x",
];

fn tweak_number(rng: &mut Rng, doc: &mut Value, at: &str) -> String {
    let node = doc.pointer_mut(at).unwrap();
    let Some(n) = node.as_f64() else {
        *node = json!(rng.next());
        return format!("set {at} = a random u64");
    };
    if rng.chance(30) {
        let (v, desc) = interesting(rng, &mut Vec::new());
        if v.is_number() {
            *node = v;
            return format!("set {at} = {desc}");
        }
    }
    let (new, what) = match (rng.below(4), node.as_u64()) {
        (0, Some(u)) => (json!(u.wrapping_add(1)), "+1"),
        (1, Some(u)) => (json!(u.wrapping_sub(1)), "-1 (wrapping)"),
        (2, Some(u)) => (json!(u.wrapping_mul(2)), "x2"),
        (_, Some(u)) => (json!((u as i64).wrapping_neg()), "negated"),
        (0, None) => (json!(n * 1.0000001), "x1.0000001"),
        (1, None) => (json!(-n), "negated"),
        (2, None) => (json!(n / 2.0), "/2"),
        (_, None) => (json!(n.to_bits() as i64 as f64 + 1.0), "bits as a number"),
    };
    *node = new;
    format!("{at} {what}")
}

/// Removes, duplicates or swaps the node inside its parent.
fn edit_parent(rng: &mut Rng, doc: &mut Value, at: &str) -> String {
    let (parent, key) = split_pointer(at);
    let Some(p) = doc.pointer_mut(parent) else {
        return "no-op".into();
    };
    match p {
        Value::Object(m) => {
            m.remove(key);
            format!("removed {at}")
        }
        Value::Array(a) if !at.is_empty() => {
            let i: usize = key.parse().unwrap();
            match rng.below(3) {
                0 => {
                    a.remove(i);
                    format!("removed {at}")
                }
                1 => {
                    a.insert(i, a[i].clone());
                    format!("duplicated {at}")
                }
                _ => {
                    let j = rng.below(a.len());
                    a.swap(i, j);
                    format!("swapped {at} with {parent}/{j}")
                }
            }
        }
        _ => {
            *doc = Value::Null;
            "replaced the document with null".into()
        }
    }
}

/// Changes aimed at what a store must refuse; random node picks would rarely reach them.
/// Returns the description and whether a file entry now vouches for other bytes (rehash).
fn mutate_targeted(rng: &mut Rng, doc: &mut Value) -> (String, bool) {
    let Some((s, f, files)) = pick_file_entry(rng, doc) else {
        return ("no-op (no file entry left)".into(), false);
    };
    let shards = doc["shards"].as_array().map_or(0, |a| a.len());
    let big = *rng.pick(&[u64::MAX, 1 << 63, 1 << 40, u32::MAX as u64 + 1]);
    let field = |doc: &mut Value, ptr: &str, v: Value| {
        if let Some(node) = doc.pointer_mut(ptr) {
            *node = v;
        }
    };
    let (desc, rehash) = match rng.below(12) {
        0 => {
            let path = hostile_path(rng);
            field(doc, &format!("/shards/{s}/files/{f}/path"), json!(path));
            (format!("shard {s} file {f} path = {path:?}"), false)
        }
        1 => {
            let dup = doc["shards"][s].clone();
            doc["shards"].as_array_mut().unwrap().push(dup);
            (format!("shard {s} listed twice"), false)
        }
        2 => {
            let dup = doc["shards"][s]["files"][f].clone();
            let next = (f + 1) % files;
            field(doc, &format!("/shards/{s}/files/{next}"), dup);
            (
                format!("shard {s} file {f} listed twice (replacing file {next})"),
                true,
            )
        }
        3 => {
            let t = rng.below(shards);
            let other = doc.pointer(&format!("/shards/{t}/files/{f}")).cloned();
            let other = other.filter(Value::is_object).unwrap_or_default();
            for k in ["path", "bytes", "xxh3"] {
                let v = other.get(k).cloned().unwrap_or_default();
                field(doc, &format!("/shards/{s}/files/{f}/{k}"), v);
            }
            (
                format!("shard {s} file {f} points at shard {t}'s file {f}"),
                true,
            )
        }
        4 => {
            doc["shards"].as_array_mut().unwrap().remove(s);
            (format!("shard {s} removed"), false)
        }
        5 => {
            let field_name = *rng.pick(&["rows", "first_id", "index"]);
            let v = *rng.pick(&[0, big, 1]);
            field(doc, &format!("/shards/{s}/{field_name}"), json!(v));
            (format!("shard {s} {field_name} = {v}"), false)
        }
        6 => {
            field(doc, &format!("/shards/{s}/files/{f}/bytes"), json!(big));
            (format!("shard {s} file {f} bytes = {big}"), false)
        }
        7 => {
            let d = *rng.pick(&[65536u64, 1 << 31, u32::MAX as u64]);
            field(doc, "/dims", json!({"c": d, "h": d, "w": d}));
            (format!("dims {d}^3"), false)
        }
        8 => {
            let v = *rng.pick(&[u64::MAX, 10_000_000_000_000_000_000, 1 << 40, 0]);
            field(doc, "/planned_count", json!(v));
            (format!("planned_count = {v}"), false)
        }
        9 => {
            let v = *rng.pick(&[1u64, u32::MAX as u64, 3]);
            field(doc, "/rows_per_shard", json!(v));
            (format!("rows_per_shard = {v}"), false)
        }
        10 => {
            let i = rng.below(4);
            let ptr = format!("/grid/sigmas/{i}");
            let v = doc.pointer(&ptr).and_then(Value::as_f64).unwrap_or(1.0) * 0.999 + 1e-4;
            field(doc, &ptr, json!(v));
            (format!("grid sigma {i} = {v}"), false)
        }
        _ => {
            let step = rng.below(files.max(1)) as u64;
            field(doc, &format!("/shards/{s}/files/{f}/step"), json!(step));
            (format!("shard {s} file {f} step = {step}"), false)
        }
    };
    (desc, rehash)
}

/// (shard, file, files in that shard) of a random file entry, when the document still has the
/// manifest's shape there.
fn pick_file_entry(rng: &mut Rng, doc: &Value) -> Option<(usize, usize, usize)> {
    let shards = doc.get("shards")?.as_array()?;
    let s = rng.below(shards.len().max(1));
    let files = shards.get(s)?.get("files")?.as_array()?;
    let f = rng.below(files.len().max(1));
    files.get(f)?.as_object()?;
    Some((s, f, files.len()))
}

/// Byte-level damage: bit flips, overwrites, truncation, insertions, and (for Parquet) the
/// footer, where the metadata length and the Thrift-encoded metadata live.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>, parquet: bool) -> String {
    if b.is_empty() {
        b.push(rng.next() as u8);
        return "one byte into an empty file".into();
    }
    let len = b.len();
    let footer = len.saturating_sub(len.min(600));
    let at = if parquet && rng.chance(50) {
        footer + rng.below(len - footer)
    } else {
        rng.below(len)
    };
    match rng.below(9) {
        0 | 1 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let i = if parquet && rng.chance(50) {
                    at
                } else {
                    rng.below(len)
                };
                b[i] ^= 1 << rng.below(8);
            }
            format!("{n} bit flips near byte {at} of {len}")
        }
        2 => {
            let n = (1 + rng.below(16)).min(len - at);
            b[at..at + n].iter_mut().for_each(|x| *x = rng.next() as u8);
            format!("{n} random bytes at {at} of {len}")
        }
        3 => {
            let v = *rng.pick(&[
                0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'}', b'9', b'-', b'\\', b'e',
            ]);
            b[at] = v;
            format!("byte {at} of {len} = {v:#04x}")
        }
        4 => {
            b.truncate(at);
            format!("truncated to {at} of {len} bytes")
        }
        5 => {
            let n = 1 + rng.below(64.min(len - at));
            b.drain(at..at + n);
            format!("deleted {n} bytes at {at} of {len}")
        }
        6 => {
            let n = 1 + rng.below(64);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(at..at, junk);
            format!("inserted {n} bytes at {at} of {len}")
        }
        7 if parquet && len >= 8 => {
            let v = *rng.pick(&[0u32, 1, 7, u32::MAX, i32::MAX as u32, len as u32]);
            b[len - 8..len - 4].copy_from_slice(&v.to_le_bytes());
            format!("footer metadata length = {v}")
        }
        _ => {
            let n = (1 + rng.below(256)).min(len - at);
            b[at..at + n].fill(0);
            format!("zeroed {n} bytes at {at} of {len}")
        }
    }
}

/// The manifest bytes of one case: JSON-level changes, byte-level damage, or both.
fn mutate_manifest(rng: &mut Rng, corpus: &Corpus) -> (Vec<u8>, String, bool) {
    let mut doc = corpus.manifest.clone();
    let mut raws = Vec::new();
    let mut steps = Vec::new();
    let mut rehash = false;
    // Mostly JSON-level changes: byte damage nearly always ends in a syntax error, so it
    // exercises the parser less than a well-formed manifest with a hostile value.
    let mode = rng.below(100);
    if mode < 90 {
        for _ in 0..1 + rng.below(3).saturating_sub(1) {
            if rng.chance(40) {
                let (desc, r) = mutate_targeted(rng, &mut doc);
                rehash |= r;
                steps.push(desc);
            } else {
                steps.push(mutate_node(rng, &mut doc, &mut raws));
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&doc).unwrap();
    for (i, raw) in raws.iter().enumerate() {
        text = text.replace(&format!("\"@@RAW{i}@@\""), raw);
    }
    let mut bytes = text.into_bytes();
    if mode >= 80 {
        steps.push(mutate_bytes(rng, &mut bytes, false));
    }
    (bytes, format!("manifest: {}", steps.join("; ")), rehash)
}

/// Damages the step files of the dataset copied to `dir`; returns the description and whether
/// the manifest now vouches for changed bytes (rehash).
fn mutate_files(rng: &mut Rng, corpus: &Corpus, dir: &Path) -> (String, bool) {
    let mut steps = Vec::new();
    let mut rehashed = Vec::new();
    let mut touched = Vec::new();
    for _ in 0..1 + usize::from(rng.chance(20)) {
        let rel = rng.pick(&corpus.data_files).clone();
        if touched.contains(&rel) {
            continue;
        }
        touched.push(rel.clone());
        let (desc, rehash) = mutate_file(rng, corpus, dir, &rel);
        if rehash {
            rehashed.push(rel);
        }
        steps.push(desc);
    }
    if !rehashed.is_empty() {
        rewrite_hashes(corpus, dir, &rehashed);
        steps.push("manifest hashes updated to match".into());
    }
    (format!("files: {}", steps.join("; ")), !rehashed.is_empty())
}

fn mutate_file(rng: &mut Rng, corpus: &Corpus, dir: &Path, rel: &str) -> (String, bool) {
    let path = dir.join(rel);
    let others: Vec<&String> = corpus.data_files.iter().filter(|o| *o != rel).collect();
    let other = *rng.pick(&others);
    let remove = |p: &Path| std::fs::remove_file(p).unwrap();
    let rehash = rng.chance(50);
    match rng.below(10) {
        0..=3 => {
            let mut bytes = std::fs::read(&path).unwrap();
            let d = mutate_bytes(rng, &mut bytes, true);
            std::fs::write(&path, bytes).unwrap();
            (format!("{rel}: {d}"), false)
        }
        4 => {
            std::fs::write(&path, pristine_bytes(corpus, other)).unwrap();
            (format!("{rel} replaced by a copy of {other}"), rehash)
        }
        5 => {
            std::fs::write(&path, &corpus.empty_file).unwrap();
            (format!("{rel} replaced by a zero-row file"), rehash)
        }
        6 => {
            remove(&path);
            (format!("{rel} deleted"), false)
        }
        7 => {
            remove(&path);
            std::fs::create_dir(&path).unwrap();
            (format!("{rel} replaced by a directory"), false)
        }
        8 => {
            let target = rng
                .pick(&["/dev/zero", "/dev/null", "/etc/hostname"])
                .to_string();
            remove(&path);
            std::os::unix::fs::symlink(&target, &path).unwrap();
            (format!("{rel} is a symlink to {target}"), false)
        }
        _ => {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.extend((0..1 + rng.below(100)).map(|_| rng.next() as u8));
            std::fs::write(&path, bytes).unwrap();
            (format!("{rel}: junk appended after the footer"), rehash)
        }
    }
}

fn pristine_bytes<'a>(corpus: &'a Corpus, rel: &str) -> &'a [u8] {
    let (_, bytes) = corpus
        .files
        .iter()
        .find(|(p, _)| p == Path::new(rel))
        .unwrap();
    bytes
}

/// Points the manifest's size and hash of each of `rels` at the file's current bytes.
fn rewrite_hashes(corpus: &Corpus, dir: &Path, rels: &[String]) {
    let mut doc = corpus.manifest.clone();
    for shard in doc["shards"].as_array_mut().unwrap() {
        for f in shard["files"].as_array_mut().unwrap() {
            let rel = f["path"].as_str().unwrap().to_string();
            // Only regular files: another mutation may have left a symlink to /dev/zero.
            let path = dir.join(&rel);
            let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
            if !rels.contains(&rel) || !regular {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            f["bytes"] = json!(bytes.len());
            f["xxh3"] = json!(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)));
        }
    }
    let text = serde_json::to_vec_pretty(&doc).unwrap();
    std::fs::write(dir.join(&corpus.manifest_rel), text).unwrap();
}

fn copy_dataset(corpus: &Corpus, dir: &Path) {
    for (rel, bytes) in &corpus.files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the read paths and judging what they return.

/// What one case saw that it must not have.
#[derive(Default)]
struct Verdict {
    rejected: bool,
    wrong: Vec<(String, String)>,
}

impl Verdict {
    fn fail(&mut self, class: &str, detail: String) {
        self.wrong.push((class.to_string(), detail));
    }

    /// An error must name a path inside the dataset, so a user knows what is damaged.
    fn named(&mut self, dir: &Path, what: &str, e: &dyn std::fmt::Display) {
        let msg = e.to_string();
        if !msg.contains(&*dir.to_string_lossy()) {
            self.fail(&format!("{what} error names no file of the dataset"), msg);
        }
    }
}

/// Opens the dataset and uses every cheap accessor a command would (`store info`, resume):
/// a manifest that loads must be safe to use.
fn open_and_summarise(dir: &Path, v: &mut Verdict) -> Option<Dataset> {
    let ds = match Dataset::open(dir) {
        Ok(ds) => ds,
        Err(e) => {
            v.rejected = true;
            v.named(dir, "open", &e);
            if std::env::var_os("BDENSE_FUZZ_VERBOSE").is_some() {
                eprintln!("  rejected: {}", short(&e.to_string(), 200));
            }
            return None;
        }
    };
    let m = ds.manifest();
    std::hint::black_box((m.steps(), m.trajectories(), m.bytes(), m.snapshot_hash()));
    std::hint::black_box((
        m.planned_shards(),
        m.grid.points(),
        ds.dim(),
        m.dims.to_string(),
    ));
    for s in &m.shards {
        std::hint::black_box((s.id_range(), s.bytes(), m.planned_range(s.index)));
    }
    // Bounded here so that a planned_count of 10^19 (finding 8, its own test) cannot take the
    // machine's memory down instead of failing.
    if m.planned_shards() <= 100_000 {
        std::hint::black_box(m.missing_shards());
    }
    Some(ds)
}

fn run_parser_case(dir: &Path) -> Verdict {
    let mut v = Verdict::default();
    open_and_summarise(dir, &mut v);
    v
}

/// `with_verify`: also run `verify` (and hold P1); without it only the readers are judged.
fn run_read_case(dir: &Path, corpus: &Corpus, rehashed: bool, with_verify: bool) -> Verdict {
    let mut v = Verdict::default();
    let Some(ds) = open_and_summarise(dir, &mut v) else {
        return v;
    };
    let verified = with_verify && check_verify(&ds, &mut v);
    check_gc(dir, &mut v);
    check_structure(&ds, verified, &mut v);
    let ctx = Judge {
        corpus,
        manifest: ds.manifest(),
        verified,
        rehashed,
    };
    for shard in ds.shards() {
        read_shard(&ds, shard, &ctx, &mut v);
    }
    v.rejected |= with_verify && !verified;
    v
}

fn check_verify(ds: &Dataset, v: &mut Verdict) -> bool {
    match verify(ds) {
        Ok(report) => {
            for p in &report.problems {
                if !p.path.starts_with(ds.dir()) {
                    v.fail("verify names a file outside the dataset", p.to_string());
                }
            }
            report.ok()
        }
        Err(e) => {
            v.named(ds.dir(), "verify", &e);
            false
        }
    }
}

/// gc's dry run must only ever propose files inside the dataset.
fn check_gc(dir: &Path, v: &mut Verdict) {
    if let Ok(report) = collect_garbage(dir, true) {
        for p in report.removed.iter().filter(|p| !p.starts_with(dir)) {
            v.fail(
                "gc would delete a file outside the dataset",
                p.display().to_string(),
            );
        }
    }
}

/// A verified manifest lists each shard, each id and each file once.
fn check_structure(ds: &Dataset, verified: bool, v: &mut Verdict) {
    if !verified {
        return;
    }
    let (mut indices, mut paths, mut ids) = (HashSet::new(), HashSet::new(), Vec::new());
    for s in ds.shards() {
        if !indices.insert(s.index) {
            v.fail(
                "verify accepts a shard listed twice",
                format!("shard {}", s.index),
            );
        }
        for f in &s.files {
            if !paths.insert(f.path.clone()) {
                v.fail("verify accepts a file listed twice", f.path.clone());
            }
        }
        ids.push((s.first_id, s.first_id.saturating_add(s.rows)));
    }
    ids.sort();
    if ids.windows(2).any(|w| w[1].0 < w[0].1) {
        v.fail("verify accepts overlapping id ranges", format!("{ids:?}"));
    }
}

/// The grid as the files hold it: f32 values, compared as numbers (-0.0 is 0.0; a manifest
/// holds no NaN once loaded).
fn grid_f32(sigmas: &[f64]) -> Vec<f32> {
    sigmas.iter().map(|&s| s as f32).collect()
}

struct Judge<'a> {
    corpus: &'a Corpus,
    manifest: &'a Manifest,
    verified: bool,
    rehashed: bool,
}

impl Judge<'_> {
    /// Whether the manifest's entry for (shard, step) is the committed one, so its hash still
    /// vouches for exactly the bytes the writer wrote.
    fn entry_pristine(&self, shard: &ShardEntry, step: u16) -> bool {
        let pristine = self.corpus.pristine.shard(shard.index);
        !self.rehashed
            && pristine.is_some_and(|p| {
                p.first_id == shard.first_id
                    && p.rows == shard.rows
                    && p.file(step) == shard.file(step)
            })
    }

    /// The manifest's meaning of the data (shape, grid) is the one the data were written with.
    /// The grid is compared at the precision the files store sigma in (f32): a manifest edit
    /// below that leaves no trace in the data, so no check can see it (docs/RELIABILITY.md).
    fn meta_pristine(&self) -> bool {
        let (m, p) = (self.manifest, &self.corpus.pristine);
        m.dims == p.dims
            && m.dtype == p.dtype
            && m.has_denoised == p.has_denoised
            && grid_f32(&m.grid.sigmas) == grid_f32(&p.grid.sigmas)
    }

    /// What is wrong with a successful read of one step, or `None`.
    fn step(&self, shard: &ShardEntry, b: &StepBatch) -> Option<(&'static str, String)> {
        let Some(end) = shard.first_id.checked_add(shard.rows) else {
            let msg = format!(
                "{}: read although the manifest's id range overflows",
                b.path.display()
            );
            return Some(("ids or row count differ from the manifest", msg));
        };
        let want = shard.first_id..end;
        let ids = b.traj_ids();
        if !want.clone().eq(ids.iter().copied()) || b.rows() != ids.len() {
            let got = (ids.first(), ids.last(), b.rows());
            let msg = format!(
                "{}: holds ids {got:?}, the manifest says {want:?}",
                b.path.display()
            );
            return Some(("ids or row count differ from the manifest", msg));
        }
        if !(self.verified || self.entry_pristine(shard, b.step)) {
            return None;
        }
        if self.verified && !self.meta_pristine() {
            return Some(("grid, dims or dtype differ from the data's", String::new()));
        }
        let changed = rows_of(b).find(|(id, r)| self.corpus.rows.get(&(*id, b.step)) != Some(r));
        changed.map(|(id, _)| {
            let msg = format!("{} step {}: trajectory {id}", b.path.display(), b.step);
            ("values differ from what was written", msg)
        })
    }

    fn trajectory(&self, t: &Trajectory) -> Option<String> {
        let shard = self
            .manifest
            .shards
            .iter()
            .find(|s| s.id_range().contains(&t.traj_id))?;
        let all_pristine = (0..self.manifest.steps() as u16).all(|s| self.entry_pristine(shard, s));
        let want = self.corpus.trajectories.get(&t.traj_id);
        let same = want.is_some_and(|w| {
            let data = |t: &Trajectory| (t.seed, t.label, t.states.clone(), t.denoised.clone());
            data(w) == data(t) && (!self.verified || grid_f32(&w.sigmas) == grid_f32(&t.sigmas))
        });
        ((self.verified || all_pristine) && !same).then(|| format!("trajectory {}", t.traj_id))
    }

    fn class(&self, what: &str) -> String {
        if self.verified {
            format!("P1 verify accepts a changed store: {what}")
        } else {
            format!("P2 read returns damaged data without error: {what}")
        }
    }
}

fn read_shard(ds: &Dataset, shard: &ShardEntry, j: &Judge, v: &mut Verdict) {
    let steps: Vec<u16> = (0..ds.manifest().steps() as u16).collect();
    match ds.read_steps(shard, &steps, None) {
        Ok(batches) => {
            for b in &batches {
                if let Some((what, detail)) = j.step(shard, b) {
                    v.fail(&j.class(what), detail);
                }
            }
        }
        Err(e) => {
            v.rejected = true;
            v.named(ds.dir(), "read", &e);
        }
    }
    let last = shard.first_id.saturating_add(shard.rows.saturating_sub(1));
    for id in [shard.first_id, last] {
        match ds.read_trajectory(id) {
            Ok(t) => {
                if let Some(detail) = j.trajectory(&t) {
                    v.fail(&j.class("trajectory differs from what was written"), detail);
                }
            }
            Err(e) => {
                v.rejected = true;
                v.named(ds.dir(), "trajectory read", &e);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The campaign: cases on their own threads, panics and hangs caught, findings grouped.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tier {
    /// Manifest mutations; open and summaries only (fast: the million-case campaign).
    Parser,
    /// Manifest mutations; every read path.
    ManifestReads,
    /// Step-file mutations (sometimes with the manifest's hashes updated); every read path.
    ShardReads,
    /// The same step-file mutations; `verify` too, which decodes what the readers refuse.
    ShardVerify,
}

impl Tier {
    /// Mixed into each case's seed. The two shard tiers share it: seed N damages the same
    /// files in both, so a case found by one reproduces in the other.
    fn salt(self) -> u64 {
        match self {
            Tier::Parser => 1,
            Tier::ManifestReads => 2,
            Tier::ShardReads | Tier::ShardVerify => 3,
        }
    }
}

struct Config {
    cases: u64,
    seed: u64,
    timeout: Duration,
    max_hangs: u64,
    /// Print each case before running it (`BDENSE_FUZZ_VERBOSE=1`): finds a case that kills
    /// the process (out of memory, abort) rather than panicking.
    verbose: bool,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default_cases: u64) -> Config {
    Config {
        cases: env_u64("BDENSE_FUZZ_CASES", default_cases),
        seed: env_u64("BDENSE_FUZZ_SEED", 0),
        timeout: Duration::from_millis(env_u64("BDENSE_FUZZ_TIMEOUT_MS", 20_000)),
        max_hangs: env_u64("BDENSE_FUZZ_MAX_HANGS", 1),
        verbose: env_u64("BDENSE_FUZZ_VERBOSE", 0) != 0,
    }
}

/// One case prepared on the test thread: its directory and mutation are ready to read.
struct Prepared {
    dir: PathBuf,
    corpus: usize,
    mutation: String,
    rehashed: bool,
}

/// `generation` changes after a hang: the hung case may still be reading its directory.
fn prepare(tier: Tier, seed: u64, corpora: &[Corpus], root: &Path, generation: u64) -> Prepared {
    let mut rng = Rng::new(seed, tier.salt());
    let corpus = rng.below(corpora.len());
    let c = &corpora[corpus];
    let name = c.dir.file_name().unwrap();
    let (mutation, rehashed, dir) = match tier {
        Tier::Parser => {
            // Only the manifest changes: one copy of each dataset serves every case (speed).
            let dir = root
                .join(format!("parser-{generation}-{corpus}"))
                .join(name);
            if !dir.exists() {
                copy_dataset(c, &dir);
            }
            let (bytes, desc, rehash) = mutate_manifest(&mut rng, c);
            std::fs::write(dir.join(&c.manifest_rel), bytes).unwrap();
            (desc, rehash, dir)
        }
        Tier::ManifestReads => {
            let dir = root.join(format!("case-{seed}")).join(name);
            copy_dataset(c, &dir);
            let (bytes, desc, rehash) = mutate_manifest(&mut rng, c);
            std::fs::write(dir.join(&c.manifest_rel), bytes).unwrap();
            (desc, rehash, dir)
        }
        Tier::ShardReads | Tier::ShardVerify => {
            let dir = root.join(format!("case-{seed}")).join(name);
            copy_dataset(c, &dir);
            let (desc, rehash) = mutate_files(&mut rng, c, &dir);
            (desc, rehash, dir)
        }
    };
    Prepared {
        dir,
        corpus,
        mutation: format!("corpus {corpus}, {mutation}"),
        rehashed,
    }
}

static SERIAL: Mutex<()> = Mutex::new(());
/// The first panic of the running case (its thread or a thread it spawned), with location.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Records panics of case threads (named `fuzz-case-*`, or unnamed helper threads they
/// spawn) instead of printing thousands of them; other threads keep the default hook.
fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().map(str::to_string);
            if name.as_deref().is_some_and(|n| !n.starts_with("fuzz-case")) {
                return default(info);
            }
            let loc = info.location().map(|l| l.to_string()).unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let trace = match std::env::var_os("BDENSE_FUZZ_VERBOSE") {
                Some(_) => format!("\n{}", std::backtrace::Backtrace::force_capture()),
                None => String::new(),
            };
            let mut slot = PANIC.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(format!("{loc}\t{msg}{trace}"));
        }));
    });
}

enum Outcome {
    Judged(Verdict),
    Panicked(String),
    Hung,
}

type Job = Box<dyn FnOnce() -> Verdict + Send>;

/// A long-lived thread that runs cases one at a time (a thread per case would cost more than
/// parsing a manifest). After a hang it is abandoned and a fresh one started.
struct Worker {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Option<Verdict>>,
}

impl Worker {
    fn start() -> Worker {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-case-worker".into())
            .spawn(move || {
                for job in job_rx {
                    let verdict = catch_unwind(AssertUnwindSafe(job)).ok();
                    if result_tx.send(verdict).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        Worker { jobs, results }
    }

    fn run(
        &mut self,
        tier: Tier,
        p: &Prepared,
        corpora: &Arc<Vec<Corpus>>,
        timeout: Duration,
    ) -> Outcome {
        PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (corpora, dir, corpus, rehashed) =
            (corpora.clone(), p.dir.clone(), p.corpus, p.rehashed);
        let job: Job = Box::new(move || match tier {
            Tier::Parser => run_parser_case(&dir),
            Tier::ShardReads => run_read_case(&dir, &corpora[corpus], rehashed, false),
            _ => run_read_case(&dir, &corpora[corpus], rehashed, true),
        });
        self.jobs.send(job).unwrap();
        match self.results.recv_timeout(timeout) {
            Ok(Some(verdict)) => Outcome::Judged(verdict),
            Ok(None) => {
                let p = PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
                Outcome::Panicked(p.unwrap_or_else(|| "unknown\t(no message)".into()))
            }
            Err(_) => {
                *self = Worker::start();
                Outcome::Hung
            }
        }
    }
}

struct Finding {
    count: u64,
    seed: u64,
    mutation: String,
    detail: String,
}

#[derive(Default)]
struct Tally {
    cases: u64,
    rejected: u64,
    hangs: u64,
    findings: BTreeMap<String, Finding>,
}

impl Tally {
    fn add(&mut self, seed: u64, p: &Prepared, outcome: Outcome) {
        self.cases += 1;
        let mut found = Vec::new();
        match outcome {
            Outcome::Judged(v) => {
                self.rejected += u64::from(v.rejected);
                found.extend(v.wrong);
            }
            Outcome::Panicked(p) => {
                let (loc, msg) = p.split_once('\t').unwrap_or((&p, ""));
                found.push((format!("panic at {loc}"), msg.to_string()));
            }
            Outcome::Hung => {
                self.hangs += 1;
                let kind = p
                    .mutation
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                found.push((
                    format!("hang > deadline ({})", short(&kind, 40)),
                    String::new(),
                ));
            }
        }
        for (class, detail) in found {
            let f = self.findings.entry(class).or_insert_with(|| Finding {
                count: 0,
                seed,
                mutation: p.mutation.clone(),
                detail: short(&detail, 20_000),
            });
            f.count += 1;
        }
    }

    fn summary(&self, tier: Tier, secs: f64) -> String {
        let mut s = format!(
            "fuzz {tier:?}: {} cases in {secs:.1}s ({:.0}/s), {} rejected, {} accepted, {} distinct findings\n",
            self.cases,
            self.cases as f64 / secs.max(1e-9),
            self.rejected,
            self.cases - self.rejected,
            self.findings.len()
        );
        for (class, f) in &self.findings {
            s += &format!(
                "- {class}: {} cases; first: seed {} ({})\n    {}\n",
                f.count,
                f.seed,
                short(&f.mutation, 300),
                f.detail
            );
        }
        s
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "..."
    }
}

fn campaign(tier: Tier, default_cases: u64) {
    let cfg = config(default_cases);
    campaign_over(tier, &cfg, cfg.seed..cfg.seed.saturating_add(cfg.cases));
}

fn campaign_over(tier: Tier, cfg: &Config, seeds: impl IntoIterator<Item = u64>) {
    // One tier at a time: cases compete for the same cores, and the panic slot is global.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install_hook();
    let corpora = Arc::new(build_corpora());
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut worker = Worker::start();
    for seed in seeds {
        // A bug in a mutation fails the test but does not end a long campaign.
        let prepared = catch_unwind(AssertUnwindSafe(|| {
            prepare(tier, seed, &corpora, root.path(), tally.hangs)
        }));
        let Ok(p) = prepared else {
            let f = tally
                .findings
                .entry("harness bug: a mutation panicked".into());
            f.or_insert_with(|| Finding {
                count: 0,
                seed,
                mutation: "see the panic above".into(),
                detail: String::new(),
            })
            .count += 1;
            continue;
        };
        if cfg.verbose {
            eprintln!("seed {seed}: {}", p.mutation);
        }
        let case_started = Instant::now();
        let outcome = worker.run(tier, &p, &corpora, cfg.timeout);
        if cfg.verbose {
            eprintln!("  {} ms", case_started.elapsed().as_millis());
        }
        let hung = matches!(outcome, Outcome::Hung);
        tally.add(seed, &p, outcome);
        if !hung && !matches!(tier, Tier::Parser) {
            let _ = std::fs::remove_dir_all(p.dir.parent().unwrap());
        }
        if tally.hangs >= cfg.max_hangs {
            eprintln!(
                "stopping after {} hang(s): hung threads keep running",
                tally.hangs
            );
            break;
        }
        if tally.cases % 100_000 == 0 {
            eprintln!("{}", tally.summary(tier, started.elapsed().as_secs_f64()));
        }
    }
    let summary = tally.summary(tier, started.elapsed().as_secs_f64());
    eprintln!("{summary}");
    assert!(tally.findings.is_empty(), "{summary}");
}
