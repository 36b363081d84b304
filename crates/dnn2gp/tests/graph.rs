//! Networks as graphs of operations: every operation's per-example Jacobian against central
//! differences (strided, padded, grouped and dilated convolutions, BatchNorm, LayerNorm, GELU,
//! attention's softmax and products, skip connections), the backward pass's reductions and
//! kernels against the Jacobian, KFAC's exact blocks for tensors without Kronecker form, a spec
//! string's graph against its chain, and the model file.
#![allow(clippy::needless_range_loop)]

use dnn2gp::curvature::Backend;
use dnn2gp::likelihood::{curvature_root_rows, LikelihoodKind};
use dnn2gp::nn::ops::*;
use dnn2gp::nn::{Cotangents, Dtype, Graph, GraphBuilder, Network, Reduce, Sequential};
use dnn2gp::posterior::{HessianStructure, Laplace, Posterior, Subset};
use dnn2gp::train::model::Model;
use faer::Mat;

fn inputs(n: usize, d: usize, seed: u64) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| {
        (((i * 31 + j * 17) as f64 + seed as f64 * 0.37) * 0.713).sin()
    })
}

/// Weights away from PyTorch's init (BatchNorm's γ away from 1) and distinct.
fn weights(net: &Graph, seed: u64) -> Vec<f64> {
    net.init(seed)
        .iter()
        .enumerate()
        .map(|(i, v)| v + 0.1 * ((i as f64) * 0.61).cos())
        .collect()
}

fn max_abs(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let mut m = 0.0f64;
    for i in 0..a.nrows() {
        for j in 0..a.ncols() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}

/// Per-example Jacobians by central differences of the forward pass.
fn fd_jacobian(net: &Graph, w: &[f64], x: &Mat<f64>) -> Mat<f64> {
    let (n, k, p) = (x.nrows(), net.n_outputs(), net.n_params());
    let h = 1e-6;
    let mut jac = Mat::<f64>::zeros(n * k, p);
    let mut wp = w.to_vec();
    for j in 0..p {
        wp[j] = w[j] + h;
        let fp = net.forward(&wp, x.as_ref());
        wp[j] = w[j] - h;
        let fm = net.forward(&wp, x.as_ref());
        wp[j] = w[j];
        for e in 0..n {
            for c in 0..k {
                jac[(e * k + c, j)] = (fp[(e, c)] - fm[(e, c)]) / (2.0 * h);
            }
        }
    }
    jac
}

/// The Jacobian, the gradient, the squared reduction and the NTK of `net` agree with central
/// differences and with each other.
fn check(net: &Graph, what: &str) {
    let w = weights(net, 3);
    let x = inputs(3, net.n_inputs(), 1);
    let (f, jac) = net.forward_jacobian(&w, x.as_ref());
    assert!(
        max_abs(&f, &net.forward(&w, x.as_ref())) < 1e-13,
        "{what}: outputs"
    );
    // The forward pass in f32 (a convolution's BatchNorm and ReLU fused) within f32's
    // rounding of f64's.
    let top = (0..f.nrows())
        .flat_map(|i| (0..f.ncols()).map(move |j| (i, j)))
        .fold(1.0f64, |a, (i, j)| a.max(f[(i, j)].abs()));
    let f32_err = max_abs(&f, &net.forward_in(&w, x.as_ref(), Dtype::F32));
    assert!(f32_err < 1e-5 * top, "{what}: f32 outputs off by {f32_err}");
    let fd = fd_jacobian(net, &w, &x);
    let scale = 1.0
        + (0..fd.nrows())
            .flat_map(|i| (0..fd.ncols()).map(move |j| (i, j)))
            .fold(0.0f64, |a, (i, j)| a.max(fd[(i, j)].abs()));
    let err = max_abs(&jac, &fd);
    assert!(err < 1e-7 * scale, "{what}: Jacobian off by {err}");
    // Σ_m J_mᵀ c_m and Σ_m (J_mᵀ c_m)² from one backward pass.
    let k = net.n_outputs();
    let c = Mat::from_fn(x.nrows(), k, |i, j| ((i * 7 + j) as f64).sin());
    let (_, g) = net.forward_vjp(&w, x.as_ref(), &mut |_| c.clone());
    for p in 0..net.n_params() {
        let want: f64 = (0..x.nrows())
            .map(|e| (0..k).map(|o| jac[(e * k + o, p)] * c[(e, o)]).sum::<f64>())
            .sum();
        assert!(
            (g[p] - want).abs() < 1e-12 * (1.0 + want.abs()),
            "{what}: gradient {p}"
        );
    }
    let (_, mut sq) = net.forward_reduce(&w, x.as_ref(), &mut |_| {
        vec![Cotangents {
            rows: c.clone(),
            rows_per_example: 1,
            reduce: Reduce::SumSq,
        }]
    });
    let sq = sq.pop().unwrap();
    for p in 0..net.n_params() {
        let want: f64 = (0..x.nrows())
            .map(|e| {
                (0..k)
                    .map(|o| jac[(e * k + o, p)] * c[(e, o)])
                    .sum::<f64>()
                    .powi(2)
            })
            .sum();
        assert!(
            (sq[p] - want).abs() < 1e-12 * (1.0 + want.abs()),
            "{what}: squares {p}"
        );
    }
    // The NTK from factors and the dense J Jᵀ.
    let ntk = net.ntk(&w, x.as_ref(), x.as_ref());
    let dense = &jac * jac.transpose();
    assert!(
        max_abs(&ntk, &dense) < 1e-11 * (1.0 + scale * scale),
        "{what}: NTK"
    );
    let xb = inputs(2, net.n_inputs(), 5);
    let jb = net.jacobian(&w, xb.as_ref());
    assert!(
        max_abs(
            &net.ntk(&w, x.as_ref(), xb.as_ref()),
            &(&jac * jb.transpose())
        ) < 1e-11 * (1.0 + scale * scale),
        "{what}: cross NTK"
    );
}

#[allow(clippy::too_many_arguments)]
fn conv(
    c: usize,
    o: usize,
    hw: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
    bias: bool,
) -> Op {
    Op::Conv(Conv {
        in_channels: c,
        out_channels: o,
        input: [hw, hw],
        kernel: [k, k],
        stride: [stride; 2],
        padding: [pad; 2],
        dilation: [dil; 2],
        groups,
        bias,
    })
}

fn bn(c: usize, spatial: usize) -> Op {
    Op::BatchNorm(BatchNorm {
        channels: c,
        spatial,
        mean: (0..c).map(|i| 0.1 * i as f64 - 0.05).collect(),
        var: (0..c).map(|i| 0.5 + 0.2 * i as f64).collect(),
        eps: 1e-5,
        affine: true,
    })
}

fn unary(kind: UnaryKind, alpha: f64) -> Op {
    Op::Unary(Unary { kind, alpha })
}

fn flatten(size: usize) -> Op {
    Op::Gather(Gather {
        index: None,
        shape: vec![size],
    })
}

fn linear(inputs: usize, outputs: usize, positions: usize, bias: bool) -> Op {
    Op::Linear(Linear {
        inputs,
        outputs,
        positions,
        bias,
    })
}

/// A ResNet basic block with a downsampling shortcut: conv (stride 2, padding 1, no bias) →
/// BatchNorm → ReLU → conv (padding 1) → BatchNorm, plus a 1×1 stride-2 conv + BatchNorm of
/// the input, ReLU, global average pooling, Linear.
fn resnet_block() -> Graph {
    let mut b = GraphBuilder::new(vec![2, 6, 6]);
    let c1 = b
        .push("conv1", conv(2, 3, 6, 3, 2, 1, 1, 1, false), vec![0])
        .unwrap();
    let n1 = b.push("bn1", bn(3, 9), vec![c1]).unwrap();
    let r1 = b
        .push("relu1", unary(UnaryKind::Relu, 0.0), vec![n1])
        .unwrap();
    let c2 = b
        .push("conv2", conv(3, 3, 3, 3, 1, 1, 1, 1, false), vec![r1])
        .unwrap();
    let n2 = b.push("bn2", bn(3, 9), vec![c2]).unwrap();
    let d = b
        .push("downsample.0", conv(2, 3, 6, 1, 2, 0, 1, 1, false), vec![0])
        .unwrap();
    let dn = b.push("downsample.1", bn(3, 9), vec![d]).unwrap();
    let s = Operand::Input {
        shape: vec![3, 3, 3],
    };
    let add = b
        .push(
            "add",
            Op::Binary(Binary::new(BinaryKind::Add, s.clone(), s).unwrap()),
            vec![n2, dn],
        )
        .unwrap();
    let r = b
        .push("relu", unary(UnaryKind::Relu, 0.0), vec![add])
        .unwrap();
    let gap = b
        .push(
            "pool",
            Op::Mean(Mean {
                shape: vec![3, 3, 3],
                axes: vec![1, 2],
            }),
            vec![r],
        )
        .unwrap();
    let fl = b.push("flatten", flatten(3), vec![gap]).unwrap();
    b.push("fc", linear(3, 4, 1, true), vec![fl]).unwrap();
    b.finish().unwrap()
}

#[test]
fn a_resnet_block_has_exact_jacobians() {
    check(&resnet_block(), "resnet block");
}

/// `z[o, y, x] = b_o + Σ_{c, i, j} W[o, c, i, j] x[g·C + c, y·s + i·d − p, x·s + j·d − p]` (zero
/// outside the image) for the output channels `o` of group `g`, written out.
fn conv_by_definition(c: &Conv, w: &[f64], x: &[f64]) -> Vec<f64> {
    let [oh, ow] = c.output();
    let (cg, og) = (c.in_channels / c.groups, c.out_channels / c.groups);
    let [h, wd] = c.input;
    let [kh, kw] = c.kernel;
    let mut z = vec![0.0; c.out_channels * oh * ow];
    for o in 0..c.out_channels {
        let g = o / og;
        for y in 0..oh {
            for xx in 0..ow {
                let mut s = if c.bias {
                    w[c.out_channels * cg * kh * kw + o]
                } else {
                    0.0
                };
                for ci in 0..cg {
                    for i in 0..kh {
                        for j in 0..kw {
                            let iy = (y * c.stride[0] + i * c.dilation[0]) as isize
                                - c.padding[0] as isize;
                            let ix = (xx * c.stride[1] + j * c.dilation[1]) as isize
                                - c.padding[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            let v = x[(g * cg + ci) * h * wd + iy as usize * wd + ix as usize];
                            s += w[((o * cg + ci) * kh + i) * kw + j] * v;
                        }
                    }
                }
                z[(o * oh + y) * ow + xx] = s;
            }
        }
    }
    z
}

/// Convolutions large enough that the forward pass takes their positions in several tiles (the
/// last one short), in f64 and f32, equal their definition, with and without a fused BatchNorm
/// and ReLU after them.
#[test]
fn convolutions_in_tiles_equal_their_definition() {
    for (groups, stride, pad, dil) in [(1, 1, 1, 1), (2, 2, 2, 2), (4, 3, 0, 1)] {
        let op = conv(64, 8, 31, 3, stride, pad, dil, groups, true);
        let Op::Conv(c) = op.clone() else {
            unreachable!()
        };
        let [oh, ow] = c.output();
        let mut b = GraphBuilder::new(vec![64, 31, 31]);
        let v = b.push("conv", op, vec![0]).unwrap();
        let net = b.finish().unwrap();
        let w = weights(&net, 7);
        // 70 examples: a batch of 64 and one of 6.
        let x = inputs(70, net.n_inputs(), 2);
        assert_eq!(v, 1);
        let want: Vec<Vec<f64>> = (0..x.nrows())
            .map(|e| {
                let row: Vec<f64> = x.row(e).iter().copied().collect();
                conv_by_definition(&c, &w, &row)
            })
            .collect();
        let want = Mat::from_fn(x.nrows(), c.out_channels * oh * ow, |i, j| want[i][j]);
        let f = net.forward(&w, x.as_ref());
        assert!(
            max_abs(&f, &want) < 1e-11,
            "groups {groups}: f64 off by {}",
            max_abs(&f, &want)
        );
        let f32_err = max_abs(&net.forward_in(&w, x.as_ref(), Dtype::F32), &want);
        assert!(f32_err < 1e-4, "groups {groups}: f32 off by {f32_err}");
        // With a BatchNorm and a ReLU reading it only (fused into the convolution's pass).
        let mut b = GraphBuilder::new(vec![64, 31, 31]);
        let v = b.push("conv", Op::Conv(c), vec![0]).unwrap();
        let v = b.push("bn", bn(8, oh * ow), vec![v]).unwrap();
        b.push("relu", unary(UnaryKind::Relu, 0.0), vec![v])
            .unwrap();
        let fused = b.finish().unwrap();
        let mut wf = w.clone();
        wf.extend((0..16).map(|i| 0.8 + 0.05 * i as f64));
        let Op::BatchNorm(norm) = bn(8, oh * ow) else {
            unreachable!()
        };
        let want = Mat::from_fn(want.nrows(), want.ncols(), |i, j| {
            let ch = j / (oh * ow);
            let v = (want[(i, j)] - norm.mean[ch]) / (norm.var[ch] + norm.eps).sqrt()
                * wf[w.len() + ch]
                + wf[w.len() + 8 + ch];
            v.max(0.0)
        });
        let f = fused.forward(&wf, x.as_ref());
        assert!(max_abs(&f, &want) < 1e-11, "groups {groups}: fused f64");
        let f32_err = max_abs(&fused.forward_in(&wf, x.as_ref(), Dtype::F32), &want);
        assert!(
            f32_err < 1e-4,
            "groups {groups}: fused f32 off by {f32_err}"
        );
    }
}

/// Depthwise and dilated convolutions, max pooling with padding, average pooling without the
/// padding, and the smooth activations (from their inputs).
#[test]
fn grouped_dilated_convolutions_pooling_and_activations_have_exact_jacobians() {
    let mut b = GraphBuilder::new(vec![2, 7, 7]);
    let c = b
        .push("dw", conv(2, 4, 7, 3, 1, 2, 2, 2, true), vec![0])
        .unwrap();
    let a = b
        .push("gelu", unary(UnaryKind::Gelu, 0.0), vec![c])
        .unwrap();
    let p = b
        .push(
            "max",
            Op::Pool(Pool {
                kind: PoolKind::Max,
                channels: 4,
                input: [7, 7],
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
            }),
            vec![a],
        )
        .unwrap();
    let s = b
        .push("silu", unary(UnaryKind::Silu, 0.0), vec![p])
        .unwrap();
    let q = b
        .push(
            "avg",
            Op::Pool(Pool {
                kind: PoolKind::AvgExcludePad,
                channels: 4,
                input: [4, 4],
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
            }),
            vec![s],
        )
        .unwrap();
    let e = b.push("elu", unary(UnaryKind::Elu, 0.7), vec![q]).unwrap();
    let f = b.push("flatten", flatten(16), vec![e]).unwrap();
    let l = b.push("fc1", linear(16, 5, 1, false), vec![f]).unwrap();
    let mut last = l;
    for (i, (kind, alpha)) in [
        (UnaryKind::GeluTanh, 0.0),
        (UnaryKind::Softplus, 1.5),
        (UnaryKind::LeakyRelu, 0.1),
        (UnaryKind::Tanh, 0.0),
        (UnaryKind::Sigmoid, 0.0),
    ]
    .into_iter()
    .enumerate()
    {
        last = b
            .push(format!("act{i}"), unary(kind, alpha), vec![last])
            .unwrap();
    }
    b.push("fc2", linear(5, 3, 1, true), vec![last]).unwrap();
    check(&b.finish().unwrap(), "grouped conv");
}

/// A mixer and attention block on 4 tokens of 6 features: LayerNorm, a token-wise Linear,
/// GELU written as ONNX writes it (`x · (erf(x/√2) + 1) · 0.5`), a transpose and a
/// channel-mixing Linear, a residual; softmax(Q Kᵀ/√d) V; concatenation, slicing, the mean over
/// tokens and a head.
#[test]
fn a_mixer_and_attention_have_exact_jacobians() {
    let (t, d) = (4, 6);
    let mut b = GraphBuilder::new(vec![t, d]);
    let ln = b
        .push(
            "norm",
            Op::LayerNorm(LayerNorm {
                size: d,
                positions: t,
                eps: 1e-5,
                scale: true,
                shift: true,
            }),
            vec![0],
        )
        .unwrap();
    let h = b.push("mlp.fc1", linear(d, d, t, true), vec![ln]).unwrap();
    let sh = Operand::Input { shape: vec![t, d] };
    let cst = |v: f64| Operand::Constant {
        shape: vec![],
        values: vec![v],
    };
    let div = b
        .push(
            "div",
            Op::Binary(
                Binary::new(BinaryKind::Div, sh.clone(), cst(std::f64::consts::SQRT_2)).unwrap(),
            ),
            vec![h],
        )
        .unwrap();
    let erf = b
        .push("erf", unary(UnaryKind::Erf, 0.0), vec![div])
        .unwrap();
    let add1 = b
        .push(
            "add1",
            Op::Binary(Binary::new(BinaryKind::Add, sh.clone(), cst(1.0)).unwrap()),
            vec![erf],
        )
        .unwrap();
    let mul = b
        .push(
            "mul",
            Op::Binary(Binary::new(BinaryKind::Mul, sh.clone(), sh.clone()).unwrap()),
            vec![h, add1],
        )
        .unwrap();
    let half = b
        .push(
            "half",
            Op::Binary(Binary::new(BinaryKind::Mul, sh.clone(), cst(0.5)).unwrap()),
            vec![mul],
        )
        .unwrap();
    let tr = b
        .push(
            "transpose",
            Op::Gather(Gather {
                index: Some(transpose_index(&[t, d], &[1, 0])),
                shape: vec![d, t],
            }),
            vec![half],
        )
        .unwrap();
    let tok = b.push("token", linear(t, t, d, true), vec![tr]).unwrap();
    let back = b
        .push(
            "transpose2",
            Op::Gather(Gather {
                index: Some(transpose_index(&[d, t], &[1, 0])),
                shape: vec![t, d],
            }),
            vec![tok],
        )
        .unwrap();
    let res = b
        .push(
            "residual",
            Op::Binary(Binary::new(BinaryKind::Add, sh.clone(), sh.clone()).unwrap()),
            vec![back, 0],
        )
        .unwrap();
    // Attention, one head: scores = Q Kᵀ / √d over the tokens.
    let q = b.push("q", linear(d, d, t, true), vec![res]).unwrap();
    let k = b.push("k", linear(d, d, t, false), vec![res]).unwrap();
    let v = b.push("v", linear(d, d, t, true), vec![res]).unwrap();
    let kt = b
        .push(
            "kt",
            Op::Gather(Gather {
                index: Some(transpose_index(&[t, d], &[1, 0])),
                shape: vec![d, t],
            }),
            vec![k],
        )
        .unwrap();
    let s = b
        .push(
            "scores",
            Op::MatMul(MatMul {
                batch: 1,
                rows: t,
                inner: d,
                cols: t,
            }),
            vec![q, kt],
        )
        .unwrap();
    let ss = Operand::Input { shape: vec![t, t] };
    let sc = b
        .push(
            "scale",
            Op::Binary(
                Binary::new(BinaryKind::Mul, ss.clone(), cst(1.0 / (d as f64).sqrt())).unwrap(),
            ),
            vec![s],
        )
        .unwrap();
    let p = b
        .push("softmax", Op::Softmax(Softmax { size: t }), vec![sc])
        .unwrap();
    let o = b
        .push(
            "attend",
            Op::MatMul(MatMul {
                batch: 1,
                rows: t,
                inner: t,
                cols: d,
            }),
            vec![p, v],
        )
        .unwrap();
    let sub = b
        .push(
            "sub",
            Op::Binary(
                Binary::new(
                    BinaryKind::Sub,
                    sh.clone(),
                    Operand::Constant {
                        shape: vec![d],
                        values: (0..d).map(|i| 0.1 * i as f64).collect(),
                    },
                )
                .unwrap(),
            ),
            vec![o],
        )
        .unwrap();
    let dv = b
        .push(
            "divide",
            Op::Binary(Binary::new(BinaryKind::Div, sh.clone(), sh.clone()).unwrap()),
            vec![sub, add1],
        )
        .unwrap();
    let cat = b
        .push(
            "cat",
            Op::Concat(Concat {
                shapes: vec![vec![t, d], vec![t, d]],
                axis: 1,
            }),
            vec![dv, res],
        )
        .unwrap();
    let (idx, shape) = slice_index(&[t, 2 * d], &[0, 1], &[t, 2 * d], &[1, 2]);
    let sl = b
        .push(
            "slice",
            Op::Gather(Gather {
                index: Some(idx),
                shape: shape.clone(),
            }),
            vec![cat],
        )
        .unwrap();
    let m = b
        .push(
            "mean",
            Op::Mean(Mean {
                shape: shape.clone(),
                axes: vec![0],
            }),
            vec![sl],
        )
        .unwrap();
    let f = b.push("flatten", flatten(shape[1]), vec![m]).unwrap();
    b.push("head", linear(shape[1], 3, 1, true), vec![f])
        .unwrap();
    check(&b.finish().unwrap(), "mixer and attention");
}

/// A value used twice adds its cotangents: `relu(x) + relu(x)` is `2 · relu(x)`.
#[test]
fn a_skip_connection_equals_the_function_written_without_it() {
    let build = |skip: bool| {
        let mut b = GraphBuilder::new(vec![5]);
        let l = b.push("fc1", linear(5, 4, 1, true), vec![0]).unwrap();
        let r = b
            .push("tanh", unary(UnaryKind::Tanh, 0.0), vec![l])
            .unwrap();
        let s = Operand::Input { shape: vec![4] };
        let y = if skip {
            b.push(
                "add",
                Op::Binary(Binary::new(BinaryKind::Add, s.clone(), s).unwrap()),
                vec![r, r],
            )
            .unwrap()
        } else {
            b.push(
                "twice",
                Op::Binary(
                    Binary::new(
                        BinaryKind::Mul,
                        s,
                        Operand::Constant {
                            shape: vec![],
                            values: vec![2.0],
                        },
                    )
                    .unwrap(),
                ),
                vec![r],
            )
            .unwrap()
        };
        b.push("fc2", linear(4, 2, 1, true), vec![y]).unwrap();
        b.finish().unwrap()
    };
    let (a, b) = (build(true), build(false));
    let w = weights(&a, 1);
    let x = inputs(4, 5, 2);
    let (ja, jb) = (a.jacobian(&w, x.as_ref()), b.jacobian(&w, x.as_ref()));
    assert!(max_abs(&ja, &jb) < 1e-14);
    check(&a, "skip");
}

/// A spec string's graph runs as its chain; node by node it gives the same outputs,
/// Jacobians, kernels and KFAC factors.
#[test]
fn a_spec_strings_graph_equals_its_chain() {
    for spec in [
        "3:dense7,tanh,dense5,sigmoid,dense2",
        "1x8x8:conv3k3,relu,pool,conv2k2,tanh,flatten,dense4,relu,dense3",
    ] {
        let chain: Graph = Sequential::parse(spec).unwrap().into();
        assert!(chain.chain().is_some());
        let graph = chain.without_chain();
        let w = chain.init(2);
        assert_eq!(graph.init(2), w);
        assert_eq!(graph.param_layout(), chain.param_layout());
        let x = inputs(5, chain.n_inputs(), 3);
        let (fa, ja) = chain.forward_jacobian(&w, x.as_ref());
        let (fb, jb) = graph.forward_jacobian(&w, x.as_ref());
        assert!(max_abs(&fa, &fb) < 1e-14, "{spec}");
        assert!(max_abs(&ja, &jb) < 1e-13, "{spec}");
        assert!(
            max_abs(
                &chain.ntk(&w, x.as_ref(), x.as_ref()),
                &graph.ntk(&w, x.as_ref(), x.as_ref())
            ) < 1e-12,
            "{spec}"
        );
        let roots = |f: faer::MatRef<'_, f64>| {
            Mat::from_fn(f.nrows() * f.ncols(), f.ncols(), |i, j| {
                f[(i / f.ncols(), j)] + (i % f.ncols() == j) as u8 as f64
            })
        };
        let k = chain.n_outputs();
        let (sa, sb) = (
            chain.kron_sums(&w, x.as_ref(), &roots, k),
            graph.kron_sums(&w, x.as_ref(), &roots, k),
        );
        assert_eq!(sa.len(), sb.len());
        for (a, b) in sa.iter().zip(&sb) {
            assert!(
                max_abs(&a.a, &b.a) < 1e-12 && max_abs(&a.g, &b.g) < 1e-12,
                "{spec}"
            );
            assert_eq!(
                (a.positions, a.bias, a.count),
                (b.positions, b.bias, b.count)
            );
        }
    }
}

/// KFAC over a ResNet block covers every tensor: the convolutions and the head by Kronecker
/// factors, BatchNorm's γ and β by their exact GGN blocks; all the Laplace structures fit, and
/// a posterior over all weights but BatchNorm's is the posterior of the graph with those held.
#[test]
fn kfac_covers_batchnorm_by_its_exact_blocks() {
    let net = resnet_block();
    let w = weights(&net, 4);
    let n = 7;
    let x = inputs(n, net.n_inputs(), 6);
    let f = net.forward(&w, x.as_ref());
    let y = Mat::from_fn(n, 4, |i, j| f64::from(u8::from(j == i % 4)));
    let model = Model::new(
        net.clone(),
        w.clone(),
        LikelihoodKind::Categorical,
        1.0,
        0.5,
    )
    .unwrap();
    let lik = model.likelihood().unwrap();
    let sums = Backend::new(&net, lik.as_ref(), &w).kron(x.as_ref(), y.as_ref(), None);
    let layout = net.kron_layout();
    assert_eq!(sums.len(), layout.len());
    // The exact GGN Σ_n J_nᵀ Λ_n J_n over each BatchNorm tensor.
    let jac = net.jacobian(&w, x.as_ref());
    let roots = curvature_root_rows(lik.as_ref(), f.as_ref(), y.as_ref());
    let mut offset = 0;
    let mut bn_blocks = 0;
    for (s, shape) in sums.iter().zip(&layout) {
        let len = shape.inputs * shape.outputs + if shape.bias { shape.outputs } else { 0 };
        if shape.inputs == 1 && !shape.bias {
            bn_blocks += 1;
            for a in 0..len {
                for b in 0..len {
                    let mut want = 0.0;
                    for e in 0..n {
                        for c in 0..4 {
                            let (ja, jb) = (0..4).fold((0.0, 0.0), |(p, q), o| {
                                (
                                    p + roots[(e * 4 + c, o)] * jac[(e * 4 + o, offset + a)],
                                    q + roots[(e * 4 + c, o)] * jac[(e * 4 + o, offset + b)],
                                )
                            });
                            want += ja * jb;
                        }
                    }
                    assert!(
                        (s.g[(a, b)] - want).abs() < 1e-12 * (1.0 + want.abs()),
                        "BatchNorm block"
                    );
                }
            }
            assert!((s.a[(0, 0)] - 1.0).abs() < 1e-15);
        }
        offset += len;
    }
    assert_eq!(offset, net.n_params());
    assert_eq!(bn_blocks, 6, "γ and β of three BatchNorms");
    for structure in [
        HessianStructure::Full,
        HessianStructure::Diag,
        HessianStructure::Kron,
        HessianStructure::LowRank,
    ] {
        let la = Laplace::fit_subset(
            model.clone(),
            x.as_ref(),
            y.as_ref(),
            structure,
            Subset::All,
            &Default::default(),
        )
        .unwrap();
        // The predictive from per-operation factors equals J Σ Jᵀ.
        let fc = la.functional_covariance(x.as_ref());
        let dense = la.covariance_blocks(jac.as_ref());
        assert_eq!(fc.len(), n * 16);
        for (a, b) in fc.iter().zip(&dense) {
            assert!(
                (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                "{structure}: {a} vs {b}"
            );
        }
        assert!(
            la.log_marginal_likelihood(None, None).unwrap().is_finite(),
            "{structure}"
        );
    }
    let ll = Laplace::fit_subset(
        model.clone(),
        x.as_ref(),
        y.as_ref(),
        HessianStructure::Kron,
        Subset::LastLayer,
        &Default::default(),
    )
    .unwrap();
    assert!(ll.log_marginal_likelihood(None, None).unwrap().is_finite());
}

/// A graph model's file holds the graph: it loads alone, with the user's tensor names.
#[test]
fn a_graph_model_file_is_the_model() {
    let net = resnet_block();
    let w = weights(&net, 5);
    let model = Model::new(net.clone(), w, LikelihoodKind::Categorical, 1.0, 2.0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    model
        .save(&path, dnn2gp::nn::weights::StoredDtype::F64)
        .unwrap();
    let back = Model::load(&path).unwrap();
    assert_eq!(back, model);
    let names: Vec<String> = net.param_layout().into_iter().map(|t| t.name).collect();
    assert!(
        names.contains(&"downsample.1.weight".to_string())
            && names.contains(&"fc.bias".to_string()),
        "{names:?}"
    );
}

/// Tensors held fixed (laplace-torch's `requires_grad=False`): the held network's Jacobian is
/// the full one's columns of the free tensors, its KFAC the full one's other units; a layer
/// half held and an unknown name are refused; the held values travel in the model file.
#[test]
fn held_tensors_leave_the_posterior_and_keep_their_values() {
    let net = resnet_block();
    let w = weights(&net, 7);
    let bn = net.batchnorm_tensors();
    assert_eq!(bn.len(), 6);
    let (held, free) = net.freeze(&w, &bn).unwrap();
    let layout = net.param_layout();
    let keep: Vec<usize> = layout
        .iter()
        .filter(|t| !bn.contains(&t.name))
        .flat_map(|t| t.offset..t.offset + t.shape.iter().product::<usize>())
        .collect();
    assert_eq!(free, keep.iter().map(|&i| w[i]).collect::<Vec<_>>());
    assert_eq!(held.n_params(), keep.len());
    let x = inputs(4, net.n_inputs(), 9);
    let (fa, ja) = net.forward_jacobian(&w, x.as_ref());
    let (fb, jb) = held.forward_jacobian(&free, x.as_ref());
    assert!(max_abs(&fa, &fb) < 1e-15);
    let cols = Mat::from_fn(ja.nrows(), keep.len(), |i, j| ja[(i, keep[j])]);
    assert!(max_abs(&cols, &jb) < 1e-13);
    let roots = |f: faer::MatRef<'_, f64>| {
        Mat::from_fn(f.nrows() * f.ncols(), f.ncols(), |i, j| {
            f[(i / f.ncols(), j)] * 0.3 + (i % f.ncols() == j) as u8 as f64
        })
    };
    let all = net.kron_sums(&w, x.as_ref(), &roots, 4);
    let some = held.kron_sums(&free, x.as_ref(), &roots, 4);
    let kept: Vec<_> = all.iter().filter(|s| s.a.nrows() != 1 || s.bias).collect();
    assert_eq!(kept.len(), some.len());
    for (a, b) in kept.iter().zip(&some) {
        assert!(max_abs(&a.a, &b.a) < 1e-13 && max_abs(&a.g, &b.g) < 1e-13);
    }
    check(&held, "held BatchNorm");
    let half = net
        .freeze(&w, &["bn1.weight".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        half.contains("hold bn1.weight and fit bn1.bias") && half.contains("together"),
        "{half}"
    );
    let every: Vec<String> = layout.iter().map(|t| t.name.clone()).collect();
    let all = net.freeze(&w, &every).unwrap_err().to_string();
    assert!(all.contains("every parameter tensor"), "{all}");
    let head = ["fc.weight".to_string(), "fc.bias".to_string()];
    let (no_head, rest) = net.freeze(&w, &head).unwrap();
    let model = Model::new(no_head, rest, LikelihoodKind::Categorical, 1.0, 1.0).unwrap();
    let y = Mat::from_fn(4, 4, |i, j| f64::from(u8::from(i == j)));
    let err = Laplace::fit_subset(
        model,
        x.as_ref(),
        y.as_ref(),
        HessianStructure::Kron,
        Subset::LastLayer,
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("'fc', which is held fixed"), "{err}");
    let unknown = net
        .freeze(&w, &["nope".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("'nope'") && unknown.contains("conv1.weight"),
        "{unknown}"
    );
    let model = Model::new(net, w, LikelihoodKind::Categorical, 1.0, 2.0)
        .unwrap()
        .freeze(&bn)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    model
        .save(&path, dnn2gp::nn::weights::StoredDtype::F64)
        .unwrap();
    assert_eq!(Model::load(&path).unwrap(), model);
}

/// A posterior whose forward passes run in f32 (outputs, a last layer's features, the network
/// at weight draws) predicts the probabilities of its f64 twin to 1e-4, at the evidence's δ
/// (found from the f32 fit within 1e-4 of f64's).
#[test]
fn f32_forward_passes_give_the_probabilities_of_f64() {
    use dnn2gp::posterior::Link;
    // numpy's names: `float` is float64.
    for (word, dtype) in [
        ("float", Dtype::F64),
        ("double", Dtype::F64),
        ("float32", Dtype::F32),
    ] {
        assert_eq!(word.parse::<Dtype>().unwrap(), dtype, "{word}");
    }
    assert!("f16".parse::<Dtype>().is_err());
    let net = resnet_block();
    let w = weights(&net, 8);
    let (x, xs) = (inputs(40, net.n_inputs(), 3), inputs(25, net.n_inputs(), 9));
    let f = net.forward(&w, x.as_ref());
    // Labels the network mostly gets right, so that the fit is a trained network's.
    let y = Mat::from_fn(40, 4, |i, j| {
        let best = (0..4).fold(0, |b, k| if f[(i, k)] > f[(i, b)] { k } else { b });
        f64::from(u8::from(
            j == if i % 5 == 0 { (best + 1) % 4 } else { best },
        ))
    });
    let model = Model::new(net, w, LikelihoodKind::Categorical, 1.0, 1.0).unwrap();
    for subset in [Subset::LastLayer, Subset::All] {
        let fit = |dtype: Dtype| {
            let mut la = Laplace::fit_subset(
                model.clone().with_dtype(dtype),
                x.as_ref(),
                y.as_ref(),
                HessianStructure::Kron,
                subset,
                &Default::default(),
            )
            .unwrap();
            let delta = la.optimize_prior_precision().unwrap().delta;
            let glm = la.predict(xs.as_ref(), Link::Probit).unwrap();
            let nn = la.predict_nn(xs.as_ref(), 20, 3).unwrap();
            (delta, glm.probabilities.unwrap(), nn.probabilities.unwrap())
        };
        let (d64, p64, n64) = fit(Dtype::F64);
        let (d32, p32, n32) = fit(Dtype::F32);
        assert!((d32 - d64).abs() < 1e-4 * d64, "{subset}: δ {d32} vs {d64}");
        let (gp, np) = (max_abs(&p32, &p64), max_abs(&n32, &n64));
        assert!(
            gp < 1e-4 && np < 1e-4,
            "{subset}: probabilities off by {gp} (glm), {np} (nn)"
        );
        assert!(gp > 0.0, "{subset}: the f32 run computed in f64");
    }
}

/// The timed forward pass lists every node once, in order, a convolution with the BatchNorm
/// and ReLU that read only it in one step, and the products' operations per example.
#[test]
fn the_forward_profile_names_every_step_and_its_operations() {
    let net = resnet_block();
    let w = weights(&net, 2);
    let x = inputs(300, net.n_inputs(), 4);
    let steps = net.forward_profile(&w, x.as_ref(), Dtype::F32);
    let names: Vec<&str> = steps
        .iter()
        .flat_map(|s| s.nodes.iter().map(String::as_str))
        .collect();
    let all: Vec<&str> = net.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, all);
    assert_eq!(steps[0].nodes, ["conv1", "bn1", "relu1"]);
    assert_eq!(steps[1].nodes, ["conv2", "bn2"]);
    // conv1: 3 outputs at 3×3 positions, patches of 2·3·3; fc: 3 → 4.
    assert_eq!(steps[0].flops, 2 * 3 * 9 * 18);
    assert_eq!(steps.last().unwrap().flops, 2 * 3 * 4);
    assert!(steps.iter().all(|s| s.seconds >= 0.0) && steps[0].seconds > 0.0);
}
