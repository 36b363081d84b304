//! Likelihoods: residual and curvature are the derivatives of the loss; the table of the math
//! reference; the link approximations.

use dnn2gp::likelihood::classification::{mc_link, probit, softmax};
use dnn2gp::likelihood::{Bernoulli, Categorical, Gaussian, Likelihood};
use dnn2gp::rng::seeded;

/// Checks `r = ∇ℓ` and `Λ = ∇²ℓ` by central differences at `(f, y)`.
fn check_derivatives(lik: &dyn Likelihood, f: &[f64], y: &[f64]) {
    let k = f.len();
    let (mut r, mut lam) = (vec![0.0; k], vec![0.0; k * k]);
    lik.residual(f, y, &mut r);
    lik.curvature(f, y, &mut lam);
    let h = 1e-5;
    let shifted = |i: usize, d: f64| {
        let mut g = f.to_vec();
        g[i] += d;
        g
    };
    for i in 0..k {
        let fd = (lik.nll(&shifted(i, h), y) - lik.nll(&shifted(i, -h), y)) / (2.0 * h);
        assert!(
            (r[i] - fd).abs() < 1e-7,
            "{} r[{i}] {} vs {fd}",
            lik.name(),
            r[i]
        );
        let (mut rp, mut rm) = (vec![0.0; k], vec![0.0; k]);
        lik.residual(&shifted(i, h), y, &mut rp);
        lik.residual(&shifted(i, -h), y, &mut rm);
        for j in 0..k {
            let fd = (rp[j] - rm[j]) / (2.0 * h);
            assert!(
                (lam[j * k + i] - fd).abs() < 1e-7,
                "{} Λ[{j},{i}]",
                lik.name()
            );
        }
    }
}

#[test]
fn residuals_and_curvatures_are_derivatives_of_the_loss() {
    check_derivatives(&Gaussian::new(0.3).unwrap(), &[0.7, -1.2], &[0.1, 0.4]);
    for (f, y) in [(2.3, 1.0), (-0.4, 0.0), (-30.0, 1.0), (30.0, 0.0)] {
        check_derivatives(&Bernoulli, &[f], &[y]);
    }
    check_derivatives(&Categorical, &[0.3, -1.0, 2.0, 0.5], &[0.0, 0.0, 1.0, 0.0]);
    check_derivatives(&Categorical, &[40.0, -40.0, 0.0], &[0.0, 1.0, 0.0]);
}

#[test]
fn the_table_of_the_math_reference() {
    // Bernoulli: r = s(f) − y, Λ = s(1 − s); no overflow at extreme logits.
    let (mut r, mut l) = ([0.0], [0.0]);
    Bernoulli.residual(&[0.0], &[1.0], &mut r);
    Bernoulli.curvature(&[0.0], &[1.0], &mut l);
    assert_eq!((r[0], l[0]), (-0.5, 0.25));
    assert!(
        Bernoulli.nll(&[800.0], &[0.0]).is_finite() && Bernoulli.nll(&[-800.0], &[0.0]) < 1e-300
    );
    // Categorical: r = p − y, Λ = diag(p) − ppᵀ with Λ1 = 0 (rank K − 1).
    let f = [1.0, -0.5, 0.2];
    let p = softmax(&f);
    let mut lam = vec![0.0; 9];
    Categorical.curvature(&f, &[1.0, 0.0, 0.0], &mut lam);
    for a in 0..3 {
        let row_sum: f64 = (0..3).map(|b| lam[a * 3 + b]).sum();
        assert!(row_sum.abs() < 1e-15);
        assert!((lam[a * 3 + a] - (p[a] - p[a] * p[a])).abs() < 1e-15);
    }
    assert!((Categorical.nll(&f, &[0.0, 1.0, 0.0]) + p[1].ln()).abs() < 1e-14);
    // diag(Λ) = p(1 − p), computed as p_a Σ_{b≠a} p_b (equal up to rounding here).
    for (v, p) in Categorical.observation_variance(&f).iter().zip(&p) {
        assert!((v - (p - p * p)).abs() < 1e-16, "{v} vs {}", p - p * p);
    }
}

#[test]
fn curvatures_stay_positive_where_p_rounds_to_one() {
    // p − p² is exactly 0 from f ≈ 36.7 on (p rounds to 1); s(f)s(−f) ≈ e^{−f} is not.
    for f in [36.8, 40.0, 100.0, 700.0] {
        let mut l = [0.0];
        Bernoulli.curvature(&[f], &[1.0], &mut l);
        let expected = (-f).exp();
        assert!(
            (l[0] / expected - 1.0).abs() < 1e-12,
            "f = {f}: {} vs {expected}",
            l[0]
        );
        Bernoulli.curvature(&[-f], &[0.0], &mut l);
        assert!((l[0] / expected - 1.0).abs() < 1e-12, "f = −{f}: {}", l[0]);
        assert!((Bernoulli.observation_variance(&[f])[0] / expected - 1.0).abs() < 1e-12);
    }
    // Categorical: the diagonal of the dominant class is p_a Σ_{b≠a} p_b ≈ e^{−40}, not 0.
    let f = [40.0, 0.0, 0.0];
    let mut lam = vec![0.0; 9];
    Categorical.curvature(&f, &[1.0, 0.0, 0.0], &mut lam);
    let expected = 2.0 * (-40.0f64).exp();
    assert!(
        (lam[0] / expected - 1.0).abs() < 1e-12,
        "{} vs {expected}",
        lam[0]
    );
    assert!((Categorical.observation_variance(&f)[0] / expected - 1.0).abs() < 1e-12);
}

#[test]
fn probit_agrees_with_monte_carlo_and_tends_to_the_plug_in() {
    let mut rng = seeded(3);
    for (m, v) in [
        (vec![1.5], vec![2.0]),
        (vec![0.5, -1.0, 2.0], vec![0.3, 1.0, 0.1]),
    ] {
        let (a, b) = (probit(&m, &v), mc_link(&m, &v, 200_000, &mut rng));
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 0.03, "probit {a} vs MC {b}");
        }
    }
    // Zero variance: the plug-in probability.
    assert_eq!(probit(&[0.5, -1.0], &[0.0, 0.0]), softmax(&[0.5, -1.0]));
}
