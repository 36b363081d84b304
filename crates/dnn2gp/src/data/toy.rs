//! The toy regression data of the paper: `y = sin x + ε`, x from three clusters with
//! probabilities (0.45, 0.1, 0.45) on [−3.5, −1.5], [−1, 1], [1.5, 3.5] with noise standard
//! deviations (0.1, 1, 0.1); inputs `[x, 1]`.

use faer::Mat;

use super::{Dataset, Split};
use crate::rng::{categorical, normal, seeded, uniform, Rng};

/// Settings of the toy generator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ToyConfig {
    /// Training points per set.
    pub n_train: usize,
    /// Test points per set.
    pub n_test: usize,
    /// Cluster probabilities.
    pub probs: [f64; 3],
    /// Cluster noise standard deviations.
    pub noise: [f64; 3],
    /// Seed.
    pub seed: u64,
}

impl Default for ToyConfig {
    fn default() -> Self {
        ToyConfig {
            n_train: 100,
            n_test: 2000,
            probs: [0.45, 0.1, 0.45],
            noise: [0.1, 1.0, 0.1],
            seed: 7,
        }
    }
}

/// Cluster intervals `[lo, lo + 2]`.
const CLUSTER_LO: [f64; 3] = [-3.5, -1.0, 1.5];

/// Inputs `[x, 1]` for the given x.
pub fn features(xs: &[f64]) -> Mat<f64> {
    Mat::from_fn(xs.len(), 2, |i, j| if j == 0 { xs[i] } else { 1.0 })
}

fn sample(cfg: &ToyConfig, n: usize, rng: &mut Rng) -> Dataset {
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let c = categorical(rng, &cfg.probs);
        let x = CLUSTER_LO[c] + 2.0 * uniform(rng);
        xs.push(x);
        ys.push(x.sin() + cfg.noise[c] * normal(rng));
    }
    Dataset {
        x: features(&xs),
        y: super::column(&ys),
    }
}

/// `n_sets` independent train/test sets from one seed.
pub fn toy_sets(cfg: &ToyConfig, n_sets: usize) -> Vec<Split> {
    let mut rng = seeded(cfg.seed);
    (0..n_sets)
        .map(|s| {
            let train = sample(cfg, cfg.n_train, &mut rng);
            let test = sample(cfg, cfg.n_test, &mut rng);
            Split {
                name: format!("toy-{s}"),
                train,
                test,
                y_scale: 1.0,
            }
        })
        .collect()
}
