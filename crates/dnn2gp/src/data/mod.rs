//! Data: user CSV files, the paper's toy generator, Snelson's 1-D set and the UCI regression
//! sets with their 20 standard splits.

pub mod csv;
pub mod mnist;
pub mod snelson;
pub mod source;
pub mod toy;
pub mod uci;

use std::io::Read;
use std::path::Path;

use faer::Mat;

use crate::error::{Error, Result};

/// Reads a file, decompressing it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    gunzip_if_gz(raw)
        .map_err(|e| Error::Invalid(format!("{}: corrupt gzip data: {e}", path.display())))
}

/// The bytes themselves, or their decompression when they start with the gzip magic bytes.
pub fn gunzip_if_gz(raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Inputs `X` (N×D) and targets `Y` (N×K).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Inputs, one example per row.
    pub x: Mat<f64>,
    /// Targets, one example per row.
    pub y: Mat<f64>,
}

impl Dataset {
    /// A data set; rows of `x` and `y` must match.
    pub fn new(x: Mat<f64>, y: Mat<f64>) -> Result<Self> {
        if x.nrows() != y.nrows() {
            return Err(Error::Invalid(format!(
                "inputs have {} rows but targets have {}",
                x.nrows(),
                y.nrows()
            )));
        }
        Ok(Dataset { x, y })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first target column as a vector.
    pub fn y_vec(&self) -> Vec<f64> {
        self.y.col(0).iter().copied().collect()
    }
}

/// A train/test split; `y_scale` converts standardised squared errors back to target units.
#[derive(Debug, Clone)]
pub struct Split {
    /// Name (e.g. `toy-3`, `yacht-split-0`).
    pub name: String,
    /// Training data.
    pub train: Dataset,
    /// Test data.
    pub test: Dataset,
    /// Standard deviation the targets were divided by (1 if not standardised).
    pub y_scale: f64,
}

/// `n` equally spaced points from `a` to `b`.
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

/// `n` log-spaced points from `10^a` to `10^b`.
pub fn logspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    linspace(a, b, n)
        .into_iter()
        .map(|e| 10f64.powf(e))
        .collect()
}

/// A column matrix from a vector.
pub fn column(v: &[f64]) -> Mat<f64> {
    Mat::from_fn(v.len(), 1, |i, _| v[i])
}

/// Standardises columns of the train set to mean 0 and standard deviation 1 and applies the
/// same transform to the test set. Returns the per-column (mean, sd) of the train set.
pub fn standardize(train: &mut Mat<f64>, test: &mut Mat<f64>) -> Vec<(f64, f64)> {
    let n = train.nrows() as f64;
    (0..train.ncols())
        .map(|c| {
            let mean = train.col(c).iter().sum::<f64>() / n;
            let var = train.col(c).iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
            for m in [&mut *train, &mut *test] {
                m.col_mut(c).iter_mut().for_each(|v| *v = (*v - mean) / sd);
            }
            (mean, sd)
        })
        .collect()
}
