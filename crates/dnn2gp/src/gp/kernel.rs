//! The DNN2GP kernel `κ(x, x') = δ⁻¹ J(x) J(x')ᵀ`: K×K blocks of the empirical NTK at `w*`,
//! scaled by the prior variance.

use std::fmt;
use std::str::FromStr;

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::linalg::{a_bt, row_sq_norms};

/// The Gram matrix `δ⁻¹ J_a J_bᵀ` (N_aK × N_bK).
pub fn kernel(ja: MatRef<'_, f64>, jb: MatRef<'_, f64>, delta: f64) -> Mat<f64> {
    let mut k = a_bt(ja, jb);
    k.as_mut()
        .col_iter_mut()
        .for_each(|c| c.iter_mut().for_each(|v| *v /= delta));
    k
}

/// The diagonal `δ⁻¹ ‖J_m‖²` of `kernel(J, J)`.
pub fn kernel_diag(j: MatRef<'_, f64>, delta: f64) -> Vec<f64> {
    row_sq_norms(j).into_iter().map(|v| v / delta).collect()
}

/// Layouts of the NK×NK kernel, as in neural-tangents and section 4 of the math reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelView {
    /// The whole NK×NK matrix.
    Full,
    /// `Σ_k κ_kk(x_i, x_j)` (N×N, the traced kernel).
    Diag,
    /// `Σ_{k,l} κ_kl(x_i, x_j)` (N×N).
    Sum,
}

impl FromStr for KernelView {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(KernelView::Full),
            "diag" | "trace" | "traced" => Ok(KernelView::Diag),
            "sum" => Ok(KernelView::Sum),
            other => Err(Error::Invalid(format!(
                "unknown kernel view '{other}' (expected full, diag or sum)"
            ))),
        }
    }
}

impl fmt::Display for KernelView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelView::Full => "full",
            KernelView::Diag => "diag",
            KernelView::Sum => "sum",
        })
    }
}

/// Aggregates an N_aK × N_bK kernel with K outputs into the requested view.
pub fn kernel_view(full: MatRef<'_, f64>, k: usize, view: KernelView) -> Mat<f64> {
    let (na, nb) = (full.nrows() / k, full.ncols() / k);
    match view {
        KernelView::Full => full.to_owned(),
        KernelView::Diag => Mat::from_fn(na, nb, |i, j| {
            (0..k).map(|a| full[(i * k + a, j * k + a)]).sum()
        }),
        KernelView::Sum => Mat::from_fn(na, nb, |i, j| {
            (0..k)
                .flat_map(|a| (0..k).map(move |b| (a, b)))
                .map(|(a, b)| full[(i * k + a, j * k + b)])
                .sum()
        }),
    }
}

/// An N_aK × N_bK kernel (row `i·K + a`) in neural-tangents' `(N_a, N_b, K, K)` order, flat.
pub fn nt_order(full: MatRef<'_, f64>, k: usize) -> Vec<f64> {
    let (na, nb) = (full.nrows() / k, full.ncols() / k);
    (0..na)
        .flat_map(|i| (0..nb).flat_map(move |j| (0..k * k).map(move |m| (i, j, m))))
        .map(|(i, j, m)| full[(i * k + m / k, j * k + m % k)])
        .collect()
}
