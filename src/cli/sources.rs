//! The data a command reads: `--data` and its options as a [`Source`], one data set where a
//! command fits one network, targets in the likelihood's form.

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::args::{DataArgs, ModelDataArgs};
use crate::cli::ctx::positive;
use dnn2gp::data::source::Source;
use dnn2gp::data::toy::ToyConfig;
use dnn2gp::data::Split;
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::Error;

pub(crate) fn source(d: &DataArgs) -> Result<Source> {
    let is_toy = d.data.split(':').next() == Some("toy");
    let toy_options = [
        ("--sets", d.sets.is_some()),
        ("--toy-noise", d.toy_noise.is_some()),
        ("--toy-n", d.toy_n.is_some()),
        ("--toy-n-test", d.toy_n_test.is_some()),
        ("--data-seed", d.data_seed.is_some()),
    ];
    if let Some((option, _)) = toy_options.iter().find(|(_, given)| *given && !is_toy) {
        return Err(Error::option(
            *option,
            format!("applies to --data toy only, not to --data {}", d.data),
        )
        .into());
    }
    let defaults = ToyConfig::default();
    let noise: [f64; 3] = match &d.toy_noise {
        None => defaults.noise,
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|_| Error::option("--toy-noise", "needs three values"))?,
    };
    if noise.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(Error::option(
            "--toy-noise",
            format!("values must be non-negative, got {noise:?}"),
        )
        .into());
    }
    let sets = d.sets.unwrap_or(1);
    positive("--sets", sets)?;
    let toy = ToyConfig {
        n_train: d.toy_n.unwrap_or(defaults.n_train),
        n_test: d.toy_n_test.unwrap_or(defaults.n_test),
        noise,
        seed: d.data_seed.unwrap_or(defaults.seed),
        ..defaults
    };
    positive("--toy-n", toy.n_train)?;
    positive("--toy-n-test", toy.n_test)?;
    Ok(Source::parse(
        &d.data,
        &d.data_dir,
        toy,
        sets,
        d.test.clone(),
        d.append_one,
    )?)
}

/// The split's targets in the likelihood's form ([`LikelihoodKind::prepare_targets`]); the
/// test targets get the training set's number of classes.
pub(crate) fn prepare_split(
    mut split: Split,
    kind: LikelihoodKind,
    classes: Option<usize>,
    data: &str,
) -> Result<Split> {
    let take = |m: &mut faer::Mat<f64>| std::mem::replace(m, faer::Mat::zeros(0, 0));
    split.train.y = kind.prepare_targets(take(&mut split.train.y), classes, data)?;
    let k = (kind == LikelihoodKind::Categorical).then(|| split.train.y.ncols());
    split.test.y = kind.prepare_targets(
        take(&mut split.test.y),
        k,
        &format!("the test set of {data}"),
    )?;
    Ok(split)
}

/// The training data a model command reads: `--data` (with `--test`, `--data-dir`) instead of
/// what `model.json` records.
pub(crate) fn data_override(d: &ModelDataArgs) -> Result<Option<Source>> {
    d.data
        .as_deref()
        .map(|spec| {
            Source::parse(
                spec,
                &d.data_dir,
                ToyConfig::default(),
                1,
                d.test.clone(),
                false,
            )
        })
        .transpose()?
        .map(one_data_set)
        .transpose()
}

/// Refuses several CSV data sets where a command fits one network.
pub(crate) fn one_data_set(src: Source) -> Result<Source> {
    if let Source::Sets { sets } = &src {
        return Err(Error::option(
            "--data",
            format!(
                "{} CSV files: `sweep` averages over several data sets; this command fits one \
                 network on one",
                sets.len()
            ),
        )
        .into());
    }
    Ok(src)
}

/// `--train-data`: one training set, read from `$DNN2GP_DATA` (default `data`) for the named
/// data sets.
pub(crate) fn train_data(spec: Option<&str>) -> Result<Option<Source>> {
    let dir = std::env::var_os("DNN2GP_DATA").map_or_else(|| "data".into(), PathBuf::from);
    spec.map(|s| {
        one_data_set(Source::parse(
            s,
            &dir,
            ToyConfig::default(),
            1,
            None,
            false,
        )?)
    })
    .transpose()
}
