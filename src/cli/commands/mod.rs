//! One file per command: its `run(ctx, args)`, which checks every option before any work, calls
//! the core library and writes the command's files.

pub(crate) mod bench;
pub(crate) mod data;
pub(crate) mod demo;
pub(crate) mod evaluate;
pub(crate) mod gp;
pub(crate) mod import;
pub(crate) mod predict;
pub(crate) mod reproduce_binary;
pub(crate) mod reproduce_mnist;
pub(crate) mod sweep;
pub(crate) mod train;
pub(crate) mod vi;
