//! Sweep outputs: `sweep.csv` (means over data sets), `sweep_sets.csv` (per set) and the
//! figure of the paper (losses on the left axis, −log marginal likelihood on the right).

use std::path::{Path, PathBuf};

use super::plot::{save, Axis, Curve, SweepFigure};
use dnn2gp::error::Result;
use dnn2gp::io::{num, write_csv};
use dnn2gp::select::{SweepParam, SweepPoint, SweepResult};

/// Header of `sweep.csv` (means over the data sets); `sweep_sets.csv` adds a `set` column in
/// front. `stationarity_gap` is `½ gᵀA⁻¹g`, `grad_rel` is `‖∇L‖` relative to its scale.
pub const SWEEP_HEADER: [&str; 9] = [
    "param",
    "value",
    "neg_log_marglik",
    "train_mse",
    "test_mse",
    "laplace_neg_log_marglik",
    "stationarity_gap",
    "grad_norm",
    "grad_rel",
];

fn row(param: SweepParam, p: &SweepPoint) -> Vec<String> {
    vec![
        param.to_string(),
        num(p.value),
        num(p.neg_log_marglik),
        num(p.train_mse),
        num(p.test_mse),
        num(p.laplace_neg_log_marglik),
        num(p.stationarity_gap()),
        num(p.grad_norm),
        num(p.grad_rel),
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
    let rows: Vec<Vec<String>> = res
        .per_set
        .iter()
        .flat_map(|(name, pts)| {
            pts.iter().map(move |p| {
                let mut r = vec![name.clone()];
                r.extend(row(res.param, p));
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
    let x_label = match first.param {
        SweepParam::Delta => "prior precision δ",
        SweepParam::Sigma => "noise σ",
        SweepParam::Width => "hidden width",
    };
    type Column = fn(&SweepPoint) -> f64;
    let mut curves = Vec::new();
    for (i, (label, res)) in sweeps.iter().enumerate() {
        let sfx = if label.is_empty() {
            String::new()
        } else {
            format!(" ({label})")
        };
        // (name, values, axis, colour, dashed, minimum marked); the MSEs share colours across
        // sweeps (dashed after the first), each −log marglik has its own.
        let table: [(&str, Column, Axis, usize, bool, bool); 3] = [
            ("train MSE", |p| p.train_mse, Axis::Left, 0, i > 0, false),
            ("test MSE", |p| p.test_mse, Axis::Left, 1, i > 0, true),
            (
                "−log marglik",
                |p| p.neg_log_marglik,
                Axis::Right,
                2 + i,
                false,
                true,
            ),
        ];
        for (name, f, axis, color, dashed, mark_min) in table {
            curves.push(Curve {
                label: format!("{name}{sfx}"),
                y: res.mean.iter().map(f).collect(),
                axis,
                color,
                dashed,
                mark_min,
            });
        }
    }
    SweepFigure {
        title: title.to_string(),
        x_label: x_label.to_string(),
        log_x: true,
        x: first.mean.iter().map(|p| p.value).collect(),
        left_label: "mean squared error".into(),
        right_label: "−log marginal likelihood".into(),
        curves,
    }
}
