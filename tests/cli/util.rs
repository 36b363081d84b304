//! What every command test shares: running `dnn2gp`, expecting success or a refusal, reading
//! its files, and refusal tables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `dnn2gp` command, quiet.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dnn2gp"));
    c.arg("--quiet");
    c
}

/// Runs `dnn2gp args…`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("runs")
}

/// Runs `args`, expects success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `args`, expects exit code 2 and no panic; returns stderr.
pub fn refused(args: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A refusal table: each case's arguments (with `--out out` added) are refused with exit code
/// 2, a message holding its fragment (the option, file or value at fault), and nothing
/// written to `out`.
pub fn refusals(out: &Path, cases: &[(Vec<&str>, &str)]) {
    for (args, fragment) in cases {
        let mut a = args.clone();
        a.extend(["--out", s(out)]);
        let err = refused(&a);
        assert!(err.contains(fragment), "{a:?}: '{fragment}' not in: {err}");
        assert!(!out.exists(), "{a:?} wrote {}", out.display());
    }
}

/// A model folder `dir/model`: an MLP of 3 tanh units trained 5 epochs on the toy data.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    ok(&[
        "train",
        "--hidden",
        "3",
        "--epochs",
        "5",
        "--out",
        s(&model),
    ]);
    model
}

/// A JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The names in a folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The shape of an `.npy` file.
pub fn shape(path: &Path) -> Vec<usize> {
    dnn2gp::io::read_npy(path).unwrap().0
}

/// Runs `args`, expects success; returns the whole output.
pub fn ok_output(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
