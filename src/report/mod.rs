//! Output: files written atomically (CSV, JSON, `.npy`) and figures (PNG and SVG).

pub mod files;
pub mod plot;
pub mod regression;
pub mod sweep;
