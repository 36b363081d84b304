//! Agreement with the peers' outputs on the same weights and data (`../shared/baselines/data`):
//! B1 (MLP 1-100-100-1 tanh, P = 10,401, N = 2000, σ = 0.2, δ = 1, f64): the GLM predictive
//! variance of laplace-torch (BackPack GGN) and of the function-space GP script; B3: the Laplace
//! evidence and the exact GP marginal likelihood over 30 values of δ.

mod common;

use dnn2gp::curvature::Linearization;
use dnn2gp::data::{csv, snelson};
use dnn2gp::gp::{DeltaPath, Dnn2Gp, Space};
use dnn2gp::likelihood::Gaussian;
use dnn2gp::nn::{Activation, Network, Sequential};
use faer::Mat;

const MEM: u128 = 8 << 30;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs())
}

#[test]
fn b1_predictive_and_b3_marginal_likelihoods_agree_with_the_peers() {
    let Some(dir) = common::shared_baselines() else {
        return;
    };
    let net = Sequential::mlp(vec![1, 100, 100, 1], Activation::Tanh).unwrap();
    let w = snelson::read_column(&dir.join("b1_seed0_map_params.txt")).unwrap();
    assert_eq!(w.len(), net.n_params());
    let train = csv::read_dataset(&dir.join("b1_seed0_train.csv")).unwrap();
    let test = csv::read_table(&dir.join("b1_seed0_test.csv")).unwrap();
    let xs = Mat::from_fn(test.len(), 1, |i, _| test[i][0]);
    let lik = Gaussian::new(0.2).unwrap();
    let lin = Linearization::new(&net, &lik, train.x.as_ref(), train.y.as_ref(), &w);

    // B1: GLM predictive at the 1000 test inputs.
    let gp = Dnn2Gp::new(&lin, 1.0, Space::Auto, MEM).unwrap();
    assert_eq!(gp.space, Space::Function);
    let (f, js) = net.forward_jacobian(&w, xs.as_ref());
    let pred = gp.predict(js.as_ref());
    for peer in ["laplace_backpack", "gp", "torchfunc"] {
        let rows = csv::read_table(&dir.join(format!("b1_seed0_pred_{peer}.csv"))).unwrap();
        let worst_var = (0..rows.len())
            .map(|i| rel(pred.var[i], rows[i][2]))
            .fold(0.0, f64::max);
        let worst_mu = (0..rows.len())
            .map(|i| rel(f[(i, 0)], rows[i][1]))
            .fold(0.0, f64::max);
        eprintln!(
            "B1 vs {peer}: f_var {worst_var:.1e}, f_mu {worst_mu:.1e} max relative difference"
        );
        assert!(
            worst_var < 1e-6,
            "{peer}: f_var off by {worst_var:.2e} relative"
        );
        assert!(
            worst_mu < 1e-10,
            "{peer}: f_mu off by {worst_mu:.2e} relative"
        );
    }

    // B3: both marginal likelihoods over the δ grid, from one eigendecomposition.
    let path = DeltaPath::new(&lin, Space::Auto, MEM).unwrap();
    let rows = csv::read_table(&dir.join("b3_seed0_gp.csv")).unwrap();
    assert_eq!(rows.len(), 30);
    let mut worst: f64 = 0.0;
    for r in &rows {
        let (delta, laplace, exact) = (r[0], r[1], r[2]);
        let (ours_l, ours_e) = (
            path.laplace_log_evidence(delta).unwrap(),
            path.log_marginal_likelihood(delta).unwrap(),
        );
        assert!(
            rel(ours_l, laplace) < 1e-6,
            "δ = {delta}: Laplace {ours_l} vs {laplace}"
        );
        assert!(
            rel(ours_e, exact) < 1e-6,
            "δ = {delta}: GP {ours_e} vs {exact}"
        );
        worst = worst.max(rel(ours_l, laplace)).max(rel(ours_e, exact));
    }
    eprintln!("B3 vs gp script: {worst:.1e} max relative difference over 30 δ");
    // The direct GP at δ = 1 gives the same exact value.
    let lml = gp.log_marginal_likelihood().unwrap();
    assert!(rel(lml, path.log_marginal_likelihood(1.0).unwrap()) < 1e-9);
}
