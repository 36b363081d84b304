//! Hyperparameter selection by the GP marginal likelihood: sweeps over δ, σ or hidden width
//! that retrain the MAP from the same initialisation at each value and record
//! `−log p(ỹ)` beside the train and test losses.

pub mod sweep;

pub use sweep::{run_sweep, Method, SweepParam, SweepPoint, SweepResult, SweepSpec};
