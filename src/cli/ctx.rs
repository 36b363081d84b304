//! What every command shares: the invocation's settings (progress, memory budget), warnings
//! shown once and kept for the JSON, checks of counts and grids, and the memory pre-flight.

use anyhow::Result;

use dnn2gp::data::{linspace, logspace};
use dnn2gp::linalg::{available_memory, check_memory, mat_bytes};
use dnn2gp::train::NOT_STATIONARY;
use dnn2gp::{Error, Warning};

/// Shared settings of one invocation.
pub(crate) struct Ctx {
    pub(crate) quiet: bool,
    pub(crate) memory: u128,
    /// What this command's user can do about weights that are not a stationary point of the
    /// loss (options of this command, or the next one to run).
    pub(crate) stationarity_advice: String,
}

impl Ctx {
    /// The settings of `--quiet` and `--max-memory` (default: the memory available).
    pub(crate) fn new(
        quiet: bool,
        max_memory: Option<f64>,
        stationarity_advice: &str,
    ) -> Result<Self> {
        let memory = match max_memory {
            Some(g) if g.is_finite() && g > 0.0 => (g * (1u64 << 30) as f64) as u128,
            Some(g) => {
                return Err(Error::option(
                    "--max-memory",
                    format!("must be a positive number of GiB, got {g}"),
                )
                .into())
            }
            None => available_memory(),
        };
        Ok(Ctx {
            quiet,
            memory,
            stationarity_advice: stationarity_advice.to_string(),
        })
    }

    /// The same settings with other advice about weights that are not stationary.
    pub(crate) fn with_advice(&self, stationarity_advice: String) -> Ctx {
        Ctx {
            quiet: self.quiet,
            memory: self.memory,
            stationarity_advice,
        }
    }

    pub(crate) fn bar(&self, len: u64, msg: &str) -> crate::cli::progress::Bar {
        crate::cli::progress::bar(self.quiet, len, msg)
    }

    /// Shows each new warning on stderr and keeps it, once, for the JSON summary; a warning
    /// about weights that are not stationary gets this command's advice.
    pub(crate) fn warn(&self, into: &mut Vec<Warning>, new: impl IntoIterator<Item = Warning>) {
        warn(
            into,
            new.into_iter().map(|w| match w.kind.as_str() {
                NOT_STATIONARY => w.advise(&self.stationarity_advice),
                _ => w,
            }),
        )
    }
}

/// Refuses networks whose parameters and optimiser state (8 vectors of P) would not fit.
pub(crate) fn check_parameter_memory(ctx: &Ctx, p: usize) -> Result<()> {
    Ok(check_memory(
        &format!("a network of {p} parameters (weights, gradients, optimiser state)"),
        8 * mat_bytes(p, 1),
        ctx.memory,
        "use a smaller network",
    )?)
}

/// Parses `logspace:A:B:N`, `linspace:A:B:N` or a comma list given to `option`.
pub(crate) fn parse_grid(option: &str, spec: &str) -> Result<Vec<f64>> {
    let bad = || {
        Error::option(
            option,
            format!("'{spec}': expected logspace:A:B:N, linspace:A:B:N or a list like 0.1,1,10"),
        )
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let vals = match parts.as_slice() {
        [kind @ ("logspace" | "linspace"), a, b, n] => {
            let (a, b): (f64, f64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            let n: usize = n.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad().into());
            }
            if *kind == "logspace" {
                logspace(a, b, n)
            } else {
                linspace(a, b, n)
            }
        }
        [list] => list
            .split(',')
            .map(|t| t.trim().parse::<f64>().map_err(|_| bad()))
            .collect::<std::result::Result<_, _>>()?,
        _ => return Err(bad().into()),
    };
    if vals.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(
            Error::option(option, format!("'{spec}': every value must be positive")).into(),
        );
    }
    Ok(vals)
}

pub(crate) fn fmt_g(v: f64) -> String {
    format!("{}", (v * 1e4).round() / 1e4)
}

/// Shows each new warning on stderr and keeps it, once, for the JSON summary.
pub(crate) fn warn(into: &mut Vec<Warning>, new: impl IntoIterator<Item = Warning>) {
    for w in new {
        if !into.contains(&w) {
            eprintln!("warning: {}", w.message);
            into.push(w);
        }
    }
}

/// Refuses a count of 0 for `option`.
pub(crate) fn positive(option: &str, v: usize) -> Result<()> {
    at_least(option, v, 1)
}

/// Refuses a count below `min` for `option`.
pub(crate) fn at_least(option: &str, v: usize, min: usize) -> Result<()> {
    if v < min {
        return Err(Error::option(option, format!("must be at least {min}, got {v}")).into());
    }
    Ok(())
}
