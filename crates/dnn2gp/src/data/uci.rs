//! UCI regression sets in the layout of the standard 20 splits: `data.txt` (whitespace
//! separated), `index_features.txt`, `index_target.txt`, `index_{train,test}_{i}.txt`.
//! Inputs and targets are standardised with the training split's mean and standard deviation.

use std::path::Path;

use faer::Mat;

use super::{standardize, Dataset, Split};
use crate::error::{Error, Result};

/// Reads whitespace-separated numbers per line.
fn read_rows(path: &Path) -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let row = t
            .split_whitespace()
            .map(|f| match f.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(Error::parse(
                    path,
                    i + 1,
                    format!("'{f}' is not a finite number"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(first) = rows.first() {
            let first: &Vec<f64> = first;
            if row.len() != first.len() {
                return Err(Error::parse(
                    path,
                    i + 1,
                    format!(
                        "{} columns, but the first row has {}",
                        row.len(),
                        first.len()
                    ),
                ));
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(Error::parse(path, 1, "no data"));
    }
    Ok(rows)
}

/// Reads a list of 0-based indices, checked against `bound`.
fn read_indices(path: &Path, bound: usize) -> Result<Vec<usize>> {
    let rows = read_rows(path)?;
    rows.iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| {
            if v.fract() == 0.0 && *v >= 0.0 && (*v as usize) < bound {
                Ok(*v as usize)
            } else {
                Err(Error::parse(
                    path,
                    i + 1,
                    format!("index {v} is not in 0..{bound}"),
                ))
            }
        })
        .collect()
}

/// Number of splits present in `dir`.
pub fn n_splits(dir: &Path) -> usize {
    (0..)
        .take_while(|i| dir.join(format!("index_train_{i}.txt")).exists())
        .count()
}

/// Loads split `split` of the UCI set in `dir`.
pub fn load(dir: &Path, split: usize) -> Result<Split> {
    let data = read_rows(&dir.join("data.txt"))?;
    let n_cols = data[0].len();
    let features = read_indices(&dir.join("index_features.txt"), n_cols)?;
    let target = read_indices(&dir.join("index_target.txt"), n_cols)?;
    let target = *target.first().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no target index",
            dir.join("index_target.txt").display()
        ))
    })?;
    let n = data.len();
    let train_idx = read_indices(&dir.join(format!("index_train_{split}.txt")), n)?;
    let test_idx = read_indices(&dir.join(format!("index_test_{split}.txt")), n)?;
    let take = |idx: &[usize], cols: &[usize]| {
        Mat::from_fn(idx.len(), cols.len(), |i, j| data[idx[i]][cols[j]])
    };
    let (mut xtr, mut xte) = (take(&train_idx, &features), take(&test_idx, &features));
    let (mut ytr, mut yte) = (take(&train_idx, &[target]), take(&test_idx, &[target]));
    standardize(&mut xtr, &mut xte);
    let y_stats = standardize(&mut ytr, &mut yte);
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "uci".into());
    Ok(Split {
        name: format!("{name}-split-{split}"),
        train: Dataset::new(xtr, ytr)?,
        test: Dataset::new(xte, yte)?,
        y_scale: y_stats[0].1,
    })
}
