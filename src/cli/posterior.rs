//! The posterior `gp` and `predict` fit on the training data: the structure and weights of
//! `--hessian` and `--subset`, its memory checked before any work, the fit with its progress,
//! and the prior and noise of `--prior`, `--prior-structure`, `--sigma` and `--marglik`.

use anyhow::Result;
use faer::MatRef;

use crate::cli::args::{NoiseArg, PosteriorArgs, PriorArg};
use crate::cli::ctx::{positive, Ctx};
use crate::report::plot::significant;
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::Graph;
use dnn2gp::posterior::{
    FitOptions, HessianStructure, Laplace, Posterior, PriorPrecision, PriorStructure, Subset,
};
use dnn2gp::train::model::Model;
use dnn2gp::Error;

/// Whether δ (and σ) come from the evidence.
fn by_evidence(a: &PosteriorArgs) -> (bool, bool) {
    (
        a.marglik || a.prior == Some(PriorArg::Marglik),
        a.marglik || a.sigma == Some(NoiseArg::Marglik),
    )
}

/// Checks the posterior's options against the likelihood and its memory on N examples,
/// before any work.
pub(crate) fn check(
    a: &PosteriorArgs,
    kind: LikelihoodKind,
    net: &Graph,
    n: usize,
    memory: u128,
) -> Result<()> {
    if let Some(rank) = a.rank {
        positive("--rank", rank)?;
        if a.structure() != HessianStructure::LowRank {
            return Err(Error::option(
                "--rank",
                format!(
                    "sets the eigenpairs of a lowrank posterior, not of a {} one: give --hessian \
                     lowrank",
                    a.structure()
                ),
            )
            .into());
        }
    }
    let gaussian = kind == LikelihoodKind::Gaussian;
    let (prior_search, noise_search) = by_evidence(a);
    if !gaussian && a.sigma.is_some() {
        return Err(Error::option(
            "--sigma",
            format!("the noise σ belongs to a Gaussian likelihood, not the {kind}"),
        )
        .into());
    }
    if a.sigma == Some(NoiseArg::Marglik) && !prior_search {
        return Err(Error::option(
            "--sigma",
            "marglik chooses σ together with δ: give --prior marglik too (or --marglik)",
        )
        .into());
    }
    if a.prior_structure == PriorStructure::Layerwise {
        if !prior_search {
            return Err(Error::option(
                "--prior-structure",
                "layerwise chooses δ per layer by the evidence: give --prior marglik",
            )
            .into());
        }
        if a.structure() == HessianStructure::LowRank {
            return Err(Error::option(
                "--prior-structure",
                "layerwise needs a full, diag or kron posterior: the low-rank precision \
                 U diag(s) Uᵀ + δI has one δ",
            )
            .into());
        }
        if gaussian && noise_search {
            return Err(Error::option(
                "--prior-structure",
                "layerwise with σ by the evidence is not supported: give --sigma model or a \
                 number with --prior marglik",
            )
            .into());
        }
    }
    Ok(Laplace::check_memory(
        net,
        n,
        a.structure(),
        a.weights(),
        memory,
    )?)
}

/// Whether the options ask for the structured posterior rather than the GP's own full one
/// over all weights (whose variance and evidence the GP gives in either space).
pub(crate) fn needs_fit(a: &PosteriorArgs) -> bool {
    let (prior, noise) = by_evidence(a);
    a.structure() != HessianStructure::Full
        || a.weights() != Subset::All
        || prior
        || noise
        || matches!(a.sigma, Some(NoiseArg::Value(_)))
}

/// Fits the posterior of `model` on `(X, Y)` as `a` asks, with a progress bar over the
/// examples (diag, kron and lowrank stream the data).
pub(crate) fn fit(
    ctx: &Ctx,
    model: Model,
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    a: &PosteriorArgs,
) -> Result<Laplace> {
    let passes = match a.structure() {
        HessianStructure::Full => 0,
        HessianStructure::LowRank => 4,
        _ => 1,
    };
    let bar = ctx.bar(passes * x.nrows() as u64, "fitting the posterior");
    let opts = FitOptions {
        memory_limit: ctx.memory,
        progress: Some(&bar),
        rank: a.rank.unwrap_or(FitOptions::default().rank),
        seed: 0,
    };
    let la = Laplace::fit_subset(model, x, y, a.structure(), a.weights(), &opts)?;
    bar.finish_and_clear();
    Ok(la)
}

/// How the prior precision was chosen, for the printed line and the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Chosen {
    /// The model's δ.
    Model,
    /// The evidence's maximum.
    Evidence,
    /// `--prior` gave it.
    Given,
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Chosen::Model => "the model's",
            Chosen::Evidence => "by the evidence",
            Chosen::Given => "given",
        })
    }
}

/// Sets the posterior's noise and prior as `a` asks: `--sigma` first, then δ (and σ) by the
/// evidence or as given.
pub(crate) fn choose_prior(la: &mut Laplace, a: &PosteriorArgs) -> Result<Chosen> {
    if let Some(NoiseArg::Value(s)) = a.sigma {
        la.set_sigma_noise(s)?;
    }
    let (prior_search, noise_search) = by_evidence(a);
    let gaussian = la.model().likelihood == LikelihoodKind::Gaussian;
    Ok(match a.prior {
        _ if prior_search && noise_search && gaussian => {
            la.optimize_noise_and_prior()?;
            Chosen::Evidence
        }
        _ if prior_search => {
            la.optimize_prior_precision_as(a.prior_structure)?;
            Chosen::Evidence
        }
        Some(PriorArg::Value(d)) => {
            la.set_prior_precision(d)?;
            Chosen::Given
        }
        _ => Chosen::Model,
    })
}

/// A prior precision for printing: `δ = 0.81` or `δ per layer = …`, each value with `decimals`
/// places, or to six significant digits without trailing zeros ([`significant`]) for `None`.
pub(crate) fn describe_prior(prior: &PriorPrecision, decimals: Option<usize>) -> String {
    let show = |d: &f64| match decimals {
        Some(p) => format!("{d:.p$}"),
        None => significant(*d, 6),
    };
    match prior {
        PriorPrecision::Scalar(d) => format!("δ = {}", show(d)),
        PriorPrecision::Layerwise(d) => {
            let d: Vec<String> = d.iter().map(show).collect();
            format!("δ per layer = {}", d.join(", "))
        }
    }
}
