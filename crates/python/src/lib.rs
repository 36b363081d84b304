//! The Python module `dnn2gp._dnn2gp`: laplace-torch's words over the core library. Arrays come
//! in and go out as numpy float64; the GIL is released while the core computes; the core's
//! errors become `ValueError` (bad input), `MemoryError` (a pre-flight refusal),
//! `ArithmeticError` (numerical failure) and `OSError` (files), with the CLI's messages.

use std::path::PathBuf;

mod gp;
mod progress;
mod train;

use faer::{Mat, MatRef};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods, ToPyArray,
};
use pyo3::exceptions::{PyArithmeticError, PyMemoryError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use dnn2gp::gp::{kernel_view, nt_order, KernelView};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::weights::{self, ParamTensor};
use dnn2gp::nn::{Network, Sequential};
use dnn2gp::posterior::{
    FitOptions, HessianStructure, Laplace as CoreLaplace, Link, Posterior, PriorPrecision,
    PriorStructure, Subset,
};
use dnn2gp::train::model::Model as CoreModel;
use dnn2gp::Error;

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

/// The core's error as the Python exception users expect.
pub(crate) fn py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Memory { .. } => PyMemoryError::new_err(msg),
        Error::Numerical(_) => PyArithmeticError::new_err(msg),
        Error::Io { .. } => PyOSError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// `value`'s dtype (a numpy array) or type, for messages.
fn describe(value: &Bound<'_, PyAny>) -> String {
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

/// A C-contiguous numpy array of `T` named `name`, or the error naming what is wrong.
pub(crate) fn array<'py, T: numpy::Element>(
    name: &str,
    value: &Bound<'py, PyAny>,
    want: &str,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let arr = value.cast::<PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: expected a numpy {want} array, got {}",
            describe(value)
        ))
    })?;
    // Buffers unpickled from another process may be misaligned: an aligned copy serves.
    if !arr
        .getattr("flags")?
        .getattr("aligned")?
        .extract::<bool>()?
    {
        return array(name, &arr.call_method0("copy")?, want);
    }
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name}: the array is not C-contiguous (numpy.ascontiguousarray({name}) makes a \
             contiguous copy)"
        )));
    }
    Ok(arr.clone())
}

/// An `(N, …)` float64 array as an N × `d` matrix (the trailing axes flattened in C order, as
/// PyTorch flattens an image), `d` the network's inputs.
pub(crate) fn rows(name: &str, value: &Bound<'_, PyAny>, d: usize) -> PyResult<Mat<f64>> {
    let arr = array::<f64>(name, value, "float64")?;
    let ro = arr.readonly();
    let shape = ro.shape().to_vec();
    let per_row: usize = shape.iter().skip(1).product();
    if shape.is_empty() || per_row != d {
        return Err(PyValueError::new_err(format!(
            "{name}: shape {shape:?} gives {} values per row; the network takes {d}",
            if shape.is_empty() { 0 } else { per_row }
        )));
    }
    let s = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))?;
    Ok(Mat::from_fn(shape[0], d, |i, j| s[i * d + j]))
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

/// A trained network with its likelihood, noise σ and prior precision δ: the weights of a
/// PyTorch `state_dict` (a dict of numpy arrays, or a safetensors file) in the architecture
/// `arch` (dnn2gp's spec, e.g. `1x28x28:conv6k5,relu,pool,flatten,dense10`), or a dnn2gp model
/// file (`Model.load`).
#[pyclass(name = "Model", module = "dnn2gp", frozen)]
#[derive(Clone)]
pub(crate) struct Model {
    pub(crate) inner: CoreModel,
}

/// The likelihood of laplace-torch's word for a network of `k` outputs.
fn likelihood_of(word: &str, k: usize) -> PyResult<LikelihoodKind> {
    match word {
        "classification" if k == 1 => Ok(LikelihoodKind::Bernoulli),
        "classification" => Ok(LikelihoodKind::Categorical),
        "regression" => Ok(LikelihoodKind::Gaussian),
        other => Err(PyValueError::new_err(format!(
            "likelihood: '{other}' (expected 'classification' or 'regression')"
        ))),
    }
}

/// laplace-torch's word for a likelihood.
fn likelihood_word(kind: LikelihoodKind) -> &'static str {
    match kind {
        LikelihoodKind::Gaussian => "regression",
        _ => "classification",
    }
}

/// A dict of float32 or float64 numpy arrays as safetensors bytes, with every check of the
/// file loader.
fn state_dict_bytes(dict: &Bound<'_, PyDict>) -> PyResult<Vec<u8>> {
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, value) in dict.iter() {
        let name: String = key
            .extract()
            .map_err(|_| PyTypeError::new_err("state_dict: keys must be strings"))?;
        let what = format!("state_dict['{name}']");
        let (dtype, shape, bytes) = if let Ok(a) = value.cast::<PyArrayDyn<f32>>() {
            let a = array::<f32>(&what, a.as_any(), "float32 or float64")?;
            let ro = a.readonly();
            let s = ro
                .as_slice()
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            let bytes = s.iter().flat_map(|v| v.to_le_bytes()).collect();
            (safetensors::Dtype::F32, ro.shape().to_vec(), bytes)
        } else {
            let a = array::<f64>(&what, &value, "float32 or float64")?;
            let ro = a.readonly();
            let s = ro
                .as_slice()
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            let bytes = s.iter().flat_map(|v| v.to_le_bytes()).collect();
            (safetensors::Dtype::F64, ro.shape().to_vec(), bytes)
        };
        owned.push((name, dtype, shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| PyValueError::new_err(format!("state_dict['{n}']: {e}")))
        })
        .collect::<PyResult<Vec<_>>>()?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| PyValueError::new_err(format!("state_dict: {e}")))
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (arch, state_dict, likelihood="classification", sigma_noise=1.0, prior_precision=1.0))]
    fn new(
        arch: &str,
        state_dict: &Bound<'_, PyAny>,
        likelihood: &str,
        sigma_noise: f64,
        prior_precision: f64,
    ) -> PyResult<Self> {
        let net =
            Sequential::parse(arch).map_err(|e| PyValueError::new_err(format!("arch: {e}")))?;
        let layout: Vec<ParamTensor> = net.param_layout();
        let w = if let Ok(dict) = state_dict.cast::<PyDict>() {
            let bytes = state_dict_bytes(dict)?;
            weights::from_bytes(&bytes, "state_dict", |_| Ok(layout.clone()))
                .map_err(py_err)?
                .1
        } else if let Ok(path) = state_dict.extract::<PathBuf>() {
            weights::load(&path, &layout).map_err(py_err)?
        } else {
            return Err(PyTypeError::new_err(format!(
                "state_dict: expected a dict of numpy arrays or a safetensors path, got {}",
                describe(state_dict)
            )));
        };
        let kind = likelihood_of(likelihood, net.n_outputs())?;
        let inner = CoreModel::new(net, w, kind, sigma_noise, prior_precision).map_err(py_err)?;
        Ok(Model { inner })
    }

    /// Reads a dnn2gp model file (safetensors with the architecture in its metadata).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(Model {
            inner: CoreModel::load(&path).map_err(py_err)?,
        })
    }

    /// Writes the self-describing model file (float64); PyTorch reads its weights with
    /// `load_state_dict(safetensors.torch.load_file(path))`.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner
            .save(&path, weights::StoredDtype::F64)
            .map_err(py_err)
    }

    /// The model from its parts (what pickling sends to another process, e.g. a Dask worker).
    #[staticmethod]
    fn _from_parts(
        arch: &str,
        weights: Vec<f64>,
        likelihood: &str,
        sigma_noise: f64,
        prior_precision: f64,
    ) -> PyResult<Self> {
        let net = Sequential::parse(arch).map_err(py_err)?;
        let kind = likelihood.parse::<LikelihoodKind>().map_err(py_err)?;
        let inner =
            CoreModel::new(net, weights, kind, sigma_noise, prior_precision).map_err(py_err)?;
        Ok(Model { inner })
    }

    /// Pickling: the architecture, weights, likelihood, σ and δ.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = &self.inner;
        let from = py.get_type::<Model>().getattr("_from_parts")?;
        let args = (
            m.net.spec(),
            m.w.clone(),
            m.likelihood.to_string(),
            m.sigma,
            m.delta,
        );
        Ok((from, args).into_pyobject(py)?.into_any())
    }

    /// laplace-torch's word for the likelihood: `"classification"` or `"regression"`.
    #[getter]
    fn likelihood(&self) -> &'static str {
        likelihood_word(self.inner.likelihood)
    }

    /// The prior precision δ.
    #[getter]
    fn prior_precision(&self) -> f64 {
        self.inner.delta
    }

    /// The Gaussian noise σ (1 for classification).
    #[getter]
    fn sigma_noise(&self) -> f64 {
        self.inner.sigma
    }

    /// The number of outputs K.
    #[getter]
    fn n_outputs(&self) -> usize {
        self.inner.net.n_outputs()
    }

    /// The architecture spec.
    #[getter]
    fn arch(&self) -> String {
        self.inner.net.spec()
    }

    /// The number of parameters P.
    #[getter]
    fn n_params(&self) -> usize {
        self.inner.net.n_params()
    }

    /// The flat weights (P), in the state_dict's order.
    #[getter]
    fn weights<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.w.to_pyarray(py)
    }

    /// The outputs `f_w(X)` (N × K) at inputs X (N × D, or N × C × H × W).
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let x = rows("X", x, self.inner.net.n_inputs())?;
        let m = &self.inner;
        let f = py.detach(|| dnn2gp::nn::predict(&m.net, &m.w, x.as_ref()));
        Ok(to_numpy(py, f.as_ref()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(arch='{}', likelihood='{}', n_params={})",
            self.inner.net.spec(),
            self.inner.likelihood,
            self.inner.net.n_params()
        )
    }
}

/// Targets of the model's likelihood from `y`: class labels (N,) of any integer dtype or
/// one-hot rows (N, K) for classification, values (N,) or (N, K) for regression.
pub(crate) fn targets(model: &CoreModel, y: &Bound<'_, PyAny>, n: usize) -> PyResult<Mat<f64>> {
    let k = model.net.n_outputs();
    let kind = y
        .getattr("dtype")
        .and_then(|d| d.getattr("kind"))
        .map(|kind| kind.to_string())
        .unwrap_or_default();
    if (kind == "i" || kind == "u") && model.likelihood != LikelihoodKind::Gaussian {
        let labels = y.call_method1("astype", ("int64",))?;
        let a = array::<i64>("y", &labels, "integer")?;
        let ro = a.readonly();
        let s = ro
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let classes = if k == 1 { 2 } else { k };
        if ro.ndim() != 1 || s.len() != n {
            return Err(PyValueError::new_err(format!(
                "y: shape {:?}; expected {n} labels",
                ro.shape()
            )));
        }
        if let Some(i) = s.iter().position(|c| *c < 0 || *c as usize >= classes) {
            return Err(PyValueError::new_err(format!(
                "y[{i}] = {}: labels run from 0 to {}",
                s[i],
                classes - 1
            )));
        }
        return Ok(if k == 1 {
            Mat::from_fn(n, 1, |i, _| s[i] as f64)
        } else {
            Mat::from_fn(n, k, |i, c| f64::from(u8::from(s[i] as usize == c)))
        });
    }
    let a = array::<f64>("y", y, "float64 (or integer labels)")?;
    let ro = a.readonly();
    let shape = ro.shape().to_vec();
    let per_row: usize = shape.iter().skip(1).product();
    if shape.first() != Some(&n) || per_row != k {
        return Err(PyValueError::new_err(format!(
            "y: shape {shape:?}; expected {n} rows of {k} targets"
        )));
    }
    let s = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Mat::from_fn(n, k, |i, c| s[i * k + c]))
}

/// The Laplace-GGN posterior of a model, as laplace-torch's `Laplace(model, likelihood,
/// subset_of_weights, hessian_structure)`: `fit(X, y)`, then
/// `optimize_prior_precision(method="marglik")`, `log_marginal_likelihood`, the GLM predictive
/// `la(X, link_approx=…)`, `functional_variance`, `kernel`, `sample`, `save`/`load`.
///
/// `q(θ) = N(θ*, Σ)`, `Σ⁻¹ = H + δI`, `H = Σ_i J_iᵀ Λ_i J_i` over the covered weights, in the
/// structure's approximation (`full`, `diag`, `kron`: KFAC, `lowrank`: the top eigenpairs).
#[pyclass(name = "Laplace", module = "dnn2gp")]
struct Laplace {
    model: CoreModel,
    structure: HessianStructure,
    subset: Subset,
    rank: usize,
    seed: u64,
    max_memory: u128,
    fitted: Option<CoreLaplace>,
}

impl Laplace {
    fn fitted(&self) -> PyResult<&CoreLaplace> {
        self.fitted
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("call fit(X, y) first"))
    }

    fn link(link_approx: &str, n_samples: usize) -> PyResult<Link> {
        match link_approx {
            "probit" => Ok(Link::Probit),
            "bridge" => Ok(Link::Bridge),
            "mc" if n_samples > 0 => Ok(Link::MonteCarlo {
                samples: n_samples,
                seed: 0,
            }),
            "mc" => Err(PyValueError::new_err("n_samples: must be at least 1")),
            other => Err(PyValueError::new_err(format!(
                "link_approx: '{other}' (expected 'probit', 'mc' or 'bridge')"
            ))),
        }
    }

    fn prior(value: &Bound<'_, PyAny>) -> PyResult<PriorPrecision> {
        if let Ok(d) = value.extract::<f64>() {
            return Ok(PriorPrecision::Scalar(d));
        }
        let a = array::<f64>("prior_precision", value, "float64")?;
        let ro = a.readonly();
        Ok(PriorPrecision::Layerwise(
            ro.as_slice()
                .map_err(|e| PyValueError::new_err(e.to_string()))?
                .to_vec(),
        ))
    }
}

#[pymethods]
impl Laplace {
    #[new]
    #[pyo3(signature = (model, likelihood, subset_of_weights="last_layer", hessian_structure="kron", prior_precision=None, sigma_noise=None, rank=100, seed=0, max_memory_gib=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model: &Model,
        likelihood: &str,
        subset_of_weights: &str,
        hessian_structure: &str,
        prior_precision: Option<f64>,
        sigma_noise: Option<f64>,
        rank: usize,
        seed: u64,
        max_memory_gib: Option<f64>,
    ) -> PyResult<Self> {
        let mut m = model.inner.clone();
        m.likelihood = likelihood_of(likelihood, m.net.n_outputs())?;
        if let Some(d) = prior_precision {
            dnn2gp::train::check_delta(d).map_err(|e| py_err(e.for_option("prior_precision")))?;
            m.delta = d;
        }
        if let Some(s) = sigma_noise {
            if !(s.is_finite() && s > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "sigma_noise: {s} is not a positive number"
                )));
            }
            m.sigma = s;
        }
        let subset = subset_of_weights
            .parse::<Subset>()
            .map_err(|e| PyValueError::new_err(format!("subset_of_weights: {e}")))?;
        let structure = hessian_structure
            .parse::<HessianStructure>()
            .map_err(|e| PyValueError::new_err(format!("hessian_structure: {e}")))?;
        if rank == 0 {
            return Err(PyValueError::new_err("rank: must be at least 1"));
        }
        Ok(Laplace {
            model: m,
            structure,
            subset,
            rank,
            seed,
            max_memory: memory_budget(max_memory_gib)?,
            fitted: None,
        })
    }

    /// Fits the posterior on the training data: inputs X (N × D, or N × C × H × W, float64)
    /// and targets y (class labels or one-hot rows; regression values). The memory the fit
    /// needs is checked first (`MemoryError`). `progress=True` draws a line on stderr (diag,
    /// kron and lowrank fits, which stream the data). Numerical events of the factorisation
    /// (jitter, floored eigenvalues) are warned as `RuntimeWarning`.
    #[pyo3(signature = (x, y, progress=false))]
    fn fit(
        &mut self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        progress: bool,
    ) -> PyResult<()> {
        let x = rows("X", x, self.model.net.n_inputs())?;
        let y = targets(&self.model, y, x.nrows())?;
        let n = x.nrows() as u64;
        let passes = match self.structure {
            HessianStructure::Full => 0,
            HessianStructure::LowRank => 4,
            _ => 1,
        };
        let line = progress::Line::new(progress && passes > 0, "fit", "examples", passes * n);
        let (model, structure, subset) = (self.model.clone(), self.structure, self.subset);
        let (max_memory, rank, seed) = (self.max_memory, self.rank, self.seed);
        let la = py
            .detach(|| {
                progress::with_line(&line, |progress| {
                    let opts = FitOptions {
                        memory_limit: max_memory,
                        progress,
                        rank,
                        seed,
                    };
                    CoreLaplace::fit_subset(model, x.as_ref(), y.as_ref(), structure, subset, &opts)
                })
            })
            .map_err(py_err)?;
        gp::warn(py, &la.weight_posterior().warnings())?;
        self.fitted = Some(la);
        Ok(())
    }

    /// What `fit` sums over the data (X, y), as a `Curvature`: the GGN in this posterior's
    /// structure (full, diag or kron; not lowrank), `−log p` and the squared error. Curvatures
    /// of chunks of the data add up (`c1 + c2`) to the whole data's, so the fit can run on
    /// other processes (`dnn2gp.dask.fit`); `fit_curvature` finishes it.
    fn curvature(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
    ) -> PyResult<Curvature> {
        let x = rows("X", x, self.model.net.n_inputs())?;
        let y = targets(&self.model, y, x.nrows())?;
        let opts = FitOptions {
            memory_limit: self.max_memory,
            progress: None,
            rank: self.rank,
            seed: self.seed,
        };
        let (m, structure, subset) = (&self.model, self.structure, self.subset);
        let inner = py
            .detach(|| CoreLaplace::curvature(m, x.as_ref(), y.as_ref(), structure, subset, &opts))
            .map_err(py_err)?;
        Ok(Curvature { inner })
    }

    /// Fits the posterior from the curvature of the whole training data (the sum of
    /// `curvature` over its chunks): the same posterior as `fit`.
    fn fit_curvature(&mut self, py: Python<'_>, curvature: &Curvature) -> PyResult<()> {
        if (curvature.inner.structure(), curvature.inner.subset()) != (self.structure, self.subset)
        {
            return Err(PyValueError::new_err(format!(
                "curvature: a {} curvature over the {}; this posterior is {} over the {}",
                curvature.inner.structure(),
                curvature.inner.subset(),
                self.structure,
                self.subset
            )));
        }
        let (model, c) = (self.model.clone(), curvature.inner.clone());
        let la = py
            .detach(|| CoreLaplace::from_curvature(model, c))
            .map_err(py_err)?;
        gp::warn(py, &la.weight_posterior().warnings())?;
        self.fitted = Some(la);
        Ok(())
    }

    /// The prior precision at the evidence's maximum (`method="marglik"`): one δ
    /// (`prior_structure="scalar"`) or one per parameter tensor (`"layerwise"`), found exactly
    /// (no learning rate, no steps).
    #[pyo3(signature = (method="marglik", prior_structure="scalar"))]
    fn optimize_prior_precision(
        &mut self,
        py: Python<'_>,
        method: &str,
        prior_structure: &str,
    ) -> PyResult<()> {
        if method != "marglik" {
            return Err(PyValueError::new_err(format!(
                "method: '{method}' (only 'marglik': the prior by the evidence)"
            )));
        }
        let s = prior_structure
            .parse::<PriorStructure>()
            .map_err(|e| PyValueError::new_err(format!("prior_structure: {e}")))?;
        self.fitted()?;
        let la = self.fitted.as_mut().expect("checked above");
        py.detach(|| la.optimize_prior_precision_as(s))
            .map_err(py_err)?;
        Ok(())
    }

    /// The noise σ and prior precision δ at the evidence's maximum (regression), the
    /// posterior refitted there.
    fn optimize_noise_and_prior(&mut self, py: Python<'_>) -> PyResult<()> {
        self.fitted()?;
        let la = self.fitted.as_mut().expect("checked above");
        py.detach(|| la.optimize_noise_and_prior())
            .map_err(py_err)?;
        Ok(())
    }

    /// The Laplace evidence `log p(D|θ*) − Σ_g (δ_g/2)‖θ_g*‖² + Σ_g (P_g/2) log δ_g − ½ log|H + D|`
    /// at the fitted prior and noise, or at those given (a float or one δ per tensor).
    #[pyo3(signature = (prior_precision=None, sigma_noise=None))]
    fn log_marginal_likelihood(
        &self,
        prior_precision: Option<&Bound<'_, PyAny>>,
        sigma_noise: Option<f64>,
    ) -> PyResult<f64> {
        let la = self.fitted()?;
        let prior = match prior_precision {
            Some(v) => Self::prior(v)?,
            None => la.prior_precision().clone(),
        };
        la.log_marginal_likelihood_at(&prior, sigma_noise)
            .map_err(py_err)
    }

    /// The model, with this posterior's likelihood, σ and δ.
    #[getter]
    fn model(&self) -> Model {
        let inner = self.fitted.as_ref().map_or(&self.model, |la| la.model());
        Model {
            inner: inner.clone(),
        }
    }

    /// `"classification"` or `"regression"`.
    #[getter]
    fn likelihood(&self) -> &'static str {
        likelihood_word(self.model.likelihood)
    }

    /// `"all"` or `"last_layer"`.
    #[getter]
    fn subset_of_weights(&self) -> String {
        self.subset.to_string()
    }

    /// `"full"`, `"diag"`, `"kron"` or `"lowrank"`.
    #[getter]
    fn hessian_structure(&self) -> String {
        self.structure.to_string()
    }

    /// The prior precision: a float, or one δ per parameter tensor (numpy array, in the order
    /// of `prior_tensors`).
    #[getter]
    fn prior_precision<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.fitted()?.prior_precision() {
            PriorPrecision::Scalar(d) => d.into_pyobject(py)?.into_any(),
            PriorPrecision::Layerwise(d) => d.to_pyarray(py).into_any(),
        })
    }

    /// The covered parameter tensors' names (the state_dict's keys).
    #[getter]
    fn prior_tensors(&self) -> PyResult<Vec<String>> {
        Ok(self
            .fitted()?
            .prior_tensors()
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// The Gaussian noise σ.
    #[getter]
    fn sigma_noise(&self) -> PyResult<f64> {
        Ok(self.fitted()?.model().sigma)
    }

    /// The number of weights the posterior covers.
    #[getter]
    fn n_params(&self) -> PyResult<usize> {
        Ok(self.fitted()?.weight_posterior().mean.len())
    }

    /// The GLM predictive at X: class probabilities (N × classes) by `link_approx`
    /// (`probit`, `mc` with `n_samples` draws, `bridge`) for classification; the mean and the
    /// functional covariance `(f_mu (N × K), f_var (N × K × K))` for regression.
    /// `la(X, …)` is the same.
    #[pyo3(signature = (x, pred_type="glm", link_approx="probit", n_samples=100))]
    fn predictive<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        pred_type: &str,
        link_approx: &str,
        n_samples: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        if pred_type != "glm" {
            return Err(PyValueError::new_err(format!(
                "pred_type: '{pred_type}' (only 'glm', the linearised predictive)"
            )));
        }
        let link = Self::link(link_approx, n_samples)?;
        let la = self.fitted()?;
        let x = rows("X", x, la.model().net.n_inputs())?;
        let pred = py.detach(|| la.predict(x.as_ref(), link)).map_err(py_err)?;
        match pred.probabilities {
            Some(p) => Ok(to_numpy(py, p.as_ref()).into_any()),
            None => {
                let (n, k) = (pred.mean.nrows(), pred.mean.ncols());
                let mean = to_numpy(py, pred.mean.as_ref()).into_any();
                let var = shaped(py, pred.covariance, &[n, k, k])?;
                Ok((mean, var).into_pyobject(py)?.into_any())
            }
        }
    }

    /// `predictive(X, …)`.
    #[pyo3(signature = (x, pred_type="glm", link_approx="probit", n_samples=100))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        pred_type: &str,
        link_approx: &str,
        n_samples: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.predictive(py, x, pred_type, link_approx, n_samples)
    }

    /// The functional covariance `J(x) Σ J(x)ᵀ` at each row of X (N × K × K).
    fn functional_variance<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        let x = rows("X", x, la.model().net.n_inputs())?;
        let k = la.model().net.n_outputs();
        let c = py.detach(|| la.functional_covariance(x.as_ref()));
        shaped(py, c, &[x.nrows(), k, k])
    }

    /// The posterior kernel `J(x) Σ J(x')ᵀ` between the rows of X1 and X2 (X1 when omitted),
    /// in neural-tangents' layout `(N1, N2, K, K)`.
    #[pyo3(signature = (x1, x2=None))]
    fn kernel<'py>(
        &self,
        py: Python<'py>,
        x1: &Bound<'py, PyAny>,
        x2: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        let d = la.model().net.n_inputs();
        let (a, b) = pair(x1, x2, d)?;
        let m = py.detach(|| la.kernel(a.as_ref(), b.as_ref().unwrap_or(&a).as_ref()));
        kernel_layout(py, m.as_ref(), la.model().net.n_outputs(), &[])
    }

    /// `n_samples` draws of all the network's weights from the posterior (n × P), from `seed`.
    #[pyo3(signature = (n_samples=100, seed=0))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n_samples: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let la = self.fitted()?;
        let draws = py.detach(|| la.sample(n_samples, seed));
        let p = la.model().w.len();
        let m = Mat::from_fn(n_samples, p, |i, j| draws[i][j]);
        Ok(to_numpy(py, m.as_ref()))
    }

    /// Writes the fitted posterior to one safetensors file (`Laplace.load` reads it back).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.fitted()?.save(&path).map_err(py_err)
    }

    /// Reads a posterior written by `save` (or by the CLI).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        let la = CoreLaplace::load(&path).map_err(py_err)?;
        Ok(Laplace {
            model: la.model().clone(),
            structure: la.structure(),
            subset: la.subset(),
            rank: 100,
            seed: 0,
            max_memory: memory_budget(None)?,
            fitted: Some(la),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Laplace(subset_of_weights='{}', hessian_structure='{}', fitted={})",
            self.subset,
            self.structure,
            if self.fitted.is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// What a Laplace fit sums over its data (`Laplace.curvature`): the GGN `Σ_i J_iᵀ Λ_i J_i` over
/// some examples in the posterior's structure, `−log p` and the squared error. `c1 + c2` is the
/// curvature of both chunks (KFAC's `A`, a mean over examples, weighted by their counts); it
/// pickles, so that chunks computed on other processes can be added up.
#[pyclass(name = "Curvature", module = "dnn2gp", frozen)]
#[derive(Clone)]
struct Curvature {
    inner: dnn2gp::posterior::Curvature,
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
            .map(|t| {
                let a = array::<f64>("tensor", t, "float64")?;
                let ro = a.readonly();
                Ok((
                    ro.shape().to_vec(),
                    ro.as_slice()
                        .map_err(|e| PyValueError::new_err(e.to_string()))?
                        .to_vec(),
                ))
            })
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
fn ggn_diagonal<'py>(
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

#[pymodule]
fn _dnn2gp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Laplace>()?;
    m.add_class::<Curvature>()?;
    m.add_class::<gp::Gp>()?;
    m.add_function(wrap_pyfunction!(gp::pseudo_targets, m)?)?;
    m.add_function(wrap_pyfunction!(train::sweep, m)?)?;
    m.add_function(wrap_pyfunction!(train::vogn, m)?)?;
    m.add_function(wrap_pyfunction!(ntk, m)?)?;
    m.add_function(wrap_pyfunction!(ggn_diagonal, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
