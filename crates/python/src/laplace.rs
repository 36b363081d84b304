//! `dnn2gp.Laplace`: the Laplace-GGN posterior in laplace-torch's words (fit, the prior by the
//! evidence, the GLM predictive, functional variance, kernel, samples, files).

use std::path::PathBuf;

use faer::Mat;
use numpy::{PyArray2, PyArrayMethods, PyUntypedArrayMethods, ToPyArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use dnn2gp::nn::Network;
use dnn2gp::posterior::{
    FitOptions, HessianStructure, Laplace as CoreLaplace, Link, LinkApprox, Posterior, PredType,
    PriorPrecision, PriorStructure, Subset,
};
use dnn2gp::train::model::Model as CoreModel;

use crate::convert::{
    float_array, indices, kernel_layout, memory_budget, pair, rows, shaped, targets, to_numpy,
    values,
};
use crate::curvature::Curvature;
use crate::errors::{arg_err, py_err, py_err_as, warn, MODEL_ARGS};
use crate::model::{likelihood_of, Model};
use crate::progress;

/// The Laplace-GGN posterior of a model, as laplace-torch's `Laplace(model, likelihood,
/// subset_of_weights, hessian_structure)`: `fit(X, y)`, then
/// `optimize_prior_precision(method="marglik")`, `log_marginal_likelihood`, the predictive
/// `la(X, pred_type=…, link_approx=…)`, `functional_variance`, `kernel`, `sample`,
/// `save`/`load`; `prior_precision`, `sigma_noise` and `temperature` can be set after the fit.
/// `dtype="float32"` runs the network's forward passes in float32 (its outputs, a last layer's
/// features — the whole last-layer fit and predictive —, the `nn` predictive's draws); the
/// Jacobians, the curvature and the posterior are float64, arrays come back float64.
///
/// `q(θ) = N(θ*, Σ)`, `Σ⁻¹ = H/T + D`, `H = Σ_i J_iᵀ Λ_i J_i` over the covered weights, in the
/// structure's approximation (`full`, `diag`, `kron`: KFAC, `lowrank`: the top eigenpairs).
#[pyclass(name = "Laplace", module = "dnn2gp")]
pub(crate) struct Laplace {
    model: CoreModel,
    structure: HessianStructure,
    subset: Subset,
    /// A subnetwork's weights (indices into the parameter vector).
    indices: Vec<usize>,
    rank: usize,
    seed: u64,
    max_memory: u128,
    /// The temperature and a prior per tensor set before the fit, applied by it.
    temperature: f64,
    pending_prior: Option<PriorPrecision>,
    fitted: Option<CoreLaplace>,
}

impl Laplace {
    fn fitted(&self) -> PyResult<&CoreLaplace> {
        self.fitted
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("call fit(X, y) first"))
    }

    /// Keeps what a refit starts from (the model's δ and σ, a prior per tensor) at the
    /// fitted posterior's.
    fn remember(&mut self) {
        if let Some(la) = &self.fitted {
            self.model.sigma = la.model().sigma;
            match la.prior_precision() {
                PriorPrecision::Scalar(d) => {
                    self.model.delta = *d;
                    self.pending_prior = None;
                }
                p => self.pending_prior = Some(p.clone()),
            }
        }
    }

    fn prior(value: &Bound<'_, PyAny>) -> PyResult<PriorPrecision> {
        if let Ok(d) = value.extract::<f64>() {
            return Ok(PriorPrecision::Scalar(d));
        }
        match values("prior_precision", value)? {
            (shape, v) if shape.iter().product::<usize>() == 1 => Ok(PriorPrecision::Scalar(v[0])),
            (_, v) => Ok(PriorPrecision::Layerwise(v)),
        }
    }

    /// The fitted posterior at the temperature and prior set before the fit; its warnings.
    fn adopt(&mut self, py: Python<'_>, mut la: CoreLaplace) -> PyResult<()> {
        if self.temperature != 1.0 {
            la.set_temperature(self.temperature)
                .map_err(|e| arg_err("temperature", e))?;
        }
        if let Some(prior) = self.pending_prior.clone() {
            la.set_prior(prior)
                .map_err(|e| arg_err("prior_precision", e))?;
        }
        warn(py, &la.weight_posterior().warnings())?;
        self.fitted = Some(la);
        Ok(())
    }

    /// The stacked Jacobians (NK × P) of `jacobians`, an array (N, K, P) over the covered
    /// weights (laplace-torch's `Js`), or of the inputs `x`; exactly one of them.
    fn jacobian_rows(
        &self,
        x: Option<&Bound<'_, PyAny>>,
        jacobians: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Mat<f64>> {
        let la = self.fitted()?;
        let (k, p) = (la.model().net.n_outputs(), la.weight_posterior().mean.len());
        match (x, jacobians) {
            (Some(x), None) => Ok(la.jacobian(rows("X", x, la.model().net.n_inputs())?.as_ref())),
            (None, Some(j)) => {
                let arr = float_array("jacobians", j)?;
                let ro = arr.readonly();
                let shape = ro.shape().to_vec();
                if shape.len() != 3 || shape[1] != k || shape[2] != p {
                    return Err(PyValueError::new_err(format!(
                        "jacobians: shape {shape:?}; expected (batch, {k} outputs, {p} parameters)"
                    )));
                }
                let v = ro
                    .as_slice()
                    .map_err(|e| PyValueError::new_err(format!("jacobians: {e}")))?;
                Ok(Mat::from_fn(shape[0] * k, p, |r, c| v[r * p + c]))
            }
            _ => Err(PyValueError::new_err(
                "give the inputs X or jacobians=, one of them",
            )),
        }
    }

    /// laplace-torch's `pred_type` word.
    fn pred_type(pred_type: &str) -> PyResult<PredType> {
        pred_type
            .parse::<PredType>()
            .map_err(|e| arg_err("pred_type", e))
    }
}

/// A predictive as Python has it: class probabilities (N × classes); for regression the mean
/// (N × K) and, from the GLM, the covariance blocks (N × K × K), from the network's draws their
/// variances (N × K).
fn predictive_arrays<'py>(
    py: Python<'py>,
    out: dnn2gp::posterior::Predictive,
    pred: PredType,
) -> PyResult<Bound<'py, PyAny>> {
    let (n, k) = (out.mean.nrows(), out.mean.ncols());
    if let Some(p) = &out.probabilities {
        return Ok(to_numpy(py, p.as_ref()).into_any());
    }
    let mean = to_numpy(py, out.mean.as_ref()).into_any();
    let var = match pred {
        PredType::Glm => shaped(py, out.covariance, &[n, k, k])?,
        PredType::Nn => shaped(py, out.functional_variance(), &[n, k])?,
    };
    Ok((mean, var).into_pyobject(py)?.into_any())
}

/// `subset_of_weights`: `"all"`, `"last_layer"`, or the `state_dict` names of the tensors the
/// posterior covers (the others held at θ*, as laplace-torch does with `requires_grad=False`).
#[derive(FromPyObject)]
enum SubsetArg {
    Word(String),
    Names(Vec<String>),
}

#[pymethods]
impl Laplace {
    #[new]
    #[pyo3(signature = (model, likelihood, subset_of_weights=SubsetArg::Word("last_layer".into()), hessian_structure="kron", prior_precision=None, sigma_noise=None, temperature=1.0, subnetwork_indices=None, rank=100, seed=0, max_memory_gib=None, dtype=None))]
    #[pyo3(
        text_signature = "(model, likelihood, subset_of_weights='last_layer', hessian_structure='kron', prior_precision=None, sigma_noise=None, temperature=1.0, subnetwork_indices=None, rank=100, seed=0, max_memory_gib=None, dtype=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model: &Model,
        likelihood: &str,
        subset_of_weights: SubsetArg,
        hessian_structure: &str,
        prior_precision: Option<&Bound<'_, PyAny>>,
        sigma_noise: Option<f64>,
        temperature: f64,
        subnetwork_indices: Option<&Bound<'_, PyAny>>,
        rank: usize,
        seed: u64,
        max_memory_gib: Option<f64>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut m = model.inner.clone();
        m.dtype = crate::convert::dtype("dtype", dtype)?;
        m.likelihood = likelihood_of(likelihood, m.net.n_outputs())?;
        let mut pending_prior = None;
        match prior_precision.map(Self::prior).transpose()? {
            Some(PriorPrecision::Scalar(d)) => {
                dnn2gp::train::check_delta(d).map_err(|e| arg_err("prior_precision", e))?;
                m.delta = d;
            }
            Some(PriorPrecision::Layerwise(d)) => {
                d.iter()
                    .try_for_each(|v| dnn2gp::train::check_delta(*v))
                    .map_err(|e| arg_err("prior_precision", e))?;
                pending_prior = Some(PriorPrecision::Layerwise(d));
            }
            None => {}
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(PyValueError::new_err(format!(
                "temperature: {temperature} is not a positive number"
            )));
        }
        if let Some(s) = sigma_noise {
            if !(s.is_finite() && s > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "sigma_noise: {s} is not a positive number"
                )));
            }
            m.sigma = s;
        }
        // A word, or the state_dict names of the tensors to cover (the others held at θ*, as
        // laplace-torch does with requires_grad=False).
        let subset = match subset_of_weights {
            SubsetArg::Word(word) => word
                .parse::<Subset>()
                .map_err(|e| arg_err("subset_of_weights", e))?,
            SubsetArg::Names(names) => {
                let layout: Vec<String> =
                    m.net.param_layout().into_iter().map(|t| t.name).collect();
                if let Some(n) = names.iter().find(|n| !layout.contains(n)) {
                    return Err(PyValueError::new_err(format!(
                        "subset_of_weights: the network has no tensor '{n}'; its tensors are {layout:?}"
                    )));
                }
                let held: Vec<String> = layout.into_iter().filter(|t| !names.contains(t)).collect();
                m = m
                    .freeze(&held)
                    .map_err(|e| arg_err("subset_of_weights", e))?;
                Subset::All
            }
        };
        let structure = hessian_structure
            .parse::<HessianStructure>()
            .map_err(|e| arg_err("hessian_structure", e))?;
        let indices = match (subset, subnetwork_indices) {
            (Subset::Subnetwork, Some(v)) => indices("subnetwork_indices", v)?,
            (Subset::Subnetwork, None) => {
                return Err(PyValueError::new_err(
                    "subset_of_weights='subnetwork' needs subnetwork_indices: the indices of \
                     the chosen weights in the parameter vector",
                ))
            }
            (_, Some(_)) => {
                return Err(PyValueError::new_err(
                    "subnetwork_indices: given with subset_of_weights='subnetwork' only",
                ))
            }
            (_, None) => Vec::new(),
        };
        if rank == 0 {
            return Err(PyValueError::new_err("rank: must be at least 1"));
        }
        Ok(Laplace {
            model: m,
            structure,
            subset,
            indices,
            rank,
            seed,
            max_memory: memory_budget(max_memory_gib)?,
            temperature,
            pending_prior,
            fitted: None,
        })
    }

    /// Fits the posterior on the training data: inputs X (N × D, or N × C × H × W)
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
        let indices = self.indices.clone();
        let la = py
            .detach(|| {
                progress::with_line(&line, |progress| {
                    let opts = FitOptions {
                        memory_limit: max_memory,
                        progress,
                        rank,
                        seed,
                    };
                    match subset {
                        Subset::Subnetwork => CoreLaplace::fit_subnetwork(
                            model,
                            x.as_ref(),
                            y.as_ref(),
                            structure,
                            indices,
                            &opts,
                        ),
                        _ => CoreLaplace::fit_subset(
                            model,
                            x.as_ref(),
                            y.as_ref(),
                            structure,
                            subset,
                            &opts,
                        ),
                    }
                })
            })
            .map_err(py_err)?;
        self.adopt(py, la)
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
            .detach(|| match subset {
                Subset::Subnetwork => CoreLaplace::curvature_subnetwork(
                    m,
                    x.as_ref(),
                    y.as_ref(),
                    structure,
                    self.indices.clone(),
                    &opts,
                ),
                _ => CoreLaplace::curvature(m, x.as_ref(), y.as_ref(), structure, subset, &opts),
            })
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
        self.adopt(py, la)
    }

    /// The prior precision at the evidence's maximum (`method="marglik"`): one δ
    /// (`prior_structure="scalar"`) or one per parameter tensor (`"layerwise"`), found exactly
    /// (no learning rate, no steps). `pred_type` is accepted as laplace-torch takes it (the
    /// evidence does not depend on it); `method="gridsearch"` on a validation set is
    /// `dnn2gp.torch.Laplace`'s.
    #[pyo3(signature = (method="marglik", prior_structure="scalar", pred_type="glm"))]
    fn optimize_prior_precision(
        &mut self,
        py: Python<'_>,
        method: &str,
        prior_structure: &str,
        pred_type: &str,
    ) -> PyResult<()> {
        Self::pred_type(pred_type)?;
        match method {
            "marglik" => {}
            "gridsearch" => {
                return Err(PyValueError::new_err(
                    "method: 'gridsearch' needs a validation loader: \
                     dnn2gp.torch.Laplace(…).optimize_prior_precision(method='gridsearch', \
                     val_loader=…), or set prior_precision in a loop and score la(X_val)",
                ))
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "method: '{other}' (expected 'marglik', the prior by the evidence)"
                )))
            }
        }
        if prior_structure == "diag" {
            return Err(PyValueError::new_err(
                "prior_structure: 'diag' (one δ per weight) is not supported; 'layerwise' \
                 gives one δ per parameter tensor, found exactly",
            ));
        }
        let s = prior_structure
            .parse::<PriorStructure>()
            .map_err(|e| arg_err("prior_structure", e))?;
        self.fitted()?;
        let la = self.fitted.as_mut().expect("checked above");
        py.detach(|| la.optimize_prior_precision_as(s))
            .map_err(py_err)?;
        self.remember();
        Ok(())
    }

    /// The noise σ and prior precision δ at the evidence's maximum (regression), the
    /// posterior refitted there.
    fn optimize_noise_and_prior(&mut self, py: Python<'_>) -> PyResult<()> {
        self.fitted()?;
        let la = self.fitted.as_mut().expect("checked above");
        py.detach(|| la.optimize_noise_and_prior())
            .map_err(py_err)?;
        self.remember();
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

    /// The evidence's gradient in log space, `(∂/∂ log δ, ∂/∂ log σ)`, at the fitted prior
    /// and noise or at those given (without refitting): the first a float (one δ) or one
    /// value per tensor, the second None for classification.
    #[pyo3(signature = (prior_precision=None, sigma_noise=None))]
    fn log_marginal_likelihood_gradient<'py>(
        &self,
        py: Python<'py>,
        prior_precision: Option<&Bound<'py, PyAny>>,
        sigma_noise: Option<f64>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<f64>)> {
        let la = self.fitted()?;
        let prior = match prior_precision {
            Some(v) => Self::prior(v)?,
            None => la.prior_precision().clone(),
        };
        let (by_prior, by_sigma) = la
            .log_marginal_likelihood_gradients(&prior, sigma_noise)
            .map_err(|e| py_err_as(e, MODEL_ARGS))?;
        let by_prior = match prior {
            PriorPrecision::Scalar(_) => by_prior[0].into_pyobject(py)?.into_any(),
            PriorPrecision::Layerwise(_) => by_prior.to_pyarray(py).into_any(),
        };
        Ok((by_prior, by_sigma))
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
        self.model.likelihood.laplace_word()
    }

    /// `"all"`, `"last_layer"`, or the names of the tensors covered (where others are held).
    #[getter]
    fn subset_of_weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.model.net.nodes().iter().any(|n| n.fixed.is_some()) {
            let names: Vec<String> = self
                .model
                .net
                .param_layout()
                .into_iter()
                .map(|t| t.name)
                .collect();
            return Ok(names.into_pyobject(py)?.into_any());
        }
        Ok(self.subset.to_string().into_pyobject(py)?.into_any())
    }

    /// `"full"`, `"diag"`, `"kron"` or `"lowrank"`.
    #[getter]
    fn hessian_structure(&self) -> String {
        self.structure.to_string()
    }

    /// The prior precision: a float, or one δ per parameter tensor (numpy array, in the order
    /// of `prior_tensors`). Setting it refits the posterior from the same curvature.
    #[getter]
    fn get_prior_precision<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let prior = match (&self.fitted, &self.pending_prior) {
            (Some(la), _) => la.prior_precision().clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => PriorPrecision::Scalar(self.model.delta),
        };
        Ok(match prior {
            PriorPrecision::Scalar(d) => d.into_pyobject(py)?.into_any(),
            PriorPrecision::Layerwise(d) => d.to_pyarray(py).into_any(),
        })
    }

    #[setter]
    fn set_prior_precision(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let prior = Self::prior(value)?;
        let err = |e| arg_err("prior_precision", e);
        if let Some(la) = &mut self.fitted {
            py.detach(|| match prior {
                PriorPrecision::Scalar(d) => la.set_prior_precision(d),
                p => la.set_prior(p),
            })
            .map_err(err)?;
            self.remember();
            return Ok(());
        }
        match prior {
            PriorPrecision::Scalar(d) => {
                dnn2gp::train::check_delta(d).map_err(err)?;
                self.model.delta = d;
                self.pending_prior = None;
            }
            prior => self.pending_prior = Some(prior),
        }
        Ok(())
    }

    /// The scalar type of the network's forward passes (outputs, a last layer's features, the
    /// `nn` predictive's draws): `"f64"` or `"f32"`; Jacobians and curvature are f64.
    #[getter]
    fn get_dtype(&self) -> &'static str {
        self.model.dtype.word()
    }

    /// Sets it (a loaded posterior's is float64: files do not keep it).
    #[setter]
    fn set_dtype(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let dtype = crate::convert::dtype("dtype", Some(value))?;
        self.model.dtype = dtype;
        if let Some(la) = self.fitted.as_mut() {
            la.set_dtype(dtype);
        }
        Ok(())
    }

    /// The temperature T of `N(θ*, (H/T + D)⁻¹)` (laplace-torch's; the evidence's data fit is
    /// divided by T). Setting it refits the posterior from the same curvature.
    #[getter]
    fn get_temperature(&self) -> f64 {
        self.temperature
    }

    #[setter]
    fn set_temperature(&mut self, py: Python<'_>, value: f64) -> PyResult<()> {
        if let Some(la) = &mut self.fitted {
            py.detach(|| la.set_temperature(value))
                .map_err(|e| arg_err("temperature", e))?;
        } else if !(value.is_finite() && value > 0.0) {
            return Err(PyValueError::new_err(format!(
                "temperature: {value} is not a positive number"
            )));
        }
        self.temperature = value;
        Ok(())
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

    /// The Gaussian noise σ. Setting it refits the posterior from the same curvature (H
    /// scales by `σ_old²/σ²`).
    #[getter]
    fn get_sigma_noise(&self) -> f64 {
        self.fitted
            .as_ref()
            .map_or(&self.model, |la| la.model())
            .sigma
    }

    #[setter]
    fn set_sigma_noise(&mut self, py: Python<'_>, value: f64) -> PyResult<()> {
        if self.model.likelihood != dnn2gp::likelihood::LikelihoodKind::Gaussian {
            return Err(PyValueError::new_err(
                "sigma_noise: only regression has an observation noise",
            ));
        }
        if let Some(la) = &mut self.fitted {
            py.detach(|| la.set_sigma_noise(value))
                .map_err(|e| py_err_as(e, MODEL_ARGS))?;
            self.remember();
            return Ok(());
        }
        if !(value.is_finite() && value > 0.0) {
            return Err(PyValueError::new_err(format!(
                "sigma_noise: {value} is not a positive number"
            )));
        }
        self.model.sigma = value;
        Ok(())
    }

    /// The number of weights the posterior covers.
    #[getter]
    fn n_params(&self) -> PyResult<usize> {
        Ok(self.fitted()?.weight_posterior().mean.len())
    }

    /// The posterior mean θ* over the covered weights.
    #[getter]
    fn mean<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self
            .fitted()?
            .weight_posterior()
            .mean
            .to_pyarray(py)
            .into_any())
    }

    /// The posterior precision `H/T + D`: a P×P array (full), its P diagonal values (diag).
    /// KFAC and low rank hold it factored: `posterior_covariance` is there.
    #[getter]
    fn posterior_precision<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (shape, v) = self.fitted()?.posterior_precision().map_err(py_err)?;
        shaped(py, v, &shape)
    }

    /// The posterior covariance Σ, a P×P array (every structure; memory checked first).
    #[getter]
    fn posterior_covariance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        let p = la.weight_posterior().mean.len();
        let bytes = dnn2gp::linalg::mat_bytes(p, p);
        if bytes > self.max_memory {
            return Err(pyo3::exceptions::PyMemoryError::new_err(format!(
                "posterior_covariance: a {p} × {p} matrix is {:.1} GiB, over max_memory_gib; \
                 posterior_variance gives its diagonal",
                bytes as f64 / 2f64.powi(30)
            )));
        }
        let c = py.detach(|| la.weight_posterior().covariance());
        Ok(to_numpy(py, c.as_ref()).into_any())
    }

    /// The posterior variances `diag Σ` (P values).
    #[getter]
    fn posterior_variance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        Ok(la.weight_posterior().variances().to_pyarray(py).into_any())
    }

    /// `log p(D | θ*)` on the training data, its data fit divided by the temperature.
    #[getter]
    fn log_likelihood(&self) -> PyResult<f64> {
        self.fitted()?.log_likelihood().map_err(py_err)
    }

    /// `log|H/T + D| − log|D|`; the evidence is `log_likelihood − ½(log_det_ratio + scatter)`.
    #[getter]
    fn log_det_ratio(&self) -> PyResult<f64> {
        self.fitted()?.log_det_ratio().map_err(py_err)
    }

    /// `θ*ᵀ D θ*`.
    #[getter]
    fn scatter(&self) -> PyResult<f64> {
        self.fitted()?.scatter().map_err(py_err)
    }

    /// The predictive at X. `pred_type="glm"` (the linearised network): class probabilities
    /// (N × classes) by `link_approx` (`probit`, `mc` with `n_samples` draws, `bridge`,
    /// `bridge_norm`) for classification; for regression the mean and the functional
    /// covariance `(f_mu (N × K), f_var (N × K × K))`, or with `joint=True` the mean (NK) and
    /// the covariance across all inputs (NK × NK). `pred_type="nn"`: the network at
    /// `n_samples` weight draws, the mean of their softmax, or their mean and variance
    /// `(N × K, N × K)`. Draws come from `seed`. `la(X, …)` is the same.
    #[pyo3(signature = (x, pred_type="glm", link_approx="probit", n_samples=100, joint=false, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn predictive<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        pred_type: &str,
        link_approx: &str,
        n_samples: usize,
        joint: bool,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let pred = Self::pred_type(pred_type)?;
        let approx = link_approx
            .parse::<LinkApprox>()
            .map_err(|e| arg_err("link_approx", e))?;
        let la = self.fitted()?;
        let regression = la.model().likelihood == dnn2gp::likelihood::LikelihoodKind::Gaussian;
        if pred == PredType::Nn && approx != LinkApprox::Mc {
            return Err(PyValueError::new_err(
                "link_approx: pred_type='nn' draws weights (link_approx='mc', as laplace-torch \
                 asks)",
            ));
        }
        let x = rows("X", x, la.model().net.n_inputs())?;
        if joint {
            if !(regression && pred == PredType::Glm) {
                return Err(PyValueError::new_err(
                    "joint: the joint predictive is regression's, with pred_type='glm'",
                ));
            }
            let (f, c) = py.detach(|| {
                (
                    la.model().predict(x.as_ref()),
                    la.kernel(x.as_ref(), x.as_ref()),
                )
            });
            let mean: Vec<f64> = (0..f.nrows() * f.ncols())
                .map(|i| f[(i / f.ncols(), i % f.ncols())])
                .collect();
            let mean = mean.to_pyarray(py).into_any();
            return Ok((mean, to_numpy(py, c.as_ref()))
                .into_pyobject(py)?
                .into_any());
        }
        let out = match pred {
            PredType::Glm => {
                let link =
                    Link::new(approx, n_samples, seed).map_err(|e| arg_err("n_samples", e))?;
                py.detach(|| la.predict(x.as_ref(), link))
            }
            PredType::Nn => py.detach(|| la.predict_nn(x.as_ref(), n_samples, seed)),
        }
        .map_err(|e| arg_err("n_samples", e))?;
        predictive_arrays(py, out, pred)
    }

    /// `predictive(X, …)`.
    #[pyo3(signature = (x, pred_type="glm", link_approx="probit", n_samples=100, joint=false, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        pred_type: &str,
        link_approx: &str,
        n_samples: usize,
        joint: bool,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.predictive(py, x, pred_type, link_approx, n_samples, joint, seed)
    }

    /// A last-layer posterior's features: the last layer's inputs φ(X) (N × D), computed once
    /// for `predictive_at_features` at many priors (a grid search).
    fn features<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        let x = rows("X", x, la.model().net.n_inputs())?;
        let phi = py
            .detach(|| la.last_layer_features(x.as_ref()))
            .map_err(py_err)?;
        Ok(to_numpy(py, phi.as_ref()).into_any())
    }

    /// The GLM predictive of a last-layer posterior at its features φ (from `features`): what
    /// `predictive(X, …)` gives at the inputs they came from.
    #[pyo3(signature = (phi, link_approx="probit", n_samples=100, seed=0))]
    fn predictive_at_features<'py>(
        &self,
        py: Python<'py>,
        phi: &Bound<'py, PyAny>,
        link_approx: &str,
        n_samples: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let approx = link_approx
            .parse::<LinkApprox>()
            .map_err(|e| arg_err("link_approx", e))?;
        let link = Link::new(approx, n_samples, seed).map_err(|e| arg_err("n_samples", e))?;
        let la = self.fitted()?;
        let (shape, v) = values("phi", phi)?;
        let [n, d] = shape[..] else {
            return Err(PyValueError::new_err(format!(
                "phi: shape {shape:?}; expected (N, features)"
            )));
        };
        let phi = Mat::from_fn(n, d, |i, j| v[i * d + j]);
        let out = py
            .detach(|| la.predict_at_features(phi.as_ref(), link))
            .map_err(py_err)?;
        predictive_arrays(py, out, PredType::Glm)
    }

    /// `n_samples` draws of the outputs at X (n_samples × N × K) from `seed`: `pred_type="glm"`
    /// from `N(f(x), J Σ Jᵀ)` input by input, `"nn"` the network at weight draws.
    #[pyo3(signature = (x, pred_type="glm", n_samples=100, seed=0))]
    fn functional_samples<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        pred_type: &str,
        n_samples: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let pred = Self::pred_type(pred_type)?;
        let la = self.fitted()?;
        let x = rows("X", x, la.model().net.n_inputs())?;
        let k = la.model().net.n_outputs();
        let draws = py
            .detach(|| la.functional_samples(x.as_ref(), pred, n_samples, seed))
            .map_err(py_err)?;
        let v: Vec<f64> = draws
            .iter()
            .flat_map(|d| (0..d.nrows() * k).map(move |i| d[(i / k, i % k)]))
            .collect();
        shaped(py, v, &[n_samples, x.nrows(), k])
    }

    /// The functional covariance `J(x) Σ J(x)ᵀ` at each row of X (N × K × K); or of
    /// laplace-torch's Jacobians `jacobians=Js` (N × K × P, over the covered weights).
    #[pyo3(signature = (x=None, jacobians=None))]
    fn functional_variance<'py>(
        &self,
        py: Python<'py>,
        x: Option<&Bound<'py, PyAny>>,
        jacobians: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        let k = la.model().net.n_outputs();
        let c = match (x, jacobians) {
            (Some(x), None) => {
                let x = rows("X", x, la.model().net.n_inputs())?;
                py.detach(|| la.functional_covariance(x.as_ref()))
            }
            _ => {
                let j = self.jacobian_rows(x, jacobians)?;
                py.detach(|| la.covariance_blocks(j.as_ref()))
            }
        };
        let n = c.len() / (k * k);
        shaped(py, c, &[n, k, k])
    }

    /// The functional covariance across all inputs `J Σ Jᵀ` (NK × NK, example-major), at the
    /// rows of X or of laplace-torch's Jacobians `jacobians=Js` (N × K × P).
    #[pyo3(signature = (x=None, jacobians=None))]
    fn functional_covariance<'py>(
        &self,
        py: Python<'py>,
        x: Option<&Bound<'py, PyAny>>,
        jacobians: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        let j = self.jacobian_rows(x, jacobians)?;
        let c = py.detach(|| la.covariance_between(j.as_ref(), j.as_ref()));
        Ok(to_numpy(py, c.as_ref()).into_any())
    }

    /// The Jacobians of the outputs at X with respect to the covered weights (N × K × P):
    /// laplace-torch's `backend.jacobians`.
    fn jacobians<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let la = self.fitted()?;
        let x = rows("X", x, la.model().net.n_inputs())?;
        let j = py.detach(|| la.jacobian(x.as_ref()));
        let k = la.model().net.n_outputs();
        let p = j.ncols();
        let v: Vec<f64> = (0..j.nrows() * p).map(|i| j[(i / p, i % p)]).collect();
        shaped(py, v, &[x.nrows(), k, p])
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
        let mut loaded = Laplace {
            model: la.model().clone(),
            structure: la.structure(),
            subset: la.subset(),
            indices: la.subnetwork_indices().to_vec(),
            rank: 100,
            seed: 0,
            max_memory: memory_budget(None)?,
            temperature: la.temperature(),
            pending_prior: None,
            fitted: Some(la),
        };
        loaded.remember();
        Ok(loaded)
    }

    fn __repr__(&self) -> String {
        format!(
            "Laplace(subset_of_weights='{}', hessian_structure='{}', dtype='{}', fitted={})",
            self.subset,
            self.structure,
            self.model.dtype,
            if self.fitted.is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}
