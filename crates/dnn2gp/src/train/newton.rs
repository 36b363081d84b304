//! Damped Newton polish for small networks: `w ← w − (H + μI)⁻¹ ∇L(w)`, where the exact Hessian
//! `H = ∇²L(w)` is formed column by column from central differences of the analytic gradient,
//! `H e_p ≈ (∇L(w + h e_p) − ∇L(w − h e_p)) / 2h`, and symmetrised. μ shrinks after a step that
//! lowers `L` and grows otherwise (and while `H + μI` is indefinite). Converges in a few steps
//! to a stationary point where L-BFGS and Gauss-Newton crawl on ill-conditioned networks.
//! Used for P ≤ [`MAX_PARAMS`]: the Hessian costs 2P gradient evaluations.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use rayon::prelude::*;

use super::{accept, check_finite, Objective};
use crate::error::Result;
use crate::linalg::norm;

/// Largest P for which the P×P Hessian is formed (it costs 2P gradients per step).
pub const MAX_PARAMS: usize = 300;

/// `∇²L(w)` by central differences of the gradient.
pub fn hessian(obj: &Objective<'_>, w: &[f64]) -> Mat<f64> {
    let p = w.len();
    let cols: Vec<Vec<f64>> = (0..p)
        .into_par_iter()
        .map(|j| {
            let h = 1e-5 * w[j].abs().max(1.0);
            let mut wp = w.to_vec();
            wp[j] += h;
            let (_, gp) = obj.value_grad(&wp);
            wp[j] -= 2.0 * h;
            let (_, gm) = obj.value_grad(&wp);
            gp.iter()
                .zip(&gm)
                .map(|(a, b)| (a - b) / (2.0 * h))
                .collect()
        })
        .collect();
    Mat::from_fn(p, p, |i, j| 0.5 * (cols[j][i] + cols[i][j]))
}

/// Minimises `L` from `w0` for at most `max_iter` iterations; returns `(w, L(w), iterations)`.
pub fn minimize(
    obj: &Objective<'_>,
    w0: &[f64],
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<f64>, f64, usize)> {
    let mut w = w0.to_vec();
    let (mut f, mut g) = obj.value_grad(&w);
    check_finite(f, &g, "Newton polish", 0)?;
    let mut mu = 1e-6;
    let mut iters = 0;
    'outer: while iters < max_iter && norm(&g) > tol {
        iters += 1;
        let h = hessian(obj, &w);
        let scale =
            (0..h.nrows()).map(|i| h[(i, i)].abs()).sum::<f64>() / h.nrows() as f64 + obj.delta;
        loop {
            if mu > 1e10 {
                break 'outer;
            }
            let mut a = h.clone();
            for i in 0..a.nrows() {
                a[(i, i)] += mu * scale;
            }
            let Ok(llt) = a.llt(Side::Lower) else {
                mu = (mu * 10.0).max(1e-8);
                continue;
            };
            let step = llt.solve(faer::MatRef::from_column_major_slice(&g, g.len(), 1));
            let wn: Vec<f64> = w
                .iter()
                .zip(step.col(0).iter())
                .map(|(w, s)| w - s)
                .collect();
            let (fnew, gnew) = obj.value_grad(&wn);

            if accept(f, fnew, fnew < f, norm(&g), norm(&gnew)) {
                w = wn;
                f = fnew;
                g = gnew;
                mu = (mu / 10.0).max(1e-12);
                break;
            }
            mu = (mu * 10.0).max(1e-8);
        }
    }
    Ok((w, f, iters))
}
