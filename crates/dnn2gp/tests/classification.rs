//! Classification and images: the curvature roots, the streamed GGN diagonal, the data-space
//! predictive of section 4, CNN Jacobians on real images, and training at image scale.

mod common;

use std::path::Path;

use approx::assert_relative_eq;
use faer::Mat;

use dnn2gp::curvature::precision::diag_covariance_blocks;
use dnn2gp::curvature::Backend;
use dnn2gp::curvature::Linearization;
use dnn2gp::data::mnist::{self, class_subset, one_hot};
use dnn2gp::data::Dataset;
use dnn2gp::gp::classification::{accuracy, argmax_rows, data_space_predictive, diagonal_blocks};
use dnn2gp::likelihood::{curvature_root_rows, Bernoulli, Categorical, Gaussian, Likelihood};
use dnn2gp::linalg::{a_bt, at_b};
use dnn2gp::nn::{predict, Network, Sequential};
use dnn2gp::train::{adam, gather_rows, Adam, MapConfig, Objective};

/// The first `n` digits (8×8, pixels in [0, 1]) and a small CNN for them.
fn digits(dir: &Path, n: usize, k: usize) -> (Mat<f64>, Vec<usize>, Sequential) {
    let d = mnist::load_digits(&dir.join("digits/digits.csv.gz"), 1500).unwrap();
    let x = d.train_x.as_ref().subrows(0, n).to_owned();
    let net = Sequential::parse(&format!(
        "1x8x8:conv4k3,relu,pool,flatten,dense12,tanh,dense{k}"
    ))
    .unwrap();
    (x, d.train_y[..n].to_vec(), net)
}

#[test]
fn curvature_roots_square_to_the_curvature() {
    let liks: Vec<(Box<dyn Likelihood>, usize)> = vec![
        (Box::new(Gaussian::new(0.3).unwrap()), 2),
        (Box::new(Bernoulli), 1),
        (Box::new(Categorical), 4),
    ];
    for (lik, k) in liks {
        let f = Mat::from_fn(5, k, |i, j| ((i * 7 + j * 3) as f64 * 0.37).sin() * 3.0);
        let y = Mat::from_fn(5, k, |i, j| if (i + j) % k == 0 { 1.0 } else { 0.0 });
        let rows = curvature_root_rows(lik.as_ref(), f.as_ref(), y.as_ref());
        let lam = dnn2gp::likelihood::curvatures(lik.as_ref(), f.as_ref(), y.as_ref());
        for i in 0..5 {
            let r = rows.as_ref().subrows(i * k, k);
            let rtr = at_b(r, r);
            for a in 0..k {
                for b in 0..k {
                    assert_relative_eq!(rtr[(a, b)], lam[i * k * k + a * k + b], epsilon = 1e-14);
                }
            }
        }
    }
}

#[test]
fn the_mean_is_the_inverse_link() {
    let f = [0.3, -1.2, 2.0];
    let p = Categorical.mean(&f);
    assert_relative_eq!(p.iter().sum::<f64>(), 1.0, epsilon = 1e-15);
    assert_relative_eq!(p[2] / p[0], (2.0f64 - 0.3).exp(), max_relative = 1e-14);
    assert_relative_eq!(
        Bernoulli.mean(&[0.7])[0],
        1.0 / (1.0 + (-0.7f64).exp()),
        epsilon = 1e-15
    );
    assert_eq!(Gaussian::new(1.0).unwrap().mean(&f), f.to_vec());
}

#[test]
fn streamed_ggn_diagonal_equals_the_diagonal_of_the_ggn() {
    let Some(dir) = common::shared_data() else {
        return;
    };
    // 150 images: more than two chunks, so the parallel sum is exercised.
    let (x, labels, net) = digits(&dir, 150, 10);
    let y = one_hot(&labels, 10);
    let w = net.init(4);
    let lin = Linearization::new(&net, &Categorical, x.as_ref(), y.as_ref(), &w);
    let dense = lin.ggn();
    let streamed = Backend::new(&net, &Categorical, &w).diag(x.as_ref(), y.as_ref(), None);
    for (p, h) in streamed.iter().enumerate() {
        assert_relative_eq!(*h, dense[(p, p)], max_relative = 1e-10, epsilon = 1e-13);
    }
    // The Bernoulli case (one logit).
    let net1 = Sequential::parse("1x8x8:conv4k3,relu,pool,flatten,dense12,tanh,dense1").unwrap();
    let w1 = net1.init(5);
    let yb = Mat::from_fn(150, 1, |i, _| (labels[i] % 2) as f64);
    let lin = Linearization::new(&net1, &Bernoulli, x.as_ref(), yb.as_ref(), &w1);
    let streamed = Backend::new(&net1, &Bernoulli, &w1).diag(x.as_ref(), yb.as_ref(), None);
    for (h, d) in streamed.iter().zip(lin.ggn_diag()) {
        assert_relative_eq!(*h, d, max_relative = 1e-10, epsilon = 1e-13);
    }
}

#[test]
fn data_space_predictive_matches_its_definition() {
    let Some(dir) = common::shared_data() else {
        return;
    };
    let (x, _, net) = digits(&dir, 12, 10);
    let w = net.init(9);
    let (f, jac) = net.forward_jacobian(&w, x.as_ref());
    let s: Vec<f64> = (0..net.n_params())
        .map(|p| 0.01 + 0.001 * (p % 7) as f64)
        .collect();
    // Dense J diag(s) Jᵀ and its blocks.
    let js = Mat::from_fn(jac.nrows(), jac.ncols(), |i, j| jac[(i, j)] * s[j]);
    let dense = a_bt(js.as_ref(), jac.as_ref());
    let blocks = diag_covariance_blocks(jac.as_ref(), 10, &s);
    for (a, b) in blocks.iter().zip(diagonal_blocks(dense.as_ref(), 10)) {
        assert_relative_eq!(*a, b, max_relative = 1e-12, epsilon = 1e-15);
    }
    let pred = data_space_predictive(&Categorical, f.as_ref(), jac.as_ref(), &w, &blocks);
    for i in 0..12 {
        let fi: Vec<f64> = (0..10).map(|a| f[(i, a)]).collect();
        let p = dnn2gp::likelihood::classification::softmax(&fi);
        let lam = Mat::from_fn(10, 10, |a, b| if a == b { p[a] } else { 0.0 } - p[a] * p[b]);
        let c = dense.as_ref().submatrix(i * 10, i * 10, 10, 10).to_owned();
        let lcl = &lam * &c * &lam;
        for a in 0..10 {
            assert_relative_eq!(pred.p[(i, a)], p[a], epsilon = 1e-15);
            assert_relative_eq!(pred.var_f[(i, a)], lcl[(a, a)], max_relative = 1e-10);
            assert_relative_eq!(
                pred.var_y[(i, a)],
                lcl[(a, a)] + p[a] - p[a] * p[a],
                max_relative = 1e-10
            );
            let jw: f64 = (0..net.n_params())
                .map(|q| jac[(i * 10 + a, q)] * w[q])
                .sum();
            assert_relative_eq!(
                pred.gp_mean[(i, a)],
                jw,
                max_relative = 1e-10,
                epsilon = 1e-12
            );
        }
    }
    // A variance that is larger pulls the probit probabilities towards uniform.
    let wide: Vec<f64> = blocks.iter().map(|v| 100.0 * v).collect();
    let pw = data_space_predictive(&Categorical, f.as_ref(), jac.as_ref(), &w, &wide);
    let spread = |m: &Mat<f64>| {
        (0..12)
            .map(|i| (0..10).map(|a| m[(i, a)]).fold(0.0, f64::max))
            .sum::<f64>()
    };
    assert!(spread(&pw.p_probit) < spread(&pred.p_probit));
}

#[test]
fn cnn_jacobian_on_real_images_matches_finite_differences() {
    let Some(dir) = common::shared_data() else {
        return;
    };
    let (x, _, net) = digits(&dir, 3, 10);
    let w = net.init(2);
    let every: Vec<usize> = (0..net.n_params()).step_by(7).collect();
    common::assert_jacobian_matches_fd(&net, &w, x.as_ref(), &every, 1e-6);
    // LeNet-5 on two MNIST images, spot checks in every layer.
    let m = mnist::load(&dir.join("mnist")).unwrap();
    let lenet = Sequential::lenet5(1, 28, 10).unwrap();
    let wl = lenet.init(0);
    let x2 = m.test_x.as_ref().subrows(0, 2).to_owned();
    let spots: Vec<usize> = (0..lenet.n_params()).step_by(1777).collect();
    common::assert_jacobian_matches_fd(&lenet, &wl, x2.as_ref(), &spots, 1e-6);
}

#[test]
fn adam_trains_a_cnn_on_digits_and_the_gp_mean_follows_the_network() {
    let Some(dir) = common::shared_data() else {
        return;
    };
    let d = mnist::load_digits(&dir.join("digits/digits.csv.gz"), 1500).unwrap();
    let net = Sequential::parse("1x8x8:conv6k3,relu,pool,flatten,dense32,relu,dense10").unwrap();
    let train = Dataset::new(d.train_x.clone(), one_hot(&d.train_y, 10)).unwrap();
    let obj = Objective::on(&net, &Categorical, &train, 1.0);
    let cfg = MapConfig {
        adam: Adam {
            lr: 0.01,
            plateau: None,
            ..Adam::default()
        },
        epochs: 40,
        batch_size: Some(64),
        polish_iters: 0,
        ..MapConfig::default()
    };
    let mut accs = Vec::new();
    let res = adam::run_with(&obj, &net.init(0), &cfg, None, &mut |_, w, _| {
        let f = predict(&net, w, d.test_x.as_ref());
        accs.push(accuracy(f.as_ref(), &d.test_y));
        Ok(())
    })
    .unwrap();
    assert_eq!(accs.len(), 40);
    assert!(accs[39] > 0.9, "test accuracy {accs:?}");
    assert!(accs[39] > accs[0]);
    // The paper's subset: 30 per class, sorted by class; J(x)w* picks the network's class.
    let idx = class_subset(&d.train_y, 30, 10);
    assert_eq!(idx.len(), 300);
    let xs = gather_rows(train.x.as_ref(), &idx);
    let (f, jac) = net.forward_jacobian(&res.w, xs.as_ref());
    let blocks = diag_covariance_blocks(jac.as_ref(), 10, &vec![1.0; net.n_params()]);
    let pred = data_space_predictive(&Categorical, f.as_ref(), jac.as_ref(), &res.w, &blocks);
    let agree = argmax_rows(f.as_ref())
        .iter()
        .zip(argmax_rows(pred.gp_mean.as_ref()))
        .filter(|(a, b)| **a == *b)
        .count();
    assert!(agree >= 285, "J(x)w* agrees on only {agree} of 300");
}

#[test]
fn accuracy_counts_the_rows_whose_arg_max_is_the_label() {
    let f = Mat::from_fn(4, 3, |i, c| if c == i % 3 { 1.0 } else { -1.0 });
    assert_eq!(accuracy(f.as_ref(), &[0, 1, 0, 0]), 0.75);
    // One logit: class 1 where it is positive.
    let f = Mat::from_fn(3, 1, |i, _| i as f64 - 1.0);
    assert_eq!(accuracy(f.as_ref(), &[0, 0, 1]), 1.0);
    assert_eq!(accuracy(f.as_ref(), &[1, 1, 0]), 0.0);
}
