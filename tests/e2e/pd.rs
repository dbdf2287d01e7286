//! `bdense pd`: progressive distillation rounds from the shipped teacher, PD against
//! PD + B-DENSE, evaluated per round; and `bdense generate --pd-round`, a round's examples in
//! the store.

use bdense_tests::file_hashes;

use crate::dir;
use crate::train::tiny_teacher;

fn pd_generate(name: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "generate",
        name,
        "--pd-round",
        "1",
        "--pd-steps",
        "4",
        "--teacher",
        "unet:teacher",
        "--dataset",
        "procedural",
        "--count",
        "40",
        "--rows-per-shard",
        "16",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    if !extra.contains(&"--seed") {
        args.extend(["--seed".into(), "3".into()]);
    }
    args
}

#[test]
fn a_pd_round_store_is_verified_read_by_sql_and_independent_of_batch_size() {
    let t = dir();
    tiny_teacher(&t, "teacher", "0");
    let out = t.bdense(pd_generate("store/r1", &["--batch", "7"])).ok();
    assert!(
        out.contains("generated 40 PD examples of round 1 (8 -> 4 steps")
            && out.contains("in 3 shards")
            && out.contains("dataset holds 40/40 examples"),
        "{out}"
    );
    t.bdense(pd_generate("store/b64", &["--batch", "64"])).ok();
    assert_eq!(
        file_hashes(&t.join("store/r1")),
        file_hashes(&t.join("store/b64")),
        "the batch size changes no byte"
    );
    let out = t.bdense(["store", "verify", "store/r1"]).ok();
    assert!(out.contains("verify ok"), "{out}");
    let info = t.bdense(["store", "info", "store/r1"]).ok();
    assert!(info.contains("format       v2"), "{info}");

    // Three roles per example, each with the sigma of its start interval on the round's grid.
    let out = t
        .bdense([
            "sql",
            "store",
            "SELECT step, count(*) AS n, count(DISTINCT traj_id) AS ids FROM r1 GROUP BY step ORDER BY step",
            "--format",
            "csv",
        ])
        .ok();
    assert!(out.contains("0,40,40\n1,40,40\n2,40,40"), "{out}");
    let out = t
        .bdense([
            "sql",
            "store",
            "SELECT count(*) AS n FROM r1 a JOIN r1 m ON a.traj_id = m.traj_id AND m.step = 1 \
             JOIN r1 e ON a.traj_id = e.traj_id AND e.step = 2 \
             JOIN grid g ON g.dataset = 'r1' AND CAST(g.sigma AS FLOAT) = a.sigma \
             JOIN grid gm ON gm.dataset = 'r1' AND gm.step = g.step + 1 AND CAST(gm.sigma AS FLOAT) = m.sigma \
             JOIN grid ge ON ge.dataset = 'r1' AND ge.step = g.step + 2 AND CAST(ge.sigma AS FLOAT) = e.sigma \
             WHERE a.step = 0 AND g.step % 2 = 0 AND l2_dist(a.x, e.x) > 0",
            "--format",
            "csv",
        ])
        .ok();
    assert!(out.trim().ends_with("\n40"), "{out}");

    // The same round with other arguments, or again without --resume, is refused by name.
    t.bdense(pd_generate("store/r1", &[]))
        .fails_with("pass --resume");
    t.bdense(pd_generate("store/r1", &["--resume", "--seed", "4"]))
        .fails_with("holds another PD round's examples (seed: dataset has 3, arguments give 4)");
    let out = t.bdense(pd_generate("store/r1", &["--resume"])).ok();
    assert!(out.contains("generated 0 PD examples"), "{out}");
    // A student of trajectories cannot train from it.
    t.bdense([
        "train", "store/r1", "--method", "sfd", "--n", "3", "--steps", "1", "--out", "run",
    ])
    .fails_with("is the store of PD round 1");
}

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
    // Round 1's examples are one store both methods trained from; later rounds' teachers
    // differ by method, and so do their stores.
    let stores: Vec<String> = std::fs::read_dir(t.join("pd/stores"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        stores,
        ["pd-b3-s0-round-2", "pd-bdense-b3-s0-round-2", "round-1-s0"]
    );
    for store in &stores {
        let out = t
            .bdense(["store", "verify", &format!("pd/stores/{store}")])
            .ok();
        assert!(out.contains("verify ok"), "{out}");
    }
    let record = |method: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(t.join(format!("pd/{method}-b3-s0/round-1/round.json"))).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(record("pd")["data"], record("pd-bdense")["data"]);
    assert!(
        record("pd")["data"]
            .as_str()
            .unwrap()
            .starts_with("store round-1-s0 (round 1")
    );

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

    // Killed in the middle of a round (PD's round 2, step 2 of 3, before its checkpoint), then
    // rerun: it continues from the checkpoints and the stores and ends where the uninterrupted
    // run ended, bit for bit.
    t.bdense([
        "pd",
        "--preset",
        "quick",
        "--out",
        "cut",
        "--abort-after-steps",
        "5",
    ])
    .output();
    assert!(!t.join("cut/pd.json").exists(), "the first run died");
    assert!(
        t.join("cut/pd-b3-s0/round-2/checkpoints/step-000001")
            .exists()
    );
    assert!(
        !t.join("cut/pd-b3-s0/round-2/checkpoints/step-000002")
            .exists()
    );
    t.bdense(["pd", "--preset", "quick", "--out", "cut"]).ok();
    let resumed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("cut/pd.json")).unwrap()).unwrap();
    let key = |r: &serde_json::Value| {
        ["method", "round", "rmse", "fd_cls", "loss", "branch_loss"].map(|k| r[k].to_string())
    };
    let (a, b) = (rows, resumed["rows"].as_array().unwrap());
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(b) {
        assert_eq!(key(a), key(b));
    }
    // A smaller budget later: round 1's store holds its examples (the schedule's first ones)
    // and is reused as it is; only the new chain's own rounds are trained.
    let manifests = || {
        std::fs::read_dir(t.join("pd/stores/round-1-s0/_bdense/manifests"))
            .unwrap()
            .count()
    };
    let before = manifests();
    let out = t
        .bdense([
            "pd",
            "--preset",
            "quick",
            "--out",
            "pd",
            "--budgets",
            "2",
            "--methods",
            "pd",
            "--rounds",
            "1",
        ])
        .ok();
    assert!(
        out.contains("pd budget 2 seed 0 round 1 (8 -> 4 steps): RMSE"),
        "{out}"
    );
    assert_eq!(manifests(), before, "round 1's store is not written again");
    for chain in ["pd-b3-s0", "pd-bdense-b3-s0"] {
        for r in 1..=2 {
            let log = |out: &str| {
                std::fs::read_to_string(t.join(format!("{out}/{chain}/round-{r}/log.csv"))).unwrap()
            };
            assert_eq!(log("pd"), log("cut"), "{chain} round {r}");
        }
    }
}
