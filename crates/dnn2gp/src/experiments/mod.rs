//! The paper's experiments as library functions that return result structs; the command line
//! renders them.

pub mod calibration;
pub mod images;
pub mod regression;
pub mod vi;
