use bdense_trainer::backend::cpu;
use bdense_trainer::edm::EdmNet;
use bdense_trainer::precond::sigma_batch;
use bdense_trainer::unet::UNetConfig;
use burn::prelude::*;
use std::time::Instant;

fn main() {
    let dev = cpu().autodiff();
    let args: Vec<String> = std::env::args().collect();
    let base: usize = args.get(1).map_or(16, |s| s.parse().unwrap());
    let hw: usize = args.get(2).map_or(28, |s| s.parse().unwrap());
    let bs: usize = args.get(3).map_or(32, |s| s.parse().unwrap());
    let mults: Vec<usize> = args.get(4).map_or(vec![1, 2, 2], |s| {
        s.split(',').map(|v| v.parse().unwrap()).collect()
    });
    let net = EdmNet::new(
        &UNetConfig::new().with_base(base).with_mults(mults.clone()),
        1,
        &dev,
        0,
    );
    let x = Tensor::<4>::random(
        [bs, 1, hw, hw],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let reps = 4;
    let mut fwd = 0.0;
    let mut bwd = 0.0;
    for _ in 0..reps {
        let t = Instant::now();
        let y = net.denoise_endpoint(x.clone(), sigma_batch(1.0, bs, &dev), None);
        let loss = y.abs().mean();
        let _ = loss.clone().inner().into_scalar::<f32>();
        fwd += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = loss.backward();
        let _ = net
            .net
            .first_conv_weight()
            .grad(&g)
            .unwrap()
            .sum()
            .into_scalar::<f32>();
        bwd += t.elapsed().as_secs_f64();
    }
    println!(
        "base {base} mults {mults:?} {hw}x{hw} batch {bs}: forward {:.1} ms, backward {:.1} ms",
        fwd * 1e3 / reps as f64,
        bwd * 1e3 / reps as f64
    );
}
