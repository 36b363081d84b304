//! What the image commands (`reproduce mnist`, `reproduce binary-mnist`) share: the images,
//! the network, training with the test accuracy per epoch, and the GP views.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use faer::{Mat, MatRef};
use serde::Serialize;

use crate::cli::args::{ImageArgs, ImageData, ImageSplit};
use crate::cli::ctx::{check_parameter_memory, positive, Ctx};
use crate::cli::outdir::OutDir;
use crate::report::plot::{save, HeatPanel, HeatmapGrid};
use dnn2gp::data::mnist::{self, class_subset, Mnist};
use dnn2gp::gp::classification::accuracy;
use dnn2gp::io::{num, write_csv, write_npy, write_npy_mat};

use dnn2gp::likelihood::Likelihood;
use dnn2gp::linalg::{check_memory, mat_bytes};
use dnn2gp::nn::weights::{self, StoredDtype};
use dnn2gp::nn::{predict, Graph, Network, Sequential};

use dnn2gp::posterior::{Laplace, Posterior};
use dnn2gp::train::gather_rows;
use dnn2gp::Error;

/// Pixels per side of the images of `--data`.
pub(crate) fn image_side(data: ImageData) -> usize {
    match data {
        ImageData::Mnist => 28,
        ImageData::Digits => 8,
    }
}

/// Loads the images of `--data` and checks that each has as many pixels as `net` has inputs
/// (a network is never run on cropped or padded rows).
pub(crate) fn load_images(a: &ImageArgs, net: &Graph) -> Result<Mnist> {
    let data = read_images(a)?;
    for (split, x) in [("training", &data.train_x), ("test", &data.test_x)] {
        if x.ncols() != net.n_inputs() {
            return Err(Error::Invalid(format!(
                "the {split} images of --data {} in {} have {} pixels each; the architecture takes \
                 {} inputs (set --arch for images of this size)",
                a.data,
                a.data_dir.display(),
                x.ncols(),
                net.n_inputs()
            ))
            .into());
        }
    }
    Ok(data)
}

pub(crate) fn read_images(a: &ImageArgs) -> Result<Mnist> {
    let mut data = if a.data == ImageData::Digits {
        let file = a.data_dir.join("digits/digits.csv.gz");
        mnist::load_digits(&file, 1500).map_err(|e| {
            anyhow::Error::from(e).context(format!(
                "could not read the digits from {} (download them with `dnn2gp data fetch \
                 digits --data-dir {}`)",
                file.display(),
                a.data_dir.display()
            ))
        })?
    } else {
        let dir = a.data_dir.join("mnist");
        mnist::load(&dir).map_err(|e| {
            anyhow::Error::from(e).context(format!(
                "could not read MNIST from {} (download it with `dnn2gp data fetch mnist \
                 --data-dir {}`)",
                dir.display(),
                a.data_dir.display()
            ))
        })?
    };
    if let Some(n) = a.train_limit {
        let n = n.min(data.train_y.len());
        data.train_x = data.train_x.as_ref().subrows(0, n).to_owned();
        data.train_y.truncate(n);
    }
    Ok(data)
}

/// The architecture: `--arch`, or LeNet-5 (28×28) / a small CNN (8×8) with `k` outputs.
pub(crate) fn image_architecture(ctx: &Ctx, a: &ImageArgs, side: usize, k: usize) -> Result<Graph> {
    let net: Graph = match &a.arch {
        Some(spec) => Sequential::parse(spec)?,
        None if side == 28 => Sequential::lenet5(1, 28, k)?,
        None => Sequential::parse(&format!(
            "1x{side}x{side}:conv6k3,relu,pool,flatten,dense32,relu,dense{k}"
        ))?,
    }
    .into();
    check_parameter_memory(ctx, net.n_params())?;
    if net.n_inputs() != side * side || net.n_outputs() != k {
        return Err(Error::Invalid(format!(
            "architecture has {} inputs and {} outputs; the images need {} inputs and {k} outputs",
            net.n_inputs(),
            net.n_outputs(),
            side * side
        ))
        .into());
    }
    Ok(net)
}

/// One epoch of a training run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EpochRecord {
    pub(crate) epoch: usize,
    pub(crate) loss: f64,
    pub(crate) test_accuracy: f64,
    pub(crate) seconds: f64,
}

/// Trains with `train_loop` (Adam or VOGN, given a per-epoch hook), printing and recording test
/// accuracy after each epoch.
pub(crate) fn with_test_accuracy(
    ctx: &Ctx,
    net: &Graph,
    test_x: MatRef<'_, f64>,
    test_labels: &[usize],
    train_loop: impl FnOnce(&mut dnn2gp::train::EpochHook<'_>) -> dnn2gp::Result<Vec<f64>>,
) -> Result<(Vec<f64>, Vec<EpochRecord>)> {
    let t0 = Instant::now();
    let mut records = Vec::new();
    let w = train_loop(&mut |epoch, w, loss| {
        let acc = accuracy(predict(net, w, test_x).as_ref(), test_labels);
        if !ctx.quiet {
            eprintln!(
                "epoch {:>3}: loss {:.4e}, test accuracy {:.2}% ({:.0} s)",
                epoch + 1,
                loss,
                100.0 * acc,
                t0.elapsed().as_secs_f64()
            );
        }
        records.push(EpochRecord {
            epoch: epoch + 1,
            loss,
            test_accuracy: acc,
            seconds: t0.elapsed().as_secs_f64(),
        });
        Ok(())
    })?;
    Ok((w, records))
}

/// Writes the epochs' records as `epoch,loss,test_accuracy,seconds`.
fn write_records(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.epoch.to_string(),
                num(r.loss),
                num(r.test_accuracy),
                num(r.seconds),
            ]
        })
        .collect();
    Ok(write_csv(
        path,
        &["epoch", "loss", "test_accuracy", "seconds"],
        &rows,
    )?)
}

/// Loads `--model` weights for `net`.
pub(crate) fn load_weights(path: &Path, net: &Graph) -> Result<Vec<f64>> {
    Ok(weights::load(path, &net.param_layout())?)
}

/// What the GP views found, for the summary.
#[derive(Debug, Serialize)]
pub(crate) struct ViewSummary {
    pub(crate) images: usize,
    pub(crate) split: String,
    pub(crate) outputs: usize,
    /// Fraction of the images where arg-max of `J(x)w*` equals the network's prediction.
    pub(crate) gp_mean_agreement: f64,
    /// The network's accuracy on the shown images.
    pub(crate) accuracy: f64,
    pub(crate) mean_var_f: f64,
    pub(crate) mean_var_y: f64,
    pub(crate) kernel_seconds: f64,
}

/// Refuses GP views whose Jacobians (NK×P) and kernels (NK×NK, twice with its views) would not
/// fit in memory; called before training with the largest possible N, and again with the
/// actual one.
pub(crate) fn check_views_memory(ctx: &Ctx, n: usize, net: &Graph) -> Result<()> {
    let (k, p) = (net.n_outputs(), net.n_params());
    Ok(check_memory(
        &format!("the GP views of {n} images ({n}·{k} Jacobian rows of {p} parameters and the {}×{} kernel)", n * k, n * k),
        mat_bytes(n * k, p) + 2 * mat_bytes(n * k, n * k),
        ctx.memory,
        "show fewer images (--per-class)",
    )?)
}

/// The GP views on the class-sorted subset: Jacobians, the prior kernel `δ⁻¹JJᵀ` in its three
/// layouts, the predictive from the posterior variances `s = diag(Σ)`, `.npy` files and figures.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gp_views(
    ctx: &Ctx,
    net: &Graph,
    lik: &dyn Likelihood,
    w: &[f64],
    variances: &[f64],
    delta: f64,
    x: MatRef<'_, f64>,
    labels: &[usize],
    split: &str,
    title: &str,
    class_names: &[String],
    out: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<ViewSummary> {
    let t0 = Instant::now();
    let (n, k) = (x.nrows(), net.n_outputs());
    check_views_memory(ctx, n, net)?;
    let v = dnn2gp::experiments::images::gp_views(net, lik, w, variances, delta, x);
    let kernel_seconds = t0.elapsed().as_secs_f64();
    let (pred, f, diag) = (&v.predictive, &v.logits, &v.kernel_diag);
    for (name, m) in [
        ("kernel_full", v.kernel_full.as_ref()),
        ("kernel_diag", diag.as_ref()),
        ("kernel_sum", v.kernel_sum.as_ref()),
        ("gp_mean", pred.gp_mean.as_ref()),
        ("logits", f.as_ref()),
        ("p", pred.p.as_ref()),
        ("p_probit", pred.p_probit.as_ref()),
        ("var_f", pred.var_f.as_ref()),
        ("var_y", pred.var_y.as_ref()),
    ] {
        let path = out.join(format!("{name}.npy"));
        write_npy_mat(&path, m)?;
        files.push(path);
    }
    let path = out.join("labels.npy");
    let lab: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
    write_npy(&path, &[n], &lab)?;
    files.push(path);
    let classes = Some(labels.to_vec());
    let kernel_title = if k > 1 {
        "kernel Σₖ δ⁻¹ Jₖ(x) Jₖ(x')ᵀ"
    } else {
        "kernel δ⁻¹ J(x) J(x')ᵀ"
    };
    // The kernel as a correlation, κ(x, x')/√(κ(x, x)κ(x', x')), shows the class blocks
    // without the scale of the largest self-similarities.
    let corr = Mat::from_fn(n, n, |i, j| {
        diag[(i, j)] / (diag[(i, i)] * diag[(j, j)]).sqrt().max(f64::MIN_POSITIVE)
    });
    let fig = HeatmapGrid {
        title: format!("{title}: GP posterior mean and kernel, {n} images sorted by class"),
        panels: vec![
            HeatPanel::linear("GP posterior mean J(x)w*", pred.gp_mean.clone())
                .axes("image x (sorted by class)", "output k"),
            HeatPanel::linear(kernel_title, diag.clone()).axes("image x", "image x'"),
            HeatPanel::linear("kernel as a correlation", corr).axes("image x", "image x'"),
        ],
        diverging: true,
        shared_scale: false,
        row_classes: classes.clone(),
        class_names: class_names.to_vec(),
    };
    files.extend(save(&fig, &out.join("gp"))?);
    // The variances span orders of magnitude: on a log scale, each panel its own range.
    let fig = HeatmapGrid {
        title: format!("{title}: data-space predictive (section 4), {n} images"),
        panels: vec![
            HeatPanel::linear("p = link(f*)", pred.p.clone())
                .axes("image x (sorted by class)", "class k"),
            HeatPanel::log("var_f = diag(Λ J Σ Jᵀ Λ), log scale", pred.var_f.clone())
                .axes("image x (sorted by class)", "class k"),
            HeatPanel::log("var_y = var_f + diag(Λ), log scale", pred.var_y.clone())
                .axes("image x (sorted by class)", "class k"),
        ],
        diverging: false,
        shared_scale: false,
        row_classes: classes,
        class_names: class_names.to_vec(),
    };
    files.extend(save(&fig, &out.join("predictive"))?);
    let mean = |m: &Mat<f64>| {
        m.col_iter()
            .flat_map(|c| c.iter().copied().collect::<Vec<_>>())
            .sum::<f64>()
            / (m.nrows() * m.ncols()).max(1) as f64
    };
    Ok(ViewSummary {
        images: n,
        split: split.into(),
        outputs: k,
        gp_mean_agreement: v.gp_mean_agreement,
        accuracy: accuracy(f.as_ref(), labels),
        mean_var_f: mean(&pred.var_f),
        mean_var_y: mean(&pred.var_y),
        kernel_seconds,
    })
}

/// The shown images: the first `per_class` of each class (sorted by class) of a split.
pub(crate) fn shown_images(
    a: &ImageArgs,
    x_train: MatRef<'_, f64>,
    y_train: &[usize],
    x_test: MatRef<'_, f64>,
    y_test: &[usize],
    classes: usize,
) -> Result<(Mat<f64>, Vec<usize>)> {
    // `--images` is train or test (checked by `check_image_args`).
    let (x, y) = if a.images == ImageSplit::Test {
        (x_test, y_test)
    } else {
        (x_train, y_train)
    };
    let idx = match a.first {
        Some(n) => {
            let mut idx: Vec<usize> = (0..n.min(y.len())).collect();
            idx.sort_by_key(|&i| y[i]);
            idx
        }
        None => class_subset(y, a.per_class, classes),
    };
    Ok((gather_rows(x, &idx), idx.iter().map(|&i| y[i]).collect()))
}

/// Takes `--out`, after checking it holds none of the inputs.
pub(crate) fn open_out(out: &Path, a: &ImageArgs) -> Result<OutDir> {
    let mut inputs = vec![a.data_dir.as_path()];
    inputs.extend(a.model.as_deref());
    Ok(OutDir::open("--out", out, &inputs)?)
}

/// Saves a run's model and posterior: `model.safetensors` (the weights under PyTorch's names,
/// f64, with the architecture, likelihood and δ in its metadata), `posterior.safetensors`
/// (which `predict` reads), `posterior_variance.npy` (the weights' marginal variances) and
/// `history.csv` (one row per epoch).
pub(crate) fn save_run(
    out: &Path,
    posterior: &Laplace,
    variances: &[f64],
    records: &[EpochRecord],
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let path = out.join("model.safetensors");
    posterior.model().save(&path, StoredDtype::F64)?;
    files.push(path);
    let path = out.join("posterior.safetensors");
    posterior.save(&path)?;
    files.push(path);
    let path = out.join("posterior_variance.npy");
    write_npy(&path, &[variances.len()], variances)?;
    files.push(path);
    let path = out.join("history.csv");
    write_records(&path, records)?;
    files.push(path);
    Ok(())
}

/// Checks the options shared by the image experiments before any work.
pub(crate) fn check_image_args(a: &ImageArgs) -> Result<()> {
    positive("--per-class", a.per_class)?;
    if let Some(n) = a.first {
        positive("--first", n)?;
    }
    positive("--batch-size", a.batch_size)?;
    if let Some(n) = a.train_limit {
        positive("--train-limit", n)?;
    }
    Ok(())
}
