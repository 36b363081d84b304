//! Posteriors over the weights: the Laplace-GGN
//! Gaussian `N(w*, Σ)` with `Σ⁻¹ = Σ_i J_iᵀ Λ_i J_i + δ I`.

pub mod fitted;
pub mod laplace;

pub use fitted::{
    Curvature, FitOptions, Laplace, LayerwisePriorFit, Link, LinkApprox, NoiseFit, Posterior,
    Predictive, PriorFit, PriorPrecision, PriorStructure, Subset,
};
pub use laplace::{HessianStructure, LaplaceGgn};
