//! The 1-D regression comparison of the paper: DNN-Laplace (Monte Carlo through the network),
//! DNN2GP-Laplace (network mean, GP variance) and a plain RBF GP, on a grid.

use faer::{Mat, MatRef};

use crate::curvature::Linearization;
use crate::data::Split;
use crate::error::{Result, Warning};
use crate::gp::rbf::RbfGp;
use crate::gp::{predict_at, Dnn2Gp, Space};
use crate::gp::{GpPrediction, RunningMoments};
use crate::likelihood::classification::probit;
use crate::likelihood::Likelihood;
use crate::linalg::{check_memory, mat_bytes};
use crate::nn::Network;
use crate::posterior::{HessianStructure, LaplaceGgn, Posterior};
use crate::rng::{seeded, Rng};
use crate::train::Stationarity;

/// Predictive columns on a grid; variances are for y (f plus observation noise).
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Grid x.
    pub x: Vec<f64>,
    /// Network output `f_{w*}(x)`.
    pub net_mean: Vec<f64>,
    /// GP mean `J(x) m`.
    pub gp_mean: Vec<f64>,
    /// GP variance of f.
    pub gp_var_f: Vec<f64>,
    /// Observation noise variance.
    pub noise_var: Vec<f64>,
    /// Monte Carlo mean of `f_w(x)`, `w ~ N(w*, Σ)`.
    pub mc_mean: Vec<f64>,
    /// Monte Carlo variance of `f_w(x)`.
    pub mc_var_f: Vec<f64>,
    /// RBF GP mean.
    pub rbf_mean: Vec<f64>,
    /// RBF GP variance of f.
    pub rbf_var_f: Vec<f64>,
    /// The fitted RBF GP's hyperparameters: (ℓ, s², log marglik).
    pub rbf_hyper: (f64, f64, f64),
}

/// Monte Carlo predictive mean and variance of `f_w(x)` (first output) over `n_samples` draws
/// `w = draw(rng)`.
pub fn mc_predictive(
    net: &dyn Network,
    draw: &mut dyn FnMut(&mut Rng) -> Vec<f64>,
    x: MatRef<'_, f64>,
    n_samples: usize,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let mut rng = seeded(seed);
    let mut moments = RunningMoments::default();
    for _ in 0..n_samples {
        let f = net.forward(&draw(&mut rng), x);
        moments.push(&f.col(0).iter().copied().collect::<Vec<f64>>());
    }
    (moments.mean().to_vec(), moments.variance())
}

/// Assembles the comparison on `grid` (network inputs, plot coordinates `xs`): the network mean,
/// the DNN2GP predictive, the Monte Carlo predictive, and an RBF GP fitted to the training data
/// with the same noise.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    net_mean: Vec<f64>,
    gp: GpPrediction,
    mc: (Vec<f64>, Vec<f64>),
    lik: &dyn Likelihood,
    train_x: MatRef<'_, f64>,
    train_y: &[f64],
    xs: &[f64],
    grid: MatRef<'_, f64>,
) -> Result<Comparison> {
    let noise_var: Vec<f64> = net_mean
        .iter()
        .map(|m| lik.observation_variance(&[*m])[0])
        .collect();
    let rbf = RbfGp::fit(train_x, train_y, noise_var[0])?;
    let (rbf_mean, rbf_var_f) = rbf.predict(grid);
    Ok(Comparison {
        x: xs.to_vec(),
        net_mean,
        gp_mean: gp.mean,
        gp_var_f: gp.var,
        noise_var,
        mc_mean: mc.0,
        mc_var_f: mc.1,
        rbf_mean,
        rbf_var_f,
        rbf_hyper: (rbf.lengthscale, rbf.variance, rbf.log_marglik),
    })
}

impl Comparison {
    /// Header and rows of the predictive table.
    pub fn table(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let header = vec![
            "x",
            "net_mean",
            "gp_mean",
            "gp_var_f",
            "noise_var",
            "mc_mean",
            "mc_var_f",
            "rbf_mean",
            "rbf_var_f",
        ];
        let rows = (0..self.x.len())
            .map(|i| {
                [
                    self.x[i],
                    self.net_mean[i],
                    self.gp_mean[i],
                    self.gp_var_f[i],
                    self.noise_var[i],
                    self.mc_mean[i],
                    self.mc_var_f[i],
                    self.rbf_mean[i],
                    self.rbf_var_f[i],
                ]
                .iter()
                .map(|v| crate::io::num(*v))
                .collect()
            })
            .collect();
        (header, rows)
    }
}

/// What the DNN2GP GP of a Gaussian or Bernoulli model gives on its data (the paper's
/// section 3 and the `gp` command): evidences, stationarity, the test predictive and its
/// scores, and the 1-D comparison on a grid.
#[derive(Debug, Clone)]
pub struct GpReport {
    /// The NTK `J(X)J(X)ᵀ` of the training inputs (the kernel is this over δ).
    pub ntk: Mat<f64>,
    /// Where the GP was computed.
    pub space: Space,
    /// The GP log marginal likelihood.
    pub log_marglik: f64,
    /// The Laplace evidence (of the structured or last-layer posterior when one is given).
    pub laplace_log_evidence: f64,
    /// `‖∇L(w)‖` and its relative size.
    pub stationarity: Stationarity,
    /// `½ gᵀA⁻¹g`, the gap between the two evidences.
    pub stationarity_gap: f64,
    /// Jitter the GP added.
    pub jitter: f64,
    /// Numerical warnings, each once.
    pub warnings: Vec<Warning>,
    /// The test predictive, one entry per test example and output (row `i·K + k`).
    pub test: TestPredictive,
    /// The comparison on the plotting grid, with the network's mean there.
    pub comparison: Option<Comparison>,
}

/// A predictive at test inputs with its scores.
#[derive(Debug, Clone)]
pub struct TestPredictive {
    /// Targets y.
    pub y: Vec<f64>,
    /// The network's outputs `f_{w*}(x)`.
    pub net_mean: Vec<f64>,
    /// The GP mean.
    pub gp_mean: Vec<f64>,
    /// The functional variance.
    pub var_f: Vec<f64>,
    /// `var_f` plus the observation noise.
    pub var_y: Vec<f64>,
    /// Gaussian: mean squared error of f; Bernoulli: the Brier score of the probit
    /// probabilities (in the data's standardised units).
    pub mse: f64,
    /// Gaussian: mean −log predictive density of y; Bernoulli: mean −log probit probability of
    /// the label.
    pub nll: f64,
    /// Bernoulli: the share of labels the probit probability gets right.
    pub accuracy: Option<f64>,
}

/// The hyperparameters and options of [`gp_report`].
#[derive(Debug, Clone, Copy)]
pub struct GpReportOptions {
    /// Prior precision δ.
    pub delta: f64,
    /// The posterior the Monte Carlo predictive samples from.
    pub mc_hessian: HessianStructure,
    /// Where to compute the GP.
    pub space: Space,
    /// Monte Carlo draws of the comparison.
    pub samples: usize,
    /// Bytes that may be allocated at once.
    pub memory_limit: u128,
}

/// Linearises `net` at `w` on the split's training data, fits the GP, predicts at the test
/// inputs and, with `grid` (plot coordinates and network inputs), compares the Monte Carlo,
/// DNN2GP and RBF predictives. With a `posterior` (another structure than the full GGN, or
/// the last layer), its Laplace evidence and functional variance are reported in place of the
/// GP's. Returns the linearisation too, for δ paths.
pub fn gp_report(
    net: &dyn Network,
    lik: &dyn Likelihood,
    split: &Split,
    w: &[f64],
    grid: Option<(&[f64], MatRef<'_, f64>)>,
    o: &GpReportOptions,
    posterior: Option<&dyn Posterior>,
) -> Result<(GpReport, Linearization)> {
    let (delta, memory) = (o.delta, o.memory_limit);
    let (n, k, p) = (split.train.len(), net.n_outputs(), net.n_params());
    let x = split.train.x.as_ref();
    let lin = Linearization::checked(net, lik, x, split.train.y.as_ref(), w, memory)?;
    check_memory(
        "the kernel (NK×NK)",
        3 * mat_bytes(n * k, n * k),
        memory,
        "use a subset of the data",
    )?;
    // The NTK from per-layer factors: the kernel, and the function-space GP without a second
    // product of J.
    let ntk = net.ntk(w, x, x);
    let gp = if o.space.resolve(p, n * k) == Space::Function {
        Dnn2Gp::from_ntk(&lin, delta, ntk.clone(), memory)?
    } else {
        Dnn2Gp::new(&lin, delta, o.space, memory)?
    };
    let log_marglik = gp.log_marginal_likelihood()?;
    let laplace_log_evidence = match posterior {
        Some(post) => post.log_marginal_likelihood(None, None)?,
        None => gp.laplace_log_evidence()?,
    };
    let stationarity = Stationarity::new(&lin.loss_gradient(), w, delta);
    let stationarity_gap = gp.stationarity_gap();
    let mut warnings = Vec::new();
    Warning::add_new(&mut warnings, gp.warnings());
    Warning::add_new(&mut warnings, stationarity.warning(Some(stationarity_gap)));
    let predict = |xs| predict_at(&gp, posterior, net, w, x, xs, memory);
    let pred = predict(split.test.x.as_ref())?;
    Warning::add_new(
        &mut warnings,
        pred.clamped.as_ref().map(|w| w.on("the test inputs")),
    );
    let test = score(net, lik, split, w, pred);
    let comparison = match grid {
        Some((xs, grid)) => {
            let mc_post = LaplaceGgn::fit(&lin, delta, o.mc_hessian, memory)?;
            Warning::add_new(&mut warnings, mc_post.warnings());
            let gp_pred = predict(grid)?;
            Warning::add_new(
                &mut warnings,
                gp_pred.clamped.as_ref().map(|w| w.on("the plotting grid")),
            );
            let net_mean: Vec<f64> = net.forward(w, grid).col(0).iter().copied().collect();
            let mc = mc_predictive(
                net,
                &mut |rng| mc_post.sample(1, rng).remove(0),
                grid,
                o.samples,
                0,
            );
            Some(compare(
                net_mean,
                gp_pred,
                mc,
                lik,
                x,
                &split.train.y_vec(),
                xs,
                grid,
            )?)
        }
        None => None,
    };
    let report = GpReport {
        ntk,
        space: gp.space,
        log_marglik,
        laplace_log_evidence,
        stationarity,
        stationarity_gap,
        jitter: gp.jitter(),
        warnings,
        test,
        comparison,
    };
    drop(gp);
    Ok((report, lin))
}

/// The scores of a Gaussian predictive at targets `y` (one value per example and output):
/// the mean squared error of the means, and the mean −log N(y | mean, var_y), both over the
/// values.
pub fn gaussian_scores(y: &[f64], mean: &[f64], var_y: &[f64]) -> (f64, f64) {
    let (mut se, mut nll) = (0.0, 0.0);
    for ((y, m), v) in y.iter().zip(mean).zip(var_y) {
        se += (m - y).powi(2);
        nll += 0.5 * ((m - y).powi(2) / v + (std::f64::consts::TAU * v).ln());
    }
    let n = y.len().max(1) as f64;
    (se / n, nll / n)
}

/// The test predictive and its scores. Gaussian: squared error of f and the Gaussian
/// predictive density of y. Bernoulli: the probit probability p of y = 1, its squared error
/// (the Brier score) and −log p(y).
fn score(
    net: &dyn Network,
    lik: &dyn Likelihood,
    split: &Split,
    w: &[f64],
    pred: GpPrediction,
) -> TestPredictive {
    let k = net.n_outputs();
    let f = net.forward(w, split.test.x.as_ref());
    let gaussian = lik.name() == "gaussian";
    let (mut se, mut nll, mut hits) = (0.0, 0.0, 0usize);
    let mut t = TestPredictive {
        y: Vec::new(),
        net_mean: Vec::new(),
        gp_mean: pred.mean,
        var_f: pred.var,
        var_y: Vec::new(),
        mse: 0.0,
        nll: 0.0,
        accuracy: None,
    };
    for i in 0..split.test.len() {
        for j in 0..k {
            let (m, y, fm) = (i * k + j, split.test.y[(i, j)], f[(i, j)]);
            t.var_y
                .push(t.var_f[m] + lik.observation_variance(&[fm])[0]);
            if !gaussian {
                let p = probit(&[fm], &[t.var_f[m]])[0];
                se += (p - y).powi(2);
                nll -= if y == 1.0 { p.ln() } else { (-p).ln_1p() };
                hits += usize::from((p > 0.5) == (y == 1.0));
            }
            t.y.push(y);
            t.net_mean.push(fm);
        }
    }
    let mk = (split.test.len() * k) as f64;
    let (mse, nll) = if gaussian {
        gaussian_scores(&t.y, &t.net_mean, &t.var_y)
    } else {
        (se / mk, nll / mk)
    };
    t.mse = mse * split.y_scale * split.y_scale;
    t.nll = nll;
    t.accuracy = (!gaussian).then(|| hits as f64 / mk);
    t
}
