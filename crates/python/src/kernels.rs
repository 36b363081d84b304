//! Kernels and curvature of a model as functions: the empirical NTK in neural-tangents'
//! layouts (`dnn2gp.ntk`) and the GGN's diagonal over a chunk of data (`dnn2gp.ggn_diagonal`).

use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use dnn2gp::nn::Network;

use crate::convert::{kernel_layout, pair, rows, shaped, targets};
use crate::errors::py_err;
use crate::model::Model;

/// The empirical NTK `J(x) J(x')ᵀ` of a model at its weights, in neural-tangents' layouts:
/// `trace_axes=(-1,)` (its default) gives `Σ_k ∂f_k(x)/∂θ · ∂f_k(x')/∂θ` (N1 × N2);
/// `trace_axes=()` the full `(N1, N2, K, K)`; `diagonal_axes=(0,)` (X2 omitted) only each
/// input's own block, `(N1,)` or `(N1, K, K)`. Computed from per-layer factors, never forming J.
#[pyfunction]
#[pyo3(signature = (model, x1, x2=None, trace_axes=vec![-1], diagonal_axes=vec![]))]
pub(crate) fn ntk<'py>(
    py: Python<'py>,
    model: &Model,
    x1: &Bound<'py, PyAny>,
    x2: Option<&Bound<'py, PyAny>>,
    trace_axes: Vec<i64>,
    diagonal_axes: Vec<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let m = &model.inner;
    let (d, k) = (m.net.n_inputs(), m.net.n_outputs());
    let (a, b) = pair(x1, x2, d)?;
    let traced = match trace_axes[..] {
        [] => false,
        [-1] | [1] => true,
        _ => {
            return Err(PyValueError::new_err(format!(
                "trace_axes: {trace_axes:?} (expected () or (-1,), the output axis)"
            )))
        }
    };
    match (&diagonal_axes[..], x2) {
        ([], _) => {}
        ([0], None) => {
            // Each input's K×K block, from the kernel of 64 inputs at a time.
            let blocks = py.detach(|| {
                (0..a.nrows())
                    .step_by(64)
                    .flat_map(|s| {
                        let xb = a.as_ref().subrows(s, 64.min(a.nrows() - s));
                        let g = m.net.ntk(&m.w, xb, xb);
                        (0..xb.nrows())
                            .flat_map(|i| (0..k * k).map(move |c| (i, c)))
                            .map(|(i, c)| g[(i * k + c / k, i * k + c % k)])
                            .collect::<Vec<f64>>()
                    })
                    .collect::<Vec<f64>>()
            });
            let n = a.nrows();
            return if traced {
                let tr = (0..n)
                    .map(|i| (0..k).map(|c| blocks[i * k * k + c * k + c]).sum())
                    .collect::<Vec<f64>>();
                shaped(py, tr, &[n])
            } else {
                shaped(py, blocks, &[n, k, k])
            };
        }
        ([0], Some(_)) => {
            return Err(PyValueError::new_err(
                "diagonal_axes: (0,) is the diagonal of X1's own kernel; omit X2",
            ))
        }
        _ => {
            return Err(PyValueError::new_err(format!(
                "diagonal_axes: {diagonal_axes:?} (expected () or (0,), the batch axis)"
            )))
        }
    }
    let kernel = py.detach(|| {
        let b = b.as_ref().unwrap_or(&a);
        m.net.ntk(&m.w, a.as_ref(), b.as_ref())
    });
    kernel_layout(py, kernel.as_ref(), k, &trace_axes)
}

/// The GGN's diagonal `Σ_i diag(J_iᵀ Λ_i J_i)` over the rows of (X, y), streamed without
/// forming J (P): a chunk's partial sum, so that the sum over chunks is the whole data's.
#[pyfunction]
pub(crate) fn ggn_diagonal<'py>(
    py: Python<'py>,
    model: &Model,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let m = &model.inner;
    let x = rows("X", x, m.net.n_inputs())?;
    let y = targets(m, y, x.nrows())?;
    let lik = m.likelihood().map_err(py_err)?;
    let h = py.detach(|| {
        dnn2gp::curvature::Backend::new(&m.net, lik.as_ref(), &m.w).diag(
            x.as_ref(),
            y.as_ref(),
            None,
        )
    });
    Ok(h.into_pyarray(py))
}
