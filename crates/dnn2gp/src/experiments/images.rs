//! The paper's image views (section 4, figures 3 and 4): the DNN2GP kernel of a trained
//! classifier on a few images, its GP posterior mean and the data-space predictive.

use faer::{Mat, MatRef};

use crate::curvature::precision::diag_covariance_blocks;
use crate::gp::classification::{argmax_rows, data_space_predictive, DataSpacePredictive};
use crate::gp::kernel::{kernel, kernel_view, KernelView};
use crate::likelihood::Likelihood;
use crate::nn::Network;

/// The views of one set of images.
#[derive(Debug, Clone)]
pub struct GpViews {
    /// The network's outputs `f_{w*}(x)` (N×K).
    pub logits: Mat<f64>,
    /// The kernel `δ⁻¹ J Jᵀ` (NK×NK).
    pub kernel_full: Mat<f64>,
    /// The traced kernel `Σ_k κ_kk(x, x')` (N×N).
    pub kernel_diag: Mat<f64>,
    /// `Σ_{k,l} κ_kl(x, x')` (N×N).
    pub kernel_sum: Mat<f64>,
    /// The data-space predictive under the diagonal posterior `diag(variances)`.
    pub predictive: DataSpacePredictive,
    /// The share of images where the GP mean `J(x)w*` picks the network's class.
    pub gp_mean_agreement: f64,
}

/// [`GpViews`] of `net` at `w` with prior precision δ and posterior variances `variances`,
/// on the images `x`.
pub fn gp_views(
    net: &dyn Network,
    lik: &dyn Likelihood,
    w: &[f64],
    variances: &[f64],
    delta: f64,
    x: MatRef<'_, f64>,
) -> GpViews {
    let (n, k) = (x.nrows(), net.n_outputs());
    let (logits, jac) = net.forward_jacobian(w, x);
    let kernel_full = kernel(jac.as_ref(), jac.as_ref(), delta);
    let blocks = diag_covariance_blocks(jac.as_ref(), k, variances);
    let predictive = data_space_predictive(lik, logits.as_ref(), jac.as_ref(), w, &blocks);
    drop(jac);
    let agree = argmax_rows(logits.as_ref())
        .iter()
        .zip(argmax_rows(predictive.gp_mean.as_ref()))
        .filter(|(a, b)| **a == *b)
        .count();
    GpViews {
        kernel_diag: kernel_view(kernel_full.as_ref(), k, KernelView::Diag),
        kernel_sum: kernel_view(kernel_full.as_ref(), k, KernelView::Sum),
        logits,
        kernel_full,
        predictive,
        gp_mean_agreement: agree as f64 / n.max(1) as f64,
    }
}
