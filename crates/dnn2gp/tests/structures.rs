//! The posterior structures and subsets: KFAC (kron) equals the GGN where it is exact and its
//! factors equal their definitions on a batch (dense and conv layers, the conv cotangents by
//! finite differences); the KFAC precision's operations equal those of its dense matrix; the
//! last-layer posterior equals the full posterior of the last layer on frozen features; the
//! evidence's δ-gradient equals finite differences and its root is the optimum; the Laplace
//! bridge is laplace-torch's; save and load keep every number; same bytes on any thread count.

mod common;

use approx::assert_relative_eq;
use dnn2gp::curvature::{Backend, Linearization, Precision};
use dnn2gp::likelihood::classification::softmax;
use dnn2gp::likelihood::{curvature_root_rows, LikelihoodKind};
use dnn2gp::linalg::{a_b, a_bt};
use dnn2gp::nn::{Layer, Network, Sequential};
use dnn2gp::posterior::link::class_probabilities;
use dnn2gp::posterior::{
    FitOptions, HessianStructure, Laplace, Link, Posterior, PriorPrecision, Subset,
};
use dnn2gp::rng::{normals, seeded};
use dnn2gp::train::model::Model;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, MatRef, Side};

/// N inputs of D values and one-hot labels of K classes, from a seed.
fn data(n: usize, d: usize, k: usize, seed: u64) -> (Mat<f64>, Mat<f64>) {
    let mut rng = seeded(seed);
    let z = normals(&mut rng, n * d);
    let x = Mat::from_fn(n, d, |i, j| z[i * d + j]);
    let y = Mat::from_fn(n, k, |i, c| f64::from(u8::from((i * 7 + 3) % k == c)));
    (x, y)
}

/// A categorical model of `spec` at its seeded initialisation (scaled up so that the
/// curvature is not uniform).
fn model(spec: &str, delta: f64) -> Model {
    let net = Sequential::parse(spec).unwrap();
    let w: Vec<f64> = net.init(3).into_iter().map(|v| 1.5 * v).collect();
    Model::new(net, w, LikelihoodKind::Categorical, 1.0, delta).unwrap()
}

const MLP: &str = "4:dense5,tanh,dense3";
const CNN: &str = "1x6x6:conv2k3,tanh,pool,flatten,dense3";

fn fit(m: &Model, x: &Mat<f64>, y: &Mat<f64>, s: HessianStructure, sub: Subset) -> Laplace {
    Laplace::fit_subset(
        m.clone(),
        x.as_ref(),
        y.as_ref(),
        s,
        sub,
        &FitOptions::default(),
    )
    .unwrap()
}

/// The full GGN `Σ_i J_iᵀ Λ_i J_i` of `m` on `(x, y)`.
fn ggn(m: &Model, x: &Mat<f64>, y: &Mat<f64>) -> Mat<f64> {
    let lik = m.likelihood().unwrap();
    Linearization::new(&m.net, lik.as_ref(), x.as_ref(), y.as_ref(), &m.w).ggn()
}

fn block(m: &Mat<f64>, r: std::ops::Range<usize>, c: std::ops::Range<usize>) -> Mat<f64> {
    Mat::from_fn(r.len(), c.len(), |i, j| m[(r.start + i, c.start + j)])
}

/// The K×K blocks of a functional covariance (row-major, one per input) are the diagonal
/// blocks of the dense `J Σ Jᵀ` (NK × NK), each entry to `rel` (or `eps` near 0).
fn assert_blocks(blocks: &[f64], dense: &Mat<f64>, k: usize, rel: f64, eps: f64) {
    assert_eq!(blocks.len(), dense.nrows() * k);
    for e in 0..dense.nrows() / k {
        for r in 0..k {
            for c in 0..k {
                assert_relative_eq!(
                    blocks[(e * k + r) * k + c],
                    dense[(e * k + r, e * k + c)],
                    max_relative = rel,
                    epsilon = eps
                );
            }
        }
    }
}

fn assert_close(a: MatRef<'_, f64>, b: MatRef<'_, f64>, tol: f64) {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let scale = (0..b.nrows())
        .flat_map(|i| (0..b.ncols()).map(move |j| b[(i, j)].abs()))
        .fold(1e-300, f64::max);
    for i in 0..a.nrows() {
        for j in 0..a.ncols() {
            assert!(
                (a[(i, j)] - b[(i, j)]).abs() <= tol * scale,
                "({i}, {j}): {} vs {} (scale {scale})",
                a[(i, j)],
                b[(i, j)]
            );
        }
    }
}

/// For one example and one dense layer, `J = I_K ⊗ ãᵀ` and the GGN's weight block is
/// `Λ ⊗ a aᵀ` and its bias block `Λ`: KFAC's two blocks are exact (the weight–bias cross block
/// is what KFAC with weight and bias apart leaves out).
#[test]
fn kfac_equals_the_ggn_on_one_example_and_one_layer() {
    let m = model("4:dense3", 0.7);
    let (x, y) = data(1, 4, 3, 1);
    let h = ggn(&m, &x, &y);
    let la = fit(&m, &x, &y, HessianStructure::Kron, Subset::All);
    let mut a = la.weight_posterior().precision().dense();
    for i in 0..15 {
        a[(i, i)] -= 0.7;
    }
    assert_close(
        block(&a, 0..12, 0..12).as_ref(),
        block(&h, 0..12, 0..12).as_ref(),
        1e-12,
    );
    assert_close(
        block(&a, 12..15, 12..15).as_ref(),
        block(&h, 12..15, 12..15).as_ref(),
        1e-12,
    );
    assert!(block(&a, 0..12, 12..15).norm_max() < 1e-14);
    assert!(
        block(&h, 0..12, 12..15).norm_max() > 1e-3,
        "the test needs a cross block"
    );
}

/// The input of layer `upto` of `net` at `w` (the layers before it run forward).
fn layer_input(net: &Sequential, w: &[f64], x: &Mat<f64>, upto: usize) -> Mat<f64> {
    if upto == 0 {
        return x.clone();
    }
    let head = Sequential::new(net.layers()[..upto].to_vec()).unwrap();
    head.forward(&w[..head.n_params()], x.as_ref())
}

/// On a batch, each layer's factors are their definitions: `A = Σ_n a_n a_nᵀ / (N T)` from the
/// layer's inputs (a conv layer's patches), and `G = Σ_{n,c,t} g g ᵀ` from the curvature roots
/// backpropagated to the layer's outputs: for a dense layer the GGN's bias block; for a conv
/// layer per position, by central finite differences of the layers above.
#[test]
fn kfac_factors_are_their_definitions_on_a_batch() {
    for spec in [MLP, CNN] {
        let m = model(spec, 1.0);
        let (n, k) = (9, 3);
        let (x, y) = data(n, m.net.n_inputs(), k, 2);
        let lik = m.likelihood().unwrap();
        let sums = Backend::new(&m.net, lik.as_ref(), &m.w).kron(x.as_ref(), y.as_ref(), None);
        let h = ggn(&m, &x, &y);
        let roots = curvature_root_rows(
            lik.as_ref(),
            m.net.forward(&m.w, x.as_ref()).as_ref(),
            y.as_ref(),
        );
        let (mut offset, mut l) = (0, 0);
        for (idx, layer) in m.net.chain().unwrap().layers().iter().enumerate() {
            let p = layer.n_params();
            if p == 0 {
                continue;
            }
            let input = layer_input(m.net.chain().unwrap(), &m.w, &x, idx);
            let s = &sums[l];
            match *layer {
                Layer::Dense { inputs, outputs } => {
                    let a = dnn2gp::linalg::at_b(input.as_ref(), input.as_ref());
                    let a = Mat::from_fn(inputs, inputs, |i, j| a[(i, j)] / n as f64);
                    assert_close(s.a.as_ref(), a.as_ref(), 1e-12);
                    let b0 = offset + inputs * outputs;
                    assert_close(
                        s.g.as_ref(),
                        block(&h, b0..b0 + outputs, b0..b0 + outputs).as_ref(),
                        1e-10,
                    );
                }
                Layer::Conv2d {
                    in_channels: c,
                    out_channels: o,
                    kernel: kk,
                    height: hh,
                    width: ww,
                } => {
                    let (oh, ow) = (hh - kk + 1, ww - kk + 1);
                    let t = oh * ow;
                    let ckk = c * kk * kk;
                    // Patches: entry (ch, dy, dx) of position (py, px).
                    let mut a = Mat::<f64>::zeros(ckk, ckk);
                    for e in 0..n {
                        for py in 0..oh {
                            for px in 0..ow {
                                let patch: Vec<f64> = (0..ckk)
                                    .map(|r| {
                                        let (ch, dy, dx) = (r / (kk * kk), (r / kk) % kk, r % kk);
                                        input[(e, ch * hh * ww + (py + dy) * ww + px + dx)]
                                    })
                                    .collect();
                                for i in 0..ckk {
                                    for j in 0..ckk {
                                        a[(i, j)] += patch[i] * patch[j] / (n * t) as f64;
                                    }
                                }
                            }
                        }
                    }
                    assert_close(s.a.as_ref(), a.as_ref(), 1e-12);
                    // g_{e,c,t} = Σ_k R_e[c,k] ∂f_k/∂z_{o,t} through the layers above z.
                    let tail = Sequential::new(m.net.chain().unwrap().layers()[idx + 1..].to_vec())
                        .unwrap();
                    let wt = &m.w[offset + p..];
                    let z = {
                        let upto =
                            Sequential::new(m.net.chain().unwrap().layers()[..=idx].to_vec())
                                .unwrap();
                        upto.forward(&m.w[..offset + p], x.as_ref())
                    };
                    let mut g = Mat::<f64>::zeros(o, o);
                    let eps = 1e-5;
                    for e in 0..n {
                        // dfdz[(k, j)] for j = oc·T + t.
                        let dfdz = Mat::from_fn(k, o * t, |kk2, j| {
                            let shifted = |s: f64| {
                                let zz = Mat::from_fn(1, o * t, |_, q| {
                                    z[(e, q)] + if q == j { s } else { 0.0 }
                                });
                                tail.forward(wt, zz.as_ref())[(0, kk2)]
                            };
                            (shifted(eps) - shifted(-eps)) / (2.0 * eps)
                        });
                        for cc in 0..k {
                            for pos in 0..t {
                                let gv: Vec<f64> = (0..o)
                                    .map(|oc| {
                                        (0..k)
                                            .map(|q| {
                                                roots[(e * k + cc, q)] * dfdz[(q, oc * t + pos)]
                                            })
                                            .sum()
                                    })
                                    .collect();
                                for i in 0..o {
                                    for j in 0..o {
                                        g[(i, j)] += gv[i] * gv[j];
                                    }
                                }
                            }
                        }
                    }
                    assert_close(s.g.as_ref(), g.as_ref(), 1e-7);
                }
                _ => unreachable!("layers with parameters"),
            }
            offset += p;
            l += 1;
        }
        assert_eq!(l, sums.len());
    }
}

/// Every operation of the KFAC precision equals that of its dense matrix: `Σ = A⁻¹`, `Σv`,
/// `diag Σ`, `log|A|`, the kernel, the functional covariance (from Jacobian factors), samples,
/// and the evidence at another δ equals a fresh fit there.
#[test]
fn kfac_precision_operations_equal_the_dense_matrix() {
    for spec in [MLP, CNN] {
        let m = model(spec, 0.9);
        let (x, y) = data(12, m.net.n_inputs(), 3, 4);
        let la = fit(&m, &x, &y, HessianStructure::Kron, Subset::All);
        let post = la.weight_posterior();
        let p = m.net.n_params();
        let a = post.precision().dense();
        let sigma = post.covariance();
        assert_close(
            a_b(a.as_ref(), sigma.as_ref()).as_ref(),
            Mat::<f64>::identity(p, p).as_ref(),
            1e-10,
        );
        let v: Vec<f64> = (0..p).map(|i| (i as f64 * 0.37).sin()).collect();
        let sv = la.covariance_times(&v);
        for i in 0..p {
            let d: f64 = (0..p).map(|j| sigma[(i, j)] * v[j]).sum();
            assert_relative_eq!(sv[i], d, max_relative = 1e-10, epsilon = 1e-14);
            assert_relative_eq!(post.variances()[i], sigma[(i, i)], max_relative = 1e-10);
        }
        let chol = a.as_ref().llt(Side::Lower).unwrap();
        let l = chol.L();
        let logdet: f64 = (0..p).map(|i| 2.0 * l[(i, i)].ln()).sum();
        assert_relative_eq!(post.log_det_precision(), logdet, max_relative = 1e-10);
        // Kernel and functional covariance against J Σ Jᵀ.
        let (xs, _) = data(5, m.net.n_inputs(), 3, 5);
        let j = m.net.jacobian(&m.w, xs.as_ref());
        let jsj = a_bt(a_b(j.as_ref(), sigma.as_ref()).as_ref(), j.as_ref());
        assert_close(
            la.kernel(xs.as_ref(), xs.as_ref()).as_ref(),
            jsj.as_ref(),
            1e-9,
        );
        assert_blocks(&la.functional_covariance(xs.as_ref()), &jsj, 3, 1e-9, 1e-13);
        // Samples: mean w*, covariance Σ (Monte Carlo, 20,000 draws).
        let draws = la.sample(20_000, 7);
        let mut cov = Mat::<f64>::zeros(p, p);
        for d in &draws {
            for i in 0..p {
                for jj in 0..p {
                    cov[(i, jj)] += (d[i] - m.w[i]) * (d[jj] - m.w[jj]) / draws.len() as f64;
                }
            }
        }
        let worst = (0..p)
            .flat_map(|i| (0..p).map(move |jj| (i, jj)))
            .map(|(i, jj)| {
                (cov[(i, jj)] - sigma[(i, jj)]).abs() / (sigma[(i, i)] * sigma[(jj, jj)]).sqrt()
            })
            .fold(0.0, f64::max);
        assert!(worst < 0.05, "sample correlation error {worst}");
        // The evidence at another δ from one fit equals a fresh fit there.
        let mut m2 = m.clone();
        m2.delta = 2.5;
        let fresh = fit(&m2, &x, &y, HessianStructure::Kron, Subset::All);
        assert_relative_eq!(
            la.log_marginal_likelihood(Some(2.5), None).unwrap(),
            fresh.log_marginal_likelihood(None, None).unwrap(),
            max_relative = 1e-12
        );
    }
}

/// The last-layer posterior is the full posterior of the last layer alone on the features of
/// the layers below, held fixed: the same evidence, functional covariance, kernel and samples,
/// for every structure.
#[test]
fn last_layer_equals_the_posterior_of_the_head_on_frozen_features() {
    let m = model("4:dense6,tanh,dense5,tanh,dense3", 0.8);
    let (x, y) = data(15, 4, 3, 6);
    let (xs, _) = data(4, 4, 3, 8);
    let layers = m.net.chain().unwrap().layers();
    let body = Sequential::new(layers[..4].to_vec()).unwrap();
    let head = Sequential::new(layers[4..].to_vec()).unwrap();
    let split = body.n_params();
    let phi = body.forward(&m.w[..split], x.as_ref());
    let phis = body.forward(&m.w[..split], xs.as_ref());
    let head_model = Model::new(
        head,
        m.w[split..].to_vec(),
        LikelihoodKind::Categorical,
        1.0,
        0.8,
    )
    .unwrap();
    for s in [
        HessianStructure::Full,
        HessianStructure::Diag,
        HessianStructure::Kron,
    ] {
        let ll = fit(&m, &x, &y, s, Subset::LastLayer);
        let alone = fit(&head_model, &phi, &y, s, Subset::All);
        assert_eq!(ll.subset(), Subset::LastLayer);
        assert_relative_eq!(
            ll.log_marginal_likelihood(None, None).unwrap(),
            alone.log_marginal_likelihood(None, None).unwrap(),
            max_relative = 1e-12
        );
        let (a, b) = (
            ll.functional_covariance(xs.as_ref()),
            alone.functional_covariance(phis.as_ref()),
        );
        for (a, b) in a.iter().zip(&b) {
            assert_relative_eq!(a, b, max_relative = 1e-10, epsilon = 1e-14);
        }
        assert_close(
            ll.kernel(xs.as_ref(), x.as_ref()).as_ref(),
            alone.kernel(phis.as_ref(), phi.as_ref()).as_ref(),
            1e-10,
        );
        let (sa, sb) = (ll.sample(3, 9), alone.sample(3, 9));
        for (da, db) in sa.iter().zip(&sb) {
            assert_eq!(&da[..split], &m.w[..split]);
            for (a, b) in da[split..].iter().zip(db) {
                assert_relative_eq!(a, b, max_relative = 1e-10, epsilon = 1e-13);
            }
        }
    }
    // The last layer of the KFAC fit over all weights is the last-layer KFAC fit.
    let all = fit(&m, &x, &y, HessianStructure::Kron, Subset::All);
    let ll = fit(&m, &x, &y, HessianStructure::Kron, Subset::LastLayer);
    let (pa, pl) = (
        all.weight_posterior().variances(),
        ll.weight_posterior().variances(),
    );
    for (a, b) in pa[split..].iter().zip(&pl) {
        assert_relative_eq!(a, b, max_relative = 1e-10);
    }
}

/// `∂ log p(D)/∂ log δ` equals central differences of the evidence, for every structure; its
/// root is a maximum, where the posterior is refitted.
#[test]
fn the_evidence_gradient_matches_finite_differences_and_its_root_is_the_optimum() {
    let m = model(CNN, 1.0);
    let (x, y) = data(20, 36, 3, 9);
    for s in [
        HessianStructure::Full,
        HessianStructure::Diag,
        HessianStructure::Kron,
    ] {
        for sub in [Subset::All, Subset::LastLayer] {
            let mut la = fit(&m, &x, &y, s, sub);
            for delta in [0.05, 0.7, 12.0] {
                let e = |t: f64| {
                    la.log_marginal_likelihood(Some(delta * t.exp()), None)
                        .unwrap()
                };
                let fd = (e(1e-5) - e(-1e-5)) / 2e-5;
                let g = la.log_marginal_likelihood_gradient(delta).unwrap();
                assert_relative_eq!(g, fd, max_relative = 1e-6, epsilon = 1e-7);
            }
            let best = la.optimize_prior_precision().unwrap();
            assert!(
                best.gradient.abs() < 1e-8,
                "{s} {sub}: gradient {}",
                best.gradient
            );
            assert_eq!(la.model().delta, best.delta);
            let at = |d: f64| la.log_marginal_likelihood(Some(d), None).unwrap();
            assert!(
                at(best.delta) >= at(best.delta * 1.01) && at(best.delta) >= at(best.delta / 1.01)
            );
            assert_relative_eq!(
                la.log_marginal_likelihood(None, None).unwrap(),
                best.log_marglik,
                max_relative = 1e-12
            );
        }
    }
}

/// A prior precision per parameter tensor: the precision is the fitted one plus
/// `diag(δ_g)` (full, diag, KFAC; all weights and the last layer); the evidence at it equals the
/// refitted posterior's and, with one δ everywhere, the scalar evidence; its gradient equals
/// central differences; the optimum has zero gradient, is a maximum in every δ_g, beats the
/// scalar optimum and survives save and load; a low-rank posterior refuses it.
#[test]
fn a_prior_per_layer_is_the_evidence_maximum_of_each_tensor() {
    let m = model(CNN, 1.0);
    let (x, y) = data(20, 36, 3, 9);
    let dir = common::tmpdir();
    for s in [
        HessianStructure::Full,
        HessianStructure::Diag,
        HessianStructure::Kron,
    ] {
        for sub in [Subset::All, Subset::LastLayer] {
            let mut la = fit(&m, &x, &y, s, sub);
            let tensors = la.prior_tensors();
            assert_eq!(tensors.len(), if sub == Subset::All { 4 } else { 2 });
            assert_eq!(tensors.last().unwrap().0, "4.bias");
            let d: Vec<f64> = (0..tensors.len())
                .map(|g| 0.3 * 2.5f64.powi(g as i32))
                .collect();
            let prior = PriorPrecision::Layerwise(d.clone());
            let before = la.weight_posterior().precision().dense();
            let evidence = la.log_marginal_likelihood_at(&prior, None).unwrap();
            // One δ everywhere is the scalar prior.
            let same = PriorPrecision::Layerwise(vec![0.7; tensors.len()]);
            assert_relative_eq!(
                la.log_marginal_likelihood_at(&same, None).unwrap(),
                la.log_marginal_likelihood(Some(0.7), None).unwrap(),
                max_relative = 1e-12
            );
            la.set_prior(prior.clone()).unwrap();
            assert_relative_eq!(
                la.log_marginal_likelihood(None, None).unwrap(),
                evidence,
                max_relative = 1e-11
            );
            let after = la.weight_posterior().precision().dense();
            let mut at = 0;
            for ((_, len), dg) in tensors.iter().zip(&d) {
                for i in at..at + len {
                    for j in 0..after.ncols() {
                        let shift = if i == j { dg - 1.0 } else { 0.0 };
                        assert!(
                            (after[(i, j)] - before[(i, j)] - shift).abs() < 1e-10,
                            "{s} {sub}: A[{i},{j}]"
                        );
                    }
                }
                at += len;
            }
            let grad = la.log_marginal_likelihood_gradient_layerwise(&d).unwrap();
            for g in 0..d.len() {
                let e = |t: f64| {
                    let mut dt = d.clone();
                    dt[g] *= t.exp();
                    let p = PriorPrecision::Layerwise(dt);
                    la.log_marginal_likelihood_at(&p, None).unwrap()
                };
                let fd = (e(1e-5) - e(-1e-5)) / 2e-5;
                assert_relative_eq!(grad[g], fd, max_relative = 1e-6, epsilon = 1e-7);
            }
            let scalar = la.clone().optimize_prior_precision().unwrap();
            let best = la.optimize_prior_precision_layerwise().unwrap();
            assert_eq!(best.deltas.len(), tensors.len());
            assert_eq!(
                la.prior_precision(),
                &PriorPrecision::Layerwise(best.deltas.clone())
            );
            for (g, grad) in best.gradient.iter().enumerate() {
                assert!(grad.abs() < 1e-8, "{s} {sub}: gradient {g} is {grad}");
                for f in [1.01, 1.0 / 1.01] {
                    let mut dt = best.deltas.clone();
                    dt[g] *= f;
                    let p = PriorPrecision::Layerwise(dt);
                    assert!(la.log_marginal_likelihood_at(&p, None).unwrap() <= best.log_marglik);
                }
            }
            assert!(best.log_marglik >= scalar.log_marglik - 1e-9);
            let path = dir.path().join(format!("layerwise-{s}-{sub}.safetensors"));
            la.save(&path).unwrap();
            let back = Laplace::load(&path).unwrap();
            assert_eq!(back.prior_precision(), la.prior_precision());
            assert_eq!(
                back.log_marginal_likelihood(None, None).unwrap(),
                best.log_marglik
            );
        }
    }
    let mut low = Laplace::fit(
        m.clone(),
        x.as_ref(),
        y.as_ref(),
        HessianStructure::LowRank,
        &FitOptions {
            rank: 3,
            ..FitOptions::default()
        },
    )
    .unwrap();
    let err = low
        .optimize_prior_precision_layerwise()
        .unwrap_err()
        .to_string();
    assert!(err.contains("low-rank"), "{err}");
}

/// The Laplace bridge equals laplace-torch's `link_approx="bridge"` (values from laplace-torch
/// 0.3's formula in float64), and the links give distributions.
#[test]
fn the_bridge_is_laplace_torchs() {
    let f = Mat::from_fn(1, 3, |_, c| [0.3, -1.2, 2.0][c]);
    let cov = vec![0.5, 0.1, 0.0, 0.1, 0.8, -0.2, 0.0, -0.2, 0.3];
    let p = class_probabilities(&f, &cov, Link::Bridge).unwrap();
    let peer = [0.1664665845658077, 0.04237630114429552, 0.7911571142898968];
    for c in 0..3 {
        assert_relative_eq!(p[(0, c)], peer[c], max_relative = 1e-12);
    }
    // No variance: the bridge is undefined and the softmax of the mean is returned.
    let p0 = class_probabilities(&f, &[0.0; 9], Link::Bridge).unwrap();
    let sm = softmax(&[0.3, -1.2, 2.0]);
    (0..3).for_each(|c| assert_relative_eq!(p0[(0, c)], sm[c], max_relative = 1e-15));
    // One logit has no bridge.
    assert!(class_probabilities(&Mat::zeros(1, 1), &[1.0], Link::Bridge).is_err());
    // bridge_norm: laplace-torch 0.3's variance normalisation, same values.
    let p = class_probabilities(&f, &cov, Link::BridgeNorm).unwrap();
    let peer = [
        0.023419088778850978,
        0.0020397522097757716,
        0.9745411590113732,
    ];
    for c in 0..3 {
        assert_relative_eq!(p[(0, c)], peer[c], max_relative = 1e-12);
    }
}

/// A regression model of `spec` on `n` seeded inputs with targets of noise 0.3, fitted in
/// `structure` over all weights at σ = 0.8, δ = 1.3.
fn regression(spec: &str, structure: HessianStructure) -> (Laplace, Mat<f64>) {
    let net = Sequential::parse(spec).unwrap();
    let d = net.n_inputs();
    let (x, _) = data(30, d, 1, 4);
    let w: Vec<f64> = net.init(5).into_iter().map(|v| 1.3 * v).collect();
    let f = dnn2gp::nn::predict(&net, &w, x.as_ref());
    let z = normals(&mut seeded(6), 30);
    let y = Mat::from_fn(30, 1, |i, _| f[(i, 0)].sin() + 0.3 * z[i]);
    let m = Model::new(net, w, LikelihoodKind::Gaussian, 0.8, 1.3).unwrap();
    let la = Laplace::fit(m, x.as_ref(), y.as_ref(), structure, &FitOptions::default()).unwrap();
    (la, x)
}

/// The evidence at a temperature T is laplace-torch's: `log p(D|θ*)/T` for the data fit (the
/// Gaussian's normaliser not divided), `−½ log|H/T + D|/|D|` and the scatter; the precision is
/// `H/T + D`; and `log_likelihood − ½(log_det_ratio + scatter)` is the evidence.
#[test]
fn a_temperature_divides_the_curvature_and_the_data_fit() {
    let (mut la, _) = regression("2:dense4,tanh,dense1", HessianStructure::Full);
    let p = la.weight_posterior().mean.len();
    let h = {
        let (_, mut a) = la.posterior_precision().unwrap();
        (0..p).for_each(|i| a[i * p + i] -= 1.3);
        a
    };
    let (sse_fit, nk) = (la.data_terms().sse, la.data_terms().nk as f64);
    let d = PriorPrecision::Layerwise(vec![0.4, 2.0, 1.1, 0.7]);
    la.set_prior(d.clone()).unwrap();
    la.set_temperature(0.6).unwrap();
    let per_parameter: Vec<f64> = la
        .prior_tensors()
        .iter()
        .zip([0.4, 2.0, 1.1, 0.7])
        .flat_map(|((_, len), d)| std::iter::repeat_n(d, *len))
        .collect();
    let want = Mat::from_fn(p, p, |i, j| {
        h[i * p + j] / 0.6 + if i == j { per_parameter[i] } else { 0.0 }
    });
    let (_, got) = la.posterior_precision().unwrap();
    (0..p * p).for_each(|i| {
        assert_relative_eq!(
            got[i],
            want[(i / p, i % p)],
            max_relative = 1e-13,
            epsilon = 1e-13
        )
    });
    let log_det = want
        .llt(Side::Lower)
        .unwrap()
        .L()
        .diagonal()
        .column_vector()
        .iter()
        .map(|v| 2.0 * v.ln())
        .sum::<f64>();
    let log_det_prior: f64 = per_parameter.iter().map(|d| d.ln()).sum();
    assert_relative_eq!(
        la.log_det_ratio().unwrap(),
        log_det - log_det_prior,
        max_relative = 1e-12
    );
    let ll = -sse_fit / (2.0 * 0.64 * 0.6) - 0.5 * nk * (std::f64::consts::TAU * 0.64).ln();
    assert_relative_eq!(la.log_likelihood().unwrap(), ll, max_relative = 1e-12);
    let w = &la.weight_posterior().mean;
    let scatter: f64 = w.iter().zip(&per_parameter).map(|(w, d)| d * w * w).sum();
    assert_relative_eq!(la.scatter().unwrap(), scatter, max_relative = 1e-12);
    let evidence = la.log_marginal_likelihood(None, None).unwrap();
    assert_relative_eq!(
        evidence,
        ll - 0.5 * (log_det - log_det_prior + scatter),
        max_relative = 1e-12
    );
    // The file keeps the temperature.
    let dir = common::tmpdir();
    let path = dir.path().join("tempered.safetensors");
    la.save(&path).unwrap();
    let back = Laplace::load(&path).unwrap();
    assert_eq!(back.temperature(), 0.6);
    assert_eq!(back.log_marginal_likelihood(None, None).unwrap(), evidence);
    // Back at T = 1: the fitted numbers again; σ set keeps the prior per tensor.
    la.set_temperature(1.0).unwrap();
    la.set_sigma_noise(0.5).unwrap();
    assert_eq!(la.prior_precision(), &d);
    assert!(la.set_temperature(0.0).is_err() && la.set_temperature(f64::NAN).is_err());
}

/// The evidence's gradient in log δ_g and log σ at a prior and σ not fitted (no refit) equals
/// finite differences of the evidence, for one δ and one per tensor, in every structure
/// (full: from a new factor; diag and KFAC: from H's eigenvalues), at a temperature.
#[test]
fn the_evidence_gradient_in_the_prior_and_sigma_is_its_finite_difference() {
    for s in [
        HessianStructure::Full,
        HessianStructure::Diag,
        HessianStructure::Kron,
    ] {
        let (mut la, _) = regression("2:dense4,tanh,dense3,tanh,dense1", s);
        la.set_temperature(1.7).unwrap();
        for prior in [
            PriorPrecision::Scalar(0.6),
            PriorPrecision::Layerwise(vec![0.3, 2.0, 1.1, 0.7, 4.0, 0.2]),
        ] {
            let sigma = 0.45;
            let (g_prior, g_sigma) = la
                .log_marginal_likelihood_gradients(&prior, Some(sigma))
                .unwrap();
            let e = |p: &PriorPrecision, s: f64| la.log_marginal_likelihood_at(p, Some(s)).unwrap();
            let h: f64 = 1e-5;
            let fd = (e(&prior, sigma * h.exp()) - e(&prior, sigma * (-h).exp())) / (2.0 * h);
            assert_relative_eq!(g_sigma.unwrap(), fd, max_relative = 1e-6);
            let d = match &prior {
                PriorPrecision::Scalar(d) => vec![*d],
                PriorPrecision::Layerwise(d) => d.clone(),
            };
            for g in 0..d.len() {
                let at = |t: f64| {
                    let mut v = d.clone();
                    v[g] *= t.exp();
                    match prior {
                        PriorPrecision::Scalar(_) => PriorPrecision::Scalar(v[0]),
                        PriorPrecision::Layerwise(_) => PriorPrecision::Layerwise(v),
                    }
                };
                let fd = (e(&at(h), sigma) - e(&at(-h), sigma)) / (2.0 * h);
                assert_relative_eq!(g_prior[g], fd, max_relative = 1e-6, epsilon = 1e-8);
            }
        }
    }
}

/// The samples of the outputs: the GLM's have the predictive's mean and covariance, the
/// network's at a prior so tight that Σ ≈ 0 are its outputs; the network's predictive averages
/// their softmax; the same seed gives the same bytes.
#[test]
fn functional_samples_have_the_predictives_moments() {
    use dnn2gp::posterior::PredType;
    let m = model(MLP, 1.0);
    let (x, y) = data(25, 4, 3, 2);
    let la = fit(&m, &x, &y, HessianStructure::Full, Subset::All);
    let xs = x.subrows(0, 3);
    let pred = la.predict(xs, Link::Probit).unwrap();
    let n = 20_000;
    let draws = la.functional_samples(xs, PredType::Glm, n, 7).unwrap();
    assert_eq!(
        draws,
        la.functional_samples(xs, PredType::Glm, n, 7).unwrap()
    );
    for i in 0..3 {
        for a in 0..3 {
            let mean = draws.iter().map(|d| d[(i, a)]).sum::<f64>() / n as f64;
            let sd = pred.covariance[i * 9 + a * 4].sqrt();
            assert!((mean - pred.mean[(i, a)]).abs() < 5.0 * sd / (n as f64).sqrt());
            for b in 0..3 {
                let cov = draws
                    .iter()
                    .map(|d| (d[(i, a)] - pred.mean[(i, a)]) * (d[(i, b)] - pred.mean[(i, b)]))
                    .sum::<f64>()
                    / n as f64;
                assert!((cov - pred.covariance[i * 9 + a * 3 + b]).abs() < 0.05 * sd * sd + 1e-12);
            }
        }
    }
    let mut tight = la.clone();
    tight.set_prior_precision(1e12).unwrap();
    let nn = tight.predict_nn(xs, 50, 3).unwrap();
    let f = dnn2gp::nn::predict(&m.net, &m.w, xs);
    let p = nn.probabilities.unwrap();
    for i in 0..3 {
        let sm = softmax(&[f[(i, 0)], f[(i, 1)], f[(i, 2)]]);
        (0..3).for_each(|c| assert_relative_eq!(p[(i, c)], sm[c], max_relative = 1e-5));
    }
    assert!(la.predict_nn(xs, 1, 0).is_err());
    // At the last layer's features (computed once, for a grid of priors): the predictive at
    // the inputs, to the bit; a posterior over all weights has no such features.
    let m = model(CNN, 1.0);
    let (x, y) = data(25, 36, 3, 2);
    let mut ll = fit(&m, &x, &y, HessianStructure::Kron, Subset::LastLayer);
    let phi = ll.last_layer_features(x.as_ref()).unwrap();
    for d in [0.3, 4.0] {
        ll.set_prior_precision(d).unwrap();
        let at = ll.predict_at_features(phi.as_ref(), Link::Probit).unwrap();
        let want = ll.predict(x.as_ref(), Link::Probit).unwrap();
        assert_eq!(at.probabilities, want.probabilities);
        assert_eq!(at.covariance, want.covariance);
    }
    assert!(la.last_layer_features(x.as_ref()).is_err());
    // A last-layer posterior runs the last layer per draw on features computed once: the
    // whole network at the same draws gives the same outputs.
    let m = model(CNN, 1.0);
    let (x, y) = data(25, 36, 3, 2);
    for s in [HessianStructure::Kron, HessianStructure::Full] {
        let ll = fit(&m, &x, &y, s, Subset::LastLayer);
        let xs = x.subrows(0, 5);
        let fast = ll.functional_samples(xs, PredType::Nn, 4, 9).unwrap();
        for (w, f) in ll.sample(4, 9).iter().zip(&fast) {
            let whole = dnn2gp::nn::predict(&m.net, w, xs);
            for i in 0..5 {
                for c in 0..3 {
                    assert_relative_eq!(
                        f[(i, c)],
                        whole[(i, c)],
                        max_relative = 1e-12,
                        epsilon = 1e-14
                    );
                }
            }
        }
    }
}

/// A saved KFAC or last-layer posterior loads to the same numbers.
#[test]
fn kron_and_last_layer_posteriors_save_and_load() {
    let dir = common::tmpdir();
    let m = model(CNN, 0.6);
    let (x, y) = data(10, 36, 3, 10);
    let (xs, _) = data(3, 36, 3, 11);
    for (s, sub) in [
        (HessianStructure::Kron, Subset::All),
        (HessianStructure::Kron, Subset::LastLayer),
        (HessianStructure::Full, Subset::LastLayer),
        (HessianStructure::Diag, Subset::LastLayer),
    ] {
        let la = fit(&m, &x, &y, s, sub);
        let path = dir.path().join(format!("{s}-{sub}.safetensors"));
        la.save(&path).unwrap();
        let back = Laplace::load(&path).unwrap();
        assert_eq!((back.structure(), back.subset()), (s, sub));
        for d in [None, Some(3.0)] {
            assert_eq!(
                back.log_marginal_likelihood(d, None).unwrap(),
                la.log_marginal_likelihood(d, None).unwrap()
            );
        }
        assert_eq!(
            back.functional_covariance(xs.as_ref()),
            la.functional_covariance(xs.as_ref())
        );
    }
}

/// The KFAC fit and its predictive give the same bytes on one thread and on several.
#[test]
fn kfac_is_the_same_on_any_thread_count() {
    let m = model(CNN, 0.5);
    let (x, y) = data(700, 36, 3, 12);
    let run = || {
        let la = fit(&m, &x, &y, HessianStructure::Kron, Subset::All);
        let Precision::Kron(k) = la.weight_posterior().precision() else {
            panic!("kron")
        };
        (k.ggn_eigenvalues(), la.functional_covariance(x.as_ref()))
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(run);
    assert_eq!(one, three);
}

/// The GGN–matrix product streamed over chunks equals `H M` of the dense GGN; a low-rank
/// posterior with rank P is the full posterior (evidence at any δ, functional covariance,
/// variances), and with a smaller rank its eigenvalues are H's largest.
#[test]
fn low_rank_with_every_eigenpair_is_the_full_posterior() {
    let m = model(CNN, 0.9);
    let (x, y) = data(150, 36, 3, 13);
    let (xs, _) = data(4, 36, 3, 14);
    let h = ggn(&m, &x, &y);
    let p = m.net.n_params();
    let mm = Mat::from_fn(p, 3, |i, j| ((i * 3 + j * 7) % 5) as f64 - 2.0);
    let lik = m.likelihood().unwrap();
    let hm = Backend::new(&m.net, lik.as_ref(), &m.w).times(x.as_ref(), y.as_ref(), mm.as_ref());
    assert_close(hm.as_ref(), a_b(h.as_ref(), mm.as_ref()).as_ref(), 1e-11);
    let fit_rank = |rank| {
        let opts = FitOptions {
            rank,
            ..FitOptions::default()
        };
        Laplace::fit_subset(
            m.clone(),
            x.as_ref(),
            y.as_ref(),
            HessianStructure::LowRank,
            Subset::All,
            &opts,
        )
        .unwrap()
    };
    let low = fit_rank(p);
    let full = fit(&m, &x, &y, HessianStructure::Full, Subset::All);
    for d in [None, Some(0.1), Some(4.0)] {
        assert_relative_eq!(
            low.log_marginal_likelihood(d, None).unwrap(),
            full.log_marginal_likelihood(d, None).unwrap(),
            max_relative = 1e-9
        );
    }
    for (a, b) in low
        .functional_covariance(xs.as_ref())
        .iter()
        .zip(&full.functional_covariance(xs.as_ref()))
    {
        assert_relative_eq!(a, b, max_relative = 1e-8, epsilon = 1e-13);
    }
    let (vl, vf) = (
        low.weight_posterior().variances(),
        full.weight_posterior().variances(),
    );
    for (a, b) in vl.iter().zip(&vf) {
        assert_relative_eq!(a, b, max_relative = 1e-8);
    }
    // Rank 5: the five largest eigenvalues of H, from below (Rayleigh–Ritz values), within
    // the subspace iteration's accuracy on this spectrum (λ₅ = 13.7 next to λ₆ = 13.0).
    let top = fit_rank(5);
    let Precision::LowRank(l) = top.weight_posterior().precision() else {
        panic!("lowrank")
    };
    let mut eig: Vec<f64> = h.as_ref().self_adjoint_eigenvalues(Side::Lower).unwrap();
    eig.sort_by(|a, b| b.total_cmp(a));
    for (a, b) in l.s.iter().zip(&eig[..5]) {
        assert!(
            *a <= b * (1.0 + 1e-12) && *a >= b * (1.0 - 2e-3),
            "{a} vs {b}"
        );
    }
    assert_relative_eq!(l.s[0], eig[0], max_relative = 1e-9);
    // Saved and loaded.
    let dir = common::tmpdir();
    let path = dir.path().join("lowrank.safetensors");
    top.save(&path).unwrap();
    let back = Laplace::load(&path).unwrap();
    assert_eq!(
        back.functional_covariance(xs.as_ref()),
        top.functional_covariance(xs.as_ref())
    );
    assert_eq!(
        back.log_marginal_likelihood(Some(2.0), None).unwrap(),
        top.log_marginal_likelihood(Some(2.0), None).unwrap()
    );
}

/// Regression: the noise and prior by the evidence are a stationary maximum over (δ, σ), and
/// the refitted posterior equals a fresh fit of the model at (δ*, σ*), for every structure.
#[test]
fn the_noise_and_prior_by_the_evidence_are_its_maximum_and_refit_the_posterior() {
    let net = Sequential::mlp(vec![2, 6, 1], dnn2gp::nn::Activation::Tanh).unwrap();
    let (x, _) = data(40, 2, 1, 15);
    let y = Mat::from_fn(40, 1, |i, _| (x[(i, 0)] * 1.3).sin() + 0.3 * x[(i, 1)]);
    let w: Vec<f64> = net.init(4).into_iter().map(|v| 2.0 * v).collect();
    let m = Model::new(net, w, LikelihoodKind::Gaussian, 0.5, 1.0).unwrap();
    for s in [
        HessianStructure::Full,
        HessianStructure::Diag,
        HessianStructure::Kron,
    ] {
        let start = fit(&m, &x, &y, s, Subset::All);
        let mut la = start.clone();
        let best = la.optimize_noise_and_prior().unwrap();
        assert_eq!(
            (la.model().delta, la.model().sigma),
            (best.delta, best.sigma)
        );
        let at = |d: f64, sg: f64| start.log_marginal_likelihood(Some(d), Some(sg)).unwrap();
        let top = at(best.delta, best.sigma);
        assert_relative_eq!(top, best.log_marglik, max_relative = 1e-10);
        for (fd, fs) in [
            (1.01, 1.0),
            (0.99, 1.0),
            (1.0, 1.01),
            (1.0, 0.99),
            (1.01, 1.01),
        ] {
            assert!(
                top > at(best.delta * fd, best.sigma * fs),
                "{s}: not a maximum"
            );
        }
        let mut m2 = m.clone();
        (m2.delta, m2.sigma) = (best.delta, best.sigma);
        let fresh = fit(&m2, &x, &y, s, Subset::All);
        assert_relative_eq!(
            la.log_marginal_likelihood(None, None).unwrap(),
            fresh.log_marginal_likelihood(None, None).unwrap(),
            max_relative = 1e-10
        );
        for (a, b) in la
            .functional_variance(x.as_ref())
            .iter()
            .zip(&fresh.functional_variance(x.as_ref()))
        {
            assert_relative_eq!(a, b, max_relative = 1e-9);
        }
    }
    // Not for classification.
    let mut la = fit(
        &model(MLP, 1.0),
        &data(9, 4, 3, 1).0,
        &data(9, 4, 3, 1).1,
        HessianStructure::Diag,
        Subset::All,
    );
    assert!(la.optimize_noise_and_prior().is_err());
}

/// The independent-output function-space GP: for one Bernoulli logit it is the full
/// Laplace-GGN posterior (functional variance and evidence); for K classes output c's
/// variance is that of the weight-space posterior of output c alone,
/// `Σ_i J_icᵀ Λ_i,cc J_ic + δI`; its δ by the evidence is a stationary maximum.
#[test]
fn the_independent_output_gp_is_the_laplace_posterior_of_its_ggn() {
    use dnn2gp::gp::{FunctionalGp, Outputs::Independent};
    // One logit: exact.
    let net = Sequential::parse("1x6x6:conv2k3,tanh,pool,flatten,dense1").unwrap();
    let w: Vec<f64> = net.init(5).into_iter().map(|v| 1.5 * v).collect();
    let m = Model::new(net, w, LikelihoodKind::Bernoulli, 1.0, 0.7).unwrap();
    let (x, _) = data(25, 36, 1, 16);
    let y = Mat::from_fn(25, 1, |i, _| f64::from(u8::from(i % 3 == 0)));
    let (xs, _) = data(6, 36, 1, 17);
    let gp = FunctionalGp::fit(m.clone(), x.as_ref(), y.as_ref(), Independent, u128::MAX).unwrap();
    let full = fit(&m, &x, &y, HessianStructure::Full, Subset::All);
    let (a, b) = (
        gp.functional_variance(xs.as_ref()),
        full.functional_variance(xs.as_ref()),
    );
    for i in 0..6 {
        assert_relative_eq!(a[(i, 0)], b[i], max_relative = 1e-9);
    }
    assert_relative_eq!(
        gp.log_marginal_likelihood(),
        full.log_marginal_likelihood(None, None).unwrap(),
        max_relative = 1e-10
    );
    // K classes: output c's variance is that of the weight-space posterior of output c
    // alone, `A_c = Σ_i J_icᵀ Λ_i,cc J_ic + δI`.
    let m = model(CNN, 0.8);
    let (x, y) = data(20, 36, 3, 18);
    let mut gp =
        FunctionalGp::fit(m.clone(), x.as_ref(), y.as_ref(), Independent, u128::MAX).unwrap();
    let j = m.net.jacobian(&m.w, x.as_ref());
    let f = m.net.forward(&m.w, x.as_ref());
    let p = m.net.n_params();
    let js = m.net.jacobian(&m.w, xs.as_ref());
    let fv = gp.functional_variance(xs.as_ref());
    for c in 0..3 {
        let mut a = Mat::<f64>::identity(p, p) * faer::Scale(0.8);
        for e in 0..20 {
            let pr = softmax(&[f[(e, 0)], f[(e, 1)], f[(e, 2)]]);
            let row = j.as_ref().subrows(e * 3 + c, 1);
            a += dnn2gp::linalg::at_b(row, row) * faer::Scale(pr[c] * (1.0 - pr[c]));
        }
        let sigma = a.as_ref().llt(Side::Lower).unwrap().inverse();
        for e in 0..6 {
            let row = js.as_ref().subrows(e * 3 + c, 1);
            let want = (row * &sigma * row.transpose())[(0, 0)];
            assert_relative_eq!(fv[(e, c)], want, max_relative = 1e-8);
        }
    }
    let d = gp.optimize_prior_precision().unwrap();
    let at = |delta: f64| {
        let mut m2 = m.clone();
        m2.delta = delta;
        FunctionalGp::fit(m2, x.as_ref(), y.as_ref(), Independent, u128::MAX)
            .unwrap()
            .log_marginal_likelihood()
    };
    assert_relative_eq!(gp.log_marginal_likelihood(), at(d), max_relative = 1e-12);
    assert!(at(d) > at(d * 1.01) && at(d) > at(d / 1.01));
}

/// With the full K×K coupling the function-space GP on m points is the Laplace-GGN posterior
/// on them: the same K×K functional covariances, evidence and δ by the evidence.
#[test]
fn the_coupled_gp_is_the_full_laplace_posterior() {
    use dnn2gp::gp::{FunctionalGp, Outputs};
    let m = model(CNN, 0.8);
    let (x, y) = data(20, 36, 3, 18);
    let (xs, _) = data(300, 36, 3, 19); // two blocks of the coupled predictive
    let mut gp = FunctionalGp::fit(
        m.clone(),
        x.as_ref(),
        y.as_ref(),
        Outputs::Coupled,
        u128::MAX,
    )
    .unwrap();
    let mut full = fit(&m, &x, &y, HessianStructure::Full, Subset::All);
    let check = |gp: &FunctionalGp, full: &Laplace| {
        let (a, b) = (
            gp.functional_covariance(xs.as_ref()),
            full.functional_covariance(xs.as_ref()),
        );
        assert_eq!(a.len(), 300 * 9);
        let top = b.iter().fold(0.0_f64, |t, v| t.max(v.abs()));
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-9 * top, "{a} against {b}");
        }
        assert_relative_eq!(
            gp.log_marginal_likelihood(),
            full.log_marginal_likelihood(None, None).unwrap(),
            max_relative = 1e-10
        );
    };
    check(&gp, &full);
    let d = gp.optimize_prior_precision().unwrap();
    let best = full.optimize_prior_precision().unwrap();
    assert_relative_eq!(d, best.delta, max_relative = 1e-9);
    check(&gp, &full);
    // The coupled covariance has off-diagonal entries; the independent one none.
    let ind = FunctionalGp::fit(m, x.as_ref(), y.as_ref(), Outputs::Independent, u128::MAX)
        .unwrap()
        .functional_covariance(xs.as_ref());
    assert!(ind[1] == 0.0 && gp.functional_covariance(xs.as_ref())[1] != 0.0);
}

/// The statistics of chunks of the data add up to the whole data's: the posterior from the
/// summed [`Curvature`] (also sent through its parts, as another process would) has the fit's
/// evidence, at any δ, and its functional covariances (full, diag and kron, all weights and the
/// last layer); low rank, shapes of another network and unlike curvatures are refused.
#[test]
fn curvatures_of_chunks_add_up_to_the_fit() {
    use dnn2gp::posterior::Curvature;
    let m = model(CNN, 0.6);
    let (x, y) = data(23, 36, 3, 12);
    let (xs, _) = data(4, 36, 3, 13);
    let opts = FitOptions::default();
    for s in [
        HessianStructure::Full,
        HessianStructure::Diag,
        HessianStructure::Kron,
    ] {
        for sub in [Subset::All, Subset::LastLayer] {
            let la = fit(&m, &x, &y, s, sub);
            let mut total: Option<Curvature> = None;
            for (start, rows) in [(0, 10), (10, 9), (19, 4)] {
                let c = Laplace::curvature(
                    &m,
                    x.as_ref().subrows(start, rows),
                    y.as_ref().subrows(start, rows),
                    s,
                    sub,
                    &opts,
                )
                .unwrap();
                let (tensors, scalars) = c.to_parts();
                let c = Curvature::from_parts(s, sub, tensors, scalars).unwrap();
                match &mut total {
                    None => total = Some(c),
                    Some(t) => t.add(&c).unwrap(),
                }
            }
            let total = total.unwrap();
            assert_eq!((total.n(), total.structure(), total.subset()), (23, s, sub));
            let back = Laplace::from_curvature(m.clone(), total).unwrap();
            for d in [None, Some(3.0)] {
                let (a, b) = (
                    back.log_marginal_likelihood(d, None).unwrap(),
                    la.log_marginal_likelihood(d, None).unwrap(),
                );
                assert_relative_eq!(a, b, max_relative = 1e-12);
            }
            let (a, b) = (
                back.functional_covariance(xs.as_ref()),
                la.functional_covariance(xs.as_ref()),
            );
            assert_close(
                MatRef::from_row_major_slice(&a, a.len(), 1),
                MatRef::from_row_major_slice(&b, b.len(), 1),
                1e-11,
            );
        }
    }
    let low = Laplace::curvature(
        &m,
        x.as_ref(),
        y.as_ref(),
        HessianStructure::LowRank,
        Subset::All,
        &opts,
    );
    assert!(low.unwrap_err().to_string().contains("lowrank"));
    let curv = |s, sub| Laplace::curvature(&m, x.as_ref(), y.as_ref(), s, sub, &opts).unwrap();
    let mut kron = curv(HessianStructure::Kron, Subset::All);
    let diag = curv(HessianStructure::Diag, Subset::All);
    assert!(kron
        .add(&diag)
        .unwrap_err()
        .to_string()
        .contains("cannot add"));
    let last = curv(HessianStructure::Kron, Subset::LastLayer);
    assert!(kron.add(&last).is_err());
    let other = model(MLP, 0.6);
    let err = Laplace::from_curvature(other, diag)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shapes"), "{err}");
}

/// A subnetwork (weights chosen by index, laplace-torch's `SubnetLaplace`): over every weight it
/// is the full posterior, over the last layer's weights the last-layer posterior, and over any
/// weights its precision is the full GGN's block `H[S, S] + δI` (diag: its diagonal); the
/// functional variance is `J_S Σ J_Sᵀ`; draws move the chosen weights only; chunks of the data
/// add up; the file keeps every number.
#[test]
fn a_subnetwork_is_the_ggns_block_of_the_chosen_weights() {
    let m = model(CNN, 0.7);
    let (x, y) = data(20, 36, 3, 9);
    let p = m.w.len();
    let sub = |idx: Vec<usize>, s| {
        Laplace::fit_subnetwork(
            m.clone(),
            x.as_ref(),
            y.as_ref(),
            s,
            idx,
            &FitOptions::default(),
        )
        .unwrap()
    };
    let xs = x.subrows(0, 4);
    let close = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .for_each(|(a, b)| assert_relative_eq!(a, b, max_relative = 1e-10, epsilon = 1e-13))
    };
    let all = fit(&m, &x, &y, HessianStructure::Full, Subset::All);
    let whole = sub((0..p).rev().collect(), HessianStructure::Full);
    close(&whole.functional_variance(xs), &all.functional_variance(xs));
    assert_relative_eq!(
        whole.log_marginal_likelihood(None, None).unwrap(),
        all.log_marginal_likelihood(None, None).unwrap(),
        max_relative = 1e-12
    );
    let ll = fit(&m, &x, &y, HessianStructure::Full, Subset::LastLayer);
    let last: usize = (m.net.param_layout().iter().rev().take(2))
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    let tail = sub((p - last..p).collect(), HessianStructure::Full);
    close(&tail.functional_variance(xs), &ll.functional_variance(xs));
    let chosen = vec![40, 3, p - 1, 17];
    let h = ggn(&m, &x, &y);
    for s in [HessianStructure::Full, HessianStructure::Diag] {
        let la = sub(chosen.clone(), s);
        assert_eq!(la.subset(), Subset::Subnetwork);
        let (_, a) = la.posterior_precision().unwrap();
        for (r, &i) in chosen.iter().enumerate() {
            for (c, &j) in chosen.iter().enumerate() {
                let want = match s {
                    HessianStructure::Full => h[(i, j)],
                    _ if i == j => h[(i, i)],
                    _ => continue,
                } + if i == j { 0.7 } else { 0.0 };
                let got = if s == HessianStructure::Full {
                    a[r * 4 + c]
                } else {
                    a[r]
                };
                assert_relative_eq!(got, want, max_relative = 1e-12, epsilon = 1e-14);
            }
        }
        let j = m.net.jacobian(&m.w, xs);
        let js = Mat::from_fn(j.nrows(), 4, |r, c| j[(r, chosen[c])]);
        let sigma = la.weight_posterior().covariance();
        let want = a_bt(a_b(js.as_ref(), sigma.as_ref()).as_ref(), js.as_ref());
        assert_blocks(&la.functional_covariance(xs), &want, 3, 1e-10, 1e-14);
        let draws = la.sample(3, 1);
        for d in &draws {
            (0..p)
                .filter(|i| !chosen.contains(i))
                .for_each(|i| assert_eq!(d[i], m.w[i]));
        }
        // Chunks add up; the file keeps the numbers.
        let opts = FitOptions::default();
        let mut c = Laplace::curvature_subnetwork(
            &m,
            x.subrows(0, 8),
            y.subrows(0, 8),
            s,
            chosen.clone(),
            &opts,
        )
        .unwrap();
        c.add(
            &Laplace::curvature_subnetwork(
                &m,
                x.subrows(8, 12),
                y.subrows(8, 12),
                s,
                chosen.clone(),
                &opts,
            )
            .unwrap(),
        )
        .unwrap();
        let summed = Laplace::from_curvature(m.clone(), c).unwrap();
        close(&summed.functional_variance(xs), &la.functional_variance(xs));
        let dir = common::tmpdir();
        let path = dir.path().join("sub.safetensors");
        la.save(&path).unwrap();
        let back = Laplace::load(&path).unwrap();
        assert_eq!(back.functional_variance(xs), la.functional_variance(xs));
        assert_eq!(
            back.log_marginal_likelihood(None, None).unwrap(),
            la.log_marginal_likelihood(None, None).unwrap()
        );
    }
    // What is refused: no weights, twice the same, past the end, KFAC.
    let opts = FitOptions::default();
    for (idx, s) in [
        (vec![], HessianStructure::Full),
        (vec![2, 2], HessianStructure::Full),
        (vec![p], HessianStructure::Diag),
        (vec![1], HessianStructure::Kron),
    ] {
        assert!(Laplace::fit_subnetwork(m.clone(), x.as_ref(), y.as_ref(), s, idx, &opts).is_err());
    }
}
