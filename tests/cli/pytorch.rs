//! Agreement with PyTorch, laplace-torch and neural-tangents on networks trained in PyTorch and
//! saved with `safetensors.torch.save_file(model.state_dict(), …)`. The reference values are in
//! `tests/fixtures/pytorch/`, made by `python tests/fixtures/pytorch/make.py` (see its doc for
//! the versions); the digits and MNIST images are read from `../shared/data`.

use crate::common;
#[allow(unused_imports)]
use crate::util::*;

use std::path::{Path, PathBuf};

use faer::{Mat, MatRef};

use dnn2gp::curvature::Linearization;
use dnn2gp::data::mnist;
use dnn2gp::io::read_npy;
use dnn2gp::likelihood::classification::probit;
use dnn2gp::likelihood::{Categorical, Gaussian};
use dnn2gp::nn::weights::load;
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::posterior::{HessianStructure, LaplaceGgn};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pytorch")
        .join(name)
}

/// A fixture array: its shape and values.
fn npy(name: &str) -> (Vec<usize>, Vec<f64>) {
    read_npy(&fixture(name)).unwrap()
}

/// A 2-D fixture as a matrix.
fn npy_mat(name: &str) -> Mat<f64> {
    let (shape, v) = npy(name);
    let cols = shape.get(1).copied().unwrap_or(1);
    Mat::from_fn(shape[0], cols, |i, j| v[i * cols + j])
}

/// Asserts `|a − b| ≤ tol·|b|` elementwise (plus `floor` absolute, for values near zero).
fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64, floor: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (y.abs() + floor / tol).max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max);
    eprintln!("{what}: largest relative difference {worst:.1e}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs() + floor,
            "{what}[{i}]: ours {x} vs reference {y} (relative {:.2e})",
            (x - y).abs() / y.abs()
        );
    }
}

/// Asserts `max|a − b| ≤ tol · max|b|`: accuracy relative to the largest value (an f32
/// computation's, or an f64 one whose sums run in another order).
fn assert_close_f32(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "{what}: largest difference {:.1e} of the largest value",
        err / scale
    );
    assert!(
        err <= tol * scale,
        "{what}: max error {err:.3e} is {:.2e} of max |value| {scale:.3e}",
        err / scale
    );
}

/// Asserts that the full-GGN Laplace evidence at each δ of a fixture (rows `δ, log marglik`)
/// equals laplace-torch's `log_marginal_likelihood` to 1e-6 relative.
fn assert_marglik_over_deltas(lin: &Linearization, name: &str) {
    let (_, lml) = npy(name);
    for row in lml.chunks(2) {
        let post = LaplaceGgn::fit(lin, row[0], HessianStructure::Full, 1 << 30).unwrap();
        let ours = post.log_marginal_likelihood(lin).unwrap();
        assert_close(
            &format!("log marglik at δ = {}", row[0]),
            &[ours],
            &[row[1]],
            1e-6,
            0.0,
        );
    }
}

#[test]
fn regression_glm_predictive_and_marglik_equal_laplace_torch() {
    let net = Sequential::mlp(vec![1, 16, 16, 1], Activation::Tanh).unwrap();
    let w = load(&fixture("reg_mlp.safetensors"), &net.param_layout()).unwrap();
    let (x, y, xt) = (
        npy_mat("reg_x.npy"),
        npy_mat("reg_y.npy"),
        npy_mat("reg_xt.npy"),
    );
    let lik = Gaussian::new(0.3).unwrap();
    let lin = Linearization::new(&net, &lik, x.as_ref(), y.as_ref(), &w);
    let post = LaplaceGgn::fit(&lin, 0.5, HessianStructure::Full, 1 << 30).unwrap();
    let (ft, jt) = net.forward_jacobian(&w, xt.as_ref());
    let mean: Vec<f64> = ft.col(0).iter().copied().collect();
    assert_close("GLM mean", &mean, &npy("reg_glm_mean.npy").1, 1e-6, 1e-12);
    let var = post.functional_variance(jt.as_ref());
    assert_close("GLM variance", &var, &npy("reg_glm_var.npy").1, 1e-6, 0.0);
    assert_marglik_over_deltas(&lin, "reg_lml.npy");
}

#[test]
fn classification_glm_predictive_marglik_and_ntk_equal_the_peers() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let d = mnist::load_digits(&data.join("digits/digits.csv.gz"), 1500).unwrap();
    let x = d.train_x.as_ref().subrows(0, 120).to_owned();
    let y = mnist::one_hot(&d.train_y[..120], 10);
    let xt = d.test_x.as_ref().subrows(0, 8).to_owned();
    let net = Sequential::parse("64:dense16,relu,dense10").unwrap();
    let w = load(&fixture("cls_mlp.safetensors"), &net.param_layout()).unwrap();
    let lin = Linearization::new(&net, &Categorical, x.as_ref(), y.as_ref(), &w);
    let post = LaplaceGgn::fit(&lin, 1.0, HessianStructure::Full, 1 << 30).unwrap();
    let (ft, jt) = net.forward_jacobian(&w, xt.as_ref());
    let mean: Vec<f64> = (0..80).map(|m| ft[(m / 10, m % 10)]).collect();
    assert_close("GLM f_mu", &mean, &npy("cls_glm_mean.npy").1, 1e-6, 1e-12);
    let blocks = post.functional_covariance_blocks(jt.as_ref(), 10);
    let (shape, cov) = npy("cls_glm_cov.npy");
    assert_eq!(shape, vec![8, 10, 10]);
    let scale = cov.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert_close("GLM f_var blocks", &blocks, &cov, 1e-6, 1e-9 * scale);
    let probs: Vec<f64> = (0..8)
        .flat_map(|i| {
            let m: Vec<f64> = (0..10).map(|a| ft[(i, a)]).collect();
            let v: Vec<f64> = (0..10).map(|a| blocks[i * 100 + a * 11]).collect();
            probit(&m, &v)
        })
        .collect();
    assert_close(
        "probit probabilities",
        &probs,
        &npy("cls_probit.npy").1,
        1e-6,
        1e-12,
    );
    assert_marglik_over_deltas(&lin, "cls_lml.npy");
    // neural-tangents' empirical NTK, f32 with trace_axes=().
    let k = net.ntk(&w, xt.as_ref(), xt.as_ref());
    let (shape, nt) = npy("cls_ntk.npy");
    assert_eq!(shape, vec![8, 8, 10, 10]);
    assert_close_f32("NTK", &dnn2gp::gp::nt_order(k.as_ref(), 10), &nt, 1e-5);
}

#[test]
fn lenet5_trained_in_pytorch_gives_the_same_logits_and_ntk() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let net = Sequential::lenet5(1, 28, 10).unwrap();
    let w = load(&fixture("lenet5.safetensors"), &net.param_layout()).unwrap();
    let images = mnist::read_images(&data.join("mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let x = images.as_ref().subrows(0, 8).to_owned();
    let f = net.forward(&w, x.as_ref());
    let ours: Vec<f64> = (0..80).map(|m| f[(m / 10, m % 10)]).collect();
    let (_, torch) = npy("lenet5_logits.npy");
    assert_close_f32("LeNet-5 logits", &ours, &torch, 1e-5);
    let classes = |v: &[f64]| -> Vec<usize> {
        v.chunks(10)
            .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
            .collect()
    };
    assert_eq!(classes(&ours), classes(&torch));
    let x4 = x.as_ref().subrows(0, 4);
    let k = net.ntk(&w, x4, x4);
    let (shape, nt) = npy("lenet5_ntk.npy");
    assert_eq!(shape, vec![4, 4, 10, 10]);
    assert_close_f32(
        "LeNet-5 NTK",
        &dnn2gp::gp::nt_order(k.as_ref(), 10),
        &nt,
        1e-5,
    );
}

#[test]
fn imported_weights_go_through_the_command_line_gp() {
    let dir = common::tmpdir();
    let (x, y) = (npy_mat("reg_x.npy"), npy_mat("reg_y.npy"));
    let csv = dir.path().join("reg.csv");
    let rows: String = (0..x.nrows())
        .map(|i| format!("{:.17e},{:.17e}\n", x[(i, 0)], y[(i, 0)]))
        .collect();
    std::fs::write(&csv, rows).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
            .args(args)
            .arg("--quiet")
            .output()
            .unwrap()
    };
    let weights = fixture("reg_mlp.safetensors");
    let (model, gp) = (dir.path().join("model"), dir.path().join("gp"));
    let base = [
        "import",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        csv.to_str().unwrap(),
        "--sigma",
        "0.3",
        "--delta",
        "1",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--activation",
        "tanh",
        "--hidden",
        "16,16",
        "--out",
        model.to_str().unwrap(),
    ]);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "gp",
        "--model",
        model.to_str().unwrap(),
        "--out",
        gp.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gp.join("gp.json")).unwrap()).unwrap();
    let (_, lml) = npy("reg_lml.npy");
    let at_one = lml.chunks(2).find(|r| (r[0] - 1.0).abs() < 1e-12).unwrap()[1];
    let ours = summary["laplace_log_evidence"].as_f64().unwrap();
    assert_close("evidence through the CLI", &[ours], &[at_one], 1e-9, 0.0);

    // The same network by --arch is the same model file; at another δ than it was trained
    // with, the stationarity warning's advice names import's options, not training's.
    let by_spec = dir.path().join("by-spec");
    let mut args = base.to_vec();
    let last = args.len() - 1;
    args[last] = "3";
    args.extend([
        "--arch",
        "1:dense16,tanh,dense16,tanh,dense1",
        "--out",
        by_spec.to_str().unwrap(),
    ]);
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("not a stationary point")
            && err.contains("--arch")
            && !err.contains("--epochs"),
        "{err}"
    );
    let load = |d: &std::path::Path| {
        dnn2gp::train::model::Model::load(&d.join("model.safetensors")).unwrap()
    };
    let out = run(&[
        "gp",
        "--model",
        by_spec.to_str().unwrap(),
        "--out",
        dir.path().join("gp-spec").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a stationary point") && err.contains("`dnn2gp train` with more --epochs"),
        "{err}"
    );
    let (a, b) = (load(&model), load(&by_spec));
    assert_eq!((a.net.spec(), &a.w), (b.net.spec(), &b.w));

    // The wrong architecture names the tensor whose shape differs.
    let bad = dir.path().join("bad");
    let mut args = base.to_vec();
    args.extend(["--hidden", "16,8", "--out", bad.to_str().unwrap()]);
    args.extend(["--activation", "tanh"]);
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("2.weight") && err.contains("shape"), "{err}");
    assert!(!bad.exists());
}

#[test]
fn a_softmax_network_from_pytorch_through_import_and_gp_matches_laplace_torch() {
    // The classification fixture through the command line: a label column gives the 10
    // outputs, and `gp` reports laplace-torch's quantities one to one: the GLM f_var blocks,
    // the probit probabilities and the log marginal likelihood over δ.
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let d = mnist::load_digits(&data.join("digits/digits.csv.gz"), 1500).unwrap();
    let write = |path: &Path, x: MatRef<'_, f64>, labels: &[usize]| {
        let text: String = (0..x.nrows())
            .map(|i| {
                let mut row: Vec<String> = x.row(i).iter().map(|v| format!("{v:.17e}")).collect();
                row.push(labels[i].to_string());
                row.join(",") + "\n"
            })
            .collect();
        std::fs::write(path, text).unwrap();
    };
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    write(
        &train,
        d.train_x.as_ref().subrows(0, 120),
        &d.train_y[..120],
    );
    write(&test, d.test_x.as_ref().subrows(0, 8), &d.test_y[..8]);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
            .args(args)
            .arg("--quiet")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (model, gp) = (dir.path().join("model"), dir.path().join("gp"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run(&[
        "import",
        "--weights",
        &s(&fixture("cls_mlp.safetensors")),
        "--data",
        &s(&train),
        "--test",
        &s(&test),
        "--likelihood",
        "categorical",
        "--classes",
        "10",
        "--hidden",
        "16",
        "--activation",
        "relu",
        "--delta",
        "1",
        "--out",
        &s(&model),
    ]);
    let (_, lml) = npy("cls_lml.npy");
    let deltas: Vec<String> = lml.chunks(2).map(|r| format!("{:e}", r[0])).collect();
    run(&[
        "gp",
        "--model",
        &s(&model),
        "--delta-grid",
        &deltas.join(","),
        "--samples",
        "100",
        "--out",
        &s(&gp),
    ]);
    let (shape, blocks) = read_npy(&gp.join("f_var.npy")).unwrap();
    assert_eq!(shape, vec![8, 10, 10]);
    let (_, cov) = npy("cls_glm_cov.npy");
    let scale = cov.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert_close("f_var.npy", &blocks, &cov, 1e-6, 1e-9 * scale);
    let csv = std::fs::read_to_string(gp.join("predictions.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "p_probit").unwrap();
    let probs: Vec<f64> = lines
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect();
    assert_close("p_probit", &probs, &npy("cls_probit.npy").1, 1e-6, 1e-12);
    let path = std::fs::read_to_string(gp.join("marglik_path.csv")).unwrap();
    let ours: Vec<f64> = path
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let theirs: Vec<f64> = lml.chunks(2).map(|r| r[1]).collect();
    assert_close("log marglik over δ", &ours, &theirs, 1e-6, 0.0);
}

/// The graph networks of `make_graphs.py` (a ResNet block with BatchNorm and a downsampling
/// shortcut, a mixer with LayerNorm and GELU, a transformer encoder with
/// `nn.MultiheadAttention`), read from the ONNX files torch wrote, in f64: torch's logits
/// (1e-12), the NTK of torch.func (1e-10), and laplace-torch's posteriors at δ = 0.7 — last-layer
/// KFAC for all three, all-weights KFAC with BatchNorm frozen (the ResNet; laplace-torch refuses
/// it with BatchNorm), all-weights diag (mixer, encoder): probit probabilities and evidence.
#[test]
fn graph_networks_from_onnx_equal_pytorch_and_laplace_torch() {
    use dnn2gp::likelihood::LikelihoodKind;
    use dnn2gp::posterior::{Laplace, Link, LinkApprox, Posterior, Subset};
    use dnn2gp::train::model::Model;
    for name in ["resnet", "mixer", "encoder"] {
        let file = |k: &str| format!("graph_{name}_{k}.npy");
        let m = dnn2gp_onnx::read(&fixture(&format!("graph_{name}.onnx"))).unwrap();
        let xt = npy_mat(&file("xt"));
        let f = m.graph.forward(&m.weights, xt.as_ref());
        let logits = npy(&file("logits")).1;
        let ours: Vec<f64> = (0..f.nrows())
            .flat_map(|i| (0..f.ncols()).map(move |j| (i, j)))
            .map(|(i, j)| f[(i, j)])
            .collect();
        // 1e-12 of the largest logit (the order of sums differs from torch's).
        assert_close_f32(&format!("{name} logits"), &ours, &logits, 1e-12);
        let ntk = m.graph.ntk(&m.weights, xt.subrows(0, 3), xt.subrows(0, 3));
        let ours: Vec<f64> = (0..9)
            .flat_map(|i| (0..9).map(move |j| (i, j)))
            .map(|(i, j)| ntk[(i, j)])
            .collect();
        assert_close_f32(&format!("{name} NTK"), &ours, &npy(&file("ntk")).1, 1e-11);
        let x = npy_mat(&file("x"));
        let labels: Vec<usize> = npy(&file("y")).1.iter().map(|&v| v as usize).collect();
        let y = mnist::one_hot(&labels, 3);
        let model = Model::new(m.graph, m.weights, LikelihoodKind::Categorical, 1.0, 0.7).unwrap();
        let mut posteriors = vec![(
            "ll_kron",
            model.clone(),
            HessianStructure::Kron,
            Subset::LastLayer,
        )];
        if name == "resnet" {
            let held = model.freeze(&model.net.batchnorm_tensors()).unwrap();
            posteriors.push(("frozen_kron", held, HessianStructure::Kron, Subset::All));
        } else {
            posteriors.push(("diag", model.clone(), HessianStructure::Diag, Subset::All));
        }
        for (key, model, structure, subset) in posteriors {
            let la = Laplace::fit_subset(
                model,
                x.as_ref(),
                y.as_ref(),
                structure,
                subset,
                &Default::default(),
            )
            .unwrap();
            let p = la
                .predict(xt.as_ref(), Link::new(LinkApprox::Probit, 0, 0).unwrap())
                .unwrap();
            let p = p.probabilities.unwrap();
            let ours: Vec<f64> = (0..p.nrows())
                .flat_map(|i| (0..3).map(move |j| (i, j)))
                .map(|(i, j)| p[(i, j)])
                .collect();
            assert_close(
                &format!("{name} {key} probabilities"),
                &ours,
                &npy(&file(&format!("{key}_probs"))).1,
                1e-9,
                1e-12,
            );
            let lml = la.log_marginal_likelihood(None, None).unwrap();
            assert_close(
                &format!("{name} {key} evidence"),
                &[lml],
                &npy(&file(&format!("{key}_lml"))).1,
                1e-9,
                0.0,
            );
        }
    }
}

/// `import --onnx`: the mixer of `make_graphs.py` on a CSV of its training data becomes a model
/// folder under its own tensor names that `gp` fits (KFAC over all its weights, LayerNorm's
/// γ and β by their exact blocks); a missing file, an architecture beside it and a network
/// that does not fit the data are refused before anything is written.
#[test]
fn import_reads_an_onnx_network_for_gp() {
    let dir = tempfile::tempdir().unwrap();
    let x = npy_mat("graph_mixer_x.npy");
    let y = npy("graph_mixer_y.npy").1;
    let csv = dir.path().join("mixer.csv");
    let rows: Vec<String> = (0..x.nrows())
        .map(|i| {
            let mut r: Vec<String> = (0..x.ncols()).map(|j| format!("{:?}", x[(i, j)])).collect();
            r.push(format!("{}", y[i] as usize));
            r.join(",")
        })
        .collect();
    std::fs::write(&csv, rows.join("\n") + "\n").unwrap();
    let onnx = fixture("graph_mixer.onnx");
    let model = dir.path().join("model");
    let base = ["import", "--data", s(&csv), "--likelihood", "categorical"];
    let out = ok(&[&base[..], &["--onnx", s(&onnx), "--out", s(&model)]].concat());
    assert!(out.contains("P = 175"), "{out}");
    let saved = dnn2gp::train::model::Model::load(&model.join("model.safetensors")).unwrap();
    let names: Vec<String> = saved
        .net
        .param_layout()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(
        names.contains(&"norm1.weight".to_string())
            && names.contains(&"channel.2.bias".to_string()),
        "{names:?}"
    );
    let gp = dir.path().join("gp");
    let out = ok(&[
        "gp",
        "--model",
        s(&model),
        "--hessian",
        "kron",
        "--out",
        s(&gp),
    ]);
    assert!(out.contains("kron over all weights"), "{out}");
    let resnet = fixture("graph_resnet.onnx");
    let missing = dir.path().join("missing.onnx");
    refusals(
        &dir.path().join("refused"),
        &[
            ([&base[..], &["--onnx", s(&missing)]].concat(), "--onnx"),
            (
                [&base[..], &["--onnx", s(&onnx), "--arch", "24:dense3"]].concat(),
                "--arch",
            ),
            ([&base[..], &["--onnx", s(&resnet)]].concat(), "--onnx: "),
        ],
    );
}
