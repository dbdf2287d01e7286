//! `bdense eval`, `bdense report` and the quick `bdense demo`, end to end.

use crate::{dir, procedural_store};

/// Trains sfd and bdense (two seeds each) on a small procedural store, evaluates, reports.
#[test]
fn eval_and_report_compare_methods_with_every_table_and_picture() {
    let t = dir();
    procedural_store(&t);
    let mut runs = Vec::new();
    for method in ["sfd", "bdense"] {
        for seed in ["0", "1"] {
            let run = format!("runs/{method}-{seed}");
            // SFD has one branch; B-DENSE gets K = 2.
            let k = if method == "bdense" { "2" } else { "1" };
            t.bdense([
                "train", "store/p", "--method", method, "--n", "4", "--k", k, "--steps", "4",
                "--batch", "16", "--base", "8", "--seed", seed, "--out", &run,
            ])
            .ok();
            runs.push(run);
        }
    }
    let cache = t.join("cache");
    let mut eval = vec!["eval".to_string()];
    eval.extend(runs.iter().cloned());
    eval.extend(["--count", "32", "--nfe", "3"].map(String::from));
    let out = t
        .bdense(&eval)
        .env("BDENSE_CACHE", cache.to_str().unwrap())
        .ok();
    assert!(
        out.contains("evaluated 4 runs") && out.contains("FD-cls"),
        "{out}"
    );
    assert!(
        bdense_store::Dataset::open(&t.join("store/p-heldout")).is_ok(),
        "held-out trajectories were generated"
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("runs/bdense-0/eval.json")).unwrap()).unwrap();
    assert_eq!(
        r["rmse_per_branch"].as_array().unwrap().len(),
        3,
        "one row per interval"
    );
    assert_eq!(
        r["rmse_per_branch"][0].as_array().unwrap().len(),
        2,
        "one entry per branch"
    );
    assert!(
        r["fid_inception"].is_null(),
        "Inception FID is reserved for the libtorch build"
    );

    // Results are queryable with SQL.
    let out = t.bdense(["sql", ".", "SELECT 1"]).ok();
    assert!(out.contains('1'));

    let mut report = vec!["report".to_string()];
    report.extend(runs.iter().cloned());
    report.extend(["--out", "report"].map(String::from));
    let out = t.bdense(&report).ok();
    assert!(
        out.contains("| 3 | bdense | 4 | 2 | 2 |") && out.contains("| 3 | sfd | 4 | 1 | 2 |"),
        "{out}"
    );
    let md = std::fs::read_to_string(t.join("report/report.md")).unwrap();
    for needle in [
        "## Headline",
        "## Error at every student timestamp",
        "## B-DENSE branches",
        "samples-nfe3.png",
        "loss-nfe3.png",
        "error-per-step.png",
        "± ",
    ] {
        assert!(md.contains(needle), "report lacks {needle:?}");
    }
    for picture in ["samples-nfe3.png", "loss-nfe3.png", "error-per-step.png"] {
        let bytes = std::fs::read(t.join("report").join(picture)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{picture}");
    }
    let html = std::fs::read_to_string(t.join("report/report.html")).unwrap();
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        3,
        "pictures are inlined"
    );
    assert!(html.contains("<table>"));
    t.bdense(["report", "runs/sfd-0", "--out", "r2"]).ok();
    t.bdense(["report", "store", "--out", "r3"])
        .fails_with("not a bdense run directory");
}

#[test]
fn quick_demo_runs_end_to_end_on_fashion_mnist() {
    if !std::path::Path::new(bdense_trainer::data::FASHION_MNIST_DIR).exists() {
        eprintln!("skipping: install dataset-fashion-mnist (CI does)");
        return;
    }
    let t = dir();
    let out = t
        .bdense(["demo", "--preset", "quick", "--out", "demo"])
        .ok();
    assert!(
        out.contains("demo (quick preset) done") && out.contains("4 runs from one store"),
        "{out}"
    );
    // The paper's regime: NFE 2 is N = 4 with the analytical first step, one seed.
    assert!(
        out.contains("| 2 | bdense | 4 | 4 | 1 |") && out.contains("| 3 | sfd | 5 | 1 | 1 |"),
        "{out}"
    );
    // The store comes from the shipped U-Net teacher and every student is a copy of it.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("demo/runs/bdense-n4-s0/run.json")).unwrap())
            .unwrap();
    assert!(
        run["config"]["init"]["Teacher"]
            .as_str()
            .is_some_and(|d| d.ends_with("models/fashion-mnist-unet")),
        "{run}"
    );
    let md = std::fs::read_to_string(t.join("demo/report/report.md")).unwrap();
    for nfe in [2, 3] {
        assert!(
            md.contains(&format!("samples-nfe{nfe}.png"))
                && t.join(format!("demo/report/loss-nfe{nfe}.png")).exists()
        );
    }
    // A second run reuses everything already there.
    let again = t
        .bdense(["demo", "--preset", "quick", "--out", "demo"])
        .ok();
    assert_eq!(
        again.matches("already trained, reusing it").count(),
        4,
        "{again}"
    );
}
