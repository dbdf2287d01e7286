//! What integrity on every read costs: xxh3 of every step file against decoding it.
//!     hash_cost STORE/NAME [repeats]
//! Prints, per pass over the dataset: read+hash only, decode only (no checks), and the
//! checked read every reader now does (read, hash, decode, id checks).
use std::time::Instant;

use bdense_store::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ds = bdense_store::Dataset::open(std::path::Path::new(&args[1])).unwrap();
    let repeats: usize = args.get(2).map_or(3, |s| s.parse().unwrap());
    let files: Vec<_> = ds
        .shards()
        .iter()
        .flat_map(|s| s.files.iter().map(move |f| (s, f)))
        .collect();
    let total: u64 = files.iter().map(|(_, f)| f.bytes).sum();
    for _ in 0..repeats {
        let t = Instant::now();
        for (_, f) in &files {
            let bytes = std::fs::read(ds.file_path(f)).unwrap();
            std::hint::black_box(xxhash_rust::xxh3::xxh3_64(&bytes));
        }
        let hash_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        for (_, f) in &files {
            let bytes = bytes::Bytes::from(std::fs::read(ds.file_path(f)).unwrap());
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                std::hint::black_box(b.unwrap());
            }
        }
        let decode_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        for (shard, f) in &files {
            std::hint::black_box(ds.read_step(shard, f.step).unwrap());
        }
        let checked_s = t.elapsed().as_secs_f64();
        println!(
            "{} files, {:.1} MB: read+xxh3 {hash_s:.3}s ({:.0} MB/s), decode unchecked {decode_s:.3}s, checked read {checked_s:.3}s (+{:.1}% over unchecked)",
            files.len(),
            total as f64 / 1e6,
            total as f64 / hash_s / 1e6,
            100.0 * (checked_s - decode_s) / decode_s
        );
    }
}
