//! Parsers of users' bytes fed random and mutated inputs (proptest): IDX images, safetensors
//! weights, `.npy` arrays (any shape in the header too), CSV tables, architecture specs and
//! model folders (`model.json` through the command line). Each must return a value or an
//! error that names the file, and never panic.

use crate::common;
#[allow(unused_imports)]
use crate::util::*;

use std::io::Write;

use proptest::prelude::*;

use dnn2gp::data::{csv, mnist};
use dnn2gp::io::{read_npy, write_npy};
use dnn2gp::nn::weights::{load, save, StoredDtype};
use dnn2gp::nn::{Activation, Network, Sequential};

/// A valid 3×2×2 IDX image file.
fn idx_bytes() -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
    b.extend((0..12u8).map(|v| v * 20));
    b
}

/// Applies `edits` (position, byte) and a truncation to `base`.
fn mutate(base: &[u8], edits: &[(usize, u8)], keep: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(i, v) in edits {
        if !b.is_empty() {
            let n = b.len();
            b[i % n] = v;
        }
    }
    b.truncate(keep.max(1).min(b.len()));
    b
}

/// Writes `bytes` to a fresh file; returns the folder (kept alive) and the path.
fn file(bytes: &[u8], name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = common::tmpdir();
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    (dir, path)
}

fn names_file(err: &dnn2gp::Error, path: &std::path::Path) {
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err} does not name {}",
        path.display()
    );
    assert!(err.is_input_error(), "{err}");
}

fn tiny_mlp() -> Sequential {
    Sequential::mlp(vec![2, 3, 1], Activation::Tanh).unwrap()
}

/// A model folder written by `dnn2gp train` (once per test run), as (folder, model.json bytes).
fn trained_model() -> &'static (tempfile::TempDir, Vec<u8>) {
    static MODEL: std::sync::OnceLock<(tempfile::TempDir, Vec<u8>)> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = common::tmpdir();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
            .args([
                "train",
                "--hidden",
                "3",
                "--epochs",
                "5",
                "--polish-iters",
                "0",
                "--quiet",
            ])
            .arg("--out")
            .arg(dir.path().join("model"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = std::fs::read(dir.path().join("model/model.json")).unwrap();
        (dir, json)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// `gp` on a model folder whose `model.json` was mutated: a result or exit code 2 with a
    /// message, never a panic (exit 101).
    #[test]
    fn model_json_from_mutated_bytes(
        edits in proptest::collection::vec(
            (0usize..400, prop::sample::select(b"0123456789-.e,[]{}\":ntruefalsgau ".to_vec())),
            1..4,
        ),
        keep in 200usize..500,
    ) {
        let (model_dir, json) = trained_model();
        let dir = common::tmpdir();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        for f in ["model.safetensors", "history.csv"] {
            std::fs::copy(model_dir.path().join("model").join(f), model.join(f)).unwrap();
        }
        std::fs::write(model.join("model.json"), mutate(json, &edits, keep)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
            .args(["gp", "--quiet", "--samples", "5", "--grid-points", "20", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join("gp"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        prop_assert!(matches!(out.status.code(), Some(0..=2)), "{:?}: {}", out.status, err);
        prop_assert!(!err.contains("panicked"), "{}", err);
        if out.status.code() == Some(2) {
            prop_assert!(err.starts_with("error: "), "{}", err);
        }
    }

    /// `.npy` headers with any shape: a consistent array or an error naming the file (no
    /// overflow in the shape's product).
    #[test]
    fn npy_headers_with_any_shape(dims in proptest::collection::vec(any::<u64>(), 0..4), body in 0usize..64) {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let shape = match shape.len() {
            1 => format!("({},)", shape[0]),
            _ => format!("({})", shape.join(", ")),
        };
        let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; 8 * body]);
        let (_d, path) = file(&bytes, "s.npy");
        match read_npy(&path) {
            Ok((s, v)) => prop_assert_eq!(s.iter().product::<usize>(), v.len()),
            Err(e) => names_file(&e, &path),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn idx_images_from_mutated_bytes(
        edits in proptest::collection::vec((0usize..64, any::<u8>()), 0..4),
        keep in 0usize..40,
        gz in any::<bool>(),
    ) {
        let mut bytes = mutate(&idx_bytes(), &edits, keep);
        if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            bytes = e.finish().unwrap();
        }
        let (_d, path) = file(&bytes, "images.idx");
        match mnist::read_images(&path) {
            Ok(m) => prop_assert!(m.col_iter().all(|c| c.iter().all(|v| (0.0..=1.0).contains(v)))),
            Err(e) => names_file(&e, &path),
        }
    }

    #[test]
    fn idx_labels_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (_d, path) = file(&bytes, "labels.idx");
        if let Err(e) = mnist::read_labels(&path) {
            names_file(&e, &path);
        }
    }

    #[test]
    fn safetensors_from_mutated_bytes(
        edits in proptest::collection::vec((0usize..400, any::<u8>()), 0..4),
        keep in 0usize..400,
        f32 in any::<bool>(),
    ) {
        let net = tiny_mlp();
        let w: Vec<f64> = (0..net.n_params()).map(|i| i as f64 * 0.1 - 0.5).collect();
        let dir = common::tmpdir();
        let good = dir.path().join("good.safetensors");
        save(&good, &net.param_layout(), &w, if f32 { StoredDtype::F32 } else { StoredDtype::F64 }).unwrap();
        let bytes = mutate(&std::fs::read(&good).unwrap(), &edits, keep);
        let (_d, path) = file(&bytes, "w.safetensors");
        match load(&path, &net.param_layout()) {
            Ok(v) => prop_assert!(v.len() == net.n_params() && v.iter().all(|x| x.is_finite())),
            Err(e) => names_file(&e, &path),
        }
    }

    #[test]
    fn npy_from_mutated_bytes(
        edits in proptest::collection::vec((0usize..200, any::<u8>()), 0..4),
        keep in 0usize..200,
    ) {
        let dir = common::tmpdir();
        let good = dir.path().join("good.npy");
        write_npy(&good, &[3, 4], &(0..12).map(|i| i as f64).collect::<Vec<_>>()).unwrap();
        let bytes = mutate(&std::fs::read(&good).unwrap(), &edits, keep);
        let (_d, path) = file(&bytes, "a.npy");
        match read_npy(&path) {
            Ok((shape, v)) => prop_assert_eq!(shape.iter().product::<usize>(), v.len()),
            Err(e) => names_file(&e, &path),
        }
    }

    #[test]
    fn csv_from_mutated_tables(
        edits in proptest::collection::vec((0usize..80, prop::sample::select(b"0123456789.,-e\n\r xnaNinf".to_vec())), 0..6),
        keep in 0usize..80,
    ) {
        let base = b"x,y\n0.5,1.25\n-1e-3,2\n3,4.5\n7,8\n".to_vec();
        let bytes = mutate(&base, &edits, keep);
        let (_d, path) = file(&bytes, "t.csv");
        match csv::read_dataset(&path) {
            Ok(d) => prop_assert!(d.x.col_iter().all(|c| c.iter().all(|v| v.is_finite()))),
            Err(e) => names_file(&e, &path),
        }
    }

    #[test]
    fn architecture_specs(spec in "[0-9]{1,3}(x[0-9]{1,3}x[0-9]{1,3})?:((conv[0-9]{1,4}k[0-9]{1,2}|pool|flatten|dense[0-9]{1,12}|relu|tanh|sigm|[a-z]{1,4}),){0,6}(dense[0-9]{1,3})?") {
        match Sequential::parse(&spec) {
            Ok(net) => prop_assert!(net.n_params() <= dnn2gp::nn::MAX_PARAMS && net.n_outputs() > 0),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&spec), "{} does not quote the spec", msg);
            }
        }
    }
}
