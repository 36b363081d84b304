//! What the classes share on the way in and out: arrays from whatever numpy and torch users
//! hand over (numpy arrays of any float dtype, objects with `__array__` such as CPU tensors),
//! class labels as integers or integer-valued floats, the memory budget, and arrays out.

use faer::{Mat, MatRef};
use numpy::{IntoPyArray, PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use dnn2gp::gp::{kernel_view, nt_order, KernelView};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::{Dtype, Network};
use dnn2gp::train::model::Model as CoreModel;

/// A dtype given as a word (`"float32"`, `"f32"`; numpy's names, so `"float"` is float64), a
/// numpy type (`np.float32`, `float`) or dtype, or a torch dtype: the scalar type of forward
/// passes (f64 when none is given). Anything else is a `TypeError`.
pub(crate) fn dtype(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Dtype> {
    let Some(value) = value else {
        return Ok(Dtype::F64);
    };
    let word: String = if let Ok(w) = value.extract::<String>() {
        w
    } else if let Ok(n) = value.getattr("__name__") {
        n.extract()?
    } else if value.hasattr("kind")? || value.hasattr("is_floating_point")? {
        // A numpy dtype (`float32`) or a torch dtype (`torch.float32`).
        value.str()?.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected 'float32' or 'float64', a numpy or a torch dtype, got {}",
            describe(value)
        )));
    };
    word.trim_start_matches("torch.")
        .parse()
        .map_err(|e| crate::errors::arg_err(name, e))
}

/// The bytes a computation may allocate at once: `max_memory_gib`, or three quarters of the
/// available memory.
pub(crate) fn memory_budget(max_memory_gib: Option<f64>) -> PyResult<u128> {
    match max_memory_gib {
        None => Ok(dnn2gp::linalg::available_memory() / 4 * 3),
        Some(g) if g.is_finite() && g > 0.0 => Ok((g * 2f64.powi(30)) as u128),
        Some(g) => Err(PyValueError::new_err(format!(
            "max_memory_gib: {g} is not a positive number"
        ))),
    }
}

/// `value`'s dtype (an array) or type, for messages.
pub(crate) fn describe(value: &Bound<'_, PyAny>) -> String {
    match value.getattr("dtype") {
        Ok(d) => format!("an array of dtype {d}"),
        Err(_) => format!(
            "a {}",
            value
                .get_type()
                .name()
                .map_or_else(|_| "value".to_string(), |n| n.to_string())
        ),
    }
}

/// An array of what the caller handed over: a numpy array, or anything with `__array__` (a
/// torch tensor is detached and brought to the CPU first), as numpy sees it.
fn as_numpy<'py>(name: &str, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = value.py();
    let np = py.import("numpy")?;
    let value = if value.hasattr("detach")? && value.hasattr("cpu")? {
        let t = value.call_method0("detach")?.call_method0("cpu")?;
        // numpy has no bfloat16: widened to float32 (exactly) first.
        let bf16 = match t.getattr("dtype") {
            Ok(d) => d.str()?.extract::<String>()? == "torch.bfloat16",
            Err(_) => false,
        };
        if bf16 {
            t.call_method0("float")?
        } else {
            t
        }
    } else {
        value.clone()
    };
    if !(value.is_instance(&np.getattr("ndarray")?)? || value.hasattr("__array__")?) {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected an array (numpy, or an object with __array__ such as a torch \
             tensor), got {}",
            describe(&value)
        )));
    }
    np.call_method1("asarray", (&value,)).map_err(|e| {
        PyTypeError::new_err(format!(
            "{name}: cannot be read as an array ({}): {e}",
            describe(&value)
        ))
    })
}

/// The values of `value` as a C-contiguous, aligned float64 numpy array: floating-point arrays
/// of any width are converted; integer, boolean and other dtypes are refused, naming `name`.
pub(crate) fn float_array<'py>(
    name: &str,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
    let arr = as_numpy(name, value)?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    if kind != "f" {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected floating-point values (numpy float32 or float64, or a tensor), \
             got {}",
            describe(&arr)
        )));
    }
    contiguous::<f64>(name, &arr, "float64")
}

/// `arr` as a C-contiguous, aligned numpy array of dtype `want` (a copy where it is not one
/// already: buffers unpickled from another process may be misaligned).
fn contiguous<'py, T: numpy::Element>(
    name: &str,
    arr: &Bound<'py, PyAny>,
    want: &str,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let py = arr.py();
    let aligned: bool = arr.getattr("flags")?.getattr("aligned")?.extract()?;
    if let Ok(a) = arr.cast::<PyArrayDyn<T>>() {
        if aligned && a.is_c_contiguous() {
            return Ok(a.clone());
        }
    }
    // `copy` allocates afresh (aligned); `ascontiguousarray` then converts the dtype.
    let fresh = if aligned {
        arr.clone()
    } else {
        arr.call_method0("copy")?
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", want)?;
    let copy = py
        .import("numpy")?
        .getattr("ascontiguousarray")?
        .call((fresh,), Some(&kwargs))?;
    copy.cast::<PyArrayDyn<T>>()
        .cloned()
        .map_err(|_| PyTypeError::new_err(format!("{name}: cannot be read as {want}")))
}

/// An `(N, …)` float array as an N × `d` matrix (the trailing axes flattened in C order, as
/// PyTorch flattens an image), `d` the network's inputs.
/// A float32 array is read as it is (widened exactly while it is transposed), not through a
/// float64 copy.
pub(crate) fn rows(name: &str, value: &Bound<'_, PyAny>, d: usize) -> PyResult<Mat<f64>> {
    let arr = as_numpy(name, value)?;
    if let Ok(a) = arr.cast::<PyArrayDyn<f32>>() {
        let aligned: bool = arr.getattr("flags")?.getattr("aligned")?.extract()?;
        if aligned && a.is_c_contiguous() {
            let ro = a.readonly();
            return rows_of(name, ro.shape(), ro.as_slice(), d);
        }
    }
    let arr = float_array(name, &arr)?;
    let ro = arr.readonly();
    rows_of(name, ro.shape(), ro.as_slice(), d)
}

/// The C-ordered values `s` of an array of `shape` as an N × `d` matrix of f64, checked.
fn rows_of<T: Copy + Into<f64> + std::fmt::Display>(
    name: &str,
    shape: &[usize],
    s: Result<&[T], numpy::AsSliceError>,
    d: usize,
) -> PyResult<Mat<f64>> {
    let per_row: usize = shape.iter().skip(1).product();
    if shape.is_empty() || per_row != d {
        return Err(PyValueError::new_err(format!(
            "{name}: shape {shape:?} gives {} values per row; the network takes {d}",
            if shape.is_empty() { 0 } else { per_row }
        )));
    }
    let s = s.map_err(|e| PyValueError::new_err(format!("{name}: {e}")))?;
    finite(name, shape, s)?;
    // Row-major to column-major a block of rows at a time, so that both stay in cache.
    let n = shape[0];
    let mut m = Mat::<f64>::zeros(n, d);
    const BLOCK: usize = 64;
    for i0 in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - i0);
        for j in 0..d {
            let dst = &mut dnn2gp::linalg::col_mut(m.as_mut(), j)[i0..i0 + rows];
            for (r, v) in dst.iter_mut().enumerate() {
                *v = s[(i0 + r) * d + j].into();
            }
        }
    }
    Ok(m)
}

/// Refuses a NaN or infinite value, naming the first by its index: `X[3, 0] = nan`.
fn finite<T: Copy + Into<f64> + std::fmt::Display>(
    name: &str,
    shape: &[usize],
    s: &[T],
) -> PyResult<()> {
    let Some(flat) = s.iter().position(|v| !(*v).into().is_finite()) else {
        return Ok(());
    };
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (axis, &len) in shape.iter().enumerate().rev() {
        index[axis] = rest % len.max(1);
        rest /= len.max(1);
    }
    let index: Vec<String> = index.iter().map(usize::to_string).collect();
    Err(PyValueError::new_err(format!(
        "{name}[{}] = {}: not a finite number",
        index.join(", "),
        s[flat]
    )))
}

/// X1 and X2 (none when omitted) as matrices of `d` columns.
pub(crate) fn pair(
    x1: &Bound<'_, PyAny>,
    x2: Option<&Bound<'_, PyAny>>,
    d: usize,
) -> PyResult<(Mat<f64>, Option<Mat<f64>>)> {
    Ok((
        rows("X1", x1, d)?,
        x2.map(|x| rows("X2", x, d)).transpose()?,
    ))
}

/// Indices: a 1-D array (or tensor) of integers, none negative.
pub(crate) fn indices(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let arr = as_numpy(name, value)?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    if !(kind == "i" || kind == "u") || ndim != 1 {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a 1-D array of integer indices, got {} of {ndim} dimensions",
            describe(&arr)
        )));
    }
    let arr = contiguous::<i64>(name, &arr, "int64")?;
    let ro = arr.readonly();
    let v = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))?;
    v.iter()
        .map(|&i| {
            usize::try_from(i)
                .map_err(|_| PyValueError::new_err(format!("{name}: {i} is negative")))
        })
        .collect()
}

/// A float array's values and shape.
pub(crate) fn values(name: &str, value: &Bound<'_, PyAny>) -> PyResult<(Vec<usize>, Vec<f64>)> {
    let arr = float_array(name, value)?;
    let ro = arr.readonly();
    let s = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))?;
    finite(name, ro.shape(), s)?;
    Ok((ro.shape().to_vec(), s.to_vec()))
}

/// Targets of the model's likelihood from `y`, N of them. Classification: class labels (N,)
/// of any integer dtype, or floats that are integers (`y.astype(float)`; the first that is
/// not is named), or one-hot rows (N, K). Regression: values (N,) or (N, K).
pub(crate) fn targets(model: &CoreModel, y: &Bound<'_, PyAny>, n: usize) -> PyResult<Mat<f64>> {
    let k = model.net.n_outputs();
    let arr = as_numpy("y", y)?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    let classification = model.likelihood != LikelihoodKind::Gaussian;
    if classification && (kind == "i" || kind == "u" || kind == "b" || (kind == "f" && ndim == 1)) {
        let (shape, v) = match kind.as_str() {
            "f" => values("y", &arr)?,
            _ => values("y", &arr.call_method1("astype", ("float64",))?)?,
        };
        let classes = if k == 1 { 2 } else { k };
        if shape.len() != 1 || v.len() != n {
            return Err(PyValueError::new_err(format!(
                "y: shape {shape:?}; expected {n} labels"
            )));
        }
        if let Some(i) = v.iter().position(|c| !(*c >= 0.0 && c.fract() == 0.0)) {
            return Err(PyValueError::new_err(format!(
                "y[{i}] = {}: not a class label (an integer 0 to {})",
                v[i],
                classes - 1
            )));
        }
        if let Some(i) = v.iter().position(|c| *c as usize >= classes) {
            return Err(PyValueError::new_err(format!(
                "y[{i}] = {}: labels run from 0 to {}",
                v[i],
                classes - 1
            )));
        }
        return Ok(if k == 1 {
            Mat::from_fn(n, 1, |i, _| v[i])
        } else {
            Mat::from_fn(n, k, |i, c| f64::from(u8::from(v[i] as usize == c)))
        });
    }
    let (shape, s) = values("y", &arr)?;
    let per_row: usize = shape.iter().skip(1).product();
    if shape.first() != Some(&n) || per_row != k {
        return Err(PyValueError::new_err(format!(
            "y: shape {shape:?}; expected {n} rows of {k} targets"
        )));
    }
    Ok(Mat::from_fn(n, k, |i, c| s[i * k + c]))
}

/// A matrix as a 2-D numpy array.
pub(crate) fn to_numpy<'py>(py: Python<'py>, m: MatRef<'_, f64>) -> Bound<'py, PyArray2<f64>> {
    let (r, c) = (m.nrows(), m.ncols());
    let v: Vec<f64> = (0..r * c).map(|i| m[(i / c, i % c)]).collect();
    v.into_pyarray(py)
        .reshape([r, c])
        .expect("r·c values make an r × c array")
}

/// A flat vector as a numpy array of `shape`.
pub(crate) fn shaped<'py>(
    py: Python<'py>,
    v: Vec<f64>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(v.into_pyarray(py).reshape(shape.to_vec())?.into_any())
}

/// An (N1K × N2K) kernel, example-major, in neural-tangents' layout: `(N1, N2, K, K)`, or
/// `(N1, N2)` with the outputs traced (`trace_axes` holding -1).
pub(crate) fn kernel_layout<'py>(
    py: Python<'py>,
    m: MatRef<'_, f64>,
    k: usize,
    trace_axes: &[i64],
) -> PyResult<Bound<'py, PyAny>> {
    let (n1, n2) = (m.nrows() / k, m.ncols() / k);
    match trace_axes {
        [] => shaped(py, nt_order(m, k), &[n1, n2, k, k]),
        [-1] | [1] => Ok(to_numpy(py, kernel_view(m, k, KernelView::Diag).as_ref()).into_any()),
        other => Err(PyValueError::new_err(format!(
            "trace_axes: {other:?} (expected () or (-1,), the output axis)"
        ))),
    }
}
