//! The posterior interface (`Posterior`, `Laplace`): its evidence at any (δ, σ) equals a fresh
//! fit there, its functional variance, kernel and predictive equal their definitions from the
//! stacked Jacobians, it saves and loads to the same numbers, and its samples are seeded.

mod common;

use approx::assert_relative_eq;
use dnn2gp::curvature::Linearization;
use dnn2gp::data::toy::{toy_sets, ToyConfig};
use dnn2gp::gp::{Dnn2Gp, Space};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::linalg::a_bt;
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, LaplaceGgn, Link, Posterior};
use dnn2gp::train::model::Model;
use dnn2gp::train::{fit_map, MapConfig, Objective};
use faer::Mat;

/// A small network trained to its MAP on the toy data, as a model.
fn trained(sigma: f64, delta: f64) -> (Model, dnn2gp::data::Split) {
    let split = toy_sets(&ToyConfig::default(), 1).remove(0);
    let net = Sequential::mlp(vec![2, 6, 1], Activation::Tanh).unwrap();
    let lik = LikelihoodKind::Gaussian.build(sigma).unwrap();
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let obj = Objective {
        net: &net,
        lik: lik.as_ref(),
        x,
        y,
        delta,
    };
    let cfg = MapConfig {
        epochs: 400,
        ..Default::default()
    };
    let w = fit_map(&obj, &net.init(2), &cfg, None).unwrap().w;
    let model = Model::new(net, w, LikelihoodKind::Gaussian, sigma, delta).unwrap();
    (model, split)
}

fn fit(model: Model, split: &dnn2gp::data::Split, s: HessianStructure) -> Laplace {
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    Laplace::fit(model, x, y, s, &FitOptions::default()).unwrap()
}

/// One fit answers for every δ and σ what a fresh fit there answers, full and diagonal.
#[test]
fn the_evidence_at_other_delta_and_sigma_equals_a_fresh_fit() {
    let (model, split) = trained(0.8, 0.5);
    for s in [HessianStructure::Full, HessianStructure::Diag] {
        let la = fit(model.clone(), &split, s);
        // At the fitted values: the weight-space posterior's own evidence.
        let lin = Linearization::new(
            &model.net,
            model.likelihood().unwrap().as_ref(),
            split.train.x.as_ref(),
            split.train.y.as_ref(),
            &model.w,
        );
        let direct = LaplaceGgn::fit(&lin, 0.5, s, u128::MAX)
            .unwrap()
            .log_marginal_likelihood(&lin)
            .unwrap();
        assert_relative_eq!(
            la.log_marginal_likelihood(None, None).unwrap(),
            direct,
            max_relative = 1e-12
        );
        for (delta, sigma) in [(2.0, 0.8), (0.5, 0.3), (0.05, 1.7)] {
            let mut other = model.clone();
            other.delta = delta;
            other.sigma = sigma;
            let fresh = fit(other, &split, s)
                .log_marginal_likelihood(None, None)
                .unwrap();
            assert_relative_eq!(
                la.log_marginal_likelihood(Some(delta), Some(sigma))
                    .unwrap(),
                fresh,
                max_relative = 1e-9
            );
        }
        assert!(la.log_marginal_likelihood(Some(-1.0), None).is_err());
        assert!(la.log_marginal_likelihood(None, Some(0.0)).is_err());
    }
    // At a stationary point the full evidence is the function-space GP's Laplace evidence.
    let la = fit(model.clone(), &split, HessianStructure::Full);
    let lin = Linearization::new(
        &model.net,
        model.likelihood().unwrap().as_ref(),
        split.train.x.as_ref(),
        split.train.y.as_ref(),
        &model.w,
    );
    let gp = Dnn2Gp::new(&lin, 0.5, Space::Function, u128::MAX).unwrap();
    assert_relative_eq!(
        la.log_marginal_likelihood(None, None).unwrap(),
        gp.laplace_log_evidence().unwrap(),
        max_relative = 1e-8
    );
}

/// The functional variance, covariance blocks, kernel and predictive are `J Σ Jᵀ` formed
/// densely, plus σ² for y.
#[test]
fn functional_quantities_are_j_sigma_jt() {
    let (model, split) = trained(0.8, 0.5);
    let xs = split.test.x.as_ref().subrows(0, 17);
    for s in [HessianStructure::Full, HessianStructure::Diag] {
        let la = fit(model.clone(), &split, s);
        let j = model.net.jacobian(&model.w, xs);
        let cov = la.weight_posterior().covariance();
        let dense = a_bt((&j * &cov).as_ref(), j.as_ref());
        let fv = la.functional_variance(xs);
        let kernel = la.kernel(xs, xs);
        for i in 0..xs.nrows() {
            assert_relative_eq!(fv[i], dense[(i, i)], max_relative = 1e-10);
            for c in 0..xs.nrows() {
                assert_relative_eq!(
                    kernel[(i, c)],
                    dense[(i, c)],
                    epsilon = 1e-12,
                    max_relative = 1e-9
                );
            }
        }
        let pred = la.predict(xs, Link::Probit).unwrap();
        assert!(pred.probabilities.is_none());
        assert_eq!(pred.mean, model.net.forward(&model.w, xs));
        for (v, f) in pred.variance().iter().zip(&fv) {
            assert_relative_eq!(*v, f + 0.64, max_relative = 1e-12);
        }
        assert!(la.predict(split.train.y.as_ref(), Link::Probit).is_err());
    }
}

/// Saved and loaded, a posterior gives the same numbers, bit for bit; the file's weights are a
/// state_dict; samples are seeded.
#[test]
fn a_saved_posterior_loads_to_the_same_numbers() {
    let (model, split) = trained(0.8, 0.5);
    let dir = common::tmpdir();
    let xs = split.test.x.as_ref();
    for s in [HessianStructure::Full, HessianStructure::Diag] {
        let la = fit(model.clone(), &split, s);
        let path = dir.path().join(format!("{s}.safetensors"));
        la.save(&path).unwrap();
        let back = Laplace::load(&path).unwrap();
        assert_eq!(back.model(), la.model());
        assert_eq!(back.structure(), s);
        assert_eq!(back.functional_variance(xs), la.functional_variance(xs));
        for (d, sg) in [(None, None), (Some(3.0), Some(0.5))] {
            assert_eq!(
                back.log_marginal_likelihood(d, sg).unwrap(),
                la.log_marginal_likelihood(d, sg).unwrap()
            );
        }
        assert_eq!(back.sample(3, 7), la.sample(3, 7));
        assert_ne!(la.sample(1, 7), la.sample(1, 8));
        assert_eq!(
            dnn2gp::nn::weights::load_with_metadata(&path, |_| {
                let mut l = model.net.param_layout();
                let p = model.w.len();
                l.push(dnn2gp::nn::weights::ParamTensor {
                    name: "posterior.ggn".into(),
                    shape: if s == HessianStructure::Full {
                        vec![p, p]
                    } else {
                        vec![p]
                    },
                    offset: p,
                });
                Ok(l)
            })
            .unwrap()
            .1[..model.w.len()],
            model.w[..]
        );
        // A model file is not a posterior.
        let bare = dir.path().join("model.safetensors");
        model
            .save(&bare, dnn2gp::nn::weights::StoredDtype::F64)
            .unwrap();
        let err = Laplace::load(&bare).unwrap_err().to_string();
        assert!(err.contains("not a saved posterior"), "{err}");
    }
}

/// Classification: σ does not apply; probabilities are distributions; the probit and Monte
/// Carlo links agree on a confident model; one Bernoulli logit gives two classes.
#[test]
fn classification_predictives_by_both_links() {
    let x = Mat::from_fn(40, 1, |i, _| i as f64 / 10.0 - 2.0);
    let y = Mat::from_fn(40, 1, |i, _| f64::from(u8::from(i >= 20)));
    let net = Sequential::mlp(vec![1, 5, 1], Activation::Tanh).unwrap();
    let lik = LikelihoodKind::Bernoulli.build(1.0).unwrap();
    let obj = Objective {
        net: &net,
        lik: lik.as_ref(),
        x: x.as_ref(),
        y: y.as_ref(),
        delta: 1.0,
    };
    let w = fit_map(
        &obj,
        &net.init(0),
        &MapConfig {
            epochs: 500,
            ..Default::default()
        },
        None,
    )
    .unwrap()
    .w;
    let model = Model::new(net, w, LikelihoodKind::Bernoulli, 1.0, 1.0).unwrap();
    let la = Laplace::fit(
        model,
        x.as_ref(),
        y.as_ref(),
        HessianStructure::Full,
        &FitOptions::default(),
    )
    .unwrap();
    assert!(la.log_marginal_likelihood(None, Some(0.5)).is_err());
    assert!(la
        .log_marginal_likelihood(Some(2.0), None)
        .unwrap()
        .is_finite());
    let probit = la
        .predict(x.as_ref(), Link::Probit)
        .unwrap()
        .probabilities
        .unwrap();
    let mc = la
        .predict(
            x.as_ref(),
            Link::MonteCarlo {
                samples: 20_000,
                seed: 3,
            },
        )
        .unwrap()
        .probabilities
        .unwrap();
    assert_eq!(probit.ncols(), 2);
    for i in 0..40 {
        assert_relative_eq!(probit[(i, 0)] + probit[(i, 1)], 1.0, epsilon = 1e-12);
        assert!((probit[(i, 1)] - mc[(i, 1)]).abs() < 0.03, "{i}");
    }
    assert!(la
        .predict(
            x.as_ref(),
            Link::MonteCarlo {
                samples: 0,
                seed: 0
            }
        )
        .is_err());
}

/// The function-space member (NK×NK, Woodbury) gives the weight-space full posterior's
/// numbers: evidence at any (δ, σ), `Σv`, covariance blocks, kernel, predictive; its exact
/// pathwise samples have mean w* and covariance Σ.
#[test]
fn the_function_space_member_equals_the_weight_space_one() {
    use dnn2gp::gp::FunctionSpace;
    let (model, split) = trained(0.8, 0.5);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let la = fit(model.clone(), &split, HessianStructure::Full);
    let fs = FunctionSpace::fit(model.clone(), x, y, u128::MAX).unwrap();
    assert_eq!(fs.structure(), HessianStructure::Full);
    for (d, s) in [
        (None, None),
        (Some(2.0), None),
        (Some(0.05), Some(1.7)),
        (None, Some(0.3)),
    ] {
        assert_relative_eq!(
            fs.log_marginal_likelihood(d, s).unwrap(),
            la.log_marginal_likelihood(d, s).unwrap(),
            max_relative = 1e-8
        );
    }
    let v: Vec<f64> = (0..model.w.len()).map(|i| (i as f64 * 0.7).sin()).collect();
    for (a, b) in fs.covariance_times(&v).iter().zip(la.covariance_times(&v)) {
        assert_relative_eq!(*a, b, epsilon = 1e-12, max_relative = 1e-8);
    }
    let xs = split.test.x.as_ref().subrows(0, 13);
    for (a, b) in fs
        .functional_variance(xs)
        .iter()
        .zip(la.functional_variance(xs))
    {
        assert_relative_eq!(*a, b, epsilon = 1e-12, max_relative = 1e-8);
    }
    let (kf, kl) = (
        fs.kernel(xs, x.subrows(0, 7)),
        la.kernel(xs, x.subrows(0, 7)),
    );
    for i in 0..kf.nrows() {
        for j in 0..kf.ncols() {
            assert_relative_eq!(kf[(i, j)], kl[(i, j)], epsilon = 1e-12, max_relative = 1e-8);
        }
    }
    let (pf, pl) = (
        fs.predict(xs, Link::Probit).unwrap(),
        la.predict(xs, Link::Probit).unwrap(),
    );
    assert_eq!(pf.mean, pl.mean);
    // Samples: mean and covariance within Monte Carlo error of w* and Σ.
    let n = 20_000;
    let draws = fs.sample(n, 11);
    assert_eq!(draws, fs.sample(n, 11));
    let cov = la.weight_posterior().covariance();
    let p = model.w.len();
    for i in [0, p / 2, p - 1] {
        let mean = draws.iter().map(|w| w[i]).sum::<f64>() / n as f64;
        let sd = cov[(i, i)].sqrt();
        assert!(
            (mean - model.w[i]).abs() < 5.0 * sd / (n as f64).sqrt(),
            "mean {i}"
        );
        let var = draws.iter().map(|w| (w[i] - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!(
            (var / cov[(i, i)] - 1.0).abs() < 0.05,
            "variance {i}: {var} vs {}",
            cov[(i, i)]
        );
    }
}

/// The memory pre-flight counts what a fit allocates: a small network's full posterior on 200
/// examples fits in 2 MiB (its Jacobian, three P×P matrices and a predictive's Jacobians of
/// 1,024 inputs), a LeNet-sized one's does not fit in 1 GiB, and the message names the estimate.
#[test]
fn the_memory_pre_flight_counts_what_a_fit_allocates() {
    use dnn2gp::posterior::Subset;
    let small = Sequential::mlp(vec![1, 32, 1], Activation::Tanh).unwrap();
    let fits = |net: &Sequential, limit: u128| {
        Laplace::check_memory(
            &net.clone().into(),
            200,
            HessianStructure::Full,
            Subset::All,
            limit,
        )
    };
    assert!(fits(&small, 2 << 20).is_ok());
    assert!(fits(&small, 200 << 10).is_err());
    let large = Sequential::mlp(vec![784, 50, 10], Activation::Relu).unwrap();
    let err = fits(&large, 1 << 30).unwrap_err();
    assert!(
        matches!(err, dnn2gp::Error::Memory { bytes, .. } if bytes > 1 << 30),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("GiB, above the memory limit of 1.00 GiB"),
        "{err}"
    );
}
