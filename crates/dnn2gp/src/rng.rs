//! Seeded random numbers: ChaCha8 streams, so the same seed gives the same numbers everywhere.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::math::{exp, ln};

/// The generator used throughout the crate.
pub type Rng = ChaCha8Rng;

/// A generator from a seed.
pub fn seeded(seed: u64) -> Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A seed for an independent stream, drawn from `rng`.
pub fn child_seed(rng: &mut Rng) -> u64 {
    rng.random::<u64>()
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

/// Layers of the normal ziggurat.
const ZIG_LAYERS: usize = 128;
/// Where the tail starts, and the area of each layer (Doornik 2005, `ZIGNOR`).
const ZIG_R: f64 = 3.442_619_855_899;
const ZIG_V: f64 = 9.912_563_035_262_17e-3;

/// The ziggurat's layer edges `x_i` (`x_0 = V/f(R)`, `x_1 = R`, …, `x_128 = 0`), the ratios
/// `x_{i+1}/x_i` and the heights `f(x_i)`, for `f(x) = e^{−x²/2}`.
struct Ziggurat {
    x: [f64; ZIG_LAYERS + 1],
    ratio: [f64; ZIG_LAYERS],
    f: [f64; ZIG_LAYERS + 1],
}

fn ziggurat() -> &'static Ziggurat {
    static TABLE: std::sync::OnceLock<Ziggurat> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x = [0.0; ZIG_LAYERS + 1];
        let mut f = (-0.5 * ZIG_R * ZIG_R).exp();
        x[0] = ZIG_V / f;
        x[1] = ZIG_R;
        for i in 2..ZIG_LAYERS {
            x[i] = (-2.0 * (ZIG_V / x[i - 1] + f).ln()).sqrt();
            f = (-0.5 * x[i] * x[i]).exp();
        }
        let ratio = std::array::from_fn(|i| x[i + 1] / x[i]);
        let f = x.map(|x| (-0.5 * x * x).exp());
        Ziggurat { x, ratio, f }
    })
}

/// One standard normal draw by the ziggurat method (Marsaglia & Tsang 2000, in Doornik's
/// form) from the 64-bit word `bits`: its low 7 bits give the layer and its top 53 bits a
/// point `u ∈ (−1, 1)`; `u x_i` is returned when it falls inside the layer's rectangle (98.8%
/// of draws), otherwise [`ziggurat_edge`] finishes the draw with further words of `rng`.
#[inline]
fn ziggurat_normal(bits: u64, rng: &mut Rng, z: &Ziggurat) -> f64 {
    let i = (bits & (ZIG_LAYERS as u64 - 1)) as usize;
    let u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
    if u.abs() < z.ratio[i] {
        u * z.x[i]
    } else {
        ziggurat_edge(i, u, rng, z)
    }
}

/// The rest of a ziggurat draw whose point `u` in layer `i` fell outside the rectangle: the
/// wedge under `f` is accepted exactly (one `exp`), or the tail `|z| > R` sampled (layer 0);
/// a rejected point starts over with a new word.
#[cold]
fn ziggurat_edge(mut i: usize, mut u: f64, rng: &mut Rng, z: &Ziggurat) -> f64 {
    loop {
        if i == 0 {
            // The tail beyond R: x = −ln(U₁)/R accepted when −2 ln U₂ > x².
            loop {
                let x = -ln(1.0 - uniform(rng)) / ZIG_R;
                let y = -ln(1.0 - uniform(rng));
                if 2.0 * y > x * x {
                    return (ZIG_R + x).copysign(u);
                }
            }
        }
        // A height uniform between the layer's bottom f(x_i) and top f(x_{i+1}), under f(x)?
        let x = u * z.x[i];
        if z.f[i] + uniform(rng) * (z.f[i + 1] - z.f[i]) < exp(-0.5 * x * x) {
            return x;
        }
        let bits = rng.random::<u64>();
        i = (bits & (ZIG_LAYERS as u64 - 1)) as usize;
        u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
        if u.abs() < z.ratio[i] {
            return u * z.x[i];
        }
    }
}

/// Normals per stream: each chunk of this many draws has its own seed.
pub const NORMAL_CHUNK: usize = 2048;

/// A vector of `n` standard normal draws (ziggurat).
pub fn normals(rng: &mut Rng, n: usize) -> Vec<f64> {
    normals_then(rng, n, |_, _| {})
}

/// `n` standard normal draws (ziggurat), each chunk of them then transformed in place by
/// `then(offset, chunk)` while it is in cache. Chunks of [`NORMAL_CHUNK`] draws, each from its
/// own stream seeded from `rng`, are drawn in parallel, so that the numbers do not depend on
/// the thread count; a chunk's first words come from its stream in one block.
pub fn normals_then(rng: &mut Rng, n: usize, then: impl Fn(usize, &mut [f64]) + Sync) -> Vec<f64> {
    use rayon::prelude::*;
    let seeds: Vec<u64> = (0..n.div_ceil(NORMAL_CHUNK))
        .map(|_| child_seed(rng))
        .collect();
    let z = ziggurat();
    let fill = |(c, (chunk, seed)): (usize, (&mut [f64], u64))| {
        let mut r = seeded(seed);
        let mut bits = [0u64; NORMAL_CHUNK];
        let bits = &mut bits[..chunk.len()];
        r.fill(bits);
        for (o, &b) in chunk.iter_mut().zip(bits.iter()) {
            *o = ziggurat_normal(b, &mut r, z);
        }
        then(c * NORMAL_CHUNK, chunk);
    };
    let mut out = vec![0.0; n];
    // One chunk stays on this thread: a parallel dispatch would cost more than it draws.
    if seeds.len() > 1 {
        out.par_chunks_mut(NORMAL_CHUNK)
            .zip(seeds)
            .enumerate()
            .for_each(fill);
    } else {
        out.chunks_mut(NORMAL_CHUNK)
            .zip(seeds)
            .enumerate()
            .for_each(fill);
    }
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

#[cfg(test)]
mod tests {
    use super::{normals, seeded};

    /// Moments and the CDF at a few points of a million draws, against N(0, 1).
    #[test]
    fn ziggurat_draws_are_standard_normal() {
        let n = 1_000_000;
        let z = normals(&mut seeded(7), n);
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!(
            mean.abs() < 0.005 && (var - 1.0).abs() < 0.005,
            "{mean} {var}"
        );
        assert!((kurt - 3.0).abs() < 0.03, "kurtosis {kurt}");
        // Φ(t) for t = 0.5, 1, 2, 3 and the tail beyond R = 3.4426 (wedges and tail sampled).
        for (t, phi) in [
            (0.5, 0.691_462_461_274_013),
            (1.0, 0.841_344_746_068_543),
            (2.0, 0.977_249_868_051_821),
            (3.0, 0.998_650_101_968_370),
            (3.442_619_855_899, 0.999_711_923_794),
        ] {
            let frac = z.iter().filter(|v| **v < t).count() as f64 / n as f64;
            let se = (phi * (1.0 - phi) / n as f64).sqrt();
            assert!(
                (frac - phi).abs() < 5.0 * se,
                "P(z < {t}) = {frac}, Φ = {phi}"
            );
            let low = z.iter().filter(|v| **v < -t).count() as f64 / n as f64;
            assert!((low - (1.0 - phi)).abs() < 5.0 * se, "P(z < −{t}) = {low}");
        }
        assert_eq!(normals(&mut seeded(7), 10), z[..10]);
    }
}
