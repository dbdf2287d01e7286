//! Reads every step file of a dataset's `x` column and reports MB/s of f32 produced.
//!     read_bench STORE/NAME [repeats]
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ds = bdense_store::Dataset::open(std::path::Path::new(&args[1])).unwrap();
    let repeats: usize = args.get(2).map_or(3, |s| s.parse().unwrap());
    for _ in 0..repeats {
        let t = Instant::now();
        let mut bytes = 0usize;
        for shard in ds.shards() {
            for step in 0..ds.manifest().steps() as u16 {
                let b = ds
                    .read_step_columns(shard, step, Some(&["x"]), None)
                    .unwrap();
                bytes += b.x().len() * 4;
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:.0} MB/s ({} MB in {s:.2}s)",
            bytes as f64 / s / 1e6,
            bytes / 1_000_000
        );
    }
}
