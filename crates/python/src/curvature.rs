//! `dnn2gp.Curvature`: what a Laplace fit sums over its data; chunks add up and pickle.

use pyo3::prelude::*;

use dnn2gp::posterior::{HessianStructure, Subset};

use crate::convert::{shaped, values};
use crate::errors::py_err;

/// What a Laplace fit sums over its data (`Laplace.curvature`): the GGN `Σ_i J_iᵀ Λ_i J_i` over
/// some examples in the posterior's structure, `−log p` and the squared error. `c1 + c2` is the
/// curvature of both chunks (KFAC's `A`, a mean over examples, weighted by their counts); it
/// pickles, so that chunks computed on other processes can be added up.
#[pyclass(name = "Curvature", module = "dnn2gp", frozen)]
#[derive(Clone)]
pub(crate) struct Curvature {
    pub(crate) inner: dnn2gp::posterior::Curvature,
}

#[pymethods]
impl Curvature {
    fn __add__(&self, other: &Curvature) -> PyResult<Curvature> {
        let mut inner = self.inner.clone();
        inner.add(&other.inner).map_err(py_err)?;
        Ok(Curvature { inner })
    }

    /// The examples it sums over.
    #[getter]
    fn n(&self) -> usize {
        self.inner.n()
    }

    /// `"full"`, `"diag"` or `"kron"`.
    #[getter]
    fn hessian_structure(&self) -> String {
        self.inner.structure().to_string()
    }

    /// The curvature from its parts (what pickling sends to another process).
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn _from_parts(
        structure: &str,
        subset: &str,
        tensors: Vec<Bound<'_, PyAny>>,
        nll: f64,
        sse: f64,
        n: usize,
        nk: usize,
    ) -> PyResult<Curvature> {
        let structure = structure.parse::<HessianStructure>().map_err(py_err)?;
        let subset = subset.parse::<Subset>().map_err(py_err)?;
        let tensors = tensors
            .iter()
            .map(|t| values("tensor", t))
            .collect::<PyResult<Vec<_>>>()?;
        let inner = dnn2gp::posterior::Curvature::from_parts(
            structure,
            subset,
            tensors,
            dnn2gp::posterior::DataTerms { nll, sse, n, nk },
        )
        .map_err(py_err)?;
        Ok(Curvature { inner })
    }

    /// Pickling: the structure, subset, tensors (numpy arrays) and scalars.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (tensors, d) = self.inner.to_parts();
        let (nll, sse, n, nk) = (d.nll, d.sse, d.n, d.nk);
        let arrays = tensors
            .into_iter()
            .map(|(shape, v)| shaped(py, v, &shape))
            .collect::<PyResult<Vec<_>>>()?;
        let from = py.get_type::<Curvature>().getattr("_from_parts")?;
        let args = (
            self.inner.structure().to_string(),
            self.inner.subset().to_string(),
            arrays,
            nll,
            sse,
            n,
            nk,
        );
        Ok((from, args).into_pyobject(py)?.into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "Curvature(hessian_structure='{}', subset_of_weights='{}', n={})",
            self.inner.structure(),
            self.inner.subset(),
            self.inner.n()
        )
    }
}
