//! Training from Python: the paper's hyperparameter sweep (`dnn2gp.sweep`) and VOGN
//! (`dnn2gp.vogn`).

use faer::Mat;
use numpy::ToPyArray;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use dnn2gp::curvature::Precision;
use dnn2gp::data::{Dataset, Split};
use dnn2gp::gp::Space;
use dnn2gp::nn::Network;
use dnn2gp::select::sweep::{run_sweep, Method, SweepParam, SweepSpec};
use dnn2gp::train::adam::Adam;
use dnn2gp::train::model::Model as CoreModel;
use dnn2gp::train::vogn::{run as run_vogn, VognConfig};
use dnn2gp::train::{MapConfig, Objective};

use crate::convert::{memory_budget, rows, targets, to_numpy, values};
use crate::errors::{arg_err, py_err, warn};
use crate::model::Model;
use crate::progress::{with_line, Line};

/// `(X, y)` as a regression data set of `d` inputs: y (N,) or (N, K).
fn regression(name: &str, x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>) -> PyResult<Dataset> {
    // The row width from the array's shape; a non-array is named by `rows`.
    let d = x
        .getattr("shape")
        .and_then(|s| s.extract::<Vec<usize>>())
        .map_or(0, |s| s.iter().skip(1).product());
    let x = rows(name, x, d)?;
    let (shape, s) = values(&format!("{name}'s targets"), y)?;
    let k: usize = shape.iter().skip(1).product();
    if shape.first() != Some(&x.nrows()) || k == 0 {
        return Err(PyValueError::new_err(format!(
            "{name}'s targets: shape {shape:?}; expected {} rows",
            x.nrows()
        )));
    }
    let y = Mat::from_fn(x.nrows(), k, |i, c| s[i * k + c]);
    Dataset::new(x, y).map_err(py_err)
}

/// A positive number, or the error naming the argument.
fn positive(name: &str, v: f64) -> PyResult<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(PyValueError::new_err(format!(
            "{name}: {v} is not a positive number"
        )))
    }
}

/// The paper's sweep (its section 3): for each value of the prior precision δ, the noise σ or
/// the hidden width, train an MLP from the same initialisation (MAP by Adam and a polish for
/// `method="laplace"`, VOGN for `"vi"`), linearise it and evaluate the GP's `−log p(ỹ)`, the
/// paper's Laplace form `−log p(ỹ) + ½ gᵀA⁻¹g`, and the network's train and test MSE.
/// Returns a dict of numpy arrays, one entry per value, and `best`, the value of the smallest
/// `−log p(ỹ)`. The values run in parallel; `progress=True` draws a line on stderr.
#[pyfunction]
#[pyo3(signature = (
    x, y, x_test, y_test, values, param="delta", hidden=vec![20], activation="tanh",
    prior_precision=1.0, sigma_noise=1.0, method="laplace", epochs=10_000, lr=0.05,
    vi_epochs=2000, beta=0.1, seed=0, space="auto", progress=false, max_memory_gib=None
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sweep<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    x_test: &Bound<'py, PyAny>,
    y_test: &Bound<'py, PyAny>,
    values: Vec<f64>,
    param: &str,
    hidden: Vec<usize>,
    activation: &str,
    prior_precision: f64,
    sigma_noise: f64,
    method: &str,
    epochs: usize,
    lr: f64,
    vi_epochs: usize,
    beta: f64,
    seed: u64,
    space: &str,
    progress: bool,
    max_memory_gib: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let train = regression("X", x, y)?;
    let test = regression("X_test", x_test, y_test)?;
    if (test.x.ncols(), test.y.ncols()) != (train.x.ncols(), train.y.ncols()) {
        return Err(PyValueError::new_err(format!(
            "X_test, y_test: {} inputs and {} targets per row; X, y have {} and {}",
            test.x.ncols(),
            test.y.ncols(),
            train.x.ncols(),
            train.y.ncols()
        )));
    }
    if values.is_empty() {
        return Err(PyValueError::new_err("values: give at least one value"));
    }
    let spec = SweepSpec {
        param: param
            .parse::<SweepParam>()
            .map_err(|e| arg_err("param", e))?,
        values,
        hidden,
        activation: activation.parse().map_err(|e| arg_err("activation", e))?,
        delta: positive("prior_precision", prior_precision)?,
        sigma: positive("sigma_noise", sigma_noise)?,
        method: match method {
            "laplace" => Method::Laplace,
            "vi" => Method::Vi,
            other => {
                return Err(PyValueError::new_err(format!(
                    "method: '{other}' (expected 'laplace' or 'vi'; one sweep per call)"
                )))
            }
        },
        map: MapConfig {
            adam: Adam {
                lr: positive("lr", lr)?,
                ..Adam::default()
            },
            epochs,
            seed,
            ..MapConfig::default()
        },
        vogn: VognConfig {
            beta,
            epochs: vi_epochs,
            seed,
            ..VognConfig::default()
        },
        vi_gp_samples: 10,
        init_seed: seed,
        space: space.parse::<Space>().map_err(|e| arg_err("space", e))?,
        memory_limit: memory_budget(max_memory_gib)?,
    };
    let split = Split {
        name: "data".into(),
        train,
        test,
        y_scale: 1.0,
    };
    let line = Line::new(progress, "sweep", "values", spec.values.len() as u64);
    let res = py
        .detach(|| with_line(&line, |p| run_sweep(&spec, std::slice::from_ref(&split), p)))
        .map_err(py_err)?;
    warn(py, &res.warnings())?;
    let out = PyDict::new(py);
    let column = |f: fn(&dnn2gp::select::sweep::SweepPoint) -> f64| -> Vec<f64> {
        res.mean.iter().map(f).collect()
    };
    out.set_item("value", column(|p| p.value).to_pyarray(py))?;
    out.set_item(
        "neg_log_marglik",
        column(|p| p.neg_log_marglik).to_pyarray(py),
    )?;
    out.set_item(
        "laplace_neg_log_marglik",
        column(|p| p.laplace_neg_log_marglik).to_pyarray(py),
    )?;
    out.set_item("train_mse", column(|p| p.train_mse).to_pyarray(py))?;
    out.set_item("test_mse", column(|p| p.test_mse).to_pyarray(py))?;
    out.set_item("grad_norm", column(|p| p.grad_norm).to_pyarray(py))?;
    out.set_item("best", res.argmin(|p| p.neg_log_marglik).value)?;
    Ok(out)
}

/// Trains a network by VOGN (the paper's variational online Gauss-Newton, Theorem 2: each step
/// is the posterior of a GP) from the model's weights as the initial mean μ₀ and `Σ₀⁻¹ = s I`:
///
/// `Σ_{t+1}⁻¹ = (1 − β) Σ_t⁻¹ + β (Ĥ_t + δI)`, `μ_{t+1} = μ_t − α Σ_{t+1} (ĝ_t + δ μ_t)`
///
/// with Ĥ the GGN (`curvature="ggn"`) or squared gradients at a sample of q, on minibatches.
/// The mean step α is `lr`, by default β for a full covariance (the form of Theorem 2) and
/// β/10 for a diagonal one (whose steps overshoot at α = β). A run whose loss or mean leaves
/// finite range or grows by orders of magnitude stops with an `ArithmeticError` naming the
/// epoch and what to change (`lr`, `init_precision`, `beta`). Returns a dict: `model` (the
/// network at μ), `precision` (`Σ⁻¹`: P values for `covariance="diag"`, P×P for `"full"`),
/// `history` (the loss per epoch) and, every `snapshot_every` steps, `snapshots` of
/// `(t, μ_t, Σ_t⁻¹)`.
#[pyfunction]
#[pyo3(signature = (
    model, x, y, epochs=1000, beta=0.1, lr=None, mc_samples=1, batch_size=None,
    covariance="full", curvature="ggn", momentum=None, init_precision=1.0, seed=0,
    snapshot_every=0, progress=false
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn vogn<'py>(
    py: Python<'py>,
    model: &Model,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    epochs: usize,
    beta: f64,
    lr: Option<f64>,
    mc_samples: usize,
    batch_size: Option<usize>,
    covariance: &str,
    curvature: &str,
    momentum: Option<f64>,
    init_precision: f64,
    seed: u64,
    snapshot_every: usize,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let m = &model.inner;
    let x = rows("X", x, m.net.n_inputs())?;
    let y = targets(m, y, x.nrows())?;
    let cfg = VognConfig {
        beta,
        lr,
        mc_samples,
        batch_size,
        epochs,
        covariance: covariance.parse().map_err(|e| arg_err("covariance", e))?,
        curvature: curvature.parse().map_err(|e| arg_err("curvature", e))?,
        momentum,
        init_precision,
        deterministic: false,
        seed,
        snapshot_every,
    };
    let data = Dataset::new(x, y).map_err(py_err)?;
    let n = data.x.nrows();
    let steps_per_epoch = batch_size.map_or(1, |b| n.div_ceil(b.max(1)));
    let line = Line::new(progress, "vogn", "steps", (epochs * steps_per_epoch) as u64);
    let res = py
        .detach(|| {
            let lik = m.likelihood()?;
            let obj = Objective::on(&m.net, lik.as_ref(), &data, m.delta);
            with_line(&line, |p| run_vogn(&obj, &m.w, &cfg, p))
        })
        .map_err(|e| match e {
            dnn2gp::Error::Numerical(msg) => py_err(dnn2gp::Error::Numerical(format!(
                "{msg} (lr sets α, init_precision s, beta β)"
            ))),
            e => py_err(e),
        })?;
    let precision = |p: &Precision| -> PyResult<Bound<'py, PyAny>> {
        Ok(match p {
            Precision::Diag(d) => d.to_pyarray(py).into_any(),
            other => to_numpy(py, other.dense().as_ref()).into_any(),
        })
    };
    let out = PyDict::new(py);
    let mean = CoreModel {
        w: res.state.mu.clone(),
        ..m.clone()
    };
    out.set_item("model", Model { inner: mean })?;
    out.set_item("precision", precision(&res.state.precision)?)?;
    out.set_item("history", res.history.to_pyarray(py))?;
    let snaps = res
        .snapshots
        .iter()
        .map(|s| Ok((s.t, s.mu.to_pyarray(py), precision(&s.precision)?)))
        .collect::<PyResult<Vec<_>>>()?;
    out.set_item("snapshots", snaps)?;
    Ok(out)
}
