//! Errors of the library: every message names the file, line or field at fault.

use std::path::Path;

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A user's file could not be parsed: `file:line: message`.
    #[error("{file}:{line}: {msg}")]
    Parse {
        file: String,
        line: usize,
        msg: String,
    },
    /// A value (option, shape, setting) is out of its domain.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    /// Numerical failure that the jitter ladder could not repair.
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// An allocation would exceed the memory budget.
    #[error("{0}")]
    Memory(String),
    /// A download failed (network, server or a checksum that does not match).
    #[error("{url}: {msg}")]
    Download { url: String, msg: String },
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

    /// Whether the error is the user's input (exit code 2) rather than a failure of the method.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::Parse { .. } | Error::Invalid(_) | Error::Io { .. } | Error::Memory(_)
        )
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

    /// The same warning about a prediction, saying on which `inputs`.
    pub fn on(&self, inputs: &str) -> Self {
        Warning::new(&self.kind, format!("on {inputs}: {}", self.message))
    }
}

/// Result with the library's error.
pub type Result<T> = std::result::Result<T, Error>;
