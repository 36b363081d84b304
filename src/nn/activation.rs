//! Element-wise activations `φ` and their derivatives, written in terms of the output `a = φ(z)`.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A hidden-layer non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `tanh z`.
    Tanh,
    /// `1 / (1 + e^{−z})`.
    Sigmoid,
    /// `max(z, 0)`.
    Relu,
    /// `z`.
    Identity,
}

impl Activation {
    /// `φ(z)`.
    #[inline]
    pub fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Tanh => z.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Activation::Relu => z.max(0.0),
            Activation::Identity => z,
        }
    }

    /// `φ'(z)` expressed through `a = φ(z)`: `1 − a²`, `a(1 − a)`, `[a > 0]`, `1`.
    #[inline]
    pub fn derivative_from_output(self, a: f64) -> f64 {
        match self {
            Activation::Tanh => 1.0 - a * a,
            Activation::Sigmoid => a * (1.0 - a),
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Identity => 1.0,
        }
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "tanh" => Ok(Activation::Tanh),
            "sigmoid" => Ok(Activation::Sigmoid),
            "relu" => Ok(Activation::Relu),
            "identity" | "linear" | "none" => Ok(Activation::Identity),
            other => Err(Error::Invalid(format!(
                "unknown activation '{other}' (expected tanh, sigmoid, relu or identity)"
            ))),
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
            Activation::Identity => "identity",
        };
        f.write_str(s)
    }
}
