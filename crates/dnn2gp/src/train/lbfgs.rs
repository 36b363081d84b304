//! L-BFGS with a backtracking Armijo line search: polishes a MAP estimate to a stationary
//! point, `‖∇L(w)‖ ≤ tol`.

use super::{accept, check_finite, Objective};
use crate::error::Result;
use crate::linalg::{dot, norm};

/// History length.
const MEMORY: usize = 10;

/// Minimises `L` from `w0` for at most `max_iter` iterations; returns `(w, L(w), iterations)`.
pub fn minimize(
    obj: &Objective<'_>,
    w0: &[f64],
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<f64>, f64, usize)> {
    let mut w = w0.to_vec();
    let (mut f, mut g) = obj.value_grad(&w);
    check_finite(f, &g, "L-BFGS", 0)?;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut iters = 0;
    while iters < max_iter && norm(&g) > tol {
        iters += 1;
        let d = direction(&g, &s_hist, &y_hist);
        let slope = dot(&d, &g);
        let (d, slope) = if slope < 0.0 {
            (d, slope)
        } else {
            // Not a descent direction: restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            let d: Vec<f64> = g.iter().map(|v| -v).collect();
            let s = dot(&d, &g);
            (d, s)
        };
        let mut step = if s_hist.is_empty() {
            (1.0 / norm(&g)).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..60 {
            let wn: Vec<f64> = w.iter().zip(&d).map(|(a, b)| a + step * b).collect();
            let (fnew, gnew) = obj.value_grad(&wn);

            if accept(
                f,
                fnew,
                fnew <= f + 1e-4 * step * slope,
                norm(&g),
                norm(&gnew),
            ) {
                accepted = Some((wn, fnew, gnew));
                break;
            }
            step *= 0.5;
        }
        let Some((wn, fnew, gnew)) = accepted else {
            break; // no decrease possible at this precision
        };
        check_finite(fnew, &gnew, "L-BFGS", iters)?;
        let s: Vec<f64> = wn.iter().zip(&w).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        if dot(&s, &y) > 1e-12 * norm(&s) * norm(&y) {
            if s_hist.len() == MEMORY {
                s_hist.remove(0);
                y_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
        }
        w = wn;
        f = fnew;
        g = gnew;
    }
    Ok((w, f, iters))
}

/// The two-loop recursion: `−H g` with the L-BFGS inverse-Hessian approximation `H`.
fn direction(g: &[f64], s_hist: &[Vec<f64>], y_hist: &[Vec<f64>]) -> Vec<f64> {
    let mut q = g.to_vec();
    let k = s_hist.len();
    let mut alpha = vec![0.0; k];
    for i in (0..k).rev() {
        let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
        alpha[i] = rho * dot(&s_hist[i], &q);
        q.iter_mut()
            .zip(&y_hist[i])
            .for_each(|(q, y)| *q -= alpha[i] * y);
    }
    if k > 0 {
        let gamma = dot(&s_hist[k - 1], &y_hist[k - 1]) / dot(&y_hist[k - 1], &y_hist[k - 1]);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for i in 0..k {
        let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
        let beta = rho * dot(&y_hist[i], &q);
        q.iter_mut()
            .zip(&s_hist[i])
            .for_each(|(q, s)| *q += (alpha[i] - beta) * s);
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}
