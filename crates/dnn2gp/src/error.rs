//! Errors of the library, one variant per kind of failure so that a program can match them:
//! every message names the option, tensor, file, line or field at fault.

use std::path::Path;

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A user's file could not be parsed: `file:line: message`.
    #[error("{file}:{line}: {msg}")]
    Parse {
        /// The file.
        file: String,
        /// The line (1-based; 1 for a binary file's header).
        line: usize,
        /// What is wrong there.
        msg: String,
    },
    /// An option or argument out of its domain: `name: reason` (`--lr: must be positive, got
    /// -1`).
    #[error("{name}: {reason}")]
    Option {
        /// The option as the caller spells it (`--delta`, `prior_precision`, `δ`).
        name: String,
        /// Why the value is refused.
        reason: String,
    },
    /// A word an option does not know: `unknown hessian structure 'x' (expected full, diag,
    /// kron or lowrank)`.
    #[error("unknown {what} '{got}' (expected {})", crate::words::either(expected))]
    Word {
        /// What the word names (`hessian structure`).
        what: &'static str,
        /// The word given.
        got: String,
        /// The words known.
        expected: &'static [&'static str],
    },
    /// A parameter tensor (of a weights file, a state_dict, a saved posterior) that is missing,
    /// extra, of the wrong shape or dtype, or holds a value that is not finite.
    #[error("{file}: tensor '{name}': {reason}")]
    Tensor {
        /// The file or dict holding it.
        file: String,
        /// The tensor's name (`0.weight`).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the wrong kind: not a dnn2gp model file, not a saved posterior; `key` names the
    /// metadata entry that is missing or wrong.
    #[error("{file}: {reason}")]
    Metadata {
        /// The file.
        file: String,
        /// The metadata key at fault (`dnn2gp.architecture`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A value (a shape, a setting, data that do not fit the network) out of its domain.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        err: std::io::Error,
    },
    /// Numerical failure: a factorisation the jitter ladder could not repair, an optimiser
    /// leaving finite range, a search without a root.
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// An allocation would exceed the memory budget: `what needs X GiB, above the memory limit
    /// of Y GiB; advice`.
    #[error(
        "{what} needs {} GiB, above the memory limit of {} GiB; {advice}",
        gib(*bytes),
        gib(*limit)
    )]
    Memory {
        /// What would be allocated.
        what: String,
        /// The estimate in bytes.
        bytes: u128,
        /// The budget in bytes.
        limit: u128,
        /// What to do instead (names options that exist).
        advice: String,
    },
    /// A download failed (network, server or a checksum that does not match).
    #[error("{url}: {msg}")]
    Download {
        /// Where from.
        url: String,
        /// What went wrong.
        msg: String,
    },
}

/// Bytes in GiB.
/// Bytes in GiB: two decimals, or three significant digits below 0.01 GiB (`1.18e-4`).
fn gib(bytes: u128) -> String {
    let g = bytes as f64 / (1u128 << 30) as f64;
    if g >= 0.01 {
        format!("{g:.2}")
    } else {
        format!("{g:.2e}")
    }
}

impl Error {
    /// Parse error at `file:line`.
    pub fn parse(file: &Path, line: usize, msg: impl Into<String>) -> Self {
        Error::Parse {
            file: file.display().to_string(),
            line,
            msg: msg.into(),
        }
    }

    /// I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            err: source,
        }
    }

    /// A bad value of the option `name`.
    pub fn option(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Option {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// A bad tensor `name` of `file`.
    pub fn tensor(file: impl Into<String>, name: &str, reason: impl Into<String>) -> Self {
        Error::Tensor {
            file: file.into(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// The same error about the option its caller calls `name` (an [`Error::Option`] or
    /// [`Error::Word`] renamed; any other error prefixed with `name: `): the core names a
    /// parameter by its symbol, the command line by its flag, Python by its keyword.
    pub fn for_option(self, name: &str) -> Self {
        match self {
            Error::Option { reason, .. } => Error::option(name, reason),
            Error::Word { got, expected, .. } => Error::option(
                name,
                format!(
                    "unknown value '{got}' (expected {})",
                    crate::words::either(expected)
                ),
            ),
            Error::Invalid(m) => Error::option(name, m),
            other => other,
        }
    }

    /// The error about the file `path`: a [`Error::Metadata`] or [`Error::Tensor`] gets it as
    /// its file, any other error is prefixed with it.
    pub fn in_file(self, path: &Path) -> Self {
        let file = path.display().to_string();
        match self {
            Error::Metadata { key, reason, .. } => Error::Metadata { file, key, reason },
            Error::Tensor { name, reason, .. } => Error::Tensor { file, name, reason },
            Error::Option { name, reason } => Error::Invalid(format!("{file}: {name}: {reason}")),
            e @ (Error::Io { .. } | Error::Parse { .. }) => e,
            other => Error::Invalid(format!("{file}: {other}")),
        }
    }

    /// Whether the error is the user's input (exit code 2) rather than a failure of the method.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, Error::Numerical(_) | Error::Download { .. })
    }
}

/// A numerical event that did not stop the computation but changes or qualifies its result
/// (jitter added, variances clamped, a gradient that is not zero): callers show it and record
/// it beside the numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Warning {
    /// A short stable name: `jitter`, `eigen_form`, `clamped_variance`, `not_stationary`, …
    pub kind: String,
    /// What happened and what it changes, in words.
    pub message: String,
}

impl Warning {
    /// A warning of `kind`.
    pub fn new(kind: &str, message: String) -> Self {
        Warning {
            kind: kind.to_string(),
            message,
        }
    }

    /// Appends the warnings of `new` that `into` does not hold yet, each once.
    pub fn add_new(into: &mut Vec<Warning>, new: impl IntoIterator<Item = Warning>) {
        for w in new {
            if !into.contains(&w) {
                into.push(w);
            }
        }
    }

    /// The same warning with what to do about it: `message: advice`.
    pub fn advise(&self, advice: &str) -> Self {
        Warning::new(&self.kind, format!("{}: {advice}", self.message))
    }

    /// The same warning about a prediction, saying on which `inputs`.
    pub fn on(&self, inputs: &str) -> Self {
        Warning::new(&self.kind, format!("on {inputs}: {}", self.message))
    }
}

/// Result with the library's error.
pub type Result<T> = std::result::Result<T, Error>;
