//! `evaluate`: calibration of a classifier and of its Laplace posteriors (structures × subsets)
//! on clean and rotated test images and against out-of-distribution images: the numbers in
//! JSON and CSV, reliability diagrams and the metrics against the angle.

use std::path::{Path, PathBuf};

use anyhow::Result;
use faer::Mat;
use serde::Serialize;

use crate::cli::args::{EvaluateCmd, PriorArg};
use crate::cli::ctx::{positive, Ctx};
use crate::cli::outdir::OutDir;
use crate::report::calibration::{ReliabilityFigure, ShiftFigure};
use crate::report::plot::save;
use dnn2gp::data::mnist::{self};
use dnn2gp::experiments::calibration::{
    self, Inputs, Method as EvalMethod, MethodReport, Predicting, Prior,
};
use dnn2gp::io::{num, write_csv, write_json};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::weights::{self};
use dnn2gp::nn::{Network, Sequential};
use dnn2gp::posterior::{
    FitOptions, HessianStructure, Link, LinkApprox, PredType, PriorPrecision, PriorStructure,
    Subset,
};
use dnn2gp::train::model::{Model, ARCHITECTURE};
use dnn2gp::{Error, Warning};

/// What `evaluate` writes to `evaluate.json`.
#[derive(Debug, Serialize)]
struct Summary {
    model: String,
    architecture: String,
    train_images: usize,
    link: String,
    pred_type: String,
    temperature: f64,
    dtype: String,
    prior: String,
    prior_structure: String,
    angles: Vec<f64>,
    test_images_per_angle: usize,
    ood_sets: Vec<String>,
    methods: Vec<MethodReport>,
    warnings: Vec<Warning>,
}

/// An IDX file given, or MNIST's `name` in `data_dir/mnist` (gzipped or not).
fn idx_file(given: &Option<PathBuf>, data_dir: &Path, name: &str, option: &str) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.clone(),
        None => {
            let gz = data_dir.join("mnist").join(format!("{name}.gz"));
            if gz.exists() {
                gz
            } else {
                data_dir.join("mnist").join(name)
            }
        }
    };
    if !path.is_file() {
        return Err(Error::Invalid(format!(
            "{option}: {} is not a file{}",
            path.display(),
            if given.is_none() {
                " (the default from --data-dir; fetch MNIST with `dnn2gp data fetch mnist`)"
            } else {
                ""
            }
        ))
        .into());
    }
    Ok(path)
}

/// The model: a dnn2gp model file, an ONNX network (`*.onnx`), or a bare state_dict with
/// `--arch` (a categorical classifier, δ = 1 until the prior is chosen).
fn load_model(a: &EvaluateCmd) -> Result<Model> {
    let is_onnx = a
        .model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let model = match &a.arch {
        None if is_onnx => {
            let imported = dnn2gp_onnx::read(&a.model)?;
            for w in &imported.warnings {
                eprintln!("warning: {}: {w}", a.model.display());
            }
            let likelihood = if imported.graph.n_outputs() == 1 {
                LikelihoodKind::Bernoulli
            } else {
                LikelihoodKind::Categorical
            };
            Model::new(imported.graph, imported.weights, likelihood, 1.0, 1.0)?
        }
        None => Model::load(&a.model).map_err(|e| match e {
            Error::Metadata { file, key, reason } if key == ARCHITECTURE => Error::Metadata {
                file,
                key,
                reason: format!("{reason}; give a state_dict's architecture with --arch"),
            },
            e => e,
        })?,
        Some(spec) => {
            let net =
                Sequential::parse(spec).map_err(|e| Error::Invalid(format!("--arch: {e}")))?;
            let w = weights::load(&a.model, &net.param_layout())?;
            let likelihood = if net.n_outputs() == 1 {
                LikelihoodKind::Bernoulli
            } else {
                LikelihoodKind::Categorical
            };
            Model::new(net, w, likelihood, 1.0, 1.0)?
        }
    };
    let model = if a.freeze.is_empty() {
        model
    } else {
        let mut names = Vec::new();
        for word in &a.freeze {
            if word.eq_ignore_ascii_case("batchnorm") {
                let bn = model.net.batchnorm_tensors();
                if bn.is_empty() {
                    return Err(Error::option(
                        "--freeze",
                        "batchnorm: the network has no BatchNorm",
                    )
                    .into());
                }
                names.extend(bn);
            } else {
                names.push(word.clone());
            }
        }
        model.freeze(&names).map_err(|e| e.for_option("--freeze"))?
    };
    if model.likelihood == LikelihoodKind::Gaussian {
        return Err(Error::Invalid(format!(
            "{}: a regression model; evaluate measures the calibration of classifiers",
            a.model.display()
        ))
        .into());
    }
    Ok(model)
}

/// `evaluate`.
pub(crate) fn run(ctx: &Ctx, a: EvaluateCmd) -> Result<()> {
    // Every option before any work.
    let (structures, subsets) = (&a.hessian, &a.subset);
    if let Some(v) = a.angles.iter().find(|v| !v.is_finite()) {
        return Err(Error::option("--angles", format!("{v} is not an angle in degrees")).into());
    }
    if !a.freeze.is_empty() && !subsets.contains(&Subset::All) {
        return Err(Error::option(
            "--freeze",
            "holds tensors out of a posterior over all weights: give --subset all (a last-layer \
             posterior holds every tensor below the last layer already)",
        )
        .into());
    }
    if subsets.contains(&Subset::Subnetwork) {
        return Err(Error::option(
            "--subset",
            "subnetwork: its weights are chosen by index, from the library or Python \
             (subset_of_weights='subnetwork', subnetwork_indices=…)",
        )
        .into());
    }
    let angles = a.angles.clone();
    let prior_structure = a.prior_structure;
    let prior = match a.prior {
        PriorArg::Marglik => Prior::Marglik(prior_structure),
        _ if prior_structure == PriorStructure::Layerwise => {
            return Err(Error::option(
                "--prior-structure",
                format!(
                    "layerwise chooses δ per layer by the evidence: give --prior marglik, not {}",
                    a.prior
                ),
            )
            .into())
        }
        PriorArg::Model => Prior::Model,
        PriorArg::Value(d) => Prior::Fixed(d),
    };
    let nn = a.pred_type == PredType::Nn;
    let link_word = match (a.link, nn) {
        (Some(l), true) => {
            return Err(Error::option(
                "--link",
                format!("is the linearised network's (--pred-type glm); --pred-type nn draws weights, not {l}"),
            )
            .into())
        }
        (Some(l), false) => l,
        (None, true) => LinkApprox::Mc,
        (None, false) => LinkApprox::Probit,
    };
    if !(a.temperature.is_finite() && a.temperature > 0.0) {
        return Err(Error::option(
            "--temperature",
            format!("must be a positive number, got {}", a.temperature),
        )
        .into());
    }
    let samples = match a.samples {
        Some(_) if link_word != LinkApprox::Mc => {
            return Err(Error::option(
                "--samples",
                format!("sets the draws of --link mc or --pred-type nn; the link is {link_word}"),
            )
            .into())
        }
        Some(n) => positive("--samples", n).map(|_| n)?,
        None => 100,
    };
    let rank = match a.rank {
        Some(_) if !structures.contains(&HessianStructure::LowRank) => {
            return Err(Error::option(
                "--rank",
                "sets the eigenpairs of a lowrank posterior: give --hessian lowrank",
            )
            .into())
        }
        Some(r) => positive("--rank", r).map(|_| r)?,
        None => FitOptions::default().rank,
    };
    let link = Link::new(link_word, samples, 0).map_err(|e| e.for_option("--samples"))?;
    if nn && samples < 2 {
        return Err(Error::option(
            "--samples",
            "--pred-type nn needs at least two weight draws",
        )
        .into());
    }
    let predicting = Predicting {
        pred: a.pred_type,
        link,
        temperature: a.temperature,
    };
    if let Some(0) = a.limit {
        return Err(Error::option("--limit", "must be at least 1").into());
    }
    // Images and labels come in pairs: a file of one with the data directory's other would
    // score images against labels that are not theirs.
    for (images, labels, given, other) in [
        (
            &a.train_images,
            &a.train_labels,
            "--train-images",
            "--train-labels",
        ),
        (
            &a.test_images,
            &a.test_labels,
            "--test-images",
            "--test-labels",
        ),
    ] {
        let (given, other) = match (images.is_some(), labels.is_some()) {
            (true, false) => (given, other),
            (false, true) => (other, given),
            _ => continue,
        };
        return Err(Error::option(
            given,
            format!("give {other} with it: images and their labels come in pairs"),
        )
        .into());
    }
    let train_images = idx_file(
        &a.train_images,
        &a.data_dir,
        "train-images-idx3-ubyte",
        "--train-images",
    )?;
    let train_labels = idx_file(
        &a.train_labels,
        &a.data_dir,
        "train-labels-idx1-ubyte",
        "--train-labels",
    )?;
    let test_images = idx_file(
        &a.test_images,
        &a.data_dir,
        "t10k-images-idx3-ubyte",
        "--test-images",
    )?;
    let test_labels = idx_file(
        &a.test_labels,
        &a.data_dir,
        "t10k-labels-idx1-ubyte",
        "--test-labels",
    )?;
    for p in &a.ood_images {
        if !p.is_file() {
            return Err(
                Error::Invalid(format!("--ood-images: {} is not a file", p.display())).into(),
            );
        }
    }
    let model = load_model(&a)?.with_dtype(a.dtype);
    let (d, k) = (model.net.n_inputs(), model.net.n_outputs());
    let classes = if k == 1 { 2 } else { k };
    let methods: Vec<EvalMethod> = structures
        .iter()
        .flat_map(|&structure| {
            subsets
                .iter()
                .map(move |&subset| EvalMethod { structure, subset })
        })
        .collect();
    let y_train = mnist::read_labels(&train_labels)?;
    if matches!(link_word, LinkApprox::Bridge | LinkApprox::BridgeNorm) && k == 1 {
        return Err(
            Error::option("--link", format!("{link_word} needs two or more classes")).into(),
        );
    }
    calibration::check_methods(&model.net, y_train.len(), &methods, prior, ctx.memory)?;
    let mut inputs: Vec<&Path> = vec![
        &a.model,
        &train_images,
        &train_labels,
        &test_images,
        &test_labels,
    ];
    inputs.extend(a.ood_images.iter().map(PathBuf::as_path));
    let out = OutDir::open("--out", &a.out, &inputs)?;

    // The data.
    let read = |path: &Path| -> Result<Mat<f64>> {
        let x = mnist::read_images(path)?;
        if x.ncols() != d {
            return Err(Error::Invalid(format!(
                "{}: images of {} pixels; the network takes {d} inputs",
                path.display(),
                x.ncols()
            ))
            .into());
        }
        Ok(x)
    };
    // Images as many as their labels, each label one of the model's classes.
    let labelled = |images: &Path, labels: &Path, y: &[usize]| -> Result<Mat<f64>> {
        let x = read(images)?;
        if x.nrows() != y.len() {
            return Err(Error::Invalid(format!(
                "{}: {} images, but {} has {} labels",
                images.display(),
                x.nrows(),
                labels.display(),
                y.len()
            ))
            .into());
        }
        match y.iter().position(|&c| c >= classes) {
            Some(i) => Err(Error::Invalid(format!(
                "{}: label {i} is {}, but the model has {classes} classes",
                labels.display(),
                y[i]
            ))
            .into()),
            None => Ok(x),
        }
    };
    let x_train = labelled(&train_images, &train_labels, &y_train)?;
    let y = if k == 1 {
        Mat::from_fn(y_train.len(), 1, |i, _| y_train[i] as f64)
    } else {
        mnist::one_hot(&y_train, k)
    };
    let yt = mnist::read_labels(&test_labels)?;
    let xt = labelled(&test_images, &test_labels, &yt)?;
    let per_angle = if a.rotated {
        if xt.nrows() % angles.len() != 0 {
            return Err(Error::Invalid(format!(
                "--rotated: {} test images are not {} angles of equally many",
                xt.nrows(),
                angles.len()
            ))
            .into());
        }
        xt.nrows() / angles.len()
    } else {
        xt.nrows()
    };
    let n_test = a.limit.unwrap_or(per_angle).min(per_angle);
    let side = (d as f64).sqrt() as usize;
    if !a.rotated && angles.iter().any(|v| *v != 0.0) && side * side != d {
        return Err(Error::Invalid(format!(
            "--angles: the network's {d} inputs are not a square image to rotate"
        ))
        .into());
    }
    let mut tests = Vec::with_capacity(angles.len());
    for (i, &angle) in angles.iter().enumerate() {
        let start = if a.rotated { i * per_angle } else { 0 };
        let x = xt.as_ref().subrows(start, n_test);
        let x = if a.rotated || angle == 0.0 {
            x.to_owned()
        } else {
            calibration::rotate(x, side, angle)?
        };
        tests.push(Inputs {
            name: format!("rotated {angle}°"),
            x,
            labels: yt[start..start + n_test].to_vec(),
        });
    }
    let mut ood_sets = Vec::new();
    for p in &a.ood_images {
        ood_sets.push(Inputs {
            name: p
                .file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into()),
            x: read(p)?,
            labels: Vec::new(),
        });
    }

    // The methods.
    let bar = ctx.bar(
        (methods.len() * x_train.nrows()) as u64,
        "fitting the posteriors",
    );
    let fit = FitOptions {
        memory_limit: ctx.memory,
        progress: Some(&bar),
        rank,
        seed: a.seed,
    };
    let quiet = ctx.quiet;
    let reports = calibration::evaluate(
        &model,
        x_train.as_ref(),
        y.as_ref(),
        &methods,
        prior,
        predicting,
        &tests,
        &ood_sets,
        &fit,
        &mut |r| {
            if !quiet {
                let clean = &r.sets[0].metrics;
                eprintln!(
                    "{:<26} {}: accuracy {:.4}, NLL {:.4}, ECE {:.4}{}",
                    r.method,
                    tests[0].name,
                    clean.acc,
                    clean.nll,
                    clean.ece,
                    match &r.prior_precision {
                        Some(PriorPrecision::Scalar(d)) => format!(", δ = {d:.4}"),
                        Some(PriorPrecision::Layerwise(d)) => format!(
                            ", δ per layer = {}",
                            d.iter()
                                .map(|d| format!("{d:.4}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        None => String::new(),
                    }
                );
            }
        },
    )?;
    bar.finish();
    let mut warnings = Vec::new();
    for r in &reports {
        ctx.warn(
            &mut warnings,
            r.warnings
                .iter()
                .map(|w| w.on(&r.method))
                .collect::<Vec<_>>(),
        );
    }

    // The files.
    let mut files = Vec::new();
    let mut metric_rows = Vec::new();
    let mut bin_rows = Vec::new();
    let mut ood_rows = Vec::new();
    for r in &reports {
        for (s, angle) in r.sets.iter().zip(&angles) {
            let m = &s.metrics;
            metric_rows.push(vec![
                r.method.clone(),
                num(*angle),
                num(m.acc),
                num(m.nll),
                num(m.ece),
                num(m.brier),
                num(m.conf),
            ]);
            for b in &s.reliability {
                bin_rows.push(vec![
                    r.method.clone(),
                    num(*angle),
                    num(b.lo),
                    num(b.hi),
                    b.count.to_string(),
                    num(b.accuracy),
                    num(b.confidence),
                ]);
            }
        }
        for o in &r.ood {
            ood_rows.push(vec![
                r.method.clone(),
                o.name.clone(),
                o.against.clone(),
                num(o.ood.auroc),
                num(o.ood.fpr95),
            ]);
        }
    }
    let dir = out.path();
    let path = dir.join("metrics.csv");
    write_csv(
        &path,
        &["method", "angle", "acc", "nll", "ece", "brier", "conf"],
        &metric_rows,
    )?;
    files.push(path);
    let path = dir.join("reliability.csv");
    write_csv(
        &path,
        &[
            "method",
            "angle",
            "lo",
            "hi",
            "count",
            "accuracy",
            "confidence",
        ],
        &bin_rows,
    )?;
    files.push(path);
    if !ood_rows.is_empty() {
        let path = dir.join("ood.csv");
        write_csv(
            &path,
            &["method", "ood", "against", "auroc", "fpr95"],
            &ood_rows,
        )?;
        files.push(path);
    }
    let names: Vec<String> = reports.iter().map(|r| r.method.clone()).collect();
    files.extend(save(
        &ReliabilityFigure {
            title: format!("Reliability on {} ({} images)", tests[0].name, n_test),
            panels: reports
                .iter()
                .map(|r| {
                    (
                        r.method.clone(),
                        r.sets[0].reliability.clone(),
                        r.sets[0].metrics.ece,
                    )
                })
                .collect(),
        },
        &dir.join("reliability"),
    )?);
    if angles.len() > 1 {
        type Pick = fn(&calibration::Metrics) -> f64;
        let panels: [(&str, Pick); 4] = [
            ("NLL", |m| m.nll),
            ("ECE", |m| m.ece),
            ("accuracy", |m| m.acc),
            ("mean confidence", |m| m.conf),
        ];
        files.extend(save(
            &ShiftFigure {
                title: format!("Calibration under rotation ({} images per angle)", n_test),
                x_label: "rotation angle (degrees)".into(),
                x: angles.clone(),
                methods: names,
                panels: panels
                    .iter()
                    .map(|(name, pick)| {
                        (
                            name.to_string(),
                            reports
                                .iter()
                                .map(|r| r.sets.iter().map(|s| pick(&s.metrics)).collect())
                                .collect(),
                        )
                    })
                    .collect(),
            },
            &dir.join("shift"),
        )?);
    }
    let summary = Summary {
        model: a.model.display().to_string(),
        architecture: model.net.spec(),
        train_images: x_train.nrows(),
        link: link_word.to_string(),
        pred_type: a.pred_type.to_string(),
        temperature: a.temperature,
        dtype: a.dtype.to_string(),
        prior: a.prior.to_string(),
        prior_structure: a.prior_structure.to_string(),
        angles,
        test_images_per_angle: n_test,
        ood_sets: ood_sets.iter().map(|o| o.name.clone()).collect(),
        methods: reports,
        warnings,
    };
    let path = dir.join("evaluate.json");
    write_json(&path, &summary)?;
    files.push(path);
    out.commit(&files)
}
