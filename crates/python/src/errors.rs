//! The core's errors and warnings as Python's: each error variant the exception users expect,
//! with the core's message; each numerical event a `RuntimeWarning`.

use pyo3::exceptions::{
    PyArithmeticError, PyMemoryError, PyOSError, PyRuntimeWarning, PyValueError,
};
use pyo3::prelude::*;

use dnn2gp::{Error, Warning};

/// The core's error as the Python exception users expect: a bad option, word, tensor, file or
/// value is a `ValueError`, a pre-flight refusal a `MemoryError`, a numerical failure (a
/// factorisation, an optimiser leaving finite range) an `ArithmeticError`, a file that cannot
/// be read or written an `OSError`.
pub(crate) fn py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Memory { .. } => PyMemoryError::new_err(msg),
        Error::Numerical(_) => PyArithmeticError::new_err(msg),
        Error::Io { .. } | Error::Download { .. } => PyOSError::new_err(msg),
        Error::Option { .. }
        | Error::Word { .. }
        | Error::Tensor { .. }
        | Error::Metadata { .. }
        | Error::Parse { .. }
        | Error::Invalid(_) => PyValueError::new_err(msg),
    }
}

/// The error of the keyword argument `name` (the core names its parameters by their symbols).
pub(crate) fn arg_err(name: &str, e: Error) -> PyErr {
    py_err(e.for_option(name))
}

/// The error with the core's names of its parameters (`σ`, `δ`) replaced by the Python
/// arguments that set them (`[("σ", "sigma_noise"), ("δ", "prior_precision")]`).
pub(crate) fn py_err_as(e: Error, names: &[(&str, &str)]) -> PyErr {
    match &e {
        Error::Option { name, .. } => match names.iter().find(|(core, _)| core == name) {
            Some((_, arg)) => arg_err(arg, e),
            None => py_err(e),
        },
        _ => py_err(e),
    }
}

/// The Python arguments of a model's σ and δ.
pub(crate) const MODEL_ARGS: &[(&str, &str)] = &[("σ", "sigma_noise"), ("δ", "prior_precision")];

/// What a Python user can do about weights that are not a stationary point of the loss.
pub(crate) const STATIONARITY_ADVICE: &str =
    "train the network further (more epochs, then a polish to ∇L = 0) before fitting";

/// Each warning as a Python `RuntimeWarning` (its kind and message), so that numerical trouble
/// (jitter, clamped variances, a non-stationary θ*) is never silent.
pub(crate) fn warn(py: Python<'_>, warnings: &[Warning]) -> PyResult<()> {
    let category = py.get_type::<PyRuntimeWarning>();
    for w in warnings {
        PyErr::warn(
            py,
            &category,
            &std::ffi::CString::new(format!("{}: {}", w.kind, w.message))?,
            1,
        )?;
    }
    Ok(())
}
