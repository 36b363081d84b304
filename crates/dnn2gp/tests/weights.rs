//! Parameters in safetensors files with PyTorch `state_dict` keys: round trips and refusals.

mod common;

use std::collections::BTreeMap;

use dnn2gp::nn::weights::{load, save, StoredDtype};
use dnn2gp::nn::{Activation, Network, Sequential};
use safetensors::tensor::{Dtype, TensorView};

#[test]
fn mlp_and_lenet_round_trip() {
    let dir = common::tmpdir();
    let mlp = Sequential::mlp(vec![2, 20, 1], Activation::Tanh).unwrap();
    let layout = mlp.param_layout();
    let names: Vec<&str> = layout.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(layout[0].shape, vec![20, 2]);
    let w = mlp.init(3);
    let p = dir.path().join("mlp.safetensors");
    save(&p, &layout, &w, StoredDtype::F64).unwrap();
    assert_eq!(load(&p, &layout).unwrap(), w);
    save(&p, &layout, &w, StoredDtype::F32).unwrap();
    let back = load(&p, &layout).unwrap();
    assert!(back
        .iter()
        .zip(&w)
        .all(|(a, b)| (a - b).abs() <= 1e-7 * b.abs().max(1e-30)));

    let lenet = Sequential::lenet5(1, 28, 10).unwrap();
    let layout = lenet.param_layout();
    let keys: Vec<&str> = layout
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| n.ends_with("weight"))
        .collect();
    assert_eq!(
        keys,
        ["0.weight", "3.weight", "7.weight", "9.weight", "11.weight"]
    );
    assert_eq!(layout[2].shape, vec![16, 6, 5, 5]);
    let w = lenet.init(1);
    let p = dir.path().join("lenet.safetensors");
    save(&p, &layout, &w, StoredDtype::F64).unwrap();
    assert_eq!(load(&p, &layout).unwrap(), w);
}

fn write_tensors(path: &std::path::Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: BTreeMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn bad_files_are_refused_naming_the_key() {
    let dir = common::tmpdir();
    let mlp = Sequential::mlp(vec![1, 2, 1], Activation::Tanh).unwrap();
    let layout = mlp.param_layout();
    let f = |n: usize| vec![0u8; 4 * n];
    let full = || {
        vec![
            ("0.weight", Dtype::F32, vec![2, 1], f(2)),
            ("0.bias", Dtype::F32, vec![2], f(2)),
            ("2.weight", Dtype::F32, vec![1, 2], f(2)),
            ("2.bias", Dtype::F32, vec![1], f(1)),
        ]
    };
    let p = dir.path().join("m.safetensors");
    write_tensors(&p, &full());
    assert_eq!(load(&p, &layout).unwrap(), vec![0.0; mlp.n_params()]);

    let mut missing = full();
    missing.remove(1);
    write_tensors(&p, &missing);
    let err = load(&p, &layout).unwrap_err();
    assert!(
        err.to_string().contains("tensor '0.bias': missing"),
        "{err}"
    );
    assert!(matches!(err, dnn2gp::Error::Tensor { ref name, .. } if name == "0.bias"));

    let mut extra = full();
    extra.push(("4.weight", Dtype::F32, vec![1], f(1)));
    write_tensors(&p, &extra);
    assert!(load(&p, &layout)
        .unwrap_err()
        .to_string()
        .contains("4.weight"));

    let mut shape = full();
    shape[2] = ("2.weight", Dtype::F32, vec![2, 1], f(2));
    write_tensors(&p, &shape);
    let err = load(&p, &layout).unwrap_err().to_string();
    assert!(
        err.contains("'2.weight': shape [2, 1]") && err.contains("[1, 2]"),
        "{err}"
    );

    let mut dtype = full();
    dtype[3] = ("2.bias", Dtype::I32, vec![1], f(1));
    write_tensors(&p, &dtype);
    assert!(load(&p, &layout)
        .unwrap_err()
        .to_string()
        .contains("dtype I32"));

    std::fs::write(&p, b"garbage").unwrap();
    assert!(load(&p, &layout)
        .unwrap_err()
        .to_string()
        .contains("not a safetensors file"));
}

/// A model file rebuilds the model from itself alone: architecture, weights, likelihood, σ, δ
/// and the data fingerprint; a file without them, or with a bad one, is refused naming the key.
#[test]
fn a_model_file_describes_itself() {
    use dnn2gp::likelihood::LikelihoodKind;
    use dnn2gp::nn::weights::{save, StoredDtype};
    use dnn2gp::train::model::{fingerprint, Model};
    let dir = common::tmpdir();
    let net = Sequential::parse("1x6x6:conv2k3,relu,pool,flatten,dense3").unwrap();
    let w = net.init(3);
    let x = faer::Mat::from_fn(4, 36, |i, j| (i * 36 + j) as f64 * 0.01);
    let y = faer::Mat::from_fn(4, 3, |i, j| f64::from(u8::from(i % 3 == j)));
    let mut model = Model::new(
        net.clone(),
        w.clone(),
        LikelihoodKind::Categorical,
        1.0,
        0.5,
    )
    .unwrap();
    model.data = Some(fingerprint(x.as_ref(), y.as_ref()));
    let path = dir.path().join("model.safetensors");
    model.save(&path, StoredDtype::F64).unwrap();
    assert_eq!(Model::load(&path).unwrap(), model);
    assert!(model
        .data
        .as_deref()
        .unwrap()
        .starts_with("n=4 d=36 k=3 crc32="));
    let mut other = y.clone();
    other[(0, 0)] = 0.5;
    assert_ne!(
        fingerprint(x.as_ref(), other.as_ref()),
        model.data.clone().unwrap()
    );
    // The weights are a state_dict under nn.Sequential's names.
    assert_eq!(
        dnn2gp::nn::weights::load(&path, &net.param_layout()).unwrap(),
        w
    );
    // A bare state_dict is not a model file.
    let bare = dir.path().join("bare.safetensors");
    save(&bare, &net.param_layout(), &w, StoredDtype::F32).unwrap();
    let err = Model::load(&bare).unwrap_err().to_string();
    assert!(
        err.contains("bare.safetensors") && err.contains("dnn2gp.architecture"),
        "{err}"
    );
    // Bad hyperparameters are refused on the way in and out.
    assert!(Model::new(net.clone(), w.clone(), LikelihoodKind::Gaussian, -1.0, 0.5).is_err());
    assert!(Model::new(
        net.clone(),
        w[1..].to_vec(),
        LikelihoodKind::Gaussian,
        1.0,
        0.5
    )
    .is_err());
    let mut nan = w.clone();
    nan[2] = f64::NAN;
    let err = Model::new(net, nan, LikelihoodKind::Gaussian, 1.0, 0.5).unwrap_err();
    assert!(err.to_string().contains("parameter 2 is NaN"), "{err}");
}

/// The same model and posterior give the same bytes, whatever order the serialiser's map
/// holds the metadata in.
#[test]
fn files_are_the_same_bytes_every_time() {
    use dnn2gp::likelihood::LikelihoodKind;
    use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, Posterior};
    use dnn2gp::train::model::Model;
    let dir = common::tmpdir();
    let net = Sequential::mlp(vec![2, 4, 1], Activation::Tanh).unwrap();
    let mut model =
        Model::new(net.clone(), net.init(3), LikelihoodKind::Gaussian, 0.7, 2.0).unwrap();
    model.data = Some("n=8 d=2 k=1 crc32=00000000".into());
    let x = faer::Mat::from_fn(8, 2, |i, j| (i * 2 + j) as f64 / 7.0);
    let y = faer::Mat::from_fn(8, 1, |i, _| (i as f64).sin());
    let la = Laplace::fit(
        model.clone(),
        x.as_ref(),
        y.as_ref(),
        HessianStructure::Kron,
        &FitOptions::default(),
    )
    .unwrap();
    assert!(la.log_marginal_likelihood(None, None).unwrap().is_finite());
    let bytes = |i: usize| {
        let (m, p) = (
            dir.path().join(format!("m{i}")),
            dir.path().join(format!("p{i}")),
        );
        model.save(&m, StoredDtype::F64).unwrap();
        la.save(&p).unwrap();
        (std::fs::read(m).unwrap(), std::fs::read(p).unwrap())
    };
    let first = bytes(0);
    for i in 1..6 {
        assert!(bytes(i) == first, "save {i} wrote other bytes");
    }
}
