//! Snelson's 1-D regression data (`train_inputs`, `train_outputs`, one number per line), with
//! the official gap: training points with x ∈ [1.5, 3] are removed and become the test set.

use std::path::Path;

use super::{column, Dataset, Split};
use crate::error::{Error, Result};

/// The gap removed from the training data.
pub const GAP: (f64, f64) = (1.5, 3.0);

/// Reads one number per line.
pub fn read_column(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let v: f64 = t
            .parse()
            .map_err(|_| Error::parse(path, i + 1, format!("'{t}' is not a number")))?;
        if !v.is_finite() {
            return Err(Error::parse(path, i + 1, format!("'{t}' is not finite")));
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err(Error::parse(path, 1, "no numbers in the file"));
    }
    Ok(out)
}

/// Loads Snelson from the folder holding `train_inputs` and `train_outputs`.
pub fn load(dir: &Path) -> Result<Split> {
    let xs = read_column(&dir.join("train_inputs"))?;
    let ys = read_column(&dir.join("train_outputs"))?;
    if xs.len() != ys.len() {
        return Err(Error::Invalid(format!(
            "{}: {} inputs but {} outputs",
            dir.display(),
            xs.len(),
            ys.len()
        )));
    }
    let in_gap = |x: f64| x >= GAP.0 && x <= GAP.1;
    let pick = |gap: bool| {
        let (a, b): (Vec<f64>, Vec<f64>) = xs
            .iter()
            .zip(&ys)
            .filter(|(x, _)| in_gap(**x) == gap)
            .map(|(x, y)| (*x, *y))
            .unzip();
        Dataset {
            x: column(&a),
            y: column(&b),
        }
    };
    Ok(Split {
        name: "snelson".into(),
        train: pick(false),
        test: pick(true),
        y_scale: 1.0,
    })
}
