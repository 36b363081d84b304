//! Curvature at a point `w`: the network linearised there ([`Linearization`]: `J_i`, `r_i`,
//! `Λ_i`) and the GGN `Σ_i J_iᵀ Λ_i J_i` in the structures a posterior needs: full (also a
//! dense layer's, from its inputs), diagonal and KFAC streamed over the data, and its top
//! eigenpairs matrix-free, all from one [`Backend`] (network, likelihood, weights); the
//! precisions they give ([`Precision`]).

pub mod backend;
pub mod kron;
pub mod linearization;
pub mod lowrank;
pub mod precision;

pub use backend::Backend;
pub use kron::Kron;
pub use linearization::Linearization;
pub use lowrank::LowRank;
pub use precision::Precision;
