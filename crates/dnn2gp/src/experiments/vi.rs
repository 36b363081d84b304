//! Variational training as a GP (Theorem 2): the kernel at each recorded VOGN step.

use faer::{Mat, MatRef};

use crate::curvature::Precision;
use crate::error::{Result, Warning};
use crate::gp::variational::{converged_linearizations, step_kernel};
use crate::gp::{mixture, Dnn2Gp, GpPrediction, Space};
use crate::likelihood::Likelihood;
use crate::linalg::{check_memory, mat_bytes};
use crate::nn::Network;
use crate::train::vogn::Snapshot;

/// The GP kernels `J(x) S_t J(x')ᵀ` of the recorded steps on `inputs` (J at each step's mean
/// `μ_t`, `S_t⁻¹ = (1 − β) Σ_t⁻¹ + β δ I`), one `MK×MK` matrix per snapshot, refused above
/// `memory_limit` bytes in all.
pub fn kernel_evolution(
    net: &dyn Network,
    snapshots: &[Snapshot],
    inputs: MatRef<'_, f64>,
    beta: f64,
    delta: f64,
    memory_limit: u128,
) -> Result<Vec<Mat<f64>>> {
    let m = inputs.nrows() * net.n_outputs();
    check_memory(
        "the kernels during training",
        mat_bytes(snapshots.len() * m, m),
        memory_limit,
        "record fewer snapshots or use fewer kernel points",
    )?;
    snapshots
        .iter()
        .map(|s| {
            let j = net.jacobian(&s.mu, inputs);
            step_kernel(j.as_ref(), s.precision.dense().as_ref(), beta, delta)
        })
        .collect()
}

/// The GP of converged variational training, averaged over samples of `q = N(μ, Σ)`.
#[derive(Debug, Clone)]
pub struct ConvergedGp {
    /// The GP log marginal likelihood, averaged over the samples (an estimate of its
    /// expectation under q).
    pub log_marglik: f64,
    /// The largest jitter any sample's GP needed.
    pub jitter: f64,
    /// The samples' GP warnings, each once.
    pub warnings: Vec<Warning>,
    /// The mixture of the samples' GP predictives at the grid, by the law of total variance.
    pub prediction: Option<GpPrediction>,
}

/// [`ConvergedGp`]: the DNN2GP GP (prior `δ⁻¹I`, noise `Λ⁻¹`, targets centred at μ) at
/// `samples` draws `w ~ q` from `seed` (at μ when 0), predicting at `grid` when given.
#[allow(clippy::too_many_arguments)]
pub fn converged_gp(
    net: &dyn Network,
    lik: &dyn Likelihood,
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    mu: &[f64],
    precision: &Precision,
    delta: f64,
    samples: usize,
    seed: u64,
    grid: Option<MatRef<'_, f64>>,
    memory_limit: u128,
) -> Result<ConvergedGp> {
    let lins = converged_linearizations(net, lik, x, y, mu, precision, samples, seed);
    let s = lins.len() as f64;
    let (mut log_marglik, mut jitter) = (0.0, 0.0f64);
    let mut warnings: Vec<Warning> = Vec::new();
    let mut preds = Vec::new();
    for lin in &lins {
        let gp = Dnn2Gp::new(lin, delta, Space::Auto, memory_limit)?;
        log_marglik += gp.log_marginal_likelihood()? / s;
        jitter = jitter.max(gp.jitter());
        Warning::add_new(&mut warnings, gp.warnings());
        if let Some(g) = grid {
            preds.push(gp.predict(net.jacobian(lin.point(), g).as_ref()));
        }
    }
    Ok(ConvergedGp {
        log_marglik,
        jitter,
        warnings,
        prediction: grid.map(|_| mixture(&preds)),
    })
}
