//! The layered network (dense, convolution, max-pooling, activations): Jacobians against
//! finite differences, backward reductions against the Jacobian, LeNet-5's size, and agreement
//! with the MLP.
#![allow(clippy::needless_range_loop)]

mod common;

use dnn2gp::nn::{Activation, Layer, Network, Sequential};
use faer::Mat;

/// A small CNN on 2×7×7 inputs: conv 3@3×3, tanh, pool, dense 12 → 4, sigmoid, dense 2.
fn small_cnn() -> Sequential {
    let conv = Layer::Conv2d {
        in_channels: 2,
        out_channels: 3,
        kernel: 3,
        height: 7,
        width: 7,
    };
    Sequential::new(vec![
        conv,
        Layer::Act {
            activation: Activation::Tanh,
            size: 3 * 5 * 5,
        },
        Layer::MaxPool2 {
            channels: 3,
            height: 5,
            width: 5,
        },
        Layer::Dense {
            inputs: 12,
            outputs: 4,
        },
        Layer::Act {
            activation: Activation::Sigmoid,
            size: 4,
        },
        Layer::Dense {
            inputs: 4,
            outputs: 2,
        },
    ])
    .unwrap()
}

fn inputs(n: usize, d: usize) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| ((i * d + j) as f64 * 0.731).sin())
}

#[test]
fn cnn_jacobian_matches_finite_differences() {
    let net = small_cnn();
    assert_eq!(net.n_params(), 3 * (2 * 9 + 1) + 4 * 13 + 2 * 5);
    let w = net.init(1);
    let x = inputs(3, net.n_inputs());
    assert_eq!(
        net.forward_jacobian(&w, x.as_ref()).0,
        net.forward(&w, x.as_ref())
    );
    let all: Vec<usize> = (0..net.n_params()).collect();
    common::assert_jacobian_matches_fd(&net, &w, x.as_ref(), &all, 1e-7);
}

#[test]
fn cnn_backward_reductions_match_the_jacobian() {
    let net = small_cnn();
    common::assert_reductions_match_jacobian(
        &net,
        &net.init(2),
        inputs(4, net.n_inputs()).as_ref(),
    );
}

#[test]
fn lenet5_has_the_papers_size_and_runs() {
    let net = Sequential::lenet5(1, 28, 10).unwrap();
    assert_eq!(net.n_params(), 44_426);
    assert_eq!((net.n_inputs(), net.n_outputs()), (784, 10));
    let w = net.init(0);
    let x = inputs(2, 784);
    let (f, jac) = net.forward_jacobian(&w, x.as_ref());
    assert_eq!(
        (f.nrows(), f.ncols(), jac.nrows(), jac.ncols()),
        (2, 10, 20, 44_426)
    );
    // Spot-check parameters of each layer by finite differences, the convolutions at taps
    // away from (0, 0) too: conv1 weight [4, 0, 2, 3] (4·25 + 2·5 + 3 = 113) and [5, 0, 4, 4]
    // (149); conv2 weight [7, 3, 4, 1] (156 + 7·150 + 3·25 + 4·5 + 1 = 1302) and
    // [15, 5, 2, 2] (156 + 15·150 + 5·25 + 12 = 2543).
    let spots = [
        0, 113, 149, 155, 156, 1302, 2543, 2571, 2572, 33_411, 44_425,
    ];
    common::assert_jacobian_matches_fd(&net, &w, x.as_ref(), &spots, 1e-6);
}

#[test]
fn layers_that_do_not_chain_are_refused() {
    let err = Sequential::new(vec![
        Layer::Dense {
            inputs: 3,
            outputs: 4,
        },
        Layer::Dense {
            inputs: 5,
            outputs: 1,
        },
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("outputs 4") && err.to_string().contains("takes 5"),
        "{err}"
    );
    assert!(Sequential::new(vec![]).is_err());
}

/// `Sequential::mlp` is the layer list `dense, act, …, dense`, and every spec reads back.
#[test]
fn a_sequence_of_dense_layers_is_the_mlp() {
    let mlp = Sequential::mlp(vec![3, 5, 2], Activation::Tanh).unwrap();
    let seq = Sequential::new(vec![
        Layer::Dense {
            inputs: 3,
            outputs: 5,
        },
        Layer::Act {
            activation: Activation::Tanh,
            size: 5,
        },
        Layer::Dense {
            inputs: 5,
            outputs: 2,
        },
    ])
    .unwrap();
    assert_eq!(mlp, seq);
    assert_eq!(mlp.spec(), "3:dense5,tanh,dense2");
    assert_eq!(mlp.as_mlp(), Some((&[3, 5, 2][..], Activation::Tanh)));
    let lenet = Sequential::lenet5(1, 28, 10).unwrap();
    assert_eq!(lenet.as_mlp(), None);
    for net in [mlp, lenet] {
        assert_eq!(Sequential::parse(&net.spec()).unwrap(), net);
    }
}

#[test]
fn architectures_from_spec_strings() {
    let lenet = Sequential::parse(
        "1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,flatten,dense120,relu,dense84,relu,dense10",
    )
    .unwrap();
    assert_eq!(lenet, Sequential::lenet5(1, 28, 10).unwrap());
    // Layer indices follow PyTorch's nn.Sequential numbering.
    let with_params: Vec<usize> = lenet
        .layers()
        .iter()
        .enumerate()
        .filter(|(_, l)| l.n_params() > 0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with_params, vec![0, 3, 7, 9, 11]);
    let mlp = Sequential::parse("2:dense20,tanh,dense1").unwrap();
    assert_eq!(mlp.n_params(), 81);
    for (spec, needle) in [
        ("28x28:dense10", "input shape"),
        ("1x8x8:conv4k9,dense2", "larger than"),
        ("4:dense3,conv2k1", "already flat"),
        ("1x4x4:pool,swish", "unknown layer 'swish'"),
        ("1x4x4:denseX", "'X' is not a positive number"),
        ("dense10", "INPUT:LAYERS"),
    ] {
        let err = Sequential::parse(spec).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains(spec), "{spec}: {err}");
    }
}

#[test]
fn average_pooling_derivatives_and_structured_kernels() {
    // Conv, average pool, conv, max pool, dense: both pooling kinds and a conv after a pool.
    let net = Sequential::parse(
        "2x9x9:conv3k2,tanh,avgpool,conv4k2,relu,pool,flatten,dense5,tanh,dense3",
    )
    .unwrap();
    let w = net.init(3);
    let x = inputs(5, net.n_inputs());
    let all: Vec<usize> = (0..net.n_params()).collect();
    common::assert_jacobian_matches_fd(&net, &w, x.as_ref(), &all, 1e-7);
    common::assert_reductions_match_jacobian(&net, &w, x.as_ref());
    // The NTK from per-layer factors (dense) and blocks (conv) equals J_a J_bᵀ, and its
    // diagonal the squared row norms.
    let xb = inputs(3, net.n_inputs());
    let (ja, jb) = (net.jacobian(&w, x.as_ref()), net.jacobian(&w, xb.as_ref()));
    let direct = dnn2gp::linalg::a_bt(ja.as_ref(), jb.as_ref());
    let structured = net.ntk(&w, x.as_ref(), xb.as_ref());
    let scale = direct
        .col_iter()
        .flat_map(|c| c.iter().map(|v| v.abs()).collect::<Vec<_>>())
        .fold(0.0, f64::max);
    for i in 0..direct.nrows() {
        for j in 0..direct.ncols() {
            assert!(
                (structured[(i, j)] - direct[(i, j)]).abs() <= 1e-12 * scale,
                "({i},{j})"
            );
        }
    }
    let diag = net.ntk_diag(&w, x.as_ref());
    for (m, d) in diag.iter().enumerate() {
        let r: f64 = ja.row(m).iter().map(|v| v * v).sum();
        assert!((d - r).abs() <= 1e-12 * r.abs().max(1.0));
    }
    // Many examples: the factors of parallel chunks are stacked in order.
    let big = inputs(300, net.n_inputs());
    let k = net.ntk(&w, big.as_ref(), big.as_ref());
    let j = net.jacobian(&w, big.as_ref());
    let d = dnn2gp::linalg::a_bt(j.as_ref(), j.as_ref());
    for (i, jj) in [(0, 0), (7, 899), (450, 3), (899, 899)] {
        assert!((k[(i, jj)] - d[(i, jj)]).abs() <= 1e-11 * d[(i, jj)].abs().max(1.0));
    }
}
