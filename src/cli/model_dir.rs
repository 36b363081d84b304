//! The model folder that `train` and `import` write and `gp`, `predict` read: `model.json`
//! (the run's record), `params.npy`, `model.safetensors` and `history.csv`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::args::ModelArgs;
use crate::cli::ctx::warn;
use crate::cli::sources::prepare_split;
use dnn2gp::data::source::Source;
use dnn2gp::data::Split;
use dnn2gp::io::{num, read_npy, write_csv, write_json, write_npy};
use dnn2gp::likelihood::{Likelihood, LikelihoodKind};
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::train::model::{fingerprint, Model};
use dnn2gp::train::{MapResult, Objective};
use dnn2gp::{Error, Warning};

/// An architecture as `model.json` holds it: a spec string, or (older folders) an MLP's
/// `{"sizes": [...], "activation": "..."}`, read as the spec of that MLP.
pub(crate) fn architecture_spec<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Spec(String),
        Mlp {
            sizes: Vec<usize>,
            activation: Activation,
        },
    }
    match Stored::deserialize(d)? {
        Stored::Spec(s) => Ok(s),
        Stored::Mlp { sizes, activation } => Sequential::mlp(sizes, activation)
            .map(|n| n.spec())
            .map_err(serde::de::Error::custom),
    }
}

/// What `train` writes to `model.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ModelFile {
    /// The architecture spec ([`Sequential::parse`]); folders written before spec strings
    /// hold an MLP's widths and activation.
    #[serde(deserialize_with = "architecture_spec")]
    pub(crate) architecture: String,
    pub(crate) likelihood: String,
    pub(crate) sigma: f64,
    pub(crate) delta: f64,
    pub(crate) n_params: usize,
    pub(crate) data: Source,
    pub(crate) loss: f64,
    pub(crate) grad_norm: f64,
    /// `‖∇L‖` relative to its scale (the stationarity rule); absent in older files.
    #[serde(default)]
    pub(crate) grad_rel: f64,
    pub(crate) epochs: usize,
    pub(crate) polish_iters: usize,
    pub(crate) seconds: f64,
}

/// Writes a model folder (`model.json`, `params.npy`, `model.safetensors`, `history.csv`),
/// warning when `w` is not a stationary point of the loss on `split`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_model(
    out: &Path,
    net: &Sequential,
    lik: &dyn Likelihood,
    m: &ModelArgs,
    data: Source,
    split: &Split,
    res: &MapResult,
    t0: Instant,
) -> Result<Vec<PathBuf>> {
    let stationarity = Objective::on(net, lik, &split.train, m.delta).stationarity(&res.w);
    if let Some(w) = stationarity.warning(None) {
        eprintln!("warning: {}", w.message);
    }
    let file = ModelFile {
        architecture: net.spec(),
        likelihood: lik.name().into(),
        sigma: m.sigma,
        delta: m.delta,
        n_params: net.n_params(),
        // Absolute paths: the model folder can be used from any working directory.
        data: data.absolute()?,
        loss: res.loss,
        grad_norm: res.grad_norm,
        grad_rel: stationarity.relative,
        epochs: res.epochs,
        polish_iters: res.polish_iters,
        seconds: t0.elapsed().as_secs_f64(),
    };
    save_model(out, &file, res, split)
}

pub(crate) fn save_model(
    dir: &Path,
    file: &ModelFile,
    res: &MapResult,
    split: &Split,
) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = [
        "params.npy",
        "model.safetensors",
        "history.csv",
        "model.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    write_npy(&files[0], &[res.w.len()], &res.w)?;
    let mut model = Model::new(
        Sequential::parse(&file.architecture)?,
        res.w.clone(),
        file.likelihood.parse()?,
        file.sigma,
        file.delta,
    )?;
    model.data = Some(fingerprint(split.train.x.as_ref(), split.train.y.as_ref()));
    model.save(&files[1], dnn2gp::nn::weights::StoredDtype::F64)?;
    write_history(&files[2], "loss", &res.history)?;
    write_json(&files[3], file)?;
    Ok(files)
}

/// Writes a per-epoch loss history as `epoch,<name>`.
pub(crate) fn write_history(path: &Path, name: &str, history: &[f64]) -> Result<()> {
    let rows: Vec<Vec<String>> = history
        .iter()
        .enumerate()
        .map(|(i, l)| vec![(i + 1).to_string(), num(*l)])
        .collect();
    Ok(write_csv(path, &["epoch", name], &rows)?)
}

/// A model folder's record (`model.json`) and its [`Model`] (architecture and hyperparameters
/// from the record, weights from `params.npy`).
pub(crate) fn load_model(dir: &Path) -> Result<(ModelFile, Model)> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let file: ModelFile = serde_json::from_str(&text)
        .map_err(|e| Error::parse(&path, e.line(), format!("not a dnn2gp model file: {e}")))?;
    let params = dir.join("params.npy");
    let net = Sequential::parse(&file.architecture)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let (shape, w) = read_npy(&params)?;
    let model = Model::new(net, w, file.likelihood.parse()?, file.sigma, file.delta)
        .map_err(|e| Error::Invalid(format!("{}: {e} (shape {shape:?})", params.display())))?;
    Ok((file, model))
}

/// A saved model with its training data (from `model.json`, or `data` instead), checked
/// against its architecture.
pub(crate) struct Fitted {
    pub(crate) model: Model,
    pub(crate) kind: LikelihoodKind,
    pub(crate) lik: Box<dyn Likelihood>,
    pub(crate) src: Source,
    pub(crate) split: Split,
    /// Warnings about the model and its data, for the command's JSON.
    pub(crate) warnings: Vec<Warning>,
}

/// The model of `--model` (a model folder, or a model file with `--data`) and its training
/// data, prepared for its likelihood. Data other than the model's training data (by the model
/// file's fingerprint) is warned about: the GP is then not the model's Laplace posterior.
pub(crate) fn load_fitted(path: &Path, data: Option<Source>, data_option: &str) -> Result<Fitted> {
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "--model {}: no such model folder or model file",
            path.display()
        ))
        .into());
    }
    let (model, src, what) = if path.is_file() {
        let model = Model::load(path)?;
        let src = data.ok_or_else(|| {
            Error::Invalid(format!(
                "--model {}: a model file records its training data's fingerprint, not where the \
                 data is; give the data with {data_option}",
                path.display()
            ))
        })?;
        (model, src, path.display().to_string())
    } else {
        let (file, model) = load_model(path)?;
        let src = match data {
            Some(d) => d.reading_as(&file.data),
            None => file.data,
        };
        (model, src, path.join("model.json").display().to_string())
    };
    let net = &model.net;
    let kind = model.likelihood;
    let classes = (kind == LikelihoodKind::Categorical).then(|| net.n_outputs());
    let split = prepare_split(src.load()?.remove(0), kind, classes, &what)?;
    if net.n_inputs() != split.train.x.ncols() || net.n_outputs() != split.train.y.ncols() {
        return Err(Error::Invalid(format!(
            "{what}: architecture {} does not fit its data ({} inputs, {} outputs)",
            net.spec(),
            split.train.x.ncols(),
            split.train.y.ncols()
        ))
        .into());
    }
    let mut warnings = Vec::new();
    let seen = fingerprint(split.train.x.as_ref(), split.train.y.as_ref());
    if let Some(trained) = model.data.as_ref().filter(|t| **t != seen) {
        warn(
            &mut warnings,
            [Warning::new(
                "other_data",
                format!(
                    "the data ({seen}) is not the model's training data ({trained}): w* is not \
                     a MAP estimate on it, so the GP is not the model's Laplace posterior"
                ),
            )],
        );
    }
    let lik = model.likelihood()?;
    Ok(Fitted {
        model,
        kind,
        lik,
        src,
        split,
        warnings,
    })
}
