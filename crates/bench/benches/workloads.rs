//! The peers' workloads B1–B5 (`../shared/baselines/data`) under criterion:
//! `cargo bench --bench workloads`. Each iteration is one whole workload as `dnn2gp bench`
//! runs it (B4: one VOGN step of batch 64 with 1 and 8 samples).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use dnn2gp::data::csv::read_dataset;
use dnn2gp::data::snelson::read_column;
use dnn2gp::likelihood::Gaussian;
use dnn2gp::nn::{Activation, Sequential};
use dnn2gp::rng::seeded;
use dnn2gp::train::vogn::{self, VognState};
use dnn2gp::train::Objective;

fn data_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/baselines/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} not found", dir.display());
        None
    }
}

fn workloads(c: &mut Criterion) {
    let Some(dir) = data_dir() else { return };
    let mut group = c.benchmark_group("peers");
    group.sample_size(10);
    for w in ["B1", "B2", "B3", "B5"] {
        group.bench_function(w, |b| {
            b.iter(|| black_box(dnn2gp_bench::run(w, &dir, None).unwrap()))
        });
    }
    let net = Sequential::mlp(vec![1, 100, 100, 1], Activation::Tanh).unwrap();
    let train = read_dataset(&dir.join("b1_seed0_train.csv")).unwrap();
    let init = read_column(&dir.join("b1_seed0_init_params.txt")).unwrap();
    let lik = Gaussian::new(0.2).unwrap();
    let obj = Objective::on(&net, &lik, &train, 1.0);
    let idx: Vec<usize> = (0..64).map(|i| (i * 31) % train.len()).collect();
    for mc in [1usize, 8] {
        let cfg = dnn2gp_bench::b4_config(mc, train.len());
        let mut state = VognState::new(&init, &cfg).unwrap();
        let mut rng = seeded(0);
        group.bench_function(format!("B4 VOGN step mc={mc}"), |b| {
            b.iter(|| {
                let samples = state.draw(&cfg, &mut rng);
                black_box(vogn::step_at(&obj, &mut state, &cfg, Some(&idx), &samples).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, workloads);
criterion_main!(benches);
