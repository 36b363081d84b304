//! Posteriors over the weights: the GGN linearisation at a point `w` and the Laplace-GGN
//! Gaussian `N(w*, Σ)` with `Σ⁻¹ = Σ_i J_iᵀ Λ_i J_i + δ I`.

pub mod laplace;
pub mod linearization;

pub use laplace::{HessianStructure, LaplaceGgn};
pub use linearization::Linearization;
