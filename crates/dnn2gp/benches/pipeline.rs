//! Benchmarks of the pipeline's steps on the paper's toy network (2-20-1 tanh, N = 100) and on
//! Snelson's (1-32-1 sigmoid). Run with `cargo bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dnn2gp::curvature::Linearization;
use dnn2gp::data::toy::{toy_sets, ToyConfig};
use dnn2gp::gp::{DeltaPath, Dnn2Gp, Space};
use dnn2gp::likelihood::Gaussian;
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::rng::seeded;
use dnn2gp::train::vogn::{self, Covariance, VognConfig, VognState};
use dnn2gp::train::{fit_map, Adam, AdamState, MapConfig, Objective};

fn bench(c: &mut Criterion) {
    let split = toy_sets(&ToyConfig::default(), 1).remove(0);
    let net = Sequential::mlp(vec![2, 20, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(1.0).unwrap();
    let w = net.init(0);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let obj = Objective::on(&net, &lik, &split.train, 1.0);

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
                let samples = st.draw(&cfg, &mut rng);
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

criterion_group!(benches, bench, peers);
criterion_main!(benches);

/// B1 and B3 of the peers' workloads (`../shared/baselines/data`, skipped when absent):
/// MLP 1-100-100-1 tanh at its MAP, N = 2000, σ = 0.2, f64.
fn peers(c: &mut Criterion) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/baselines/data");
    let Ok(w) = dnn2gp::data::snelson::read_column(&dir.join("b1_seed0_map_params.txt")) else {
        eprintln!("SKIPPED B1/B3 benchmarks: {} not found", dir.display());
        return;
    };
    let train = dnn2gp::data::csv::read_dataset(&dir.join("b1_seed0_train.csv")).unwrap();
    let xs = faer::Mat::from_fn(1000, 1, |i, _| -4.0 + 8.0 * i as f64 / 999.0);
    let net = Sequential::mlp(vec![1, 100, 100, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.2).unwrap();
    let mut group = c.benchmark_group("peers");
    group.sample_size(10);
    // B1: Jacobians, GP (function space, N = 2000 < P = 10,401) and the GLM predictive variance.
    group.bench_function("B1 Laplace-GGN GLM predictive (1000 test points)", |b| {
        b.iter(|| {
            let lin = Linearization::new(&net, &lik, train.x.as_ref(), train.y.as_ref(), &w);
            let gp = Dnn2Gp::new(&lin, 1.0, Space::Auto, 1 << 34).unwrap();
            black_box(gp.predict(net.jacobian(&w, xs.as_ref()).as_ref()))
        })
    });
    // B1 with the kernels from per-layer factors (no product of Jacobians).
    group.bench_function("B1 GLM predictive, structured kernels", |b| {
        b.iter(|| {
            let x = train.x.as_ref();
            let lin = Linearization::new(&net, &lik, x, train.y.as_ref(), &w);
            let gp = Dnn2Gp::from_ntk(&lin, 1.0, net.ntk(&w, x, x), 1 << 34).unwrap();
            let kss = dnn2gp::linalg::row_sq_norms(net.jacobian(&w, xs.as_ref()).as_ref());
            black_box(gp.predict_ntk(net.ntk(&w, xs.as_ref(), x), &kss).unwrap())
        })
    });
    // The B1 kernel J Jᵀ (2000 × 2000): from the Jacobian, and from per-layer factors.
    let jac = net.jacobian(&w, train.x.as_ref());
    group.bench_function("B1 kernel J Jᵀ from J (83 GFLOP)", |b| {
        b.iter(|| black_box(dnn2gp::linalg::a_bt(jac.as_ref(), jac.as_ref())))
    });
    group.bench_function("B1 kernel J Jᵀ from per-layer factors", |b| {
        b.iter(|| black_box(net.ntk(&w, train.x.as_ref(), train.x.as_ref())))
    });
    // B3: both marginal likelihoods over 30 δ from one eigendecomposition.
    let lin = Linearization::new(&net, &lik, train.x.as_ref(), train.y.as_ref(), &w);
    let deltas = dnn2gp::data::logspace(-2.0, 2.0, 30);
    group.bench_function("B3 marglik over 30 δ (eigendecomposition included)", |b| {
        b.iter(|| {
            let path = DeltaPath::new(&lin, Space::Auto, 1 << 34).unwrap();
            black_box(
                deltas
                    .iter()
                    .map(|d| path.log_marginal_likelihood(*d).unwrap())
                    .sum::<f64>(),
            )
        })
    });
    group.finish();
}
