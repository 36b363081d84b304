//! The 1-D regression comparison of the paper: DNN-Laplace (Monte Carlo through the network),
//! DNN2GP-Laplace (network mean, GP variance) and a plain RBF GP, on a grid.

use faer::MatRef;

use crate::error::Result;
use crate::gp::rbf::RbfGp;
use crate::gp::{GpPrediction, RunningMoments};
use crate::likelihood::Likelihood;
use crate::nn::Network;
use crate::rng::{seeded, Rng};

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
