//! The Python module `dnn2gp._dnn2gp`: laplace-torch's words over the core library, one file
//! per class (`model`, `laplace`, `curvature`, `gp`) and per group of functions (`kernels`,
//! `train`), with what they share in `convert` (arrays in: numpy of any float dtype, tensors,
//! labels; arrays out) and `errors` (the core's error variants as Python exceptions, its
//! warnings as `RuntimeWarning`s). The GIL is released while the core computes.

mod convert;
mod curvature;
mod errors;
mod gp;
mod kernels;
mod laplace;
mod model;
mod progress;
mod train;

use pyo3::prelude::*;

#[pymodule]
fn _dnn2gp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_class::<laplace::Laplace>()?;
    m.add_class::<curvature::Curvature>()?;
    m.add_class::<gp::Gp>()?;
    m.add_function(wrap_pyfunction!(gp::pseudo_targets, m)?)?;
    m.add_function(wrap_pyfunction!(train::sweep, m)?)?;
    m.add_function(wrap_pyfunction!(train::vogn, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::ntk, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::ggn_diagonal, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
