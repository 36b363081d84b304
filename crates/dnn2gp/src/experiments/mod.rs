//! The paper's experiments as library functions that return result structs; the command line
//! renders them.

pub mod regression;
