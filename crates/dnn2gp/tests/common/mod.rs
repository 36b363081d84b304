//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/data` beside the repository. Returns `None` with a message when absent, unless
/// `DNN2GP_REQUIRE_SHARED` is set (CI), where it panics.
pub fn shared_data() -> Option<PathBuf> {
    shared("data")
}

/// The peers' baseline files, `../shared/baselines/data`.
pub fn shared_baselines() -> Option<PathBuf> {
    shared("baselines/data")
}

/// The repository's root: the nearest folder above the package that holds `Cargo.lock`.
pub fn repository() -> PathBuf {
    let package = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    package
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(&package)
        .to_path_buf()
}

/// A folder of `../shared` beside the repository (`$DNN2GP_SHARED` overrides the root).
fn shared(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("DNN2GP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join("../shared"));
    let dir = root.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("DNN2GP_REQUIRE_SHARED").is_some() {
        panic!(
            "shared data folder {} is missing (required in CI)",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: shared data folder {} not found; this test did not run",
        dir.display()
    );
    None
}

/// A fresh temporary folder.
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

/// Asserts that `net`'s Jacobian at `w` on `x` matches central finite differences of its
/// forward pass (step 1e-6) to `tol` relative, for the parameters `params`.
pub fn assert_jacobian_matches_fd(
    net: &dyn dnn2gp::nn::Network,
    w: &[f64],
    x: faer::MatRef<'_, f64>,
    params: &[usize],
    tol: f64,
) {
    let (n, k) = (x.nrows(), net.n_outputs());
    let jac = net.jacobian(w, x);
    assert_eq!((jac.nrows(), jac.ncols()), (n * k, net.n_params()));
    let h = 1e-6;
    for &p in params {
        let (mut wp, mut wm) = (w.to_vec(), w.to_vec());
        wp[p] += h;
        wm[p] -= h;
        let (fp, fm) = (net.forward(&wp, x), net.forward(&wm, x));
        for e in 0..n {
            for o in 0..k {
                let fd = (fp[(e, o)] - fm[(e, o)]) / (2.0 * h);
                let j = jac[(e * k + o, p)];
                assert!(
                    (j - fd).abs() < tol * (1.0 + fd.abs()),
                    "J[{e},{o},{p}] = {j} vs finite difference {fd}"
                );
            }
        }
    }
}

/// Asserts that the backward reductions `Σ_m J_{n(m)}ᵀ c_m` and `Σ_m (J_{n(m)}ᵀ c_m)²` equal
/// the sums formed from the explicit Jacobian, for 1 to 3 cotangent rows per example.
pub fn assert_reductions_match_jacobian(
    net: &dyn dnn2gp::nn::Network,
    w: &[f64],
    x: faer::MatRef<'_, f64>,
) {
    use dnn2gp::nn::{Cotangents, Reduce};
    let (n, k) = (x.nrows(), net.n_outputs());
    let jac = net.jacobian(w, x);
    for rpe in [1, 2, 3] {
        let c = faer::Mat::from_fn(n * rpe, k, |m, o| ((m * k + o) as f64 * 0.77).sin());
        // The cotangents `c` under each of `reduces`.
        let requests = |reduces: &[Reduce]| -> Vec<Cotangents> {
            reduces
                .iter()
                .map(|&reduce| Cotangents {
                    rows: c.clone(),
                    rows_per_example: rpe,
                    reduce,
                })
                .collect()
        };
        let (_, out) = net.forward_reduce(w, x, &mut |_| {
            requests(&[Reduce::Sum, Reduce::SumSq, Reduce::SumAndSumSq])
        });
        for p in 0..net.n_params() {
            let (mut sum, mut sq) = (0.0, 0.0);
            for m in 0..n * rpe {
                let d: f64 = (0..k)
                    .map(|o| c[(m, o)] * jac[((m / rpe) * k + o, p)])
                    .sum();
                sum += d;
                sq += d * d;
            }
            assert!(
                (out[0][p] - sum).abs() < 1e-12 * (1.0 + sum.abs()),
                "sum p={p} rpe={rpe}"
            );
            assert!(
                (out[1][p] - sq).abs() < 1e-12 * (1.0 + sq),
                "sum of squares p={p} rpe={rpe}"
            );
            // The fused pass gives both, bit for bit.
            let np = net.n_params();
            assert_eq!(out[2].len(), 2 * np);
            assert_eq!((out[2][p], out[2][np + p]), (out[0][p], out[1][p]));
        }
        // Buffers reused from an earlier call, of other lengths and contents, give the same.
        let mut reused = vec![vec![7.0; 3], vec![f64::NAN; 2 * net.n_params() + 5]];
        reused.extend(std::iter::repeat_n(vec![1.0; 4], 3));
        net.forward_reduce_into(
            w,
            x,
            &mut |_| requests(&[Reduce::SumAndSumSq, Reduce::Sum]),
            &mut reused,
        );
        assert_eq!(reused.len(), 2);
        assert_eq!((&reused[0], &reused[1]), (&out[2], &out[0]));
    }
}
