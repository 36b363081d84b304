//! Every identity of the math reference (sections 1 and 3) as a test, in f64.
#![allow(clippy::needless_range_loop)]

mod common;

use approx::assert_relative_eq;
use dnn2gp::curvature::Linearization;
use dnn2gp::data::toy::{toy_sets, ToyConfig};
use dnn2gp::gp::{kernel, Dnn2Gp, Space};
use dnn2gp::likelihood::{Bernoulli, Gaussian, Likelihood};
use dnn2gp::linalg::{a_bt, mat_vec};
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::posterior::{HessianStructure, LaplaceGgn};
use dnn2gp::train::{fit_map, Adam, MapConfig, Objective};
use faer::Mat;

const MEM: u128 = 1 << 32;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

fn toy() -> dnn2gp::data::Split {
    toy_sets(
        &ToyConfig {
            n_train: 40,
            n_test: 50,
            ..ToyConfig::default()
        },
        1,
    )
    .remove(0)
}

/// A network trained to a stationary point on the toy data.
fn trained(delta: f64) -> (Sequential, Gaussian, dnn2gp::data::Split, Vec<f64>, f64) {
    let split = toy();
    let net = Sequential::mlp(vec![2, 8, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.5).unwrap();
    let obj = Objective::on(&net, &lik, &split.train, delta);
    let cfg = MapConfig {
        adam: Adam {
            lr: 0.05,
            ..Adam::default()
        },
        epochs: 1500,
        ..MapConfig::default()
    };
    let fit = fit_map(&obj, &net.init(1), &cfg, None).unwrap();
    (net, lik, split, fit.w, fit.grad_norm)
}

#[test]
fn jacobian_matches_finite_differences() {
    for act in [
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Relu,
        Activation::Identity,
    ] {
        let net = Sequential::mlp(vec![3, 5, 4, 2], act).unwrap();
        let x = Mat::from_fn(7, 3, |i, j| ((i * 3 + j) as f64 * 0.37).sin());
        let all: Vec<usize> = (0..net.n_params()).collect();
        common::assert_jacobian_matches_fd(&net, &net.init(3), x.as_ref(), &all, 1e-7);
    }
}

#[test]
fn jacobian_chunks_agree_with_single_examples() {
    // More examples than one parallel chunk.
    let net = Sequential::mlp(vec![2, 6, 3], Activation::Tanh).unwrap();
    let w = net.init(5);
    let x = Mat::from_fn(150, 2, |i, j| (i as f64 * 0.1 + j as f64).cos());
    let jac = net.jacobian(&w, x.as_ref());
    for n in [0, 63, 64, 149] {
        let jn = net.jacobian(&w, x.as_ref().subrows(n, 1));
        for k in 0..3 {
            for p in 0..net.n_params() {
                assert_eq!(jac[(n * 3 + k, p)], jn[(k, p)]);
            }
        }
    }
}

#[test]
fn gradient_is_jacobian_transpose_residual() {
    let split = toy();
    let net = Sequential::mlp(vec![2, 6, 1], Activation::Sigmoid).unwrap();
    let lik = Gaussian::new(0.7).unwrap();
    let w = net.init(2);
    let delta = 0.3;
    let obj = Objective::on(&net, &lik, &split.train, delta);
    let (loss, g) = obj.value_grad(&w);
    let lin = Linearization::new(&net, &lik, obj.x, obj.y, &w);
    let jr = lin.loss_gradient();
    for p in 0..w.len() {
        assert_relative_eq!(
            g[p],
            jr[p] + delta * w[p],
            max_relative = 1e-12,
            epsilon = 1e-13
        );
    }
    // And the loss gradient agrees with finite differences of L.
    let h = 1e-6;
    for p in 0..w.len() {
        let mut wp = w.clone();
        wp[p] += h;
        let (lp, _) = obj.value_grad(&wp);
        wp[p] -= 2.0 * h;
        let (lm, _) = obj.value_grad(&wp);
        assert!(((lp - lm) / (2.0 * h) - g[p]).abs() < 1e-5 * (1.0 + g[p].abs()));
    }
    assert!(loss.is_finite());
}

#[test]
fn gaussian_residual_and_curvature() {
    let lik = Gaussian::new(0.5).unwrap();
    let (f, y) = ([1.3], [0.4]);
    let mut r = [0.0];
    let mut lam = [0.0];
    lik.residual(&f, &y, &mut r);
    lik.curvature(&f, &y, &mut lam);
    let h = 1e-5;
    let d1 = (lik.nll(&[f[0] + h], &y) - lik.nll(&[f[0] - h], &y)) / (2.0 * h);
    let d2 =
        (lik.nll(&[f[0] + h], &y) - 2.0 * lik.nll(&f, &y) + lik.nll(&[f[0] - h], &y)) / (h * h);
    assert_relative_eq!(r[0], d1, max_relative = 1e-8);
    assert_relative_eq!(lam[0], d2, max_relative = 1e-4);
    assert_relative_eq!(r[0], (1.3 - 0.4) / 0.25, max_relative = 1e-14);
}

/// The toy targets under a Gaussian likelihood (Λ = 1/σ², the same for every example) and as
/// 0/1 labels (y > 0) under a Bernoulli one (Λ_i = s(f_i)s(−f_i), a different one per
/// example), so that every identity is checked with a Λ that differs per example too.
fn likelihoods(split: &dnn2gp::data::Split, sigma: f64) -> Vec<(Box<dyn Likelihood>, Mat<f64>)> {
    let y = &split.train.y;
    vec![
        (Box::new(Gaussian::new(sigma).unwrap()), y.clone()),
        (
            Box::new(Bernoulli),
            Mat::from_fn(y.nrows(), 1, |i, _| f64::from(u8::from(y[(i, 0)] > 0.0))),
        ),
    ]
}

#[test]
fn weight_space_equals_function_space() {
    // Not at a stationary point: the identities of the linear model hold anyway.
    let split = toy();
    let net = Sequential::mlp(vec![2, 10, 1], Activation::Tanh).unwrap();
    let w = net.init(9);
    for (lik, y) in likelihoods(&split, 0.3) {
        let lin = Linearization::new(&net, lik.as_ref(), split.train.x.as_ref(), y.as_ref(), &w);
        let lam: Vec<f64> = lin.curvature().values().to_vec();
        assert_eq!(
            lam.windows(2).all(|p| p[0] == p[1]),
            lik.name() == "gaussian",
            "Λ differs per example for the Bernoulli only"
        );
        weight_space_equals_function_space_at(&net, &lin, &w);
    }
}

fn weight_space_equals_function_space_at(net: &Sequential, lin: &Linearization, w: &[f64]) {
    let xs = dnn2gp::data::toy::features(&dnn2gp::data::linspace(-5.0, 5.0, 33));
    let js = net.jacobian(w, xs.as_ref());
    let lin = lin.clone();
    for delta in [0.01, 1.0, 30.0] {
        let ws = Dnn2Gp::new(&lin, delta, Space::Weight, MEM).unwrap();
        let fs = Dnn2Gp::new(&lin, delta, Space::Function, MEM).unwrap();
        assert!(
            rel(
                ws.log_marginal_likelihood().unwrap(),
                fs.log_marginal_likelihood().unwrap()
            ) < 1e-8
        );
        // The Laplace evidence, from log|A| in weight space and from log|G| in function space.
        let (lw, lf) = (
            ws.laplace_log_evidence().unwrap(),
            fs.laplace_log_evidence().unwrap(),
        );
        assert!(rel(lw, lf) < 1e-8, "Laplace evidence {lw} vs {lf}");
        let (pw, pf) = (ws.predict(js.as_ref()), fs.predict(js.as_ref()));
        for i in 0..pw.mean.len() {
            assert!(
                rel(pw.mean[i], pf.mean[i]) < 1e-8,
                "mean {} vs {}",
                pw.mean[i],
                pf.mean[i]
            );
            assert!(
                rel(pw.var[i], pf.var[i]) < 1e-8,
                "var {} vs {}",
                pw.var[i],
                pf.var[i]
            );
        }
        for p in 0..w.len() {
            assert!(rel(ws.posterior_mean[p], fs.posterior_mean[p]) < 1e-7);
        }
    }
}

#[test]
fn function_space_marglik_is_gaussian_density_of_pseudo_targets() {
    // log N(ỹ | 0, δ⁻¹JJᵀ + Λ⁻¹) computed directly from the definition.
    let split = toy();
    let net = Sequential::mlp(vec![2, 4, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.8).unwrap();
    let w = net.init(4);
    let lin = Linearization::new(
        &net,
        &lik,
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        &w,
    );
    let delta = 0.7;
    let mut g = kernel(lin.jacobian(), lin.jacobian(), delta);
    for i in 0..g.nrows() {
        g[(i, i)] += 0.64;
    }
    let evd = g.self_adjoint_eigen(faer::Side::Lower).unwrap();
    let (u, s) = (evd.U(), evd.S());
    let t = lin.pseudo_targets().unwrap();
    let ut = dnn2gp::linalg::mat_t_vec(u, &t);
    let quad: f64 = ut.iter().enumerate().map(|(i, v)| v * v / s[i]).sum();
    let logdet: f64 = (0..g.nrows()).map(|i| s[i].ln()).sum();
    let n = t.len() as f64;
    let direct = -0.5 * quad - 0.5 * logdet - 0.5 * n * std::f64::consts::TAU.ln();
    let gp = Dnn2Gp::new(&lin, delta, Space::Function, MEM).unwrap();
    assert!(rel(direct, gp.log_marginal_likelihood().unwrap()) < 1e-10);
}

#[test]
fn gp_at_stationary_point_is_the_linearised_laplace() {
    let delta = 0.6;
    let (net, lik, split, w, grad_norm) = trained(delta);
    assert!(grad_norm < 1e-7, "polish reached ‖∇L‖ = {grad_norm}");
    let lin = Linearization::new(
        &net,
        &lik,
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        &w,
    );
    let gp = Dnn2Gp::new(&lin, delta, Space::Function, MEM).unwrap();
    let xs = dnn2gp::data::toy::features(&dnn2gp::data::linspace(-6.0, 6.0, 41));
    let js = net.jacobian(&w, xs.as_ref());
    let pred = gp.predict(js.as_ref());
    // GP predictive mean = J(x*) w*.
    let jw = mat_vec(js.as_ref(), &w);
    for i in 0..jw.len() {
        assert!(
            (pred.mean[i] - jw[i]).abs() < 1e-7 * (1.0 + jw[i].abs()),
            "{} vs {}",
            pred.mean[i],
            jw[i]
        );
    }
    // GP variance = J* Σ J*ᵀ of the Laplace-GGN posterior.
    let lap = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, MEM).unwrap();
    let cov = lap.covariance();
    let full = a_bt(
        js.as_ref(),
        dnn2gp::linalg::a_b(js.as_ref(), cov.as_ref()).as_ref(),
    );
    let var = lap.functional_variance(js.as_ref());
    for i in 0..var.len() {
        assert!(rel(pred.var[i], full[(i, i)]) < 1e-8);
        assert!(rel(pred.var[i], var[i]) < 1e-8);
    }
    // GP marginal likelihood = the paper's weight-space Laplace evidence.
    let lml = gp.log_marginal_likelihood().unwrap();
    let laplace = lap.log_marginal_likelihood(&lin).unwrap();
    assert!(rel(lml, laplace) < 1e-8, "{lml} vs {laplace}");
    // Gaussian form: log N(y|f*,σ²) + log N(w*|0,δ⁻¹I) + (P/2) log 2π − ½ log|Σ⁻¹|.
    let p = w.len() as f64;
    let log_lik = -lik.nll_sum(lin.outputs(), split.train.y.as_ref());
    let log_prior =
        -0.5 * delta * dnn2gp::linalg::dot(&w, &w) + 0.5 * p * (delta / std::f64::consts::TAU).ln();
    let gauss =
        log_lik + log_prior + 0.5 * p * std::f64::consts::TAU.ln() - 0.5 * lap.log_det_precision();
    assert!(rel(lml, gauss) < 1e-8, "{lml} vs {gauss}");
}

#[test]
fn linear_model_posterior_is_laplace_posterior() {
    // The exact posterior of ỹ = Jw + ε, w ~ N(0, δ⁻¹I) has mean w* at a stationary point.
    let delta = 1.3;
    let (net, lik, split, w, _) = trained(delta);
    let lin = Linearization::new(
        &net,
        &lik,
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        &w,
    );
    let gp = Dnn2Gp::new(&lin, delta, Space::Weight, MEM).unwrap();
    for p in 0..w.len() {
        assert!((gp.posterior_mean[p] - w[p]).abs() < 1e-7 * (1.0 + w[p].abs()));
    }
    assert!(gp.stationarity_gap().abs() < 1e-10);
}

#[test]
fn laplace_evidence_gap_off_stationarity() {
    // Away from a stationary point the two differ by exactly ½ gᵀA⁻¹g.
    let split = toy();
    let net = Sequential::mlp(vec![2, 5, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.4).unwrap();
    let w = net.init(11);
    let delta = 2.0;
    let lin = Linearization::new(
        &net,
        &lik,
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        &w,
    );
    let gp = Dnn2Gp::new(&lin, delta, Space::Function, MEM).unwrap();
    let lap = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, MEM).unwrap();
    let g: Vec<f64> = lin
        .loss_gradient()
        .iter()
        .zip(&w)
        .map(|(g, w)| g + delta * w)
        .collect();
    let gap = 0.5 * dnn2gp::linalg::dot(&g, &lap.covariance_times(&g));
    assert!(gap > 1.0);
    assert!(rel(gp.stationarity_gap(), gap) < 1e-8);
    let lml = gp.log_marginal_likelihood().unwrap();
    assert!(rel(lap.log_marginal_likelihood(&lin).unwrap() + gap, lml) < 1e-9);
}

#[test]
fn diagonal_laplace_uses_the_ggn_diagonal() {
    let (net, lik, split, w, _) = trained(0.5);
    let lin = Linearization::new(
        &net,
        &lik,
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        &w,
    );
    let full = lin.ggn();
    let diag = LaplaceGgn::fit(&lin, 0.5, HessianStructure::Diag, MEM).unwrap();
    let cov = diag.covariance();
    for p in 0..w.len() {
        assert!(rel(1.0 / cov[(p, p)], full[(p, p)] + 0.5) < 1e-12);
    }
    let js = net.jacobian(&w, split.test.x.as_ref());
    let var = diag.functional_variance(js.as_ref());
    for (m, v) in var.iter().enumerate() {
        let direct: f64 = (0..w.len()).map(|p| js[(m, p)].powi(2) * cov[(p, p)]).sum();
        assert!(rel(*v, direct) < 1e-12);
    }
}

#[test]
fn laplace_samples_have_the_posterior_covariance() {
    let (net, lik, split, w, _) = trained(1.0);
    let lin = Linearization::new(
        &net,
        &lik,
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        &w,
    );
    let lap = LaplaceGgn::fit(&lin, 1.0, HessianStructure::Full, MEM).unwrap();
    let cov = lap.covariance();
    let mut rng = dnn2gp::rng::seeded(0);
    let s = lap.sample(20_000, &mut rng);
    for p in [0, 3, w.len() - 1] {
        let mean: f64 = s.iter().map(|v| v[p]).sum::<f64>() / s.len() as f64;
        let var: f64 = s.iter().map(|v| (v[p] - mean).powi(2)).sum::<f64>() / s.len() as f64;
        assert!((mean - w[p]).abs() < 5.0 * (cov[(p, p)] / s.len() as f64).sqrt());
        assert!(rel(var, cov[(p, p)]) < 0.05, "{var} vs {}", cov[(p, p)]);
    }
}

#[test]
fn same_seed_same_numbers() {
    let a = trained(0.6);
    let b = trained(0.6);
    assert_eq!(a.3, b.3);
    let c = toy_sets(&ToyConfig::default(), 2);
    let d = toy_sets(&ToyConfig::default(), 2);
    assert_eq!(c[1].train.y, d[1].train.y);
    assert_ne!(c[0].train.y, c[1].train.y);
}

#[test]
fn backward_reductions_match_the_jacobian() {
    // Σ_m J_{n(m)}ᵀ c_m and Σ_m (J_{n(m)}ᵀ c_m)² from the backward pass, for K = 3 outputs and
    // several cotangent rows per example, against the explicit Jacobian.
    let net = Sequential::mlp(vec![3, 7, 3], Activation::Sigmoid).unwrap();
    let x = Mat::from_fn(9, 3, |i, j| ((i + 2 * j) as f64 * 0.41).cos());
    common::assert_reductions_match_jacobian(&net, &net.init(8), x.as_ref());
}

#[test]
fn delta_path_matches_the_direct_computations() {
    // One eigendecomposition gives, for every δ, the GP marginal likelihood and the Laplace
    // evidence of direct factorisations; in both spaces; away from a stationary point.
    use dnn2gp::gp::DeltaPath;
    let split = toy();
    for (li, hidden) in [(0, 3), (0, 30), (1, 3), (1, 30)] {
        let (lik, y) = likelihoods(&split, 0.6).swap_remove(li);
        // P = 13 < N = 40 (weight space), P = 121 > N (function space).
        let net = Sequential::mlp(vec![2, hidden, 1], Activation::Tanh).unwrap();
        let w = net.init(2);
        let lin = Linearization::new(&net, lik.as_ref(), split.train.x.as_ref(), y.as_ref(), &w);
        let x = split.train.x.as_ref();
        let paths = [Space::Auto, Space::Weight, Space::Function]
            .map(|space| (space, DeltaPath::new(&lin, space, MEM).unwrap()))
            .into_iter()
            // The function space from a structured NTK, whitened by Λ^{1/2} example by example.
            .chain([(
                Space::Function,
                DeltaPath::with_ntk(&lin, net.ntk(&w, x, x), MEM).unwrap(),
            )]);
        for (space, path) in paths {
            for delta in [0.01, 0.3, 1.0, 7.0, 100.0] {
                let gp = Dnn2Gp::new(&lin, delta, Space::Auto, MEM).unwrap();
                let lap = LaplaceGgn::fit(&lin, delta, HessianStructure::Full, MEM).unwrap();
                let (a, b) = (
                    path.log_marginal_likelihood(delta).unwrap(),
                    gp.log_marginal_likelihood().unwrap(),
                );
                assert!(rel(a, b) < 1e-9, "{space} δ={delta}: {a} vs {b}");
                let (a, b) = (
                    path.laplace_log_evidence(delta).unwrap(),
                    lap.log_marginal_likelihood(&lin).unwrap(),
                );
                assert!(rel(a, b) < 1e-9, "{space} δ={delta}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn structured_ntk_equals_the_jacobian_product() {
    // The per-layer factor form of J_a J_bᵀ (no Jacobian formed) against the explicit product.
    for (sizes, act) in [
        (vec![2, 7, 1], Activation::Tanh),
        (vec![3, 6, 5, 3], Activation::Relu),
    ] {
        let net = Sequential::mlp(sizes, act).unwrap();
        let w = net.init(6);
        let xa = Mat::from_fn(9, net.n_inputs(), |i, j| ((i * 5 + j) as f64 * 0.29).sin());
        let xb = Mat::from_fn(4, net.n_inputs(), |i, j| ((i * 3 + j) as f64 * 0.61).cos());
        let direct = a_bt(
            net.jacobian(&w, xa.as_ref()).as_ref(),
            net.jacobian(&w, xb.as_ref()).as_ref(),
        );
        let structured = net.ntk(&w, xa.as_ref(), xb.as_ref());
        assert_eq!(
            (structured.nrows(), structured.ncols()),
            (direct.nrows(), direct.ncols())
        );
        for i in 0..direct.nrows() {
            for j in 0..direct.ncols() {
                assert!(
                    (structured[(i, j)] - direct[(i, j)]).abs()
                        < 1e-12 * (1.0 + direct[(i, j)].abs())
                );
            }
        }
    }
}

#[test]
fn gp_from_structured_ntk_equals_gp_from_jacobians() {
    let split = toy();
    let net = Sequential::mlp(vec![2, 30, 1], Activation::Tanh).unwrap();
    let lik = Gaussian::new(0.4).unwrap();
    let w = net.init(12);
    let (x, xs) = (split.train.x.as_ref(), split.test.x.as_ref());
    let lin = Linearization::new(&net, &lik, x, split.train.y.as_ref(), &w);
    let a = Dnn2Gp::new(&lin, 0.8, Space::Function, MEM).unwrap();
    let b = Dnn2Gp::from_ntk(&lin, 0.8, net.ntk(&w, x, x), MEM).unwrap();
    assert!(
        rel(
            a.log_marginal_likelihood().unwrap(),
            b.log_marginal_likelihood().unwrap()
        ) < 1e-10
    );
    let pa = a.predict(net.jacobian(&w, xs).as_ref());
    let kss = net.ntk(&w, xs, xs);
    let diag: Vec<f64> = (0..kss.nrows()).map(|i| kss[(i, i)]).collect();
    let pb = b.predict_ntk(net.ntk(&w, xs, x), &diag).unwrap();
    for i in 0..pa.mean.len() {
        assert!(rel(pa.mean[i], pb.mean[i]) < 1e-9 && rel(pa.var[i], pb.var[i]) < 1e-8);
    }
    // A weight-space GP has no NTK predictive.
    let c = Dnn2Gp::new(&lin, 0.8, Space::Weight, MEM).unwrap();
    assert!(c.predict_ntk(net.ntk(&w, xs, x), &diag).is_err());
    assert!(Dnn2Gp::from_ntk(&lin, 0.8, net.ntk(&w, xs, xs), MEM).is_err());
}
