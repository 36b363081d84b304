//! Sweep outputs: `sweep.csv` (means over data sets), `sweep_sets.csv` (per set) and the
//! figure of the paper (losses on the left axis, −log marginal likelihood on the right).

use std::path::{Path, PathBuf};

use super::files::{num, write_csv};
use super::plot::{save, Axis, Curve, SweepFigure};
use crate::error::Result;
use crate::select::{SweepParam, SweepPoint, SweepResult};

/// Header of `sweep.csv`.
pub const SWEEP_HEADER: [&str; 5] = ["param", "value", "neg_log_marglik", "train_mse", "test_mse"];

fn row(param: SweepParam, p: &SweepPoint) -> Vec<String> {
    vec![
        param.to_string(),
        num(p.value),
        num(p.neg_log_marglik),
        num(p.train_mse),
        num(p.test_mse),
    ]
}

/// Writes `sweep.csv`, `sweep_sets.csv` and `sweep.{png,svg}` into `dir`; returns the paths.
pub fn write_sweep(dir: &Path, res: &SweepResult, title: &str) -> Result<Vec<PathBuf>> {
    let main = dir.join("sweep.csv");
    let rows: Vec<Vec<String>> = res.mean.iter().map(|p| row(res.param, p)).collect();
    write_csv(&main, &SWEEP_HEADER, &rows)?;
    let sets = dir.join("sweep_sets.csv");
    let mut header = vec!["set"];
    header.extend(SWEEP_HEADER);
    header.extend(["laplace_neg_log_marglik", "grad_norm"]);
    let rows: Vec<Vec<String>> = res
        .per_set
        .iter()
        .flat_map(|(name, pts)| {
            pts.iter().map(move |p| {
                let mut r = vec![name.clone()];
                r.extend(row(res.param, p));
                r.extend([num(p.laplace_neg_log_marglik), num(p.grad_norm)]);
                r
            })
        })
        .collect();
    write_csv(&sets, &header, &rows)?;
    let mut out = vec![main, sets];
    out.extend(save(&figure(&[("", res)], title), &dir.join("sweep"))?);
    Ok(out)
}

/// The sweep figure for one or more labelled sweeps over the same values.
pub fn figure(sweeps: &[(&str, &SweepResult)], title: &str) -> SweepFigure {
    let first = sweeps[0].1;
    let (x_label, log_x) = match first.param {
        SweepParam::Delta => ("prior precision δ", true),
        SweepParam::Sigma => ("noise σ", true),
        SweepParam::Width => ("hidden width", true),
    };
    let mut curves = Vec::new();
    for (i, (label, res)) in sweeps.iter().enumerate() {
        let sfx = if label.is_empty() {
            String::new()
        } else {
            format!(" ({label})")
        };
        let col = |f: fn(&SweepPoint) -> f64| res.mean.iter().map(f).collect::<Vec<_>>();
        curves.push(Curve {
            label: format!("train MSE{sfx}"),
            y: col(|p| p.train_mse),
            axis: Axis::Left,
            color: 0,
            dashed: i > 0,
            mark_min: false,
        });
        curves.push(Curve {
            label: format!("test MSE{sfx}"),
            y: col(|p| p.test_mse),
            axis: Axis::Left,
            color: 1,
            dashed: i > 0,
            mark_min: true,
        });
        curves.push(Curve {
            label: format!("−log marglik{sfx}"),
            y: col(|p| p.neg_log_marglik),
            axis: Axis::Right,
            color: 2 + i,
            dashed: false,
            mark_min: true,
        });
    }
    SweepFigure {
        title: title.to_string(),
        x_label: x_label.to_string(),
        log_x,
        x: first.mean.iter().map(|p| p.value).collect(),
        left_label: "mean squared error".into(),
        right_label: "−log marginal likelihood".into(),
        curves,
    }
}
