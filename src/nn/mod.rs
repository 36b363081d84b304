//! Networks `f_w : R^D → R^K` with a flat parameter vector `w ∈ R^P`, their forward pass,
//! loss gradients `Σ_i J_iᵀ r_i` and exact per-example Jacobians `J(x) = ∂f_w(x)/∂w`.

pub mod activation;
pub mod mlp;
pub mod rng;

use faer::{Mat, MatRef};

pub use activation::Activation;
pub use mlp::Mlp;

/// A differentiable network with a flat parameter vector.
pub trait Network: Sync {
    /// Number of parameters `P`.
    fn n_params(&self) -> usize;
    /// Input dimension `D`.
    fn n_inputs(&self) -> usize;
    /// Output dimension `K`.
    fn n_outputs(&self) -> usize;
    /// Outputs `F` (N×K) for inputs `X` (N×D).
    fn forward(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64>;
    /// Outputs `F` and the vector-Jacobian product `Σ_i J_iᵀ c_i`, where the cotangents
    /// `C` (N×K) are computed from `F` by `cot`.
    fn forward_vjp(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        cot: &mut dyn FnMut(MatRef<'_, f64>) -> Mat<f64>,
    ) -> (Mat<f64>, Vec<f64>);
    /// Per-example Jacobians stacked as an NK×P matrix, row `n·K + k` = `∂f_k(x_n)/∂w`.
    fn jacobian(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64>;
    /// Initial parameters from a seed.
    fn init(&self, seed: u64) -> Vec<f64>;
}

/// Number of examples per parallel Jacobian chunk.
pub(crate) const JACOBIAN_CHUNK: usize = 64;
