//! Parameters in safetensors files with PyTorch `state_dict` keys: round trips and refusals.

mod common;

use std::collections::BTreeMap;

use dnn2gp::nn::weights::{load, save, StoredDtype};
use dnn2gp::nn::{Activation, Mlp, Network, Sequential};
use safetensors::tensor::{Dtype, TensorView};

#[test]
fn mlp_and_lenet_round_trip() {
    let dir = common::tmpdir();
    let mlp = Mlp::new(vec![2, 20, 1], Activation::Tanh).unwrap();
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
    let mlp = Mlp::new(vec![1, 2, 1], Activation::Tanh).unwrap();
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
    assert!(load(&p, &layout)
        .unwrap_err()
        .to_string()
        .contains("missing tensor '0.bias'"));

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
        err.contains("'2.weight' has shape [2, 1]") && err.contains("[1, 2]"),
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
