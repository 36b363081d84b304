//! A classifier's predictive as files (`gp`, `predict`): for each input and class the logit
//! and its variance (one Bernoulli logit f is the softmax of `[0, f]`), the MAP probability and
//! one column per link (`predictions.csv`), the K×K blocks `J Σ Jᵀ` (`f_var.npy`); scores by the
//! core's metrics.

use std::path::{Path, PathBuf};

use anyhow::Result;
use faer::Mat;

use dnn2gp::experiments::calibration::{metrics, Metrics};
use dnn2gp::io::{num, write_csv, write_npy};
use dnn2gp::posterior::link::class_probabilities;
use dnn2gp::posterior::{Link, Predictive};

/// The predictive of a classifier at M inputs, in the softmax view of C classes.
pub(crate) struct ClassTable {
    /// Logits (M × C).
    logits: Mat<f64>,
    /// Their covariance blocks (M·C·C).
    blocks: Vec<f64>,
    /// `p_map` and one column of probabilities per link, named.
    columns: Vec<(String, Mat<f64>)>,
}

impl ClassTable {
    /// The table of a predictive: `p_map` (the softmax of the logits) and `pred`'s
    /// probabilities under the name `p_<link>`, with the probabilities of `more` links from the
    /// same covariance.
    pub(crate) fn new(pred: &Predictive, link: Link, more: &[Link]) -> Result<Self> {
        let (m, k) = (pred.mean.nrows(), pred.mean.ncols());
        let zero = vec![0.0; pred.covariance.len()];
        let mut columns = vec![(
            "p_map".to_string(),
            class_probabilities(&pred.mean, &zero, Link::Probit)?,
        )];
        let p = pred
            .probabilities
            .clone()
            .expect("a classifier's predictive has probabilities");
        columns.push((format!("p_{}", link.approx()), p));
        for l in more {
            columns.push((
                format!("p_{}", l.approx()),
                class_probabilities(&pred.mean, &pred.covariance, *l)?,
            ));
        }
        // One Bernoulli logit f is the softmax of [0, f] with covariance [[0, 0], [0, v]].
        let (logits, blocks) = if k == 1 {
            (
                Mat::from_fn(m, 2, |i, c| if c == 1 { pred.mean[(i, 0)] } else { 0.0 }),
                pred.covariance
                    .iter()
                    .flat_map(|&v| [0.0, 0.0, 0.0, v])
                    .collect(),
            )
        } else {
            (pred.mean.clone(), pred.covariance.clone())
        };
        Ok(ClassTable {
            logits,
            blocks,
            columns,
        })
    }

    /// The metrics of the column `name` against `labels`.
    pub(crate) fn metrics(&self, name: &str, labels: &[usize]) -> Result<Metrics> {
        let p = &self
            .columns
            .iter()
            .find(|(n, _)| n == name)
            .expect("a column of the table")
            .1;
        Ok(metrics(p.as_ref(), labels)?)
    }

    /// Writes `predictions.csv` (one row per input and class: `y` when labels are given, the
    /// logit, `var_f` and the probability columns) and `f_var.npy` (M×C×C).
    pub(crate) fn write(
        &self,
        dir: &Path,
        labels: Option<&[usize]>,
        files: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let (m, k) = (self.logits.nrows(), self.logits.ncols());
        let path = dir.join("f_var.npy");
        write_npy(&path, &[m, k, k], &self.blocks)?;
        files.push(path);
        let mut header = vec!["example", "class"];
        if labels.is_some() {
            header.push("y");
        }
        header.extend(["logit", "var_f"]);
        header.extend(self.columns.iter().map(|(n, _)| n.as_str()));
        let mut rows = Vec::with_capacity(m * k);
        for i in 0..m {
            for c in 0..k {
                let mut r = vec![i.to_string(), c.to_string()];
                if let Some(l) = labels {
                    r.push(u8::from(l[i] == c).to_string());
                }
                r.extend([
                    num(self.logits[(i, c)]),
                    num(self.blocks[i * k * k + c * k + c]),
                ]);
                r.extend(self.columns.iter().map(|(_, p)| num(p[(i, c)])));
                rows.push(r);
            }
        }
        let path = dir.join("predictions.csv");
        write_csv(&path, &header, &rows)?;
        files.push(path);
        Ok(())
    }
}
