//! Bad arguments: each is refused before any work, by a message naming the argument, with
//! exit code 2 and never a panic (101) or an abort (134).

use crate::dir;

/// (arguments, the words the error must contain).
const REFUSED: &[(&str, &str)] = &[
    // Panics before: overflow, division by zero, empty tensors.
    ("targets s/d --n 4 --k 18446744073709551615", "--k"),
    ("targets s/d --n 1", "--n"),
    ("targets s/d --n 4 --batch 0", "--batch"),
    ("train s/d --out r --base 0", "--base"),
    ("sample r --out o --count 0", "--count"),
    ("generate s/d --teacher gmm --fit-limit 0", "--fit-limit"),
    ("generate s/d --teacher gmm --fit-limit 1", "--fit-limit"),
    // Unbounded work from one number.
    ("generate s/d --count 10000000000000", "--count"),
    ("generate s/d --count 18446744073709551615", "--count"),
    ("generate s/d --count 0", "--count"),
    ("generate s/d --grid 4294967295", "--grid"),
    ("generate s/d --grid 1", "--grid"),
    ("generate s/d --batch 0", "--batch"),
    ("generate s/d --rows-per-shard 0", "--rows-per-shard"),
    ("sample r --out o --count 1000000000", "--count"),
    ("eval r --count 0", "--count"),
    ("eval r --fid-images 1", "--fid-images"),
    ("eval r --nfe 2,0", "--nfe"),
    // Nonsense that used to be accepted (and then wrote a broken manifest or trained nothing).
    ("generate s/d --sigma-min 0", "--sigma-min"),
    ("generate s/d --sigma-max NaN", "--sigma-max"),
    ("generate s/d --sigma-max inf", "--sigma-max"),
    ("generate s/d --sigma-min 10 --sigma-max 1", "--sigma-max 1"),
    ("generate s/d --rho 0", "--rho"),
    ("train s/d --out r --ema 2", "--ema"),
    ("train s/d --out r --ema 1", "--ema"),
    ("train s/d --out r --ema=-0.5", "--ema"),
    (
        "train s/d --out r --checkpoint-every 0",
        "--checkpoint-every",
    ),
    ("train s/d --out r --weights 0,0,0,0", "all 0"),
    ("train s/d --out r --weights 1,-1", "--weights"),
    ("train s/d --out r --weights 1,NaN", "--weights"),
    ("train s/d --out r --steps 0", "--steps"),
    ("train --resume r --steps 0", "--steps"),
    ("train s/d --out r --lr 0", "--lr"),
    ("train s/d --out r --lr NaN", "--lr"),
    ("train s/d --out r --lr inf", "--lr"),
    ("train s/d --out r --batch 0", "--batch"),
    ("train s/d --out r --n 1", "--n"),
    ("train s/d --out r --k 0", "--k"),
    // SFD trains one branch: a K for it is refused, not silently replaced by 1.
    ("train s/d --out r --method sfd --k 4", "--k 4: sfd"),
    ("train s/d --out r --method sfd --weights 2", "--weights"),
    ("train s/d --resume r", "--resume"),
    ("train s/d", "--out"),
    ("train s/d --out r --grad-clip=-1", "--grad-clip"),
    ("teacher train --out t --steps 0", "--steps"),
    ("teacher train --out t --base 0", "--base"),
    ("teacher train --out t --lr=-1", "--lr"),
    ("bench store --repeats 0", "--repeats"),
    ("sql store SELECT --format xml", "--format"),
];

#[test]
fn bad_arguments_are_refused_by_name() {
    let t = dir();
    for (args, needle) in REFUSED {
        let out = t.bdense(args.split(' ')).output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "bdense {args}:\n{stderr}");
        assert!(
            stderr.contains(needle) && !stderr.contains("panicked"),
            "bdense {args}: stderr lacks {needle:?}:\n{stderr}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert!(left.is_empty(), "refused commands wrote {left:?}");
}
