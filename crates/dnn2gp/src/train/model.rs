//! A trained model in one self-describing safetensors file: the weights under PyTorch's
//! `nn.Sequential` names (`"0.weight"`, `"0.bias"`, …; `model.load_state_dict(load_file(path))`
//! reads them), and in the file's `__metadata__` the architecture (a spec string, or the graph
//! of operations as JSON), the likelihood, σ, δ
//! and the training data's fingerprint, so that the file alone rebuilds the model.

use std::collections::BTreeMap;
use std::path::Path;

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::likelihood::{Likelihood, LikelihoodKind};
use crate::nn::weights::{self, StoredDtype};
use crate::nn::{Dtype, Graph, Network};

/// The metadata key of a model file's architecture: a file without it is no dnn2gp model
/// ([`Error::Metadata`] names it).
pub const ARCHITECTURE: &str = "dnn2gp.architecture";
const LIKELIHOOD: &str = "dnn2gp.likelihood";
const SIGMA: &str = "dnn2gp.sigma";
const DELTA: &str = "dnn2gp.delta";
const DATA: &str = "dnn2gp.data";

/// A network, its weights and the hyperparameters it was trained with.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The architecture.
    pub net: Graph,
    /// The weights `w*` (P), in PyTorch order.
    pub w: Vec<f64>,
    /// The likelihood.
    pub likelihood: LikelihoodKind,
    /// The Gaussian noise standard deviation σ (1 for the classification likelihoods).
    pub sigma: f64,
    /// The prior precision δ.
    pub delta: f64,
    /// The training data's [`fingerprint`], when known.
    pub data: Option<String>,
    /// The scalar type of its forward passes (features, outputs, predictives; not saved):
    /// f64 by default.
    pub dtype: Dtype,
}

impl Model {
    /// The model, checked: `w` has the network's P entries, all finite; σ and δ positive.
    pub fn new(
        net: impl Into<Graph>,
        w: Vec<f64>,
        likelihood: LikelihoodKind,
        sigma: f64,
        delta: f64,
    ) -> Result<Self> {
        let net = net.into();
        if w.len() != net.n_params() {
            return Err(Error::Invalid(format!(
                "{} weights for architecture {}, which has {} parameters",
                w.len(),
                net.spec(),
                net.n_params()
            )));
        }
        if let Some(i) = w.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "parameter {i} is {}; a model needs finite weights",
                w[i]
            )));
        }
        crate::train::check_delta(delta)?;
        likelihood.build(sigma)?;
        Ok(Model {
            net,
            w,
            likelihood,
            sigma,
            delta,
            data: None,
            dtype: Dtype::F64,
        })
    }

    /// The model with its forward passes in `dtype`.
    pub fn with_dtype(self, dtype: Dtype) -> Model {
        Model { dtype, ..self }
    }

    /// Its outputs `F` (N × K) at the rows of `X`, in its dtype.
    pub fn predict(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        self.predict_at(&self.w, x)
    }

    /// The outputs at weights `w` (a draw), in its dtype.
    pub fn predict_at(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        crate::nn::predict_in(&self.net, w, x, self.dtype)
    }

    /// The model with the tensors `names` held fixed at their values (laplace-torch's
    /// `requires_grad=False`): a posterior over it covers the other tensors.
    pub fn freeze(&self, names: &[String]) -> Result<Model> {
        let (net, w) = self.net.freeze(&self.w, names)?;
        Ok(Model {
            net,
            w,
            ..self.clone()
        })
    }

    /// The likelihood with the model's σ (refused when σ, a public field, was set to a value
    /// that is not a positive number).
    pub fn likelihood(&self) -> Result<Box<dyn Likelihood>> {
        self.likelihood.build(self.sigma)
    }

    /// Writes the model file (weights in `dtype`, metadata as strings).
    pub fn save(&self, path: &Path, dtype: StoredDtype) -> Result<()> {
        weights::save_with_metadata(
            path,
            &self.net.param_layout(),
            &self.w,
            dtype,
            &self.metadata(),
        )
    }

    /// The metadata of a model file.
    pub(crate) fn metadata(&self) -> BTreeMap<String, String> {
        let mut meta = BTreeMap::from([
            (ARCHITECTURE.to_string(), self.net.architecture()),
            (LIKELIHOOD.to_string(), self.likelihood.to_string()),
            (SIGMA.to_string(), format!("{:?}", self.sigma)),
            (DELTA.to_string(), format!("{:?}", self.delta)),
        ]);
        if let Some(d) = &self.data {
            meta.insert(DATA.to_string(), d.clone());
        }
        meta
    }

    /// The architecture a model file's metadata names.
    pub(crate) fn architecture_in(meta: &BTreeMap<String, String>) -> Result<Graph> {
        let spec = meta.get(ARCHITECTURE).ok_or_else(|| {
            metadata_error(
                ARCHITECTURE,
                format!(
                    "no '{ARCHITECTURE}' in its metadata: not a dnn2gp model file (a bare \
                     state_dict loads with an architecture given separately)"
                ),
            )
        })?;
        Graph::from_architecture(spec)
            .map_err(|e| metadata_error(ARCHITECTURE, format!("{ARCHITECTURE}: {e}")))
    }

    /// The model from a file's metadata and its weights.
    pub(crate) fn from_metadata(meta: &BTreeMap<String, String>, w: Vec<f64>) -> Result<Self> {
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| metadata_error(key, format!("no '{key}' in its metadata")))
        };
        let number = |key: &str| -> Result<f64> {
            let v = get(key)?;
            v.parse::<f64>()
                .map_err(|_| metadata_error(key, format!("{key}: '{v}' is not a number")))
        };
        let likelihood = get(LIKELIHOOD)?
            .parse::<LikelihoodKind>()
            .map_err(|e| metadata_error(LIKELIHOOD, format!("{LIKELIHOOD}: {e}")))?;
        let net = Self::architecture_in(meta)?;
        let mut model = Model::new(net, w, likelihood, number(SIGMA)?, number(DELTA)?)?;
        model.data = meta.get(DATA).cloned();
        Ok(model)
    }

    /// Reads a model file written by [`Model::save`], checking every field and naming the file
    /// and the key of anything wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let (meta, w) = weights::load_with_metadata(path, |meta| {
            Ok(Self::architecture_in(meta)
                .map_err(|e| e.in_file(path))?
                .param_layout())
        })?;
        Self::from_metadata(&meta, w).map_err(|e| e.in_file(path))
    }
}

/// A metadata entry `key` at fault (the file is named by [`Error::in_file`]).
pub(crate) fn metadata_error(key: &str, reason: String) -> Error {
    Error::Metadata {
        file: String::new(),
        key: key.to_string(),
        reason,
    }
}

/// A fingerprint of a training set: its shape and the CRC-32 of its values' bits (inputs row
/// by row, then targets), `"n=200 d=2 k=1 crc32=1a2b3c4d"`. Two data sets with the same
/// fingerprint are, with overwhelming probability, the same numbers.
pub fn fingerprint(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> String {
    let mut h = crc32fast::Hasher::new();
    for m in [x, y] {
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                h.update(&m[(i, j)].to_bits().to_le_bytes());
            }
        }
    }
    format!(
        "n={} d={} k={} crc32={:08x}",
        x.nrows(),
        x.ncols(),
        y.ncols(),
        h.finalize()
    )
}
