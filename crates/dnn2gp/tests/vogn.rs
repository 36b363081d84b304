//! VOGN (section 2 of the math reference): the update, Theorem 2's GP at an iteration, and
//! determinism.
#![allow(clippy::needless_range_loop)]

use dnn2gp::curvature::Linearization;
use dnn2gp::data::toy::{toy_sets, ToyConfig};
use dnn2gp::gp::variational::StepGp;
use dnn2gp::likelihood::{Gaussian, Likelihood};
use dnn2gp::linalg::{a_b, a_bt, mat_vec, norm};
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::rng::seeded;
use dnn2gp::train::vogn::{self, Covariance, Curvature, VognConfig, VognState};
use dnn2gp::train::Objective;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

fn setup() -> (Sequential, Gaussian, dnn2gp::data::Split) {
    let split = toy_sets(
        &ToyConfig {
            n_train: 30,
            n_test: 20,
            ..ToyConfig::default()
        },
        1,
    )
    .remove(0);
    (
        Sequential::mlp(vec![2, 6, 1], Activation::Tanh).unwrap(),
        Gaussian::new(0.5).unwrap(),
        split,
    )
}

#[test]
fn one_vogn_step_is_the_posterior_of_the_step_linear_model() {
    let (net, lik, split) = setup();
    let delta = 0.8;
    let obj = Objective::on(&net, &lik, &split.train, delta);
    let cfg = VognConfig {
        beta: 0.3,
        init_precision: 2.0,
        ..VognConfig::default()
    };
    let mut state = VognState::new(&net.init(0), &cfg).unwrap();
    let mut rng = seeded(1);
    for _ in 0..3 {
        let w = state.precision.sample(&state.mu, &mut rng);
        vogn::step_at(&obj, &mut state, &cfg, None, &[w]).unwrap();
    }
    // The step under test, at an explicit sample w_t.
    let (mu_t, prec_t) = (state.mu.clone(), state.precision.dense());
    let w_t = state.precision.sample(&state.mu, &mut rng);
    vogn::step_at(&obj, &mut state, &cfg, None, std::slice::from_ref(&w_t)).unwrap();
    let cov_next = dnn2gp::linalg::Cholesky::new(state.precision.dense().as_ref(), "t").unwrap();

    let xs = dnn2gp::data::toy::features(&dnn2gp::data::linspace(-5.0, 5.0, 25));
    let js = net.jacobian(&w_t, xs.as_ref());
    let lin = Linearization::new(&net, &lik, obj.x, obj.y, &w_t).with_center(&mu_t);
    let gp = StepGp::new(&lin, prec_t.as_ref(), &mu_t, cfg.beta, delta).unwrap();
    let pred = gp.predict(js.as_ref());
    let mean_next = mat_vec(js.as_ref(), &state.mu);
    let sigma = cov_next.solve(faer::Mat::<f64>::identity(net.n_params(), net.n_params()).as_ref());
    let var_next = a_bt(a_b(js.as_ref(), sigma.as_ref()).as_ref(), js.as_ref());
    for i in 0..mean_next.len() {
        assert!(
            rel(pred.mean[i], mean_next[i]) < 1e-8,
            "mean {} vs {}",
            pred.mean[i],
            mean_next[i]
        );
        assert!(
            rel(pred.var[i], var_next[(i, i)]) < 1e-8,
            "var {} vs {}",
            pred.var[i],
            var_next[(i, i)]
        );
    }
    // Targets built around m_t instead of μ_t (the official code's slip) break the identity.
    let lin_m = Linearization::new(&net, &lik, obj.x, obj.y, &w_t).with_center(&gp.prior_mean);
    let wrong = StepGp::new(&lin_m, prec_t.as_ref(), &mu_t, cfg.beta, delta)
        .unwrap()
        .predict(js.as_ref());
    let worst = (0..mean_next.len())
        .map(|i| rel(wrong.mean[i], mean_next[i]))
        .fold(0.0, f64::max);
    assert!(
        worst > 1e-3,
        "m_t targets should not reproduce the step ({worst})"
    );
}

#[test]
fn a_minibatch_vogn_step_is_the_posterior_of_the_batch_linear_model() {
    // VOGN scales the batch's estimates by N/M: the step is the linear model on the batch with
    // noise (β (N/M) Λ)⁻¹, which StepGp::minibatch builds (StepGp::new, N/M = 1, does not).
    let (net, lik, split) = setup();
    let delta = 0.8;
    let obj = Objective::on(&net, &lik, &split.train, delta);
    let cfg = VognConfig {
        beta: 0.3,
        init_precision: 2.0,
        ..VognConfig::default()
    };
    let mut state = VognState::new(&net.init(0), &cfg).unwrap();
    let mut rng = seeded(2);
    let (mu_t, prec_t) = (state.mu.clone(), state.precision.dense());
    let w_t = state.precision.sample(&state.mu, &mut rng);
    let batch: Vec<usize> = (0..30).step_by(3).collect();
    vogn::step_at(
        &obj,
        &mut state,
        &cfg,
        Some(&batch),
        std::slice::from_ref(&w_t),
    )
    .unwrap();
    let (xb, yb) = (
        dnn2gp::train::gather_rows(obj.x, &batch),
        dnn2gp::train::gather_rows(obj.y, &batch),
    );
    let lin = Linearization::new(&net, &lik, xb.as_ref(), yb.as_ref(), &w_t).with_center(&mu_t);
    let xs = dnn2gp::data::toy::features(&dnn2gp::data::linspace(-5.0, 5.0, 13));
    let js = net.jacobian(&w_t, xs.as_ref());
    let mean_next = mat_vec(js.as_ref(), &state.mu);
    let gp = StepGp::minibatch(&lin, prec_t.as_ref(), &mu_t, cfg.beta, delta, 30).unwrap();
    let pred = gp.predict(js.as_ref());
    for i in 0..mean_next.len() {
        assert!(
            rel(pred.mean[i], mean_next[i]) < 1e-8,
            "{} vs {}",
            pred.mean[i],
            mean_next[i]
        );
    }
    let full = StepGp::new(&lin, prec_t.as_ref(), &mu_t, cfg.beta, delta).unwrap();
    let p = full.predict(js.as_ref());
    assert!((0..mean_next.len()).any(|i| rel(p.mean[i], mean_next[i]) > 1e-3));
    assert!(StepGp::minibatch(&lin, prec_t.as_ref(), &mu_t, cfg.beta, delta, 5).is_err());
}

#[test]
fn unit_step_on_a_linear_model_is_the_exact_posterior() {
    // For f linear in w the GGN is the Hessian: one OGN step with β = 1 from any μ lands on the
    // MAP (ridge regression); with a sample the gradient is taken at the sample, but the
    // precision is J'ΛJ + δI either way.
    let (_, lik, split) = setup();
    let net = Sequential::mlp(vec![2, 1], Activation::Identity).unwrap();
    let delta = 0.5;
    let obj = Objective::on(&net, &lik, &split.train, delta);
    for deterministic in [true, false] {
        let cfg = VognConfig {
            beta: 1.0,
            deterministic,
            epochs: 1,
            ..VognConfig::default()
        };
        let res = vogn::run(&obj, &[3.0, -2.0, 0.5], &cfg, None).unwrap();
        let (_, g) = obj.value_grad(&res.state.mu);
        assert_eq!(norm(&g) < 1e-10, deterministic, "‖∇L(μ)‖ = {}", norm(&g));
        let lin = Linearization::new(&net, &lik, obj.x, obj.y, &res.state.mu);
        let a = lin.ggn();
        let prec = res.state.precision.dense();
        for i in 0..a.nrows() {
            for j in 0..a.ncols() {
                let target = a[(i, j)] + if i == j { delta } else { 0.0 };
                assert!((prec[(i, j)] - target).abs() < 1e-10 * (1.0 + target.abs()));
            }
        }
    }
}

#[test]
fn vogn_converges_to_a_stationary_mean_on_the_toy_network() {
    // Small steps (β = 0.1) with the mean as sample: μ settles where ∇L(μ) = 0.
    let (net, lik, split) = setup();
    let obj = Objective::on(&net, &lik, &split.train, 0.5);
    let cfg = VognConfig {
        beta: 0.1,
        deterministic: true,
        epochs: 800,
        ..VognConfig::default()
    };
    let res = vogn::run(&obj, &net.init(3), &cfg, None).unwrap();
    let (_, g) = obj.value_grad(&res.state.mu);
    assert!(norm(&g) < 1e-6, "‖∇L(μ)‖ = {}", norm(&g));
}

#[test]
fn curvature_sources_and_diagonal_form() {
    let (net, lik, split) = setup();
    let delta = 0.7;
    let obj = Objective::on(&net, &lik, &split.train, delta);
    let w = net.init(4);
    let lin = Linearization::new(&net, &lik, obj.x, obj.y, &w);
    let p = net.n_params();
    for (curv, cov) in [
        (Curvature::Ggn, Covariance::Diag),
        (Curvature::SquaredGradients, Covariance::Diag),
        (Curvature::SquaredGradients, Covariance::Full),
    ] {
        // With β = 1 the new precision is exactly Ĥ + δI.
        let cfg = VognConfig {
            beta: 1.0,
            covariance: cov,
            curvature: curv,
            ..VognConfig::default()
        };
        let mut st = VognState::new(&w, &cfg).unwrap();
        vogn::step_at(&obj, &mut st, &cfg, None, std::slice::from_ref(&w)).unwrap();
        let prec = st.precision.dense();
        for i in 0..p {
            for j in 0..p {
                let h = match curv {
                    Curvature::Ggn => (0..lin.n())
                        .map(|n| {
                            let j_ = lin.jacobian();
                            j_[(n, i)] * j_[(n, j)] * lin.curvature().values()[n]
                        })
                        .sum::<f64>(),
                    Curvature::SquaredGradients => (0..lin.n())
                        .map(|n| {
                            let (j_, r) = (lin.jacobian(), lin.residuals());
                            j_[(n, i)] * r[n] * j_[(n, j)] * r[n]
                        })
                        .sum::<f64>(),
                };
                let expect = if i == j {
                    h + delta
                } else if cov == Covariance::Full {
                    h
                } else {
                    0.0
                };
                assert!(
                    (prec[(i, j)] - expect).abs() < 1e-9 * (1.0 + expect.abs()),
                    "{curv} {cov} ({i},{j})"
                );
            }
        }
    }
}

#[test]
fn minibatches_are_scaled_to_the_full_data() {
    // A single minibatch holding every example gives the full-batch step.
    let (net, lik, split) = setup();
    let obj = Objective::on(&net, &lik, &split.train, 1.0);
    let cfg = VognConfig {
        beta: 0.2,
        ..VognConfig::default()
    };
    let w = net.init(5);
    let (mut a, mut b) = (
        VognState::new(&w, &cfg).unwrap(),
        VognState::new(&w, &cfg).unwrap(),
    );
    let all: Vec<usize> = (0..obj.n()).rev().collect();
    vogn::step_at(&obj, &mut a, &cfg, None, std::slice::from_ref(&w)).unwrap();
    vogn::step_at(&obj, &mut b, &cfg, Some(&all), std::slice::from_ref(&w)).unwrap();
    for i in 0..w.len() {
        assert!(rel(a.mu[i], b.mu[i]) < 1e-12);
    }
    // Half the data twice as heavy: the gradient estimate is unbiased, ĝ = (N/M) Σ_B.
    let half: Vec<usize> = (0..obj.n()).step_by(2).collect();
    let mut c = VognState::new(&w, &cfg).unwrap();
    let loss = vogn::step_at(&obj, &mut c, &cfg, Some(&half), std::slice::from_ref(&w)).unwrap();
    let (xh, yh) = (
        dnn2gp::train::gather_rows(obj.x, &half),
        dnn2gp::train::gather_rows(obj.y, &half),
    );
    let direct = lik.nll_sum(net.forward(&w, xh.as_ref()).as_ref(), yh.as_ref()) * obj.n() as f64
        / half.len() as f64;
    assert!(rel(loss, direct) < 1e-12);
}

#[test]
fn same_seed_same_numbers() {
    let (net, lik, split) = setup();
    let obj = Objective::on(&net, &lik, &split.train, 1.0);
    let cfg = VognConfig {
        beta: 0.05,
        mc_samples: 3,
        batch_size: Some(8),
        epochs: 5,
        covariance: Covariance::Diag,
        momentum: Some(0.9),
        ..VognConfig::default()
    };
    let a = vogn::run(&obj, &net.init(0), &cfg, None).unwrap();
    let b = vogn::run(&obj, &net.init(0), &cfg, None).unwrap();
    assert_eq!(a.state.mu, b.state.mu);
    let c = vogn::run(&obj, &net.init(0), &VognConfig { seed: 1, ..cfg }, None).unwrap();
    assert_ne!(a.state.mu, c.state.mu);
}

/// The diagonal update `d ← (1−β)d + β(ĥ + δ)`, `m ← β₁m + (1−β₁)(ĝ + δμ)`,
/// `μ ← μ − α (m/(1−β₁ᵗ))/d` with `ĝ = (N/(MS)) Σ_s Σ_B g_i`, `ĥ = (N/(MS)) Σ_s Σ_B g_i²` from
/// explicit per-example gradients, for one sample (the batch cut into row chunks) and for
/// three (one job each); and the same numbers on one thread as on several.
#[test]
fn diagonal_step_matches_per_example_gradients_on_any_thread_count() {
    let net = Sequential::mlp(vec![1, 100, 100, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.3).unwrap();
    let n = 200;
    let x = faer::Mat::from_fn(n, 1, |i, _| (i as f64 * 0.37).sin() * 2.0);
    let y = faer::Mat::from_fn(n, 1, |i, _| (i as f64 * 0.11).cos());
    let obj = Objective {
        net: &net,
        lik: &lik,
        x: x.as_ref(),
        y: y.as_ref(),
        delta: 0.8,
    };
    let p = net.n_params();
    let mu0 = net.init(2);
    let idx: Vec<usize> = (0..n).step_by(3).collect(); // 67 rows: 3 chunks of 32, 32, 3
    let xb = dnn2gp::train::gather_rows(obj.x, &idx);
    let yb = dnn2gp::train::gather_rows(obj.y, &idx);
    for mc in [1usize, 3] {
        let cfg = VognConfig {
            beta: 0.3,
            lr: Some(0.05),
            mc_samples: mc,
            covariance: Covariance::Diag,
            curvature: Curvature::SquaredGradients,
            momentum: Some(0.9),
            init_precision: 50.0,
            ..VognConfig::default()
        };
        let mut st = VognState::new(&mu0, &cfg).unwrap();
        let samples = st.draw(&cfg, &mut seeded(9));
        assert_eq!(samples.len(), mc);
        let scale = n as f64 / idx.len() as f64 / mc as f64;
        let (mut g, mut h) = (vec![0.0; p], vec![0.0; p]);
        for w in &samples {
            let lin = Linearization::new(&net, &lik, xb.as_ref(), yb.as_ref(), w);
            for i in 0..idx.len() {
                for c in 0..p {
                    let gi = lin.jacobian()[(i, c)] * lin.residuals()[i];
                    g[c] += scale * gi;
                    h[c] += scale * gi * gi;
                }
            }
        }
        let loss = vogn::step_at(&obj, &mut st, &cfg, Some(&idx), &samples).unwrap();
        assert!(loss.is_finite());
        let dense = st.precision.dense();
        for c in 0..p {
            let d = 0.7 * 50.0 + 0.3 * (h[c] + obj.delta);
            let m = 0.1 * (g[c] + obj.delta * mu0[c]);
            let mu = mu0[c] - 0.05 * (m / 0.1) / d;
            assert!(rel(dense[(c, c)], d) < 1e-10, "mc {mc}: d[{c}]");
            assert!(rel(st.mu[c], mu) < 1e-10, "mc {mc}: μ[{c}]");
        }
        // One thread or the machine's threads: the same bits.
        let run = |cfg: &VognConfig| {
            vogn::run(
                &obj,
                &mu0,
                &VognConfig {
                    batch_size: Some(64),
                    epochs: 2,
                    ..cfg.clone()
                },
                None,
            )
            .unwrap()
            .state
            .mu
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| run(&cfg));
        assert_eq!(one, run(&cfg), "mc {mc}");
    }
}

/// A run whose loss grows by orders of magnitude stops with a numerical error naming the
/// epoch and the likely causes (a diagonal covariance at α = β on 300 points of a sine, where
/// the loss went from 5e5 to 1e116 without a word); at the default mean step (β/10 for a
/// diagonal covariance) the same run converges.
#[test]
fn a_diverging_run_stops_and_the_default_step_converges() {
    let n = 300;
    let x = faer::Mat::from_fn(n, 1, |i, _| -3.0 + 6.0 * i as f64 / (n - 1) as f64);
    let y = faer::Mat::from_fn(n, 1, |i, _| {
        x[(i, 0)].sin() + 0.2 * ((i * 37 % 101) as f64 / 50.0 - 1.0)
    });
    let net = Sequential::mlp(vec![1, 50, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.2).unwrap();
    let obj = Objective {
        net: &net,
        lik: &lik,
        x: x.as_ref(),
        y: y.as_ref(),
        delta: 1.0,
    };
    let w0 = net.init(0);
    let cfg = VognConfig {
        epochs: 200,
        covariance: Covariance::Diag,
        ..VognConfig::default()
    };
    let at_beta = VognConfig {
        lr: Some(cfg.beta),
        ..cfg.clone()
    };
    let err = vogn::run(&obj, &w0, &at_beta, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, dnn2gp::Error::Numerical(_)), "{msg}");
    assert!(
        msg.contains("VOGN diverged in epoch") && msg.contains("mean step α"),
        "{msg}"
    );
    assert_eq!(cfg.mean_step(), cfg.beta / 10.0);
    let run = vogn::run(&obj, &w0, &cfg, None).unwrap();
    let (first, last) = (run.history[0], *run.history.last().unwrap());
    assert!(
        last < 1e-2 * first && norm(&run.state.mu) < 100.0,
        "{first} → {last}"
    );
}
