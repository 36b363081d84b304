//! Command-line interface: `demo`, `train`, `gp`, `vi`, `sweep`, `predict`, `evaluate`,
//! `reproduce`, `data` and `bench`.

mod args;
mod commands;
mod evaluate;
mod images;
mod outdir;
mod predict;
mod progress;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Parses the arguments, runs the command, maps errors to exit codes (2: bad input, 1: failure).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    outdir::install_signal_handler();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = match e.downcast_ref::<dnn2gp::Error>() {
                Some(err) if !err.is_input_error() => 1,
                _ => 2,
            };
            ExitCode::from(code)
        }
    }
}
