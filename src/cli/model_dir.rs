//! The model folder that `train` and `import` write and `gp`, `predict` read: the model itself
//! in one self-describing file (`model.safetensors`, [`Model::save`]: weights under the
//! state_dict's names, architecture, likelihood, σ, δ and the data's fingerprint in its
//! metadata), `model.json` with the run's record (the data, loss, `‖∇L‖`, timings) and
//! `history.csv`. Folders written before the model file held the model load from `model.json`
//! and `params.npy`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::args::ModelArgs;
use crate::cli::ctx::Ctx;
use crate::cli::sources::prepare_split;
use dnn2gp::data::source::Source;
use dnn2gp::data::Split;
use dnn2gp::io::{num, read_npy, write_csv, write_json};
use dnn2gp::likelihood::{Likelihood, LikelihoodKind};
use dnn2gp::nn::weights::StoredDtype;
use dnn2gp::nn::{Activation, Graph, Network, Sequential};
use dnn2gp::train::model::{fingerprint, Model};
use dnn2gp::train::MapResult;
use dnn2gp::{Error, Warning};

/// The model file of a folder.
pub(crate) const MODEL_FILE: &str = "model.safetensors";
/// The run's record of a folder.
const RECORD_FILE: &str = "model.json";

/// An architecture as older `model.json` files hold it: a spec string, or an MLP's
/// `{"sizes": [...], "activation": "..."}`, read as the spec of that MLP.
fn architecture_spec<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
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
        Stored::Spec(s) => Ok(Some(s)),
        Stored::Mlp { sizes, activation } => Sequential::mlp(sizes, activation)
            .map(|n| Some(n.spec()))
            .map_err(serde::de::Error::custom),
    }
}

/// What `model.json` records of the run that made the model.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// The training data (absolute paths: the folder can be used from any working directory).
    pub(crate) data: Source,
    pub(crate) n_params: usize,
    pub(crate) loss: f64,
    pub(crate) grad_norm: f64,
    /// `‖∇L‖` relative to its scale (the stationarity rule); absent in older files.
    #[serde(default)]
    pub(crate) grad_rel: f64,
    pub(crate) epochs: usize,
    pub(crate) polish_iters: usize,
    pub(crate) seconds: f64,
}

/// The model fields of a `model.json` written before the model file held the model.
#[derive(Debug, Deserialize)]
struct LegacyModel {
    #[serde(default, deserialize_with = "architecture_spec")]
    architecture: Option<String>,
    likelihood: Option<LikelihoodKind>,
    sigma: Option<f64>,
    delta: Option<f64>,
}

/// Writes a model folder (`model.safetensors`, `model.json`, `history.csv`) for the network
/// `net` at `res.w` with the likelihood and prior of `m`, trained (or imported) on `data`,
/// warning when its weights are not a stationary point of the loss on `split`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_model(
    ctx: &Ctx,
    out: &Path,
    net: &Graph,
    m: &ModelArgs,
    data: Source,
    split: &Split,
    res: &MapResult,
    t0: Instant,
) -> Result<Vec<PathBuf>> {
    let mut model = Model::new(net.clone(), res.w.clone(), m.likelihood, m.sigma, m.delta)?;
    let lik = model.likelihood()?;
    let stationarity =
        dnn2gp::train::Objective::on(&model.net, lik.as_ref(), &split.train, model.delta)
            .stationarity(&model.w);
    ctx.warn(&mut Vec::new(), stationarity.warning(None));
    let record = RunRecord {
        data: data.absolute()?,
        n_params: model.net.n_params(),
        loss: res.loss,
        grad_norm: res.grad_norm,
        grad_rel: stationarity.relative,
        epochs: res.epochs,
        polish_iters: res.polish_iters,
        seconds: t0.elapsed().as_secs_f64(),
    };
    let files: Vec<PathBuf> = [MODEL_FILE, "history.csv", RECORD_FILE]
        .iter()
        .map(|f| out.join(f))
        .collect();
    model.data = Some(fingerprint(split.train.x.as_ref(), split.train.y.as_ref()));
    model.save(&files[0], StoredDtype::F64)?;
    write_history(&files[1], "loss", &res.history)?;
    write_json(&files[2], &record)?;
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

/// A model folder's record (`model.json`) and its [`Model`]: from `model.safetensors` through
/// the core's one loader, or, in a folder written before it held the model, from the
/// architecture, likelihood, σ and δ in `model.json` and the weights in `params.npy`.
pub(crate) fn load_folder(dir: &Path) -> Result<(RunRecord, Model)> {
    let path = dir.join(RECORD_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let not_a_folder = |e: serde_json::Error| {
        Error::parse(
            &path,
            e.line(),
            format!("not a dnn2gp model folder's record: {e}"),
        )
    };
    let record: RunRecord = serde_json::from_str(&text).map_err(not_a_folder)?;
    let file = dir.join(MODEL_FILE);
    if file.exists() {
        return Ok((record, Model::load(&file)?));
    }
    let legacy: LegacyModel = serde_json::from_str(&text).map_err(not_a_folder)?;
    let (Some(spec), Some(likelihood), Some(sigma), Some(delta)) = (
        legacy.architecture,
        legacy.likelihood,
        legacy.sigma,
        legacy.delta,
    ) else {
        return Err(Error::Invalid(format!(
            "{}: no {MODEL_FILE} beside it, and it names no architecture: this folder holds no \
             model (write one with `dnn2gp train` or `dnn2gp import`)",
            path.display()
        ))
        .into());
    };
    let net: Graph = Sequential::parse(&spec)
        .map_err(|e| e.in_file(&path))?
        .into();
    let params = dir.join("params.npy");
    let (shape, w) = read_npy(&params)?;
    let model = Model::new(net, w, likelihood, sigma, delta)
        .map_err(|e| Error::Invalid(format!("{}: {e} (shape {shape:?})", params.display())))?;
    Ok((record, model))
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
pub(crate) fn load_fitted(
    ctx: &Ctx,
    path: &Path,
    data: Option<Source>,
    data_option: &str,
) -> Result<Fitted> {
    if !path.exists() {
        return Err(Error::option(
            "--model",
            format!("{}: no such model folder or model file", path.display()),
        )
        .into());
    }
    let (model, src, what) = if path.is_file() {
        let model = Model::load(path)?;
        let src = data.ok_or_else(|| {
            Error::option(
                "--model",
                format!(
                    "{}: a model file records its training data's fingerprint, not where the data \
                     is; give the data with {data_option}",
                    path.display()
                ),
            )
        })?;
        (model, src, path.display().to_string())
    } else if !path.join(RECORD_FILE).exists() && path.join(MODEL_FILE).exists() {
        // A folder written by `reproduce`: its images are not a data source of this command.
        return Err(Error::option(
            "--model",
            format!(
                "{}: a folder with a model file but no {RECORD_FILE} (as `dnn2gp reproduce` \
                 writes) does not say where its training data is: give --model {}{}",
                path.display(),
                path.join(MODEL_FILE).display(),
                if path.join("posterior.safetensors").exists() {
                    format!(
                        " with {data_option}, or predict from its saved posterior with `dnn2gp \
                         predict --model {}`",
                        path.display()
                    )
                } else {
                    format!(" with {data_option}")
                }
            ),
        )
        .into());
    } else {
        let (record, model) = load_folder(path)?;
        let src = match data {
            Some(d) => d.reading_as(&record.data),
            None => record.data,
        };
        (model, src, path.join(RECORD_FILE).display().to_string())
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
        ctx.warn(
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
