//! Structured kernels in f64 and f32, their symmetric halves, the train/test blocks of a GP
//! predictive, the in-place Cholesky with its jitter ladder, and the low-rank spectral form of
//! the δ path: each against its dense definition.
#![allow(clippy::needless_range_loop)]

use dnn2gp::curvature::Linearization;
use dnn2gp::data::toy::{toy_sets, ToyConfig};
use dnn2gp::gp::{gaussian_glm_variance, gaussian_variance_in_place, DeltaPath, Dnn2Gp, Space};
use dnn2gp::likelihood::Gaussian;
use dnn2gp::linalg::{a_bt, low_rank_form, tridiagonal_logdet_quad, tridiagonalize, Cholesky};
use dnn2gp::nn::{Activation, Network, Sequential};
use faer::Mat;

const MEM: u128 = 1 << 32;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

fn inputs(n: usize, d: usize, phase: f64) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| ((i * 7 + j) as f64 * 0.37 + phase).sin())
}

/// Largest entry-wise difference relative to the largest entry.
fn max_diff<T: Copy + Into<f64>>(a: &Mat<T>, b: &Mat<f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let (mut d, mut m) = (0.0f64, 0.0f64);
    for j in 0..b.ncols() {
        for i in 0..b.nrows() {
            d = d.max((a[(i, j)].into() - b[(i, j)]).abs());
            m = m.max(b[(i, j)].abs());
        }
    }
    d / m
}

#[test]
fn kernels_match_the_jacobian_product_in_f64_and_f32() {
    // Enough rows for several column tiles (128), row blocks (512) and mirror recursion; dense
    // layers wide enough to keep their factors (K = 1 and K = 3) next to narrow ones turned
    // into Jacobian blocks, and a convolution's block.
    let nets: Vec<Box<dyn Network>> = vec![
        Box::new(Sequential::mlp(vec![2, 30, 30, 1], Activation::Tanh).unwrap()),
        Box::new(Sequential::mlp(vec![3, 16, 16, 3], Activation::Relu).unwrap()),
        Box::new(
            Sequential::parse("1x6x6:conv2k3,relu,avgpool,flatten,dense16,tanh,dense3").unwrap(),
        ),
    ];
    for net in &nets {
        let w = net.init(4);
        let n = if net.n_outputs() == 1 { 700 } else { 250 };
        let (x, xs) = (
            inputs(n, net.n_inputs(), 0.0),
            inputs(90, net.n_inputs(), 1.3),
        );
        let (j, js) = (net.jacobian(&w, x.as_ref()), net.jacobian(&w, xs.as_ref()));
        let direct = a_bt(j.as_ref(), j.as_ref());
        let k = net.ntk(&w, x.as_ref(), x.as_ref());
        assert!(max_diff(&k, &direct) < 1e-13, "f64 symmetric");
        for c in 0..k.ncols() {
            for r in 0..c {
                assert_eq!(k[(r, c)], k[(c, r)], "mirrored exactly");
            }
        }
        assert!(
            max_diff(&net.ntk_f32(&w, x.as_ref(), x.as_ref()), &direct) < 1e-5,
            "f32"
        );
        let cross = a_bt(js.as_ref(), j.as_ref());
        assert!(max_diff(&net.ntk_f32(&w, xs.as_ref(), x.as_ref()), &cross) < 1e-5);
        let blocks = net.ntk_blocks(&w, x.as_ref(), xs.as_ref());
        assert!(max_diff(&blocks.train().to_owned(), &direct) < 1e-13);
        assert!(max_diff(&blocks.cross().to_owned(), &cross) < 1e-13);
        let kss = a_bt(js.as_ref(), js.as_ref());
        for (m, v) in blocks.test_diag.iter().enumerate() {
            assert!(rel(*v, kss[(m, m)]) < 1e-12);
        }
    }
}

#[test]
fn in_place_gaussian_predictive_equals_the_gp() {
    let split = toy_sets(
        &ToyConfig {
            n_train: 300,
            n_test: 80,
            ..ToyConfig::default()
        },
        1,
    )
    .remove(0);
    let net = Sequential::mlp(vec![2, 20, 1], Activation::Tanh).unwrap();
    let (sigma, delta) = (0.3, 0.7);
    let lik = Gaussian::new(sigma).unwrap();
    let w = net.init(3);
    let (x, xs) = (split.train.x.as_ref(), split.test.x.as_ref());
    let lin = Linearization::new(&net, &lik, x, split.train.y.as_ref(), &w);
    let gp = Dnn2Gp::new(&lin, delta, Space::Function, MEM).unwrap();
    let expected = gp.predict(net.jacobian(&w, xs).as_ref());
    let glm = gaussian_glm_variance(&net, &w, x, xs, delta, sigma).unwrap();
    let (var, jitter) = (glm.var, glm.jitter);
    assert_eq!(jitter, 0.0);
    for (a, b) in var.iter().zip(&expected.var) {
        assert!(rel(*a, *b) < 1e-9, "{a} vs {b}");
    }
    assert!(gaussian_glm_variance(&net, &w, x, xs, -1.0, sigma).is_err());
    assert!(gaussian_glm_variance(&net, &w, x, xs, delta, 0.0).is_err());
}

#[test]
fn gaussian_variance_climbs_the_ladder_and_matches_the_copying_cholesky() {
    // Noise so small that G = δ⁻¹JJᵀ + σ²I (rank ≤ P = 7 plus 1e-30) needs jitter.
    let net = Sequential::mlp(vec![1, 2, 1], Activation::Tanh).unwrap();
    let w = net.init(5);
    let (x, xs) = (inputs(60, 1, 0.0), inputs(9, 1, 0.4));
    let sigma = 1e-15;
    // δ ≠ 1 too: the in-place path factorises δG and divides its jitter by δ.
    for delta in [1.0, 0.5] {
        let glm = gaussian_glm_variance(&net, &w, x.as_ref(), xs.as_ref(), delta, sigma).unwrap();
        let (var, jitter) = (glm.var, glm.jitter);
        assert!(jitter > 0.0);
        // The same G = δ⁻¹K + σ²I through the copying Cholesky of the library.
        let mut g = net.ntk(&w, x.as_ref(), x.as_ref());
        for j in 0..60 {
            for i in 0..60 {
                g[(i, j)] /= delta;
            }
            g[(j, j)] += sigma * sigma;
        }
        let chol = Cholesky::new(g.as_ref(), "test").unwrap();
        assert!(
            rel(chol.jitter, jitter) < 1e-14,
            "{} vs {jitter}",
            chol.jitter
        );
        let v = chol.solve_l(net.ntk(&w, x.as_ref(), xs.as_ref()).as_ref());
        let kss = net.ntk_diag(&w, xs.as_ref());
        for m in 0..9 {
            let expected = kss[m] / delta
                - (0..60).map(|i| v[(i, m)] * v[(i, m)]).sum::<f64>() / (delta * delta);
            assert!(
                (var[m] - expected).abs() < 1e-9 * kss[m] / delta,
                "{} vs {expected}",
                var[m]
            );
        }
    }
    // NaN in the kernel is refused, not factorised.
    let mut blocks = net.ntk_blocks(&w, x.as_ref(), xs.as_ref());
    blocks.kernel[(3, 3)] = f64::NAN;
    assert!(gaussian_variance_in_place(&mut blocks, 1.0, 0.1, 0).is_err());
}

#[test]
fn low_rank_form_equals_the_tridiagonal_form() {
    let b = Mat::from_fn(300, 7, |i, j| {
        ((i * 7919 + j * 104_729) % 1000) as f64 / 1000.0 - 0.5
    });
    let a = a_bt(b.as_ref(), b.as_ref());
    let v: Vec<f64> = (0..300).map(|i| (i as f64 * 0.11).cos()).collect();
    let lr = low_rank_form(a.as_ref(), &v, 37).expect("rank 7");
    assert_eq!(lr.rank, 7);
    assert!(lr.residual_trace >= 0.0);
    let (d, e, c) = tridiagonalize(a.clone(), &v);
    let zeros = vec![0.0; lr.d.len() - 1];
    for s in [1e-3, 0.1, 1.0, 10.0, 1e3] {
        let (l1, q1) = tridiagonal_logdet_quad(&lr.d, &zeros, s, &lr.c).unwrap();
        let (l2, q2) = tridiagonal_logdet_quad(&d, &e, s, &c).unwrap();
        assert!(rel(l1, l2) < 1e-9 && rel(q1, q2) < 1e-9, "s={s}");
    }
    // Full rank: refused, so that the caller tridiagonalises.
    let full = Mat::<f64>::from_fn(60, 60, |i, j| if i == j { 1.0 + i as f64 } else { 0.0 });
    assert!(low_rank_form(full.as_ref(), &v[..60], 7).is_none());
}

#[test]
fn delta_path_uses_the_low_rank_form_when_the_kernel_has_one() {
    let split = toy_sets(
        &ToyConfig {
            n_train: 400,
            n_test: 10,
            ..ToyConfig::default()
        },
        1,
    )
    .remove(0);
    let lik = Gaussian::new(0.6).unwrap();
    // P = 13: the 400×400 kernel has rank ≤ 13 < 400/8.
    let net = Sequential::mlp(vec![2, 3, 1], Activation::Tanh).unwrap();
    let w = net.init(2);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let lin = Linearization::new(&net, &lik, x, y, &w);
    let path = DeltaPath::with_ntk(&lin, net.ntk(&w, x, x), MEM).unwrap();
    let (rank, tr) = path.low_rank().expect("low rank");
    assert!(rank <= 13 && tr >= 0.0, "rank {rank}");
    let weight = DeltaPath::new(&lin, Space::Weight, MEM).unwrap();
    assert!(weight.low_rank().is_none());
    for delta in [0.01, 0.3, 1.0, 7.0, 100.0] {
        let gp = Dnn2Gp::new(&lin, delta, Space::Function, MEM).unwrap();
        let a = path.log_marginal_likelihood(delta).unwrap();
        assert!(
            rel(a, gp.log_marginal_likelihood().unwrap()) < 1e-9,
            "δ={delta}"
        );
        let (a, b) = (
            path.laplace_log_evidence(delta).unwrap(),
            weight.laplace_log_evidence(delta).unwrap(),
        );
        assert!(rel(a, b) < 1e-9, "δ={delta}: {a} vs {b}");
    }
}

/// The triangular solves with many right-hand sides split them over the threads; every thread
/// count gives the same bits, and `L X = B`, `Lᵀ X = B` hold.
#[test]
fn triangular_solves_agree_on_any_thread_count() {
    let n = 300;
    let b = inputs(n, 40, 0.2);
    let mut a = a_bt(b.as_ref(), b.as_ref());
    for i in 0..n {
        a[(i, i)] += 1.0;
    }
    let chol = Cholesky::new(a.as_ref(), "test").unwrap();
    let rhs = inputs(n, 57, 0.9);
    let solve = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| (chol.solve_l(rhs.as_ref()), chol.solve(rhs.as_ref())))
    };
    let (x1, y1) = solve(1);
    for threads in [2, 3] {
        let (x, y) = solve(threads);
        assert!(x == x1 && y == y1, "{threads} threads");
    }
    // L (L⁻¹B) = B and A (A⁻¹B) = B.
    let l = Mat::from_fn(n, n, |i, j| if i >= j { chol.l[(i, j)] } else { 0.0 });
    assert!(max_diff(&(&l * &x1), &rhs) < 1e-12);
    assert!(max_diff(&(&a * &y1), &rhs) < 1e-10);
}
