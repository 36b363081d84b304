//! Command-line interface, laid out as ripgrep's: [`args`] holds every option, [`ctx`] what
//! every command shares (settings, warnings, checks), one file per command under [`commands`],
//! and the pieces two commands share beside them (data sources, the model folder, training
//! settings, the GP, sweep and classifier reports, the image experiments). This file only
//! parses and dispatches. A new command is a file in `commands/`, its options a struct in
//! `args.rs` and a line in [`run`].

mod args;
mod class_report;
mod commands;
mod ctx;
mod gp_report;
mod images;
mod model_dir;
mod outdir;
mod posterior;
mod progress;
mod sources;
mod sweep_report;
mod training;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

pub use args::Cli;
use args::{Command, DataCmd, ReproduceCmd};
use ctx::Ctx;

/// Parses the arguments, runs the command, maps errors to exit codes (2: bad input, 1: failure).
pub fn main() -> ExitCode {
    let matches = negative_numbers(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    outdir::install_signal_handler();
    match run(cli) {
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

/// `cmd` and its subcommands reading `-5` as a value, so that `--epochs -5` is refused naming
/// the option rather than as an unknown argument.
fn negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.allow_negative_numbers(true)
        .mut_subcommands(negative_numbers)
}

/// Runs the parsed command line.
fn run(cli: Cli) -> Result<()> {
    let advice = match &cli.command {
        Command::Train(_) | Command::Sweep(_) => "train longer (--epochs, --polish-iters)",
        Command::Demo(_) => "train longer (--epochs)",
        Command::Import(a) if a.onnx.is_some() => {
            "train the network further, or check that --likelihood, --delta and --sigma are the \
             loss it was trained with"
        }
        Command::Import(_) => {
            "train the weights further, or check that --arch (or --hidden and --activation), \
             --likelihood, --delta and --sigma are the network and loss they were trained with"
        }
        _ => {
            "train the model further (`dnn2gp train` with more --epochs and --polish-iters; a \
             network imported from ONNX where it was trained), or check that an imported \
             model's architecture, likelihood, δ and σ are those it was trained with"
        }
    };
    let ctx = Ctx::new(cli.quiet, cli.max_memory, advice)?;
    match cli.command {
        Command::Demo(a) => commands::demo::run(&ctx, a),
        Command::Train(a) => commands::train::run(&ctx, a),
        Command::Import(a) => commands::import::run(&ctx, a),
        Command::Gp(a) => commands::gp::run(&ctx, a),
        Command::Sweep(a) => commands::sweep::run(&ctx, a),
        Command::Vi(a) => commands::vi::run(&ctx, a),
        Command::Predict(a) => commands::predict::run(&ctx, a),
        Command::Evaluate(a) => commands::evaluate::run(&ctx, a),
        Command::Reproduce(ReproduceCmd::Mnist(a)) => commands::reproduce_mnist::run(&ctx, a),
        Command::Reproduce(ReproduceCmd::BinaryMnist(a)) => {
            commands::reproduce_binary::run(&ctx, a)
        }
        Command::Data(DataCmd::Fetch(a)) => commands::data::fetch(&ctx, a),
        Command::Bench(a) => commands::bench::run(a),
    }
}
