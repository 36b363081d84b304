//! The peers' workloads B1–B8 (`../shared/baselines/`), run on the same data and weights files,
//! timed phase by phase and checked against the peers' outputs; and the machine's GEMM peak.
//!
//! - B1: full Laplace-GGN GLM predictive, MLP 1-100-100-1 tanh (P = 10,401), N = 2000, 1000
//!   test points, f64. Function space from one set of per-layer factors of `[X; X*]`
//!   ([`dnn2gp::nn::NtkBlocks`], `J(X)[J(X); J(X*)]ᵀ`): `δG = K + δσ²I = LLᵀ` and
//!   `var = δ⁻¹(k** − ‖L⁻¹K_{XX*}‖²)`, factorised and solved inside the kernel's own storage
//!   (no Jacobian, no copy).
//! - B2: full empirical NTK (5000×5000, f32) of an MLP 784-256-256-10 ReLU on 500 MNIST images.
//! - B3: both log marginal likelihoods over 30 δ on B1's MAP, from one spectral form of the
//!   kernel (low rank when the kernel has it, else a tridiagonalisation); the Jacobian for the
//!   pseudo-targets, then the kernel from factors, phase by phase.
//! - B4: VOGN steps (diagonal, squared gradients, batch 64, 1 and 8 samples) on B1's network.
//! - B5: full empirical NTK (3000×3000, f32) of LeNet-5 with average pooling on 300 MNIST
//!   images.
//! - B6: post-hoc Laplace (last-layer and all-weights; kron, diag, full) on a LeNet-5 trained
//!   on all of MNIST, the prior by the evidence, the probit predictive on rotated test images
//!   ([`b6`]).
//! - B7: the function-space GP classifier of B6's LeNet-5 on m = 1,600 and 10,000 training
//!   images with independent outputs, and on 1,600 with the full K×K coupling, on 50 test
//!   images per angle ([`b6::b7`]).
//! - B8: B6's workflow on a ResNet with BatchNorm read from its ONNX file, all-weights KFAC
//!   with BatchNorm (which laplace-torch refuses) and with it held ([`b6::b6`]).

pub mod b6;

use std::path::Path;
use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

use dnn2gp::curvature::Linearization;
use dnn2gp::data::csv::{read_dataset, read_table};
use dnn2gp::data::snelson::read_column;
use dnn2gp::error::{Error, Result};
use dnn2gp::gp::Outputs;
use dnn2gp::gp::{gaussian_glm_variance, gaussian_variance_in_place, DeltaPath};
use dnn2gp::likelihood::Gaussian;
use dnn2gp::linalg::mirror_lower;
use dnn2gp::linalg::stack_rows;
use dnn2gp::nn::{Activation, Dtype, JacobianFactors, Network, NtkBlocks, Real, Sequential};
use dnn2gp::train::vogn::{self, Covariance, Curvature, VognConfig};
use dnn2gp::train::Objective;

/// B1's and B3's likelihood and prior: σ = 0.2, δ = 1.
const B1_SIGMA: f64 = 0.2;
const B1_DELTA: f64 = 1.0;

/// The outcome of one workload run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRun {
    /// `B1` … `B5` or `gemm`.
    pub workload: String,
    /// Seconds of each phase, in order.
    pub timings_s: Vec<(String, f64)>,
    /// Sum of the phases.
    pub total_s: f64,
    /// Largest relative difference from the peer's output file (`None` where none is compared).
    pub max_rel_diff_vs_peer: Option<f64>,
    /// The peer file compared with.
    pub peer_file: Option<String>,
    /// Workload-specific numbers (sizes, checksums, GFLOP/s).
    pub info: serde_json::Value,
    /// Peak resident memory of the process so far, MiB (Linux).
    pub peak_rss_mib: Option<f64>,
}

/// Runs `name` on the baselines' data folder: `B1`–`B5`, `gemm`, `B6` (each of
/// [`b6::VARIANTS`], one run each) or one B6 variant (`B6:kron:last_layer`, with a prior per
/// tensor `B6:kron:last_layer:layerwise`), `B7` (m = 1,600
/// and 10,000 independent, 1,600 coupled), `B7:M` or `B7:M:coupled`, `B8` (each of
/// [`b6::B8_VARIANTS`]) or one B8 variant (`B8:kron:all:frozen_bn`).
pub fn run(name: &str, data: &Path, dtype: Option<Dtype>) -> Result<Vec<BenchRun>> {
    let b6_or_b8 = ["B6", "B8", "LAYERS"].iter().any(|b| {
        name.eq_ignore_ascii_case(b) || name.to_ascii_uppercase().starts_with(&format!("{b}:"))
    });
    if dtype.is_some() && !b6_or_b8 {
        return Err(Error::option(
            "--dtype",
            format!(
                "applies to B6, B8 and layers:B6|B8 (the forward passes of their networks); \
                 {name} runs in its own fixed types"
            ),
        ));
    }
    let dtype = dtype.unwrap_or(Dtype::F64);
    if let Some(net) = name.to_ascii_uppercase().strip_prefix("LAYERS:") {
        let net = match net {
            "B6" => b6::Net::B6,
            "B8" => b6::Net::B8,
            _ => {
                return Err(Error::Invalid(format!(
                    "{name}: expected layers:B6 or layers:B8"
                )))
            }
        };
        return Ok(vec![finish(b6::layers(data, net, dtype)?)]);
    }
    if let Some(variant) = name.strip_prefix("B6:").or(name.strip_prefix("b6:")) {
        return Ok(vec![finish(b6::b6(data, b6::Net::B6, variant, dtype)?)]);
    }
    if let Some(variant) = name.strip_prefix("B8:").or(name.strip_prefix("b8:")) {
        return Ok(vec![finish(b6::b6(data, b6::Net::B8, variant, dtype)?)]);
    }
    if let Some(rest) = name.strip_prefix("B7:").or(name.strip_prefix("b7:")) {
        let bad = || {
            Error::Invalid(format!(
                "B7:{rest}: expected B7:M or B7:M:coupled, M training images"
            ))
        };
        let (m, outputs) = match rest.split_once(':') {
            None => (rest, Outputs::Independent),
            Some((m, "independent")) => (m, Outputs::Independent),
            Some((m, "coupled")) => (m, Outputs::Coupled),
            Some(_) => return Err(bad()),
        };
        let m = m.parse().map_err(|_| bad())?;
        return Ok(vec![finish(b6::b7(data, m, outputs)?)]);
    }
    if name.eq_ignore_ascii_case("B7") {
        return [
            (1600, Outputs::Independent),
            (10_000, Outputs::Independent),
            (1600, Outputs::Coupled),
        ]
        .iter()
        .map(|&(m, o)| b6::b7(data, m, o).map(finish))
        .collect();
    }
    if name.eq_ignore_ascii_case("B6") {
        return b6::VARIANTS
            .iter()
            .map(|v| b6::b6(data, b6::Net::B6, v, dtype).map(finish))
            .collect();
    }
    if name.eq_ignore_ascii_case("B8") {
        return b6::B8_VARIANTS
            .iter()
            .map(|v| b6::b6(data, b6::Net::B8, v, dtype).map(finish))
            .collect();
    }
    let run = match name.to_ascii_uppercase().as_str() {
        "B1" => b1(data)?,
        "B2" => b2(data)?,
        "B3" => b3(data)?,
        "B4" => b4(data)?,
        "B5" => b5(data)?,
        "GEMM" => gemm_peak(),
        other => {
            return Err(Error::Invalid(format!(
                "unknown workload '{other}' (expected B1, B2, B3, B4, B5, B6, B6:STRUCTURE:SUBSET[:layerwise], \
                 B7, B7:M[:coupled], B8, B8:STRUCTURE:SUBSET[:frozen_bn], layers:B6, layers:B8 \
                 or gemm)"
            )))
        }
    };
    Ok(vec![finish(run)])
}

/// The total of the phases and the peak memory.
fn finish(mut run: BenchRun) -> BenchRun {
    run.total_s = run.timings_s.iter().map(|(_, t)| t).sum();
    run.peak_rss_mib = peak_rss_mib();
    run
}

/// `VmHWM` of `/proc/self/status` in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Times `f`.
fn timed<T>(timings: &mut Vec<(String, f64)>, phase: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    timings.push((phase.to_string(), t0.elapsed().as_secs_f64()));
    out
}

/// Largest `|a − b| / |b|` over pairs.
fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

/// One column of a CSV table (header optional).
fn column(path: &Path, c: usize) -> Result<Vec<f64>> {
    Ok(read_table(path)?.into_iter().map(|r| r[c]).collect())
}

/// B1's network, MAP weights and data.
struct B1Data {
    net: Sequential,
    w: Vec<f64>,
    train: dnn2gp::data::Dataset,
    test: Mat<f64>,
}

fn b1_data(dir: &Path) -> Result<B1Data> {
    let net = Sequential::mlp(vec![1, 100, 100, 1], Activation::Tanh)?;
    let w = read_column(&dir.join("b1_seed0_map_params.txt"))?;
    let train = read_dataset(&dir.join("b1_seed0_train.csv"))?;
    let t = column(&dir.join("b1_seed0_test.csv"), 0)?;
    Ok(B1Data {
        net,
        w,
        train,
        test: Mat::from_fn(t.len(), 1, |i, _| t[i]),
    })
}

/// The structured kernel of the first `n` rows of the factors against all of them, phase by
/// phase: the output's memory, the products and Hadamard updates (the lower half of the leading
/// square block), its mirror. Returns the kernel and the GFLOP/s of the products.
fn kernel_phases<T: Real>(
    t: &mut Vec<(String, f64)>,
    f: &JacobianFactors<T>,
    n: usize,
) -> (Mat<T>, f64) {
    let mut out = timed(t, "allocate", || Mat::<T>::zeros(n, f.rows()));
    let t0 = Instant::now();
    let flops = f.add_gram_lower(n, out.as_mut());
    let products_s = t0.elapsed().as_secs_f64();
    t.push(("products".into(), products_s));
    timed(t, "mirror", || mirror_lower(out.as_mut().subcols_mut(0, n)));
    (out, flops / 1e9 / products_s)
}

fn b1(dir: &Path) -> Result<BenchRun> {
    let d = b1_data(dir)?;
    let (net, w) = (&d.net, &d.w);
    let (x, xt) = (d.train.x.as_ref(), d.test.as_ref());
    // `Network::ntk_blocks` phase by phase.
    let mut t = Vec::new();
    let (f, test_diag) = timed(&mut t, "factors", || {
        let f = net.jacobian_factors(w, stack_rows(x, xt).as_ref());
        let mut diag = f.diag();
        diag.drain(..x.nrows());
        (f, diag)
    });
    let (kernel, products_gflops) = kernel_phases(&mut t, &f, x.nrows());
    let mut blocks = NtkBlocks { kernel, test_diag };
    let glm = timed(&mut t, "cholesky + solve", || {
        match gaussian_variance_in_place(&mut blocks, B1_DELTA, B1_SIGMA, 0)? {
            Some(out) => Ok(out),
            // The rest of the ladder, each rung from a fresh kernel.
            None => gaussian_glm_variance(net, w, x, xt, B1_DELTA, B1_SIGMA),
        }
    })?;
    let (var, jitter) = (glm.var, glm.jitter);
    let mean: Vec<f64> = timed(&mut t, "mean", || {
        net.forward(w, xt).col(0).iter().copied().collect()
    });
    let (n, ns) = (x.nrows() as f64, xt.nrows() as f64);
    let solve_gflop = (n * n * n / 3.0 + n * n * ns) / 1e9;
    let solve_s = t[t.len() - 2].1;
    let peer = dir.join("b1_seed0_pred_gp.csv");
    let (pm, pv) = (column(&peer, 1)?, column(&peer, 2)?);
    Ok(BenchRun {
        workload: "B1".into(),
        timings_s: t,
        total_s: 0.0,
        max_rel_diff_vs_peer: Some(max_rel(&var, &pv).max(max_rel(&mean, &pm))),
        peer_file: Some(peer.display().to_string()),
        info: serde_json::json!({
            "N": x.nrows(), "N_test": xt.nrows(), "P": net.n_params(),
            "f_var_sum": var.iter().sum::<f64>(), "jitter": jitter,
            "products_gflops": products_gflops,
            "solve_gflop": solve_gflop, "solve_gflops": solve_gflop / solve_s,
        }),
        peak_rss_mib: None,
    })
}

fn b3(dir: &Path) -> Result<BenchRun> {
    let d = b1_data(dir)?;
    let lik = Gaussian::new(B1_SIGMA)?;
    let peer = dir.join("b3_seed0_gp.csv");
    let rows = read_table(&peer)?;
    let deltas: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    let mut t = Vec::new();
    let lin = timed(&mut t, "jacobian", || {
        Linearization::new(&d.net, &lik, d.train.x.as_ref(), d.train.y.as_ref(), &d.w)
    });
    // `Network::ntk` phase by phase.
    let x = d.train.x.as_ref();
    let f = timed(&mut t, "factors", || d.net.jacobian_factors(&d.w, x));
    let (ntk, products_gflops) = kernel_phases(&mut t, &f, x.nrows());
    let path = timed(&mut t, "spectral form", || {
        DeltaPath::with_ntk(&lin, ntk, u128::MAX)
    })?;
    let values = timed(&mut t, "30 deltas", || {
        deltas
            .iter()
            .map(|&dl| {
                Ok((
                    path.laplace_log_evidence(dl)?,
                    path.log_marginal_likelihood(dl)?,
                ))
            })
            .collect::<Result<Vec<(f64, f64)>>>()
    })?;
    let ours: Vec<f64> = values.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let theirs: Vec<f64> = rows.iter().flat_map(|r| [r[1], r[2]]).collect();
    Ok(BenchRun {
        workload: "B3".into(),
        timings_s: t,
        total_s: 0.0,
        max_rel_diff_vs_peer: Some(max_rel(&ours, &theirs)),
        peer_file: Some(peer.display().to_string()),
        info: serde_json::json!({
            "deltas": deltas.len(), "P": d.net.n_params(), "N": d.train.len(),
            "products_gflops": products_gflops,
            "low_rank": path.low_rank().map(|(r, tr)| serde_json::json!({"rank": r, "residual_trace": tr})),
        }),
        peak_rss_mib: None,
    })
}

/// B4's VOGN settings (IVON's, from the peer script) for `mc` samples on `n` examples: diagonal,
/// squared gradients, batch 64, β = 0.001, α = 0.02, momentum 0.9, initial precision N,
/// 63 epochs (2016 steps).
pub fn b4_config(mc: usize, n: usize) -> VognConfig {
    VognConfig {
        beta: 0.001,
        lr: Some(0.02),
        mc_samples: mc,
        batch_size: Some(64),
        epochs: 63,
        covariance: Covariance::Diag,
        curvature: Curvature::SquaredGradients,
        momentum: Some(0.9),
        init_precision: n as f64,
        deterministic: false,
        seed: 0,
        snapshot_every: 0,
    }
}

fn b4(dir: &Path) -> Result<BenchRun> {
    let d = b1_data(dir)?;
    let lik = Gaussian::new(B1_SIGMA)?;
    let obj = Objective::on(&d.net, &lik, &d.train, B1_DELTA);
    let init = read_column(&dir.join("b1_seed0_init_params.txt"))?;
    let mut t = Vec::new();
    let mut info = serde_json::Map::new();
    for mc in [1usize, 8] {
        let cfg = b4_config(mc, d.train.len());
        let steps = cfg.epochs * d.train.len().div_ceil(64);
        let res = timed(&mut t, &format!("train mc={mc}"), || {
            vogn::run(&obj, &init, &cfg, None)
        })?;
        let secs = t.last().map_or(0.0, |(_, s)| *s);
        info.insert(
            format!("mc{mc}"),
            serde_json::json!({
                "steps": steps, "ms_per_step": 1e3 * secs / steps as f64,
                "final_epoch_loss": res.history.last(),
            }),
        );
    }
    Ok(BenchRun {
        workload: "B4".into(),
        timings_s: t,
        total_s: 0.0,
        max_rel_diff_vs_peer: None,
        peer_file: None,
        info: serde_json::Value::Object(info),
        peak_rss_mib: None,
    })
}

/// The full NTK of `net` on the inputs of `x_file`, compared on its diagonal with `peer`.
fn ntk_workload<B: Network>(
    name: &str,
    net: &B,
    dir: &Path,
    params: &str,
    x_file: &str,
    peer: &str,
) -> Result<BenchRun> {
    let w = read_column(&dir.join(params))?;
    if w.len() != net.n_params() {
        return Err(Error::Invalid(format!(
            "{params}: {} values, the network has {} parameters",
            w.len(),
            net.n_params()
        )));
    }
    let rows = read_table(&dir.join(x_file))?;
    let x = Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j]);
    // `Network::ntk_f32` phase by phase: factors, the output's memory, the products and
    // Hadamard updates of the lower half, its mirror.
    let mut t = Vec::new();
    let nk = x.nrows() * net.n_outputs();
    let f = timed(&mut t, "factors", || {
        net.jacobian_factors_f32(&w, x.as_ref())
    });
    let (k, products_gflops) = kernel_phases(&mut t, &f, nk);
    let diag: Vec<f64> = (0..k.nrows()).map(|i| f64::from(k[(i, i)])).collect();
    let peer_path = dir.join(peer);
    let theirs = column(&peer_path, 0)?;
    let (mut trace, mut sum, mut fro) = (0.0, 0.0, 0.0);
    for c in k.col_iter() {
        for &v in c.iter() {
            let v = f64::from(v);
            sum += v;
            fro += v * v;
        }
    }
    diag.iter().for_each(|v| trace += v);
    Ok(BenchRun {
        workload: name.into(),
        timings_s: t,
        total_s: 0.0,
        max_rel_diff_vs_peer: Some(max_rel(&diag, &theirs)),
        peer_file: Some(peer_path.display().to_string()),
        info: serde_json::json!({
            "N": x.nrows(), "K": net.n_outputs(), "P": net.n_params(),
            "theta": {"trace": trace, "sum": sum, "fro": fro.sqrt(), "t00": k[(0, 0)], "t01": k[(0, 1)], "precision": "f32"},
            "products_gflops": products_gflops,
        }),
        peak_rss_mib: None,
    })
}

fn b2(dir: &Path) -> Result<BenchRun> {
    let net = Sequential::mlp(vec![784, 256, 256, 10], Activation::Relu)?;
    ntk_workload(
        "B2",
        &net,
        dir,
        "b2_seed0_params.txt",
        "b2_seed0_n500_mnist_X.csv",
        "b2_seed0_n500_mnist_diag_nt_vp.csv",
    )
}

fn b5(dir: &Path) -> Result<BenchRun> {
    let net = Sequential::parse(
        "1x28x28:conv6k5,relu,avgpool,conv16k5,relu,avgpool,flatten,dense120,relu,dense84,relu,dense10",
    )?;
    ntk_workload(
        "B5",
        &net,
        dir,
        "b5_seed0_params.txt",
        "b5_seed0_n300_mnist_X.csv",
        "b5_seed0_n300_mnist_diag_nt_sd.csv",
    )
}

/// GFLOP/s of faer's f64 and f32 GEMM (`C = A B`, 4096², all threads): the machine's peak.
fn gemm_peak() -> BenchRun {
    fn rate<T: faer::traits::ComplexField + Copy>(n: usize, one: T, zero: T) -> f64 {
        let a = Mat::<T>::from_fn(n, n, |i, j| if (i + j) % 3 == 0 { one } else { zero });
        let b = a.clone();
        let mut c = Mat::<T>::zeros(n, n);
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t0 = Instant::now();
            matmul(
                c.as_mut(),
                Accum::Replace,
                a.as_ref(),
                b.as_ref(),
                one,
                Par::rayon(0),
            );
            best = best.min(t0.elapsed().as_secs_f64());
        }
        2.0 * (n as f64).powi(3) / best / 1e9
    }
    let mut t = Vec::new();
    let f64_rate = timed(&mut t, "f64", || rate::<f64>(4096, 1.0, 0.0));
    let f32_rate = timed(&mut t, "f32", || rate::<f32>(4096, 1.0, 0.0));
    BenchRun {
        workload: "gemm".into(),
        timings_s: t,
        total_s: 0.0,
        max_rel_diff_vs_peer: None,
        peer_file: None,
        info: serde_json::json!({
            "n": 4096, "threads": rayon::current_num_threads(),
            "f64_gflops": f64_rate, "f32_gflops": f32_rate,
        }),
        peak_rss_mib: None,
    }
}
