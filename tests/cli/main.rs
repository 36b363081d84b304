//! The command line end to end: one test binary, a module per command or concern, the shared
//! helpers in `util`.

#[path = "../../crates/dnn2gp/tests/common/mod.rs"]
mod common;
mod util;

mod commands;
mod evaluate;
mod fetch;
mod fuzz;
mod posteriors;
mod pytorch;
mod readme;
mod reproduce;
mod trust;
