//! Output: figures (PNG and SVG) and the tables the commands write, rendered from the core's
//! result structs.

pub mod calibration;
pub mod plot;
pub mod regression;
pub mod sweep;
