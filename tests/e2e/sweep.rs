//! `bdense sweep`: the same search budget for both methods on a validation split, the chosen
//! settings retrained with fresh seeds and reported on held-out trajectories.

use bdense_store::Dataset;

use crate::{dir, procedural_store};

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    // The weights and command columns are quoted and hold commas: split outside quotes.
    text.lines()
        .skip(1)
        .map(|line| {
            let (mut cells, mut cell, mut quoted) = (Vec::new(), String::new(), false);
            for ch in line.chars() {
                match ch {
                    '"' => quoted = !quoted,
                    ',' if !quoted => cells.push(std::mem::take(&mut cell)),
                    c => cell.push(c),
                }
            }
            cells.push(cell);
            cells
        })
        .collect()
}

#[test]
fn sweep_searches_on_validation_and_reports_fresh_seeds_on_heldout() {
    let t = dir();
    procedural_store(&t);
    let cache = t.join("cache");
    let sweep = [
        "sweep",
        "store/p",
        "--n",
        "4",
        "--k",
        "2",
        "--trials",
        "2",
        "--steps",
        "2",
        "--batch",
        "8",
        "--final-seeds",
        "2",
        "--val-count",
        "16",
        "--heldout-count",
        "16",
        "--out",
        "sw",
    ];
    let out = t
        .bdense(sweep)
        .env("BDENSE_CACHE", cache.to_str().unwrap())
        .ok();
    assert!(
        out.contains("Held-out RMSE to the teacher") && out.contains("FD-cls: "),
        "{out}"
    );

    // Three disjoint sets of seeds: training store, validation, held-out.
    let seed = |name: &str| {
        Dataset::open(&t.join("store").join(name))
            .unwrap()
            .manifest()
            .seeds
            .base_seed
    };
    let (train, val, heldout) = (seed("p"), seed("p-val"), seed("p-heldout"));
    assert!(train != val && val != heldout && train != heldout);

    // The same budget: two trials per method, trial 0 the paper's recipe, each with the
    // command that reproduces it.
    let search = std::fs::read_to_string(t.join("sw/search.csv")).unwrap();
    let rows = csv_rows(&search);
    assert_eq!(rows.len(), 4, "{search}");
    for method in ["sfd", "bdense"] {
        let mine: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == method).collect();
        assert_eq!(mine.len(), 2, "{search}");
        assert_eq!((mine[0][1].as_str(), mine[0][2].as_str()), ("0", "0.0002"));
        assert!(
            mine.iter()
                .all(|r| r[7].starts_with("bdense train store/p --out sw/search/"))
        );
    }
    let eval = |run: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(t.join(run).join("eval.json")).unwrap()).unwrap()
    };
    assert!(
        eval("sw/search/bdense-t1")["heldout"]
            .as_str()
            .unwrap()
            .ends_with("p-val")
    );
    // Each method's choice is its trial with the lowest validation RMSE.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("sw/sweep.json")).unwrap()).unwrap();
    for outcome in summary["outcomes"].as_array().unwrap() {
        let method = outcome["method"].as_str().unwrap();
        let best = rows
            .iter()
            .filter(|r| r[0] == method)
            .min_by(|a, b| {
                let v = |r: &Vec<String>| r[5].parse::<f64>().unwrap();
                v(a).total_cmp(&v(b))
            })
            .unwrap();
        assert_eq!(outcome["chosen_trial"].to_string(), best[1], "{method}");
        // Fresh seeds, measured on the held-out split.
        for s in ["1000000", "1000001"] {
            let run = format!("sw/final/{method}-s{s}");
            let e = eval(&run);
            assert!(e["heldout"].as_str().unwrap().ends_with("p-heldout"));
            assert_eq!(e["seed"].to_string(), s);
        }
        let rmse: Vec<f64> = outcome["heldout_rmse"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let mean = (rmse[0] + rmse[1]) / 2.0;
        assert!((outcome["rmse"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    }

    // A second call reuses every finished run and reports the same numbers.
    let before = std::fs::read(t.join("sw/summary.md")).unwrap();
    let again = t
        .bdense(sweep)
        .env("BDENSE_CACHE", cache.to_str().unwrap())
        .ok();
    assert_eq!(
        again.matches("already trained, reusing it").count(),
        8,
        "{again}"
    );
    assert_eq!(std::fs::read(t.join("sw/summary.md")).unwrap(), before);
}
