//! Seeded random numbers: ChaCha8 streams, so the same seed gives the same numbers everywhere.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator used throughout the crate.
pub type Rng = ChaCha8Rng;

/// A generator from a seed.
pub fn seeded(seed: u64) -> Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform draw in `[0, 1)`.
pub fn uniform(rng: &mut Rng) -> f64 {
    rng.random::<f64>()
}

/// Standard normal draw (Box–Muller).
pub fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - uniform(rng); // (0, 1]
    let u2 = uniform(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A vector of `n` standard normal draws (Marsaglia's polar method: a point uniform in the
/// unit disc gives two independent normals, without trigonometric functions).
pub fn normals(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (a, b) = (2.0 * uniform(rng) - 1.0, 2.0 * uniform(rng) - 1.0);
        let s = a * a + b * b;
        if s >= 1.0 || s == 0.0 {
            continue;
        }
        let f = (-2.0 * s.ln() / s).sqrt();
        out.push(a * f);
        out.push(b * f);
    }
    out.truncate(n);
    out
}

/// Index drawn from the discrete distribution `probs` (summing to 1).
pub fn categorical(rng: &mut Rng, probs: &[f64]) -> usize {
    let u = uniform(rng);
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    probs.len() - 1
}

/// A random permutation of `0..n` (Fisher–Yates).
pub fn permutation(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        idx.swap(i, j);
    }
    idx
}
