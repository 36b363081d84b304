//! DNN2GP's own GP (`dnn2gp.GP`) and the pseudo-targets it is fitted to.

use faer::Mat;
use numpy::PyArray2;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use dnn2gp::curvature::Linearization;
use dnn2gp::gp::{predict_at, Dnn2Gp, Space};
use dnn2gp::nn::Network;
use dnn2gp::train::model::Model as CoreModel;
use dnn2gp::train::Stationarity;
use dnn2gp::Warning;

use crate::convert::{memory_budget, rows, shaped, targets, to_numpy};
use crate::errors::{py_err, warn, STATIONARITY_ADVICE};
use crate::model::Model;

/// A predictive's mean and variance, each M × K.
type MeanAndVariance<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<f64>>);

/// The DNN2GP Gaussian process of a trained network (Gaussian or Bernoulli likelihood): the
/// network linearised at its weights θ* is the GP with kernel `κ(x, x') = δ⁻¹ J(x) J(x')ᵀ`
/// fitted to pseudo-targets `ỹ_i = J_i θ* − Λ_i⁻¹ r_i` with noise `Λ_i⁻¹`:
///
/// `mean(x*) = κ*ᵀ G⁻¹ ỹ`, `var(x*) = κ** − κ*ᵀ G⁻¹ κ*`, `G = δ⁻¹ J Jᵀ + Λ⁻¹`,
/// `log p(ỹ) = −½ ỹᵀ G⁻¹ ỹ − ½ log|G| − (NK/2) log 2π`,
///
/// computed in function space (NK×NK) or weight space (P×P), `space="auto"` choosing the
/// smaller. Jitter and clamped variances are warned (`RuntimeWarning`) and listed in
/// `warnings`. The categorical likelihood has no GP noise (its Λ is singular): use `Laplace`.
#[pyclass(name = "GP", module = "dnn2gp")]
pub(crate) struct Gp {
    model: CoreModel,
    space: Space,
    max_memory: u128,
    x: Option<Mat<f64>>,
    gp: Option<Dnn2Gp<'static>>,
    warnings: Vec<Warning>,
}

impl Gp {
    fn fitted(&self) -> PyResult<(&Dnn2Gp<'static>, &Mat<f64>)> {
        match (&self.gp, &self.x) {
            (Some(g), Some(x)) => Ok((g, x)),
            _ => Err(PyValueError::new_err("call fit(X, y) first")),
        }
    }
}

#[pymethods]
impl Gp {
    #[new]
    #[pyo3(signature = (model, space="auto", prior_precision=None, max_memory_gib=None))]
    fn new(
        model: &Model,
        space: &str,
        prior_precision: Option<f64>,
        max_memory_gib: Option<f64>,
    ) -> PyResult<Self> {
        let mut m = model.inner.clone();
        if let Some(d) = prior_precision {
            dnn2gp::train::check_delta(d).map_err(|e| py_err(e.for_option("prior_precision")))?;
            m.delta = d;
        }
        let space = space
            .parse::<Space>()
            .map_err(|e| crate::errors::arg_err("space", e))?;
        Ok(Gp {
            model: m,
            space,
            max_memory: memory_budget(max_memory_gib)?,
            x: None,
            gp: None,
            warnings: Vec::new(),
        })
    }

    /// Linearises the network at its weights on the training data (X, y) and fits the GP
    /// (the Jacobian, NK×P, and the Gram matrix are checked against the memory budget first).
    fn fit(&mut self, py: Python<'_>, x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>) -> PyResult<()> {
        let m = &self.model;
        let x = rows("X", x, m.net.n_inputs())?;
        let y = targets(m, y, x.nrows())?;
        let (space, limit) = (self.space, self.max_memory);
        let gp = py
            .detach(|| -> dnn2gp::Result<Dnn2Gp<'static>> {
                let lik = m.likelihood()?;
                let lin = Linearization::checked(
                    &m.net,
                    lik.as_ref(),
                    x.as_ref(),
                    y.as_ref(),
                    &m.w,
                    limit,
                )?;
                Dnn2Gp::owned(&m.net, x.as_ref(), lin, m.delta, space, limit)
            })
            .map_err(py_err)?;
        let lin = gp.linearization();
        let stationarity = Stationarity::new(&lin.loss_gradient(), &m.w, m.delta);
        self.warnings = gp.warnings();
        self.warnings.extend(
            stationarity
                .warning(Some(gp.stationarity_gap()))
                .map(|w| w.advise(STATIONARITY_ADVICE)),
        );
        warn(py, &self.warnings)?;
        self.gp = Some(gp);
        self.x = Some(x);
        Ok(())
    }

    /// The GP predictive of f at X*: `(mean, var)`, each M × K (function space from NTK blocks,
    /// no Jacobian of X*). `gp(X*)` is the same.
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<MeanAndVariance<'py>> {
        let (gp, xt) = self.fitted()?;
        let m = &self.model;
        let xs = rows("X", x, m.net.n_inputs())?;
        let limit = self.max_memory;
        let pred = py
            .detach(|| predict_at(gp, None, &m.net, &m.w, xt.as_ref(), xs.as_ref(), limit))
            .map_err(py_err)?;
        let k = m.net.n_outputs();
        let clamped: Vec<Warning> = pred.clamped.into_iter().collect();
        warn(py, &clamped)?;
        self.warnings.extend(clamped);
        let n = xs.nrows();
        let mean = Mat::from_fn(n, k, |i, c| pred.mean[i * k + c]);
        let var = Mat::from_fn(n, k, |i, c| pred.var[i * k + c]);
        Ok((to_numpy(py, mean.as_ref()), to_numpy(py, var.as_ref())))
    }

    /// `predict(X*)`.
    fn __call__<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<MeanAndVariance<'py>> {
        self.predict(py, x)
    }

    /// The GP's log marginal likelihood `log p(ỹ)`.
    fn log_marginal_likelihood(&self) -> PyResult<f64> {
        self.fitted()?.0.log_marginal_likelihood().map_err(py_err)
    }

    /// The Laplace evidence of the full GGN, `log p(D|θ*) − (δ/2)‖θ*‖² + (P/2) log δ −
    /// ½ log|A|`; it equals `log p(ỹ)` minus `½ gᵀA⁻¹g` (`stationarity_gap`), zero at a
    /// stationary θ*.
    fn laplace_log_evidence(&self) -> PyResult<f64> {
        self.fitted()?.0.laplace_log_evidence().map_err(py_err)
    }

    /// `½ gᵀ A⁻¹ g`, `g = ∇L(θ*)`: how far θ* is from a minimum, in evidence units.
    #[getter]
    fn stationarity_gap(&self) -> PyResult<f64> {
        Ok(self.fitted()?.0.stationarity_gap())
    }

    /// The pseudo-targets ỹ (N × K).
    #[getter]
    fn pseudo_targets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (gp, x) = self.fitted()?;
        shaped(
            py,
            gp.targets.clone(),
            &[x.nrows(), self.model.net.n_outputs()],
        )
    }

    /// The prior precision δ.
    #[getter]
    fn prior_precision(&self) -> f64 {
        self.model.delta
    }

    /// Where the GP was computed: `"function"` or `"weight"`.
    #[getter]
    fn space(&self) -> PyResult<String> {
        Ok(self.fitted()?.0.space.to_string())
    }

    /// The jitter the Cholesky factorisation added (0 if none).
    #[getter]
    fn jitter(&self) -> PyResult<f64> {
        Ok(self.fitted()?.0.jitter())
    }

    /// The numerical events so far, as `"kind: message"`.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|w| format!("{}: {}", w.kind, w.message))
            .collect()
    }

    /// The GP's prior kernel `δ⁻¹ J(x) J(x')ᵀ` between the rows of X1 and X2 (X1 when omitted),
    /// in neural-tangents' layout `(N1, N2, K, K)`: `dnn2gp.ntk(…, trace_axes=()) / δ`.
    #[pyo3(signature = (x1, x2=None))]
    fn kernel<'py>(
        &self,
        py: Python<'py>,
        x1: &Bound<'py, PyAny>,
        x2: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let model = Model {
            inner: self.model.clone(),
        };
        crate::kernels::ntk(py, &model, x1, x2, vec![], vec![])?.div(self.model.delta)
    }

    fn __repr__(&self) -> String {
        format!(
            "GP(arch='{}', likelihood='{}', prior_precision={}, fitted={})",
            self.model.net.spec(),
            self.model.likelihood,
            self.model.delta,
            if self.gp.is_some() { "True" } else { "False" }
        )
    }
}

/// The pseudo-targets `ỹ_i = J_i θ* − Λ_i⁻¹ r_i` (N × K) and the GP noise `Λ_i⁻¹` (N × K × K)
/// of a model on (X, y): what the DNN2GP GP is fitted to, one chunk of data at a time.
#[pyfunction]
pub(crate) fn pseudo_targets<'py>(
    py: Python<'py>,
    model: &Model,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let m = &model.inner;
    let x = rows("X", x, m.net.n_inputs())?;
    let y = targets(m, y, x.nrows())?;
    let (t, noise) = py
        .detach(|| -> dnn2gp::Result<(Vec<f64>, Vec<f64>)> {
            let lik = m.likelihood()?;
            let lin = Linearization::new(&m.net, lik.as_ref(), x.as_ref(), y.as_ref(), &m.w);
            let inv = lin.lambda_inv()?;
            let k = lin.k();
            let noise = (0..lin.n())
                .flat_map(|i| inv.block(i).to_vec())
                .collect::<Vec<f64>>();
            debug_assert_eq!(noise.len(), lin.n() * k * k);
            Ok((lin.pseudo_targets()?, noise))
        })
        .map_err(py_err)?;
    let (n, k) = (x.nrows(), m.net.n_outputs());
    Ok((shaped(py, t, &[n, k])?, shaped(py, noise, &[n, k, k])?))
}
