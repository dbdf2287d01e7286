//! `bdense pd`: progressive distillation rounds from the shipped teacher, PD against
//! PD + B-DENSE, evaluated per round.

use crate::dir;

#[test]
fn quick_pd_runs_rounds_for_both_methods_and_reuses_them() {
    let t = dir();
    t.bdense([
        "pd",
        "--preset",
        "quick",
        "--from-steps",
        "6",
        "--rounds",
        "2",
    ])
    .fails_with("multiple of 2^rounds");
    if !std::path::Path::new(bdense_trainer::data::FASHION_MNIST_DIR).exists() {
        eprintln!("skipping: install dataset-fashion-mnist (CI does)");
        return;
    }
    let out = t.bdense(["pd", "--preset", "quick", "--out", "pd"]).ok();
    assert!(
        out.contains("pd done in") && out.contains("2 rounds from 8 Euler steps, 2 chains"),
        "{out}"
    );
    for method in ["pd", "pd-bdense"] {
        for (r, steps) in [(1, 4), (2, 2)] {
            assert!(
                out.contains(&format!(
                    "{method} budget 3 seed 0 round {r} ({} -> {steps} steps): RMSE",
                    2 * steps
                )),
                "{out}"
            );
            let round = t.join(format!("pd/{method}-b3-s0/round-{r}"));
            assert!(round.join("round.json").exists() && round.join("log.csv").exists());
        }
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("pd/pd.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    // The teacher at 8, 4 and 2 Euler steps, then 2 rounds for each method.
    assert_eq!(rows.len(), 3 + 4, "{report}");
    for row in rows {
        let (rmse, fd) = (
            row["rmse"].as_f64().unwrap(),
            row["fd_cls"].as_f64().unwrap(),
        );
        assert!(rmse.is_finite() && fd.is_finite() && fd > 0.0, "{row}");
    }
    assert_eq!(rows[0]["method"], "teacher-euler");
    assert_eq!(
        rows[0]["rmse"].as_f64(),
        Some(0.0),
        "the reference is itself"
    );
    // A K = 2 student logs two branches, PD one.
    let bdense = rows.iter().find(|r| r["method"] == "pd-bdense").unwrap();
    assert_eq!(bdense["branch_loss"].as_array().unwrap().len(), 2);
    let pd = rows.iter().find(|r| r["method"] == "pd").unwrap();
    assert_eq!(pd["branch_loss"].as_array().unwrap().len(), 1);
    assert!(
        std::fs::read_to_string(t.join("pd/pd.csv"))
            .unwrap()
            .starts_with("method,budget,seed,round")
    );

    // Finished rounds are reused, and give the same numbers.
    let again = t.bdense(["pd", "--preset", "quick", "--out", "pd"]).ok();
    assert_eq!(again.matches("(reused)").count(), 4, "{again}");
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("pd/pd.json")).unwrap()).unwrap();
    for (a, b) in rows.iter().zip(second["rows"].as_array().unwrap()) {
        assert_eq!(a["rmse"], b["rmse"]);
    }
}
