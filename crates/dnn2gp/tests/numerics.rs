//! Numerical trouble is never silent: jitter bounded and reported, negative variances clamped
//! and counted, curvatures without cancellation, one Laplace evidence, moments without
//! cancellation, the law of total variance, and the stationarity rule.

use dnn2gp::curvature::Linearization;
use dnn2gp::data::linspace;
use dnn2gp::gp::{mixture, DeltaPath, Dnn2Gp, GpPrediction, RunningMoments, Space};
use dnn2gp::likelihood::classification::{probit, sigmoid};
use dnn2gp::likelihood::{Bernoulli, Gaussian};
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::posterior::weight_posterior::MAX_JITTER_OVER_DELTA;
use dnn2gp::posterior::{HessianStructure, LaplaceGgn};
use dnn2gp::train::{fit_map, Adam, MapConfig, Objective, STATIONARY_RTOL};
use faer::Mat;

const MEM: u128 = 1 << 32;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

/// 1-D regression data: `y = sin(3x) + 0.01·(a fixed wiggle)` on `n` points of [−2, 2].
fn data(n: usize) -> (Mat<f64>, Mat<f64>) {
    let xs = linspace(-2.0, 2.0, n);
    let x = Mat::from_fn(n, 1, |i, _| xs[i]);
    let y = Mat::from_fn(n, 1, |i, _| {
        (3.0 * xs[i]).sin() + 0.01 * (17.0 * xs[i]).cos()
    });
    (x, y)
}

/// A 1-50-1 tanh network fitted with σ = 0.01 (Λ = 10⁴), the setting of the trust issue; fitted
/// once and shared by the tests.
fn sharp_fit() -> (Sequential, Gaussian, Mat<f64>, Mat<f64>, Vec<f64>) {
    static FIT: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let (x, y) = data(60);
    let net = Sequential::mlp(vec![1, 50, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.01).unwrap();
    let w = FIT
        .get_or_init(|| {
            let d = dnn2gp::data::Dataset::new(x.clone(), y.clone()).unwrap();
            let obj = Objective::on(&net, &lik, &d, 1.0);
            let cfg = MapConfig {
                adam: Adam {
                    lr: 0.01,
                    ..Adam::default()
                },
                epochs: 300,
                polish_iters: 1000,
                ..MapConfig::default()
            };
            fit_map(&obj, &net.init(0), &cfg, None).unwrap().w
        })
        .clone();
    (net, lik, x, y, w)
}

#[test]
fn weight_space_jitter_never_exceeds_a_small_fraction_of_delta() {
    let (net, lik, x, y, w) = sharp_fit();
    let lin = Linearization::new(&net, &lik, x.as_ref(), y.as_ref(), &w);
    let path = DeltaPath::new(&lin, Space::Weight, MEM).unwrap();
    let mut eigen_seen = false;
    for delta in [1e-10, 1e-9, 1e-6, 1e-4, 1e-2, 1.0] {
        let post = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, MEM).unwrap();
        assert!(
            post.jitter() <= MAX_JITTER_OVER_DELTA * delta,
            "δ = {delta}: jitter {}",
            post.jitter()
        );
        eigen_seen |= post.is_eigen_form();
        let kinds: Vec<String> = post.warnings().into_iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds.contains(&"eigen_form".to_string()),
            post.is_eigen_form()
        );
        assert_eq!(kinds.contains(&"jitter".to_string()), post.jitter() > 0.0);
        let unresolved = post.evidence_uncertainty() > 0.5 * w.len() as f64 * 1e-3_f64.ln_1p();
        assert_eq!(
            kinds.contains(&"unresolved_delta".to_string()),
            unresolved,
            "δ = {delta}"
        );
        // The Cholesky and the eigen form of the δ path agree within what rounding in J'ΛJ
        // allows, which the warning states.
        let (a, b) = (
            post.log_marginal_likelihood(&lin).unwrap(),
            path.laplace_log_evidence(delta).unwrap(),
        );
        let allowed = post.evidence_uncertainty() + 1e-8 * a.abs();
        assert!(
            (a - b).abs() <= allowed,
            "δ = {delta}: {a} vs {b} (allowed {allowed:e})"
        );
    }
    assert!(eigen_seen, "δ = 1e-10 needs the eigen form on this network");
}

#[test]
fn the_function_space_delta_path_floors_instead_of_failing() {
    let (net, lik, x, y, w) = sharp_fit();
    let lin = Linearization::new(&net, &lik, x.as_ref(), y.as_ref(), &w);
    let function = DeltaPath::new(&lin, Space::Function, MEM).unwrap();
    let weight = DeltaPath::new(&lin, Space::Weight, MEM).unwrap();
    for delta in [1e-10, 1e-9, 1e-8, 1e-4, 1.0] {
        let post = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, MEM).unwrap();
        let (f, w) = (
            function.laplace_log_evidence(delta).unwrap(),
            weight.laplace_log_evidence(delta).unwrap(),
        );
        let allowed = 2.0 * post.evidence_uncertainty() + 1e-8 * w.abs();
        assert!(
            (f - w).abs() <= allowed,
            "δ = {delta}: {f} vs {w} (allowed {allowed:e})"
        );
        assert!(function.log_marginal_likelihood(delta).unwrap().is_finite());
    }
}

#[test]
fn negative_variances_are_clamped_and_counted() {
    let (net, lik, x, y, w) = sharp_fit();
    let lin = Linearization::new(&net, &lik, x.as_ref(), y.as_ref(), &w);
    let js = net.jacobian(&w, x.as_ref());
    let mut clamped_seen = false;
    for delta in [1e-10, 1e-9, 1e-8] {
        let gp = Dnn2Gp::new(&lin, delta, Space::Function, MEM).unwrap();
        let pred = gp.predict(js.as_ref());
        assert!(pred.var.iter().all(|v| *v >= 0.0), "δ = {delta}");
        if let Some(w) = &pred.clamped {
            clamped_seen = true;
            assert_eq!(w.kind, "clamped_variance");
            assert!(
                w.message.contains("of 60 predictive variances"),
                "{}",
                w.message
            );
        }
        // The weight space forms them as squared norms: never negative, never clamped.
        let ws = Dnn2Gp::new(&lin, delta, Space::Weight, MEM).unwrap();
        let p = ws.predict(js.as_ref());
        assert!(p.clamped.is_none() && p.var.iter().all(|v| *v >= 0.0));
    }
    assert!(clamped_seen, "δ = 1e-9 cancels below 0 on this network");
    // The clamp itself: counts, the worst value, zeros in place.
    let mut v = vec![1.0, -2e-5, 0.0, -6e-5];
    let w = dnn2gp::gp::clamp_variances(&mut v).unwrap();
    assert_eq!(v, [1.0, 0.0, 0.0, 0.0]);
    assert!(
        w.message.starts_with("2 of 4") && w.message.contains("-6.000e-5"),
        "{}",
        w.message
    );
    assert!(dnn2gp::gp::clamp_variances(&mut v).is_none());
}

#[test]
fn function_space_jitter_is_reported_relative_to_the_noise() {
    // σ = 0.01 at δ = 1e-10: δ⁻¹JJᵀ is ~10¹⁰ times the noise σ² = 1e-4 it protects.
    let (net, lik, x, y, w) = sharp_fit();
    let lin = Linearization::new(&net, &lik, x.as_ref(), y.as_ref(), &w);
    let gp = Dnn2Gp::new(&lin, 1e-10, Space::Function, MEM).unwrap();
    let warnings = gp.warnings();
    assert_eq!(warnings.is_empty(), gp.jitter() == 0.0);
    if gp.jitter() > 0.0 {
        let text = &warnings[0].message;
        let ratio = format!("{:.2e} times the mean noise variance", gp.jitter() / 1e-4);
        assert!(text.contains(&ratio), "{text}");
    }
}

#[test]
fn a_separable_bernoulli_training_set_still_gives_a_gp() {
    // Logits of ±40 and beyond: p(1 − p) rounds to 0 there, s(f)s(−f) does not.
    let xs = linspace(-1.0, 1.0, 30);
    let x = Mat::from_fn(30, 1, |i, _| xs[i]);
    let y = Mat::from_fn(30, 1, |i, _| f64::from(u8::from(xs[i] > 0.0)));
    let net = Sequential::mlp(vec![1, 4, 1], Activation::Tanh).unwrap();
    // w = [W1 (4), b1 (4), W2 (4), b2]: tanh(20x) in every unit, 15 per unit out.
    let mut w = vec![20.0; 4];
    w.extend([0.0; 4]);
    w.extend([15.0; 4]);
    w.push(0.0);
    let f = net.forward(&w, x.as_ref());
    assert!(f[(0, 0)] < -50.0 && f[(29, 0)] > 50.0);
    let lin = Linearization::new(&net, &Bernoulli, x.as_ref(), y.as_ref(), &w);
    assert!(lin.curvature().values().iter().all(|l| *l > 0.0));
    for space in [Space::Weight, Space::Function] {
        let gp = Dnn2Gp::new(&lin, 1.0, space, MEM).unwrap();
        assert!(gp.log_marginal_likelihood().unwrap().is_finite());
    }
}

#[test]
fn the_bernoulli_laplace_evidence_is_the_same_from_the_posterior_and_the_delta_path() {
    // One definition: log p(D | w*) − (δ/2)‖w*‖² + (P/2) log δ − ½ log|A|.
    let (x, y) = data(40);
    let y = Mat::from_fn(40, 1, |i, _| f64::from(u8::from(y[(i, 0)] > 0.0)));
    let net = Sequential::mlp(vec![1, 6, 1], Activation::Tanh).unwrap();
    let w = net.init(3);
    let lin = Linearization::new(&net, &Bernoulli, x.as_ref(), y.as_ref(), &w);
    for space in [Space::Weight, Space::Function] {
        let path = DeltaPath::new(&lin, space, MEM).unwrap();
        for delta in [0.1, 1.0, 10.0] {
            let post = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, MEM).unwrap();
            let direct = -lin.nll() - 0.5 * delta * dnn2gp::linalg::dot(&w, &w)
                + 0.5 * w.len() as f64 * delta.ln()
                - 0.5 * post.log_det_precision();
            let (a, b) = (
                post.log_marginal_likelihood(&lin).unwrap(),
                path.laplace_log_evidence(delta).unwrap(),
            );
            assert!(
                rel(a, direct) < 1e-12 && rel(b, direct) < 1e-9,
                "{space} δ={delta}: {a}, {b}, {direct}"
            );
        }
    }
}

#[test]
fn moments_are_computed_without_cancellation() {
    // E[x²] − E[x]² loses every digit at an offset of 1e9; Welford's update does not.
    let mut m = RunningMoments::default();
    for v in [1e9, 1e9 + 1.0, 1e9 + 2.0] {
        m.push(&[v, -v]);
    }
    assert_eq!(m.count(), 3);
    assert_eq!(m.mean(), [1e9 + 1.0, -1e9 - 1.0]);
    for v in m.variance() {
        assert!((v - 2.0 / 3.0).abs() < 1e-12, "{v}");
    }
}

#[test]
fn the_vi_predictive_is_a_mixture_by_the_law_of_total_variance() {
    let preds = [
        GpPrediction::clamping(vec![1.0, 0.0], vec![0.5, 2.0]),
        GpPrediction::clamping(vec![3.0, 0.0], vec![1.5, 4.0]),
    ];
    let m = mixture(&preds);
    // Means 1 and 3: mean 2, variance of the means 1; mean variance 1; total 2.
    assert_eq!(m.mean, [2.0, 0.0]);
    assert_eq!(m.var, [2.0, 3.0]);
}

#[test]
fn the_probit_constant_is_pi_over_8() {
    // σ(μ/√(1 + πv/8)) at μ = 2, v = 3, pinned to its exact value (π/8 → 0.5 would give
    // 0.7596…, π/8 → 1/8 0.8410…).
    let p = probit(&[2.0], &[3.0])[0];
    assert!((p - 0.794_972_345_876_111_1).abs() < 1e-12, "{p}");
    assert!((sigmoid(0.0) - 0.5).abs() < 1e-16);
}

#[test]
fn the_stationarity_rule() {
    let (net, lik, x, y, w) = sharp_fit();
    let d = dnn2gp::data::Dataset::new(x, y).unwrap();
    let obj = Objective::on(&net, &lik, &d, 1.0);
    let polished = obj.stationarity(&w);
    assert!(polished.is_stationary(), "{polished:?}");
    assert!(polished.warning(None).is_none());
    // At the initialisation nothing balances: relative gradient near 1.
    let start = obj.stationarity(&net.init(0));
    assert!(start.relative > 100.0 * STATIONARY_RTOL, "{start:?}");
    let text = start.warning(Some(12.5)).unwrap().message;
    assert!(
        text.contains("not a stationary point") && text.contains("1.2500e1 nats"),
        "{text}"
    );
    // The relative gradient is ‖g‖ over ‖Σ J_i'r_i‖ + δ‖w‖.
    let g = obj.value_grad(&w).1;
    assert!(rel(polished.grad_norm, dnn2gp::linalg::norm(&g)) < 1e-12);
}

#[test]
fn a_softmax_gp_is_refused_with_what_to_use_and_its_evidence_path_is_laplace_only() {
    use dnn2gp::likelihood::Categorical;
    let (x, _) = data(12);
    let y = Mat::from_fn(12, 3, |i, c| f64::from(u8::from(i % 3 == c)));
    let net = Sequential::mlp(vec![1, 4, 3], Activation::Tanh).unwrap();
    let w = net.init(1);
    let lin = Linearization::new(&net, &Categorical, x.as_ref(), y.as_ref(), &w);
    let err = Dnn2Gp::new(&lin, 1.0, Space::Auto, MEM).err().unwrap();
    assert!(err.is_input_error(), "{err}");
    assert!(
        err.to_string().contains("rank K − 1") && err.to_string().contains("predict"),
        "{err}"
    );
    let path = DeltaPath::laplace(&lin, MEM).unwrap();
    assert!(path.log_marginal_likelihood(1.0).is_err());
    for delta in [0.3, 1.0, 3.0] {
        let post = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, MEM).unwrap();
        let (a, b) = (
            post.log_marginal_likelihood(&lin).unwrap(),
            path.laplace_log_evidence(delta).unwrap(),
        );
        assert!(rel(a, b) < 1e-10, "δ = {delta}: {a} vs {b}");
    }
}
