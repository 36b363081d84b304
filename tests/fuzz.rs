//! Parsers of users' bytes fed random and mutated inputs (proptest): IDX images, safetensors
//! weights, `.npy` arrays, CSV tables and architecture specs. Each must return a value or an
//! error that names the file, and never panic.

mod common;

use std::io::Write;

use proptest::prelude::*;

use dnn2gp::data::{csv, mnist};
use dnn2gp::nn::weights::{load, save, StoredDtype};
use dnn2gp::nn::{Activation, Mlp, Network, Sequential};
use dnn2gp::report::files::{read_npy, write_npy};

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

fn tiny_mlp() -> Mlp {
    Mlp::new(vec![2, 3, 1], Activation::Tanh).unwrap()
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
            Ok(net) => prop_assert!(net.n_params() <= dnn2gp::nn::sequential::MAX_PARAMS && net.n_outputs() > 0),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&spec), "{} does not quote the spec", msg);
            }
        }
    }
}
