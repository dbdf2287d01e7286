//! The fast path (`bdense_store::decode`: vector columns and required 64-bit integers)
//! against arrow-rs' general reader: value for value (bit for bit, NaN payloads included) on
//! every dtype and encoding the writer produces, the fallback for what it does not
//! recognise, and damaged pages.

use std::path::Path;
use std::sync::Arc;

use bdense_store::arrow::array::{
    Array, AsArray, FixedSizeListArray, Float16Array, Float32Array, Int32Array, RecordBatch,
    UInt64Array,
};
use bdense_store::arrow::datatypes::{DataType, Field, Schema};
use bdense_store::decode::decode_fast_column;
use bdense_store::parquet::arrow::ArrowWriter;
use bdense_store::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use bdense_store::parquet::basic::{Compression, Encoding, ZstdLevel};
use bdense_store::parquet::file::properties::{WriterProperties, WriterVersion};
use bdense_store::parquet::schema::types::ColumnPath;
use bytes::Bytes;
use half::f16;

const DIM: usize = 13;

/// Floats with special values: NaNs with payloads and both signs, infinities, zeros of both
/// signs, subnormals, and ordinary values.
fn f32_values(rows: usize) -> Vec<f32> {
    let special = [
        f32::from_bits(0x7fc0_0001),
        f32::from_bits(0xffa0_1234),
        f32::from_bits(0x7f80_0001), // signalling NaN
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::MAX,
    ];
    (0..rows * DIM)
        .map(|i| match i % 7 {
            0 => special[(i / 7) % special.len()],
            _ => (i as f32 * 0.37).sin() * 1e3_f32.powf((i % 5) as f32 - 2.0),
        })
        .collect()
}

fn f16_values(rows: usize) -> Vec<f16> {
    let special = [
        f16::from_bits(0x7e01),
        f16::from_bits(0xfd23),
        f16::INFINITY,
        f16::NEG_INFINITY,
        f16::ZERO,
        f16::NEG_ZERO,
        f16::from_bits(1),
        f16::MAX,
    ];
    (0..rows * DIM)
        .map(|i| match i % 5 {
            0 => special[(i / 5) % special.len()],
            _ => f16::from_f32((i as f32 * 0.61).cos() * 100.0),
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    rows: usize,
    row_group_rows: usize,
    /// Data page size limit in bytes: small values split a row group (and rows) over pages.
    page_bytes: usize,
    split: bool,
    zstd: bool,
    v2: bool,
}

fn write(values: Arc<dyn Array>, l: Layout) -> Bytes {
    let item = Arc::new(Field::new("item", values.data_type().clone(), false));
    let list = FixedSizeListArray::try_new(item, DIM as i32, values, None).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("traj_id", DataType::UInt64, false),
        Field::new("x", list.data_type().clone(), false),
    ]));
    let ids = UInt64Array::from_iter_values(0..l.rows as u64);
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(list)]).unwrap();
    let leaf = ColumnPath::from(vec!["x".into(), "list".into(), "item".into()]);
    let mut props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(l.row_group_rows))
        .set_data_page_size_limit(l.page_bytes)
        .set_write_batch_size(7)
        .set_compression(if l.zstd {
            Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
        } else {
            Compression::UNCOMPRESSED
        })
        .set_writer_version(if l.v2 {
            WriterVersion::PARQUET_2_0
        } else {
            WriterVersion::PARQUET_1_0
        });
    if l.split {
        props = props.set_column_encoding(leaf, Encoding::BYTE_STREAM_SPLIT);
    }
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props.build())).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    Bytes::from(out)
}

fn general(bytes: &Bytes) -> Result<FixedSizeListArray, String> {
    general_column(bytes, "x").map(|a| a.as_fixed_size_list().clone())
}

/// Column `name` of a whole file through arrow-rs' general reader.
fn general_column(bytes: &Bytes, name: &str) -> Result<Arc<dyn Array>, String> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(|e| e.to_string())?;
    let mask =
        bdense_store::parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), [name]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(0).as_ref()).collect();
    bdense_store::arrow::compute::concat(&parts).map_err(|e| e.to_string())
}

/// The values of a list column as bits (f32 or f16), so NaN payloads compare.
fn bits(list: &FixedSizeListArray) -> Vec<u32> {
    let v = list.values();
    match v.data_type() {
        DataType::Float32 => v
            .as_primitive::<bdense_store::arrow::datatypes::Float32Type>()
            .values()
            .iter()
            .map(|f| f.to_bits())
            .collect(),
        _ => v
            .as_primitive::<bdense_store::arrow::datatypes::Float16Type>()
            .values()
            .iter()
            .map(|f| u32::from(f.to_bits()))
            .collect(),
    }
}

fn layouts() -> Vec<Layout> {
    let mut out = Vec::new();
    for (rows, row_group_rows, page_bytes) in [
        (1, 1, 1 << 20),
        (40, 16, 1 << 20),
        (40, 40, 100), // many pages per row group, rows split over pages
        (300, 128, 1 << 20),
        (257, 64, 3000),
    ] {
        for split in [true, false] {
            for zstd in [true, false] {
                for v2 in [false, true] {
                    out.push(Layout {
                        rows,
                        row_group_rows,
                        page_bytes,
                        split,
                        zstd,
                        v2,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn fast_path_matches_the_general_reader_on_f32_and_f16() {
    let path = Path::new("mem.parquet");
    for l in layouts() {
        let arrays: [Arc<dyn Array>; 2] = [
            Arc::new(Float32Array::from(f32_values(l.rows))),
            Arc::new(Float16Array::from(f16_values(l.rows))),
        ];
        for values in arrays {
            let bytes = write(values.clone(), l);
            let fast = decode_fast_column(path, bytes.clone(), "x").unwrap();
            let fast = fast.map(|a| a.as_fixed_size_list().clone());
            let want = general(&bytes).unwrap();
            // Parquet v2 writers store FIXED_LEN_BYTE_ARRAY (f16) without an explicit
            // encoding as DELTA_BYTE_ARRAY, which the fast path leaves to the general reader.
            let delta = l.v2 && !l.split && *values.data_type() == DataType::Float16;
            let Some(fast) = fast else {
                assert!(delta, "fast path declined {l:?} {}", values.data_type());
                continue;
            };
            assert_eq!(fast.data_type(), want.data_type(), "{l:?}");
            assert_eq!(fast.len(), l.rows, "{l:?}");
            assert_eq!(fast.null_count(), 0);
            assert_eq!(bits(&fast), bits(&want), "{l:?} {}", values.data_type());
        }
    }
}

#[test]
fn fast_path_declines_what_it_does_not_recognise() {
    let path = Path::new("mem.parquet");
    // A dictionary-encoded vector column: left to the general reader.
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let values = Arc::new(Float32Array::from(vec![1.5f32; 20 * DIM]));
    let list = FixedSizeListArray::try_new(item.clone(), DIM as i32, values.clone(), None).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "x",
        list.data_type().clone(),
        false,
    )]));
    let props = WriterProperties::builder()
        .set_dictionary_enabled(true)
        .build();
    let bytes = one_batch_file(schema, vec![Arc::new(list)], Some(props));
    assert!(decode_fast_column(path, bytes, "x").unwrap().is_none());
    // A nullable list column (its definition levels carry nulls).
    let nullable = FixedSizeListArray::try_new(
        item,
        DIM as i32,
        values,
        Some(vec![true, false].into_iter().cycle().take(20).collect()),
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "x",
        nullable.data_type().clone(),
        true,
    )]));
    let bytes = one_batch_file(schema, vec![Arc::new(nullable)], None);
    assert!(decode_fast_column(path, bytes, "x").unwrap().is_none());
    // A nullable integer column and a 32-bit one.
    for (field, array) in [
        (
            Field::new("n", DataType::UInt64, true),
            Arc::new(UInt64Array::from(vec![Some(3u64), None])) as Arc<dyn Array>,
        ),
        (
            Field::new("n", DataType::Int32, false),
            Arc::new(Int32Array::from(vec![3, 4])),
        ),
    ] {
        let bytes = one_batch_file(Arc::new(Schema::new(vec![field])), vec![array], None);
        assert!(decode_fast_column(path, bytes, "n").unwrap().is_none());
    }
}

/// A Parquet file of one batch, written with `props` (the writer's defaults if `None`).
fn one_batch_file(
    schema: Arc<Schema>,
    columns: Vec<Arc<dyn Array>>,
    props: Option<WriterProperties>,
) -> Bytes {
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, props).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    Bytes::from(out)
}

/// `traj_id` (a required UInt64, written PLAIN) decodes through the fast path on every
/// layout the v1 writer makes, bit for bit with the general reader; where a v2 writer picks
/// DELTA_BINARY_PACKED the fast path declines.
#[test]
fn fast_path_matches_the_general_reader_on_integer_ids() {
    let path = Path::new("mem.parquet");
    for l in layouts() {
        let bytes = write(Arc::new(Float32Array::from(f32_values(l.rows))), l);
        let fast = decode_fast_column(path, bytes.clone(), "traj_id").unwrap();
        let want = general_column(&bytes, "traj_id").unwrap();
        match fast {
            Some(fast) => assert_eq!(fast.as_ref(), want.as_ref(), "{l:?}"),
            None => assert!(l.v2, "fast path declined the v1 ids of {l:?}"),
        }
    }
}

/// Every single-byte change and every truncation inside the pages of the vector column and
/// of the id column: the fast path returns an error naming the file, declines, or returns
/// exactly what the general reader returns; it never panics (a panic fails the test:
/// `decode_fast_column` turns one into an error whose text says the decoder failed, which is
/// checked for below).
#[test]
fn damaged_pages_are_errors_naming_the_file_never_panics() {
    let path = Path::new("/data/step=3/shard-00001.parquet");
    for (split, zstd, v2) in [
        (true, true, false),
        (false, false, false),
        (true, false, true),
    ] {
        let l = Layout {
            rows: 24,
            row_group_rows: 8,
            page_bytes: 200,
            split,
            zstd,
            v2,
        };
        for values in [
            Arc::new(Float32Array::from(f32_values(l.rows))) as Arc<dyn Array>,
            Arc::new(Float16Array::from(f16_values(l.rows))),
        ] {
            let pristine = write(values, l).to_vec();
            let meta = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(pristine.clone()))
                .unwrap()
                .metadata()
                .clone();
            for (leaf, column) in [(1, "x"), (0, "traj_id")] {
                let (start, _) = meta.row_group(0).column(leaf).byte_range();
                let (last_start, last_len) = meta
                    .row_group(meta.num_row_groups() - 1)
                    .column(leaf)
                    .byte_range();
                let end = (last_start + last_len) as usize;
                let mut cases: Vec<Vec<u8>> = Vec::new();
                for at in start as usize..end {
                    for flip in [0x01u8, 0x80, 0xff] {
                        let mut b = pristine.clone();
                        b[at] ^= flip;
                        cases.push(b);
                    }
                }
                for at in (start as usize..end).step_by(17) {
                    cases.push(pristine[..at].to_vec());
                }
                for damaged in cases {
                    let bytes = Bytes::from(damaged);
                    match decode_fast_column(path, bytes.clone(), column) {
                        Err(e) => {
                            let msg = e.to_string();
                            assert!(msg.contains("shard-00001.parquet"), "{msg}");
                            assert!(!msg.contains("decoder failed"), "panicked: {msg}");
                        }
                        Ok(None) => {}
                        Ok(Some(fast)) => {
                            // Accepted: only where the general reader accepts the same values.
                            let want = general_column(&bytes, column).unwrap_or_else(|e| {
                                panic!("fast path accepted a file the general reader refuses: {e}")
                            });
                            assert_eq!(same_bits(&fast), same_bits(&want), "{column}");
                        }
                    }
                }
            }
        }
    }
}

/// A column's values as bits: list values as f32 or f16 bits (so NaN payloads compare),
/// integers as themselves.
fn same_bits(a: &Arc<dyn Array>) -> Vec<u64> {
    match a.as_fixed_size_list_opt() {
        Some(list) => bits(list).into_iter().map(u64::from).collect(),
        None => a
            .as_primitive::<bdense_store::arrow::datatypes::UInt64Type>()
            .values()
            .to_vec(),
    }
}

fn synthetic(dtype: bdense_store::Dtype) -> bdense_store::synthetic::SyntheticSpec {
    bdense_store::synthetic::SyntheticSpec {
        name: "g".into(),
        dims: bdense_store::Dims { c: 1, h: 3, w: 5 },
        count: 21,
        sigmas: vec![80.0, 5.0, 0.2, 0.002],
        rows_per_shard: 11,
        dtype,
        base_seed: 9,
        classes: 4,
        with_denoised: true,
    }
}

/// Whole datasets as the writer makes them, f32 and f16, every compression and encoding
/// option: every column of every step file reads the same through the fast path as through
/// the general reader alone, one step at a time and in parallel.
#[test]
fn dataset_reads_match_the_general_reader_for_every_dtype_and_option() {
    use bdense_store::{Dataset, Dtype, WriteOptions};
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for dtype in [Dtype::F32, Dtype::F16] {
        for (zstd_level, byte_stream_split, row_group_rows) in [
            (Some(1), true, 4),
            (Some(3), false, 128),
            (None, true, 128),
            (None, false, 3),
        ] {
            n += 1;
            let options = WriteOptions {
                zstd_level,
                byte_stream_split,
                row_group_rows,
                ..WriteOptions::default()
            };
            let dir = tmp.path().join(format!("g{n}"));
            let fast =
                bdense_store::synthetic::write_gaussian(&dir, &synthetic(dtype), options.clone())
                    .unwrap();
            let general = Dataset::open(&dir).unwrap().with_fast_decode(false);
            for shard in fast.shards() {
                let steps: Vec<u16> = (0..fast.manifest().steps() as u16).collect();
                let parallel = fast.read_steps(shard, &steps, None).unwrap();
                for &step in &steps {
                    let want = general.read_step(shard, step).unwrap();
                    let got = fast.read_step(shard, step).unwrap();
                    assert_eq!(got.batch, want.batch, "{dtype:?} {options:?} step {step}");
                    assert_eq!(parallel[step as usize].batch, want.batch);
                }
            }
        }
    }
}

/// The hash is skipped only for a file hashed before (by a check or a read) and unchanged
/// since: one that changes on disk afterwards (its mtime moves) is hashed again and refused by
/// name.
#[test]
fn a_file_changed_after_its_check_is_hashed_again() {
    for check_first in [true, false] {
        a_file_changed_after_it_was_hashed(check_first);
    }
}

fn a_file_changed_after_it_was_hashed(check_first: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let ds = bdense_store::synthetic::write_gaussian(
        &tmp.path().join("g"),
        &synthetic(bdense_store::Dtype::F32),
        bdense_store::WriteOptions::default(),
    )
    .unwrap();
    let shard = &ds.shards()[1];
    let entry = shard.file(2).unwrap();
    let path = ds.dir().join(&entry.path);
    if check_first {
        assert_eq!(ds.check_file(shard, entry).unwrap(), path);
    }
    let before = ds.read_step(shard, 2).unwrap();
    // A second read of the unchanged file (hashed once) gives the same batch.
    assert_eq!(ds.read_step(shard, 2).unwrap().batch, before.batch);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let err = ds.read_step(shard, 2).unwrap_err().to_string();
    assert!(
        err.contains("step=2/shard-00001.parquet") && err.contains("content hash"),
        "{check_first}: {err}"
    );
    // A check after reads alone still checks the file, and refuses it.
    let err = ds.check_file(shard, entry).unwrap_err().to_string();
    assert!(err.contains("content hash"), "{check_first}: {err}");
    // Restored byte for byte (with yet another mtime), it reads as before.
    bytes[n / 2] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(ds.read_step(shard, 2).unwrap().batch, before.batch);
}

/// Both integer types the fast path takes, at their extremes: `Int64` (negative values) and
/// `UInt64` past `i64::MAX` (stored as the same INT64 bits), PLAIN in v1 pages, compressed
/// and not, several pages: bit for bit with the general reader.
#[test]
fn fast_path_matches_the_general_reader_on_signed_and_unsigned_extremes() {
    use bdense_store::arrow::array::Int64Array;
    let path = Path::new("mem.parquet");
    let signed: Vec<i64> = (0..300)
        .map(|i| (i as i64 - 150) * (i64::MAX / 151))
        .collect();
    let unsigned: Vec<u64> = signed.iter().map(|&v| v as u64).collect();
    for zstd in [false, true] {
        let props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_data_page_size_limit(512)
            .set_write_batch_size(7)
            .set_compression(if zstd {
                Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
            } else {
                Compression::UNCOMPRESSED
            })
            .build();
        for (field, array) in [
            (
                Field::new("n", DataType::Int64, false),
                Arc::new(Int64Array::from(signed.clone())) as Arc<dyn Array>,
            ),
            (
                Field::new("n", DataType::UInt64, false),
                Arc::new(UInt64Array::from(unsigned.clone())),
            ),
        ] {
            let bytes = one_batch_file(
                Arc::new(Schema::new(vec![field])),
                vec![array.clone()],
                Some(props.clone()),
            );
            let fast = decode_fast_column(path, bytes.clone(), "n")
                .unwrap()
                .expect("a required INT64 column, PLAIN, takes the fast path");
            assert_eq!(fast.as_ref(), array.as_ref(), "zstd {zstd}");
            assert_eq!(fast.as_ref(), general_column(&bytes, "n").unwrap().as_ref());
        }
    }
}
