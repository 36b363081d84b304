//! `dnn2gp.Model`: a trained network with its likelihood, σ and δ — from a state_dict (a dict
//! of arrays or tensors, or a safetensors file) and an architecture, or a dnn2gp model file.

use std::path::PathBuf;

use numpy::{PyArray1, PyArray2, ToPyArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::weights::{self, ParamTensor};
use dnn2gp::nn::{Graph, Network};
use dnn2gp::train::model::Model as CoreModel;

use crate::convert::{describe, rows, to_numpy, values};
use crate::errors::{arg_err, py_err, py_err_as, MODEL_ARGS};

/// A trained network with its likelihood, noise σ and prior precision δ: the weights of a
/// PyTorch `state_dict` (a dict of numpy arrays, or a safetensors file) in the architecture
/// `arch` (dnn2gp's spec, e.g. `1x28x28:conv6k5,relu,pool,flatten,dense10`), or a dnn2gp model
/// file (`Model.load`). `model(X, dtype="float32")` gives its outputs (float64 arrays) from a
/// forward pass in float32.
#[pyclass(name = "Model", module = "dnn2gp", frozen)]
#[derive(Clone)]
pub(crate) struct Model {
    pub(crate) inner: CoreModel,
}

/// The likelihood of a word (laplace-torch's `classification` or `regression`, or the core's
/// `gaussian`, `bernoulli`, `categorical`) for a network of `k` outputs.
pub(crate) fn likelihood_of(word: &str, k: usize) -> PyResult<LikelihoodKind> {
    Ok(word
        .parse::<LikelihoodKind>()
        .map_err(|e| arg_err("likelihood", e))?
        .for_outputs(k))
}

/// A state_dict (a dict of arrays or tensors of any float dtype, as `module.state_dict()`
/// gives it) as float64 safetensors bytes, so that the file loader's checks (missing, extra,
/// shapes, non-finite values) hold for it too.
fn state_dict_bytes(dict: &Bound<'_, PyDict>) -> PyResult<Vec<u8>> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, value) in dict.iter() {
        let name: String = key
            .extract()
            .map_err(|_| PyTypeError::new_err("state_dict: keys must be strings"))?;
        let (shape, v) = values(&format!("state_dict['{name}']"), &value)?;
        owned.push((
            name,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    let views = owned
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), b)
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
        let net = Graph::from_architecture(arch).map_err(|e| arg_err("arch", e))?;
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
        let inner = CoreModel::new(net, w, kind, sigma_noise, prior_precision)
            .map_err(|e| py_err_as(e, MODEL_ARGS))?;
        Ok(Model { inner })
    }

    /// A network exported to ONNX (`torch.onnx.export(model.eval(), x, path,
    /// do_constant_folding=False, dynamo=False)`): ResNets with BatchNorm, mixers, attention; its parameters
    /// under the file's (the `state_dict`'s) names. What the reader notices (BatchNorm folded
    /// into the convolutions by torch's default export) comes as a `RuntimeWarning`.
    #[staticmethod]
    #[pyo3(signature = (path, likelihood="classification", sigma_noise=1.0, prior_precision=1.0))]
    fn from_onnx(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        likelihood: &str,
        sigma_noise: f64,
        prior_precision: f64,
    ) -> PyResult<Self> {
        let imported = match path.extract::<PathBuf>() {
            Ok(p) => dnn2gp_onnx::read(&p),
            Err(_) => dnn2gp_onnx::from_bytes(path.extract::<&[u8]>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "path: expected a path to an ONNX file or its bytes, got {}",
                    describe(path)
                ))
            })?),
        }
        .map_err(py_err)?;
        let warnings: Vec<dnn2gp::Warning> = imported
            .warnings
            .iter()
            .map(|w| dnn2gp::Warning::new("onnx", w.clone()))
            .collect();
        crate::errors::warn(py, &warnings)?;
        let kind = likelihood_of(likelihood, imported.graph.n_outputs())?;
        let inner = CoreModel::new(
            imported.graph,
            imported.weights,
            kind,
            sigma_noise,
            prior_precision,
        )
        .map_err(|e| py_err_as(e, MODEL_ARGS))?;
        Ok(Model { inner })
    }

    /// A PyTorch module, exported to ONNX with torch (in eval mode, BatchNorm kept apart from
    /// the convolutions) and read as `from_onnx`; its outputs on `example_input` are checked
    /// against the module's. dnn2gp does not depend on torch: this needs torch and onnx
    /// installed.
    #[staticmethod]
    #[pyo3(signature = (module, example_input, likelihood="classification", sigma_noise=1.0, prior_precision=1.0))]
    fn from_torch(
        py: Python<'_>,
        module: &Bound<'_, PyAny>,
        example_input: &Bound<'_, PyAny>,
        likelihood: &str,
        sigma_noise: f64,
        prior_precision: f64,
    ) -> PyResult<Self> {
        let export = py.import("dnn2gp._torch")?.getattr("export")?;
        let (bytes, x, y): (Vec<u8>, Bound<'_, PyAny>, Bound<'_, PyAny>) =
            export.call1((module, example_input))?.extract()?;
        let bytes = pyo3::types::PyBytes::new(py, &bytes);
        let model = Self::from_onnx(py, bytes.as_any(), likelihood, sigma_noise, prior_precision)?;
        let xs = rows("example_input", &x, model.inner.net.n_inputs())?;
        let f = dnn2gp::nn::predict(&model.inner.net, &model.inner.w, xs.as_ref());
        let want = rows("the module's output", &y, model.inner.net.n_outputs())?;
        let mut worst = 0.0f64;
        let mut top = 0.0f64;
        for i in 0..f.nrows() {
            for j in 0..f.ncols() {
                worst = worst.max((f[(i, j)] - want[(i, j)]).abs());
                top = top.max(want[(i, j)].abs());
            }
        }
        // torch runs in float32: its outputs are within a few ulps of the largest.
        if worst > 1e-4 * (1.0 + top) {
            return Err(PyValueError::new_err(format!(
                "the imported network's outputs differ from the module's by {worst:.3e} (largest \
                 output {top:.3e}): an operation was read differently; please report the module"
            )));
        }
        Ok(model)
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
        let net = Graph::from_architecture(arch).map_err(py_err)?;
        let kind = likelihood.parse::<LikelihoodKind>().map_err(py_err)?;
        let inner = CoreModel::new(net, weights, kind, sigma_noise, prior_precision)
            .map_err(|e| py_err_as(e, MODEL_ARGS))?;
        Ok(Model { inner })
    }

    /// Pickling: the architecture, weights, likelihood, σ and δ.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = &self.inner;
        let from = py.get_type::<Model>().getattr("_from_parts")?;
        let args = (
            m.net.architecture(),
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
        self.inner.likelihood.laplace_word()
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

    /// The architecture, as `Model(arch, state_dict)` takes it: the spec string of a chain of
    /// layers, or the graph in JSON.
    #[getter]
    fn arch(&self) -> String {
        self.inner.net.architecture()
    }

    /// The number of parameters P.
    /// The parameter tensors' `state_dict` names, in the order of `weights`.
    #[getter]
    fn tensors(&self) -> Vec<String> {
        self.inner
            .net
            .param_layout()
            .into_iter()
            .map(|t| t.name)
            .collect()
    }

    #[getter]
    fn n_params(&self) -> usize {
        self.inner.net.n_params()
    }

    /// The flat weights (P), in the state_dict's order.
    #[getter]
    fn weights<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.w.to_pyarray(py)
    }

    /// The outputs `f_w(X)` (N × K, float64) at inputs X (N × D, or N × C × H × W), the
    /// forward pass in `dtype` (`"float64"`, or `"float32"` at twice the speed).
    #[pyo3(signature = (x, dtype=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let x = rows("X", x, self.inner.net.n_inputs())?;
        let m = self
            .inner
            .clone()
            .with_dtype(crate::convert::dtype("dtype", dtype)?);
        let f = py.detach(|| m.predict(x.as_ref()));
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
