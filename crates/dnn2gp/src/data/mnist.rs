//! MNIST in the IDX format (gzipped or not): images as pixels in [0, 1], labels as classes;
//! the paper's subset (the first n of each class, sorted by class) and binary subsets.

use std::path::Path;

use faer::Mat;

use super::read_maybe_gz;
use crate::error::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct Idx {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Values in C order.
    pub data: Vec<u8>,
}

/// Whether the file at `path` (gzipped or not) starts as an IDX file of unsigned bytes: two
/// zero bytes, type code 0x08, and at least one dimension.
pub fn is_idx(path: &Path) -> Result<bool> {
    let bytes = read_maybe_gz(path)?;
    Ok(bytes.len() >= 8 && bytes[..3] == [0, 0, 0x08] && bytes[3] > 0)
}

/// Reads an IDX file of unsigned bytes (type code 0x08).
pub fn read_idx(path: &Path) -> Result<Idx> {
    let bytes = read_maybe_gz(path)?;
    let bad = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            "not an IDX file (the magic number must start with two zero bytes)".into(),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX type code 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(bad(format!(
            "truncated IDX header ({} dimensions, {} bytes)",
            ndim,
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    if bytes.len() - header != count {
        return Err(bad(format!(
            "dimensions {dims:?} need {count} bytes of data after the {header}-byte header, the file has {}{}",
            bytes.len() - header,
            if bytes.len() - header < count { " (truncated)" } else { "" }
        )));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Images (N×rows×cols IDX) as an N×(rows·cols) matrix of pixels / 255.
pub fn read_images(path: &Path) -> Result<Mat<f64>> {
    let idx = read_idx(path)?;
    if idx.dims.len() != 3 {
        return Err(Error::Invalid(format!(
            "{}: images need 3 dimensions, found {:?}",
            path.display(),
            idx.dims
        )));
    }
    let (n, d) = (idx.dims[0], idx.dims[1] * idx.dims[2]);
    Ok(Mat::from_fn(n, d, |i, j| {
        idx.data[i * d + j] as f64 / 255.0
    }))
}

/// Labels (N IDX) as classes.
pub fn read_labels(path: &Path) -> Result<Vec<usize>> {
    let idx = read_idx(path)?;
    if idx.dims.len() != 1 {
        return Err(Error::Invalid(format!(
            "{}: labels need 1 dimension, found {:?}",
            path.display(),
            idx.dims
        )));
    }
    Ok(idx.data.iter().map(|v| *v as usize).collect())
}

/// MNIST's four files.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training images (60,000 × 784).
    pub train_x: Mat<f64>,
    /// Training labels.
    pub train_y: Vec<usize>,
    /// Test images (10,000 × 784).
    pub test_x: Mat<f64>,
    /// Test labels.
    pub test_y: Vec<usize>,
}

/// The usual file names, each found with or without `.gz`.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Loads MNIST from a folder holding the four IDX files (gzipped or not).
pub fn load(dir: &Path) -> Result<Mnist> {
    let find = |name: &str| {
        let gz = dir.join(format!("{name}.gz"));
        if gz.exists() {
            gz
        } else {
            dir.join(name)
        }
    };
    let mnist = Mnist {
        train_x: read_images(&find(FILES[0]))?,
        train_y: read_labels(&find(FILES[1]))?,
        test_x: read_images(&find(FILES[2]))?,
        test_y: read_labels(&find(FILES[3]))?,
    };
    for (x, y, what) in [
        (&mnist.train_x, &mnist.train_y, "training"),
        (&mnist.test_x, &mnist.test_y, "test"),
    ] {
        if x.nrows() != y.len() {
            return Err(Error::Invalid(format!(
                "{}: {} {what} images but {} labels",
                dir.display(),
                x.nrows(),
                y.len()
            )));
        }
    }
    Ok(mnist)
}

/// scikit-learn's 8×8 digits (`digits.csv.gz`: 64 pixels in 0..16, then the label) as the
/// same four arrays, pixels scaled to [0, 1]: the first `n_train` rows for training, the rest
/// for testing. A small real image set for quick runs and tests.
pub fn load_digits(path: &Path, n_train: usize) -> Result<Mnist> {
    let d = super::csv::read_dataset(path)?;
    if d.x.ncols() != 64 {
        return Err(Error::parse(
            path,
            1,
            format!(
                "expected 64 pixels and a label per row, found {} values",
                d.x.ncols() + 1
            ),
        ));
    }
    let labels =
        d.y.col(0)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if (0.0..=9.0).contains(v) && v.fract() == 0.0 {
                    Ok(*v as usize)
                } else {
                    Err(Error::parse(
                        path,
                        i + 1,
                        format!("label {v} is not a digit 0..9"),
                    ))
                }
            })
            .collect::<Result<Vec<usize>>>()?;
    let n = labels.len();
    if !(1..n).contains(&n_train) {
        return Err(Error::Invalid(format!(
            "{}: {n} rows cannot be split into {n_train} training rows and a test set",
            path.display()
        )));
    }
    let x =
        |r: std::ops::Range<usize>| Mat::from_fn(r.len(), 64, |i, j| d.x[(r.start + i, j)] / 16.0);
    Ok(Mnist {
        train_x: x(0..n_train),
        train_y: labels[..n_train].to_vec(),
        test_x: x(n_train..n),
        test_y: labels[n_train..].to_vec(),
    })
}

/// Indices of the first `per_class` examples of each class `0..k`, sorted by class (the paper's
/// 300-image subset is `class_subset(labels, 30, 10)`).
pub fn class_subset(labels: &[usize], per_class: usize, k: usize) -> Vec<usize> {
    (0..k)
        .flat_map(|c| {
            labels
                .iter()
                .enumerate()
                .filter(move |(_, l)| **l == c)
                .map(|(i, _)| i)
                .take(per_class)
        })
        .collect()
}

/// Indices of the examples of classes `a` and `b`, with binary targets (1 for `b`).
pub fn binary(labels: &[usize], a: usize, b: usize) -> (Vec<usize>, Vec<f64>) {
    labels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == a || **l == b)
        .map(|(i, l)| (i, if *l == b { 1.0 } else { 0.0 }))
        .unzip()
}

/// One-hot targets (N×K).
pub fn one_hot(labels: &[usize], k: usize) -> Mat<f64> {
    Mat::from_fn(
        labels.len(),
        k,
        |i, j| if labels[i] == j { 1.0 } else { 0.0 },
    )
}
