//! The B8 ResNet (BatchNorm, downsampling shortcuts, strided and padded convolutions, global
//! average pooling) read from the ONNX file torch wrote: its parameters under the state_dict
//! names, and its probabilities on the rotated test images equal torch's.

use std::path::PathBuf;

use dnn2gp::nn::Network;

fn shared(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/baselines/data")
        .join(name)
}

#[test]
fn the_b8_resnet_reads_from_onnx_with_torchs_probabilities() {
    let m = dnn2gp_onnx::read(&shared("b8_seed0_resnet.onnx")).unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.graph.n_params(), 174_970);
    let names: Vec<String> = m.graph.param_layout().into_iter().map(|t| t.name).collect();
    for n in [
        "0.weight",
        "1.weight",
        "1.bias",
        "5.downsample.0.weight",
        "5.downsample.1.bias",
        "11.weight",
        "11.bias",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    let images =
        dnn2gp::data::mnist::read_images(&shared("b6_seed0_rotated-images.idx.gz")).unwrap();
    let rows: Vec<usize> = (0..8).flat_map(|a| a * 2000..a * 2000 + 200).collect();
    let x = faer::Mat::from_fn(rows.len(), images.ncols(), |i, j| images[(rows[i], j)]);
    let f = m.graph.forward(&m.weights, x.as_ref());
    let want: Vec<Vec<f64>> = std::fs::read_to_string(shared("b8_seed0_probs_map.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let mut worst = 0.0f64;
    for (i, row) in want.iter().enumerate() {
        let top = (0..10).map(|k| f[(i, k)]).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = (0..10).map(|k| (f[(i, k)] - top).exp()).sum();
        for k in 0..10 {
            worst = worst.max(((f[(i, k)] - top).exp() / z - row[k]).abs());
        }
    }
    assert!(worst < 1e-5, "probabilities off by {worst}");
}

/// Unsupported operations and files that are no ONNX are refused, naming the node.
#[test]
fn what_cannot_be_read_is_refused() {
    let err = dnn2gp_onnx::from_bytes(b"not a model")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ONNX"), "{err}");
}
