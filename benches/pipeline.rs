//! Benchmarks of the pipeline's steps on the paper's toy network (2-20-1 tanh, N = 100) and on
//! Snelson's (1-32-1 sigmoid). Run with `cargo bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dnn2gp::data::toy::{toy_sets, ToyConfig};
use dnn2gp::gp::{Dnn2Gp, Space};
use dnn2gp::likelihood::Gaussian;
use dnn2gp::nn::rng::seeded;
use dnn2gp::nn::{Activation, Mlp, Network};
use dnn2gp::posterior::Linearization;
use dnn2gp::train::vogn::{self, Covariance, VognConfig, VognState};
use dnn2gp::train::{fit_map, Adam, AdamState, MapConfig, Objective};

fn bench(c: &mut Criterion) {
    let split = toy_sets(&ToyConfig::default(), 1).remove(0);
    let net = Mlp::new(vec![2, 20, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(1.0).unwrap();
    let w = net.init(0);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let obj = Objective {
        net: &net,
        lik: &lik,
        x,
        y,
        delta: 1.0,
    };

    c.bench_function("toy/jacobian N=100 P=81", |b| {
        b.iter(|| black_box(net.jacobian(&w, x)))
    });
    c.bench_function("toy/loss+gradient (one full-batch Adam step)", |b| {
        b.iter(|| black_box(obj.value_grad(&w)))
    });
    // One step of each optimiser on the full batch (N = 100). Adam's step is the loss gradient
    // plus an O(P) update; VOGN's needs per-example Jacobians for its curvature.
    let (opts, mut wa, mut st) = (Adam::default(), w.clone(), AdamState::new(w.len()));
    c.bench_function("toy/step Adam", |b| {
        b.iter(|| {
            let (_, g) = obj.value_grad(&wa);
            st.step(&opts, &mut wa, &g, 1e-6);
        })
    });
    for (cov, mc) in [
        (Covariance::Diag, 1),
        (Covariance::Full, 1),
        (Covariance::Diag, 10),
    ] {
        let cfg = VognConfig {
            covariance: cov,
            mc_samples: mc,
            ..VognConfig::default()
        };
        let state = VognState::new(&w, &cfg).unwrap();
        let mut rng = seeded(0);
        c.bench_function(&format!("toy/step VOGN {cov} MC {mc}"), |b| {
            b.iter(|| {
                let mut st = state.clone();
                let samples: Vec<Vec<f64>> = (0..mc)
                    .map(|_| st.precision.sample(&st.mu, &mut rng))
                    .collect();
                black_box(vogn::step_at(&obj, &mut st, &cfg, None, &samples).unwrap())
            })
        });
    }
    let lin = Linearization::new(&net, &lik, x, y, &w);
    for space in [Space::Weight, Space::Function] {
        c.bench_function(&format!("toy/GP marglik ({space} space)"), |b| {
            b.iter(|| {
                black_box(
                    Dnn2Gp::new(&lin, 1.0, space, 1 << 32)
                        .unwrap()
                        .log_marginal_likelihood()
                        .unwrap(),
                )
            })
        });
    }
    let mut group = c.benchmark_group("toy/fit");
    group.sample_size(10);
    let cfg = MapConfig {
        epochs: 2000,
        ..MapConfig::default()
    };
    group.bench_function("MAP: 2000 Adam epochs + polish", |b| {
        b.iter(|| black_box(fit_map(&obj, &w, &cfg, None).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
