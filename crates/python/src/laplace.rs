//! `dnn2gp.Laplace`: the Laplace-GGN posterior in laplace-torch's words (fit, the prior by the
//! evidence, the GLM predictive, functional variance, kernel, samples, files).

use std::path::PathBuf;

use faer::Mat;
use numpy::{PyArray2, ToPyArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use dnn2gp::nn::Network;
use dnn2gp::posterior::{
    FitOptions, HessianStructure, Laplace as CoreLaplace, Link, LinkApprox, Posterior,
    PriorPrecision, PriorStructure, Subset,
};
use dnn2gp::train::model::Model as CoreModel;

use crate::convert::{kernel_layout, memory_budget, pair, rows, shaped, targets, to_numpy, values};
use crate::curvature::Curvature;
use crate::errors::{arg_err, py_err, warn};
use crate::model::{likelihood_of, Model};
use crate::progress;

/// The Laplace-GGN posterior of a model, as laplace-torch's `Laplace(model, likelihood,
/// subset_of_weights, hessian_structure)`: `fit(X, y)`, then
/// `optimize_prior_precision(method="marglik")`, `log_marginal_likelihood`, the GLM predictive
/// `la(X, link_approx=…)`, `functional_variance`, `kernel`, `sample`, `save`/`load`.
///
/// `q(θ) = N(θ*, Σ)`, `Σ⁻¹ = H + δI`, `H = Σ_i J_iᵀ Λ_i J_i` over the covered weights, in the
/// structure's approximation (`full`, `diag`, `kron`: KFAC, `lowrank`: the top eigenpairs).
#[pyclass(name = "Laplace", module = "dnn2gp")]
pub(crate) struct Laplace {
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

    /// The link of laplace-torch's `link_approx` word, parsed by the core.
    fn link(link_approx: &str, n_samples: usize) -> PyResult<Link> {
        let approx = link_approx
            .parse::<LinkApprox>()
            .map_err(|e| arg_err("link_approx", e))?;
        Link::new(approx, n_samples, 0).map_err(|e| arg_err("n_samples", e))
    }

    fn prior(value: &Bound<'_, PyAny>) -> PyResult<PriorPrecision> {
        if let Ok(d) = value.extract::<f64>() {
            return Ok(PriorPrecision::Scalar(d));
        }
        Ok(PriorPrecision::Layerwise(
            values("prior_precision", value)?.1,
        ))
    }
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
    #[pyo3(signature = (model, likelihood, subset_of_weights=SubsetArg::Word("last_layer".into()), hessian_structure="kron", prior_precision=None, sigma_noise=None, rank=100, seed=0, max_memory_gib=None))]
    #[pyo3(
        text_signature = "(model, likelihood, subset_of_weights='last_layer', hessian_structure='kron', prior_precision=None, sigma_noise=None, rank=100, seed=0, max_memory_gib=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model: &Model,
        likelihood: &str,
        subset_of_weights: SubsetArg,
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
        warn(py, &la.weight_posterior().warnings())?;
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
        warn(py, &la.weight_posterior().warnings())?;
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
            .map_err(|e| arg_err("prior_structure", e))?;
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
