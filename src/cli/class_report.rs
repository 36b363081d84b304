//! The GLM predictive of a classifier as files: logits, the K×K blocks `J Σ Jᵀ`, MAP, probit
//! and Monte Carlo probabilities (`predict`, `gp`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use faer::{Mat, MatRef};

use crate::cli::ctx::Ctx;
use dnn2gp::io::{num, write_csv, write_npy};
use dnn2gp::linalg::{check_memory, mat_bytes};
use dnn2gp::nn::Network;
use dnn2gp::posterior::link::{blocks_by_input_block, class_probabilities, inputs_per_block};
use dnn2gp::posterior::{LaplaceGgn, Link};

/// The GLM predictive of a softmax model at new inputs: logits `f_{w*}(x)`, the K×K blocks of
/// `J Σ Jᵀ`, and the class probabilities at the MAP, by the probit approximation and by Monte
/// Carlo (`f ~ N(f_{w*}(x), J Σ Jᵀ)` through the softmax) — laplace-torch's `glm` predictive
/// with its `probit` and `mc` links.
pub(crate) struct ClassPredictive {
    pub(crate) logits: Mat<f64>,
    pub(crate) blocks: Vec<f64>,
    pub(crate) p_map: Vec<Vec<f64>>,
    pub(crate) p_probit: Vec<Vec<f64>>,
    pub(crate) p_mc: Vec<Vec<f64>>,
}

/// [`ClassPredictive`] at `xs` under the posterior `post`, with `mc_samples` draws per input.
pub(crate) fn class_predictive(
    ctx: &Ctx,
    post: &LaplaceGgn,
    net: &dyn Network,
    w: &[f64],
    xs: MatRef<'_, f64>,
    mc_samples: usize,
    seed: u64,
) -> Result<ClassPredictive> {
    let (m, k, p) = (xs.nrows(), net.n_outputs(), net.n_params());
    // The Jacobian a block of inputs at a time (256 MiB or one input).
    check_memory(
        "the Jacobian of one input (K×P)",
        mat_bytes(inputs_per_block(k, p, m) * k, p),
        ctx.memory,
        "use a smaller network",
    )?;
    let mut blocks = blocks_by_input_block((k, p), xs, &|x| net.jacobian(w, x), &|j| {
        post.functional_covariance_blocks(j, k)
    });
    let mut logits = net.forward(w, xs);
    // One Bernoulli logit f is the softmax of [0, f] with covariance [[0, 0], [0, v]]: the same
    // probabilities (1 − s(f), s(f)), by every link, for the two classes.
    if k == 1 {
        logits = Mat::from_fn(m, 2, |i, c| if c == 1 { logits[(i, 0)] } else { 0.0 });
        blocks = blocks.iter().flat_map(|&v| [0.0, 0.0, 0.0, v]).collect();
    }
    let rows = |p: Mat<f64>| -> Vec<Vec<f64>> {
        (0..p.nrows())
            .map(|i| (0..p.ncols()).map(|c| p[(i, c)]).collect())
            .collect()
    };
    let zero = vec![0.0; blocks.len()];
    let p_map = rows(class_probabilities(&logits, &zero, Link::Probit)?);
    let p_probit = rows(class_probabilities(&logits, &blocks, Link::Probit)?);
    let p_mc = rows(class_probabilities(
        &logits,
        &blocks,
        Link::MonteCarlo {
            samples: mc_samples,
            seed,
        },
    )?);
    Ok(ClassPredictive {
        logits,
        blocks,
        p_map,
        p_probit,
        p_mc,
    })
}

/// Accuracy and mean negative log probability of the labels under probabilities `p`.
pub(crate) fn scores(p: &[Vec<f64>], labels: &[usize]) -> (f64, f64) {
    let n = labels.len().max(1) as f64;
    let hits = p
        .iter()
        .zip(labels)
        .filter(|(p, &l)| argmax(p) == l)
        .count();
    let nll: f64 = p
        .iter()
        .zip(labels)
        .map(|(p, &l)| -p[l].max(f64::MIN_POSITIVE).ln())
        .sum();
    (hits as f64 / n, nll / n)
}

/// The index of the largest entry.
pub(crate) fn argmax(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

impl ClassPredictive {
    /// Writes `predictions.csv` (one row per input and class: logit, `var_f`, `p_map`,
    /// `p_probit`, `p_mc`, and `y` when labels are given) and `f_var.npy` (M×K×K).
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
        header.extend(["logit", "var_f", "p_map", "p_probit", "p_mc"]);
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
                    num(self.p_map[i][c]),
                    num(self.p_probit[i][c]),
                    num(self.p_mc[i][c]),
                ]);
                rows.push(r);
            }
        }
        let path = dir.join("predictions.csv");
        write_csv(&path, &header, &rows)?;
        files.push(path);
        Ok(())
    }
}
