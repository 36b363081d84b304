//! How the command line fails: output folders checked before any work, locked while in use,
//! replaced as one set; signals; counts and options refused rather than replaced; targets
//! checked; malformed model files refused with exit code 2 and never a panic.

use crate::common;
#[allow(unused_imports)]
use crate::util::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A long training run (no polish), for the signal and lock tests.
const LONG: [&str; 6] = [
    "train",
    "--epochs",
    "2000000",
    "--polish-iters",
    "0",
    "--out",
];

/// Waits until `pred` holds (or panics after 20 s).
fn wait_for(pred: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !pred() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_file_or_a_foreign_folder_as_out_is_refused_before_training() {
    let dir = common::tmpdir();
    let file = dir.path().join("afile");
    std::fs::write(&file, "keep").unwrap();
    let t0 = Instant::now();
    let err = refused(&["train", "--epochs", "2000000", "--out", s(&file)]);
    assert!(err.contains("--out") && err.contains("is a file"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "refused only after training"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");

    // A folder holding the user's own files is never replaced.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    let err = refused(&["train", "--epochs", "5", "--out", s(&mine)]);
    assert!(err.contains("no dnn2gp run recorded"), "{err}");
    assert_eq!(names(&mine), ["notes.txt"]);

    // Nor one that holds an input of the run.
    let model = dir.path().join("model");
    ok(&[
        "train",
        "--epochs",
        "5",
        "--polish-iters",
        "0",
        "--out",
        s(&model),
    ]);
    let err = refused(&["gp", "--model", s(&model), "--out", s(&model)]);
    assert!(err.contains("holds the input"), "{err}");
    assert!(model.join("model.json").exists());
    // '.' and '..' name no folder of their own.
    let err = refused(&["train", "--epochs", "5", "--out", "."]);
    assert!(err.contains("--out"), "{err}");
    assert_eq!(names(dir.path()), ["afile", "mine", "model"]);
}

#[test]
fn a_rerun_replaces_the_folder_as_one_set_and_leaves_nothing_beside_it() {
    let dir = common::tmpdir();
    let out = dir.path().join("m");
    ok(&[
        "train",
        "--epochs",
        "5",
        "--polish-iters",
        "0",
        "--out",
        s(&out),
    ]);
    // A stray file of an older run is gone after the next run: the folder is this run's set.
    std::fs::write(out.join("summary.json"), "{}").unwrap();
    let o = ok_output(&[
        "train",
        "--epochs",
        "5",
        "--polish-iters",
        "0",
        "--out",
        s(&out),
    ]);
    assert_eq!(
        names(&out),
        [
            ".dnn2gp-run.json",
            "history.csv",
            "model.json",
            "model.safetensors",
        ]
    );
    let marker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(".dnn2gp-run.json")).unwrap())
            .unwrap();
    assert_eq!(marker["files"].as_array().unwrap().len(), 3);
    // Each file is reported under its final name, and no staging folder or lock is left.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("wrote {}", s(&out.join("model.json")))),
        "{stdout}"
    );
    assert_eq!(names(dir.path()), ["m"]);
}

#[test]
fn a_failed_run_keeps_the_previous_folder() {
    let dir = common::tmpdir();
    let model = tiny_model(dir.path());
    let gp = dir.path().join("gp");
    ok(&[
        "gp",
        "--model",
        s(&model),
        "--samples",
        "10",
        "--out",
        s(&gp),
    ]);
    let before = names(&gp);
    let gp_json = std::fs::read_to_string(gp.join("gp.json")).unwrap();
    // A failure after the run took the folder (the memory pre-flight of the Jacobian) leaves
    // the previous set as it was.
    let err = refused(&[
        "--max-memory",
        "0.000001",
        "gp",
        "--model",
        s(&model),
        "--out",
        s(&gp),
    ]);
    assert!(err.contains("memory") || err.contains("GiB"), "{err}");
    assert_eq!(names(&gp), before);
    assert_eq!(
        std::fs::read_to_string(gp.join("gp.json")).unwrap(),
        gp_json
    );
    assert_eq!(names(dir.path()), ["gp", "model"]);
}

#[test]
fn a_folder_in_use_is_refused_and_signals_say_what_was_kept() {
    let dir = common::tmpdir();
    let out = dir.path().join("m");
    let mut args: Vec<&str> = LONG.to_vec();
    args.push(s(&out));
    let child = bin()
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    wait_for(|| dir.path().join(".m.lock").exists() && names(dir.path()).len() == 2);
    // A second run on the same folder is refused at once.
    let err = refused(&["train", "--epochs", "5", "--out", s(&out)]);
    assert!(err.contains("in use by another dnn2gp run"), "{err}");
    // SIGTERM: one line, exit 130, nothing left.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("was not created"),
        "{err}"
    );
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));

    // SIGKILL leaves the staging folder; the next run removes it and keeps a complete set.
    ok(&[
        "train",
        "--epochs",
        "5",
        "--polish-iters",
        "0",
        "--out",
        s(&out),
    ]);
    let mut child = bin().args(&args).stderr(Stdio::null()).spawn().unwrap();
    wait_for(|| names(dir.path()).iter().any(|n| n.contains(".partial-")));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        out.join("model.json").exists(),
        "the old set stays in place"
    );
    let o = ok_output(&[
        "train",
        "--epochs",
        "5",
        "--polish-iters",
        "0",
        "--out",
        s(&out),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("left by a run that was killed"));
    assert_eq!(names(dir.path()), ["m"]);
}

#[test]
fn zero_and_nonsensical_counts_are_refused_not_replaced() {
    let dir = common::tmpdir();
    let model = tiny_model(dir.path());
    let m = s(&model);
    refusals(
        &dir.path().join("o"),
        &[
            (vec!["demo", "--grid-points", "0"], "--grid-points"),
            (vec!["demo", "--grid-points", "1"], "--grid-points"),
            (vec!["demo", "--sets", "0"], "--sets"),
            (vec!["demo", "--sets", "2", "--vi-sets", "3"], "--vi-sets"),
            (vec!["vi", "--kernel-points", "0"], "--kernel-points"),
            (vec!["vi", "--grid-points", "0"], "--grid-points"),
            (vec!["vi", "--samples", "0"], "--samples"),
            (vec!["vi", "--vi-epochs", "0"], "--vi-epochs"),
            (
                vec!["import", "--weights", "/nonexistent.safetensors"],
                "--weights: /nonexistent.safetensors: no such file",
            ),
            (vec!["sweep", "--sigma", "-1"], "--sigma: the noise must be"),
            (vec!["train", "--sigma", "0"], "--sigma: the noise must be"),
            (vec!["train", "--sets", "0"], "--sets"),
            (vec!["train", "--toy-n", "0"], "--toy-n"),
            (
                vec!["train", "--epochs", "-5"],
                "invalid value '-5' for '--epochs",
            ),
            (
                vec!["train", "--data", "snelson", "--data-dir", "/nonexistent"],
                "--data: snelson: no folder /nonexistent/snelson (set --data-dir, or DNN2GP_DATA",
            ),
            (vec!["gp", "--model", m, "--samples", "0"], "--samples"),
            (
                vec!["gp", "--model", m, "--grid-points", "0"],
                "--grid-points",
            ),
            (vec!["gp", "--model", m, "--rank", "0"], "--rank"),
            (vec!["gp", "--model", m, "--prior", "0"], "--prior"),
            (vec!["gp", "--model", m, "--delta", "-2"], "--prior"),
            (vec!["gp", "--model", m, "--sigma", "0"], "--sigma"),
        ],
    );
}

#[test]
fn options_that_do_not_apply_are_refused() {
    let dir = common::tmpdir();
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "x,y\n0,0.1\n1,0.4\n2,0.9\n").unwrap();
    let model = tiny_model(dir.path());
    let m = s(&model);
    refusals(
        &dir.path().join("o"),
        &[
            (vec!["train", "--data", s(&csv), "--sets", "3"], "--sets"),
            (
                vec!["train", "--data", s(&csv), "--toy-noise", "0.3,1.5,0.3"],
                "--toy-noise",
            ),
            (vec!["train", "--data", "toy", "--test", s(&csv)], "--test"),
            (vec!["train", "--classes", "3"], "--classes"),
            (
                vec!["sweep", "--likelihood", "bernoulli"],
                "--likelihood bernoulli",
            ),
            (
                vec!["train", "--arch", "2:dense3,tanh,dense1", "--hidden", "4"],
                "--hidden",
            ),
            (
                vec!["gp", "--model", m, "--sigma", "marglik"],
                "--prior marglik",
            ),
            (
                vec!["gp", "--model", m, "--rank", "5"],
                "--rank: sets the eigenpairs of a lowrank posterior, not of a full one",
            ),
            (
                vec![
                    "predict",
                    "--model",
                    m,
                    "--inputs",
                    s(&csv),
                    "--link",
                    "probit",
                ],
                "--link: turns a classifier's logits",
            ),
            (
                vec!["gp", "--model", m, "--prior-structure", "layerwise"],
                "--prior-structure",
            ),
            (
                vec![
                    "gp",
                    "--model",
                    m,
                    "--marglik",
                    "--prior-structure",
                    "layerwise",
                ],
                "--prior-structure",
            ),
            (
                vec!["gp", "--model", m, "--marglik", "--delta", "3"],
                "--marglik",
            ),
            (
                vec![
                    "gp",
                    "--model",
                    m,
                    "--hessian",
                    "lowrank",
                    "--prior",
                    "marglik",
                    "--prior-structure",
                    "layerwise",
                ],
                "--prior-structure",
            ),
            (
                vec![
                    "predict",
                    "--model",
                    m,
                    "--inputs",
                    s(&csv),
                    "--labels",
                    s(&csv),
                ],
                "--labels",
            ),
        ],
    );
    let err = refused(&["bench", "B1", "--dtype", "f32"]);
    assert!(err.contains("--dtype: applies to B6, B8"), "{err}");
}

#[test]
fn classification_targets_are_checked_and_labels_give_k_outputs() {
    let dir = common::tmpdir();
    let out = dir.path().join("o");
    let cont = dir.path().join("cont.csv");
    std::fs::write(&cont, "x,y\n0.1,0\n0.5,1\n0.9,0.25\n").unwrap();
    for lik in ["bernoulli", "categorical"] {
        let err = refused(&[
            "train",
            "--data",
            s(&cont),
            "--likelihood",
            lik,
            "--out",
            s(&out),
        ]);
        assert!(
            err.contains("cont.csv: example 3") && err.contains("0.25"),
            "{err}"
        );
    }
    let two = dir.path().join("two.csv");
    std::fs::write(&two, "x,y\n0.1,0\n0.5,2\n").unwrap();
    let err = refused(&[
        "train",
        "--data",
        s(&two),
        "--likelihood",
        "bernoulli",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("not 0 or 1"), "{err}");
    // Three classes from one label column: the network gets 3 outputs (a 2-4-3 MLP).
    let labels = dir.path().join("labels.csv");
    let mut text = String::from("x1,x2,label\n");
    for i in 0..30 {
        let c = i % 3;
        text += &format!(
            "{},{},{c}\n",
            c as f64 + 0.1 * (i as f64).sin(),
            (i as f64).cos()
        );
    }
    std::fs::write(&labels, text).unwrap();
    ok(&[
        "train",
        "--data",
        s(&labels),
        "--likelihood",
        "categorical",
        "--hidden",
        "4",
        "--epochs",
        "50",
        "--out",
        s(&out),
    ]);
    assert_eq!(architecture(&out), "2:dense4,tanh,dense3");
    // A label beyond --classes is named.
    let err = refused(&[
        "train",
        "--data",
        s(&labels),
        "--likelihood",
        "categorical",
        "--classes",
        "2",
        "--out",
        s(&dir.path().join("o2")),
    ]);
    assert!(err.contains("label 2 is not below --classes 2"), "{err}");
    // gp on a softmax model: no Λ⁻¹, so the Laplace-GGN report (evidence, f_var blocks,
    // probabilities, accuracy and NLL) instead of a GP marginal likelihood.
    let g = dir.path().join("g");
    ok(&[
        "gp",
        "--model",
        s(&out),
        "--samples",
        "50",
        "--delta-grid",
        "0.5,1,2",
        "--out",
        s(&g),
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.join("gp.json")).unwrap()).unwrap();
    assert_eq!(summary["classes"], 3);
    assert!(summary["laplace_log_evidence"]
        .as_f64()
        .unwrap()
        .is_finite());
    for key in [
        "test_accuracy_probit",
        "test_accuracy_mc",
        "test_nll_probit",
        "test_nll_mc",
    ] {
        assert!(summary[key].as_f64().unwrap().is_finite(), "{key}");
    }
    let path = std::fs::read_to_string(g.join("marglik_path.csv")).unwrap();
    let at_one: f64 = path
        .lines()
        .nth(2)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let e = summary["laplace_log_evidence"].as_f64().unwrap();
    assert!((at_one - e).abs() < 1e-9 * e.abs(), "{at_one} vs {e}");
    assert!(g.join("f_var.npy").exists() && g.join("kernel.npy").exists());
}

/// The architecture of a model folder's model file.
fn architecture(folder: &Path) -> String {
    dnn2gp::train::model::Model::load(&folder.join("model.safetensors"))
        .unwrap()
        .net
        .spec()
}

/// The folder `train` wrote before the model file held the model: `model.json` with the
/// architecture, likelihood, σ and δ beside the run's record, and the weights in
/// `params.npy`; returns its `model.json` text.
fn legacy_folder(from: &Path, to: &Path) -> String {
    let model = dnn2gp::train::model::Model::load(&from.join("model.safetensors")).unwrap();
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("model.json")).unwrap()).unwrap();
    record["architecture"] = model.net.spec().into();
    record["likelihood"] = model.likelihood.to_string().into();
    record["sigma"] = model.sigma.into();
    record["delta"] = model.delta.into();
    std::fs::create_dir_all(to).unwrap();
    let json = serde_json::to_string_pretty(&record).unwrap();
    std::fs::write(to.join("model.json"), &json).unwrap();
    dnn2gp::io::write_npy(&to.join("params.npy"), &[model.w.len()], &model.w).unwrap();
    json
}

#[test]
fn folders_written_before_the_model_file_still_load() {
    let dir = common::tmpdir();
    let model = tiny_model(dir.path());
    let old = dir.path().join("old");
    legacy_folder(&model, &old);
    let (gp_new, gp_old) = (dir.path().join("gp-new"), dir.path().join("gp-old"));
    let a = ok(&[
        "gp",
        "--model",
        s(&model),
        "--samples",
        "20",
        "--out",
        s(&gp_new),
    ]);
    let b = ok(&[
        "gp",
        "--model",
        s(&old),
        "--samples",
        "20",
        "--out",
        s(&gp_old),
    ]);
    let first = |o: &str| o.lines().next().map(String::from);
    assert_eq!(first(&a), first(&b), "the same model, the same numbers");
    assert_eq!(
        std::fs::read(gp_new.join("kernel.npy")).unwrap(),
        std::fs::read(gp_old.join("kernel.npy")).unwrap()
    );
    // A folder with a record and no model is refused with what to do.
    let none = dir.path().join("none");
    std::fs::create_dir(&none).unwrap();
    std::fs::copy(model.join("model.json"), none.join("model.json")).unwrap();
    let err = refused(&["gp", "--model", s(&none), "--out", s(&dir.path().join("g"))]);
    assert!(
        err.contains("dnn2gp train") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn malformed_model_files_are_refused_without_a_panic() {
    let dir = common::tmpdir();
    let trained = dir.path().join("trained");
    ok(&[
        "train",
        "--hidden",
        "3",
        "--epochs",
        "5",
        "--out",
        s(&trained),
    ]);
    let gp = dir.path().join("gp");
    // A model file whose architecture makes no network.
    let m = dnn2gp::train::model::Model::load(&trained.join("model.safetensors")).unwrap();
    let bad_file = dir.path().join("bad.safetensors");
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("dnn2gp.architecture".to_string(), "2:".to_string());
    dnn2gp::nn::weights::save_with_metadata(
        &bad_file,
        &m.net.param_layout(),
        &m.w,
        dnn2gp::nn::weights::StoredDtype::F64,
        &meta,
    )
    .unwrap();
    let err = refused(&[
        "gp",
        "--model",
        s(&bad_file),
        "--data",
        "toy",
        "--out",
        s(&gp),
    ]);
    assert!(
        err.contains("bad.safetensors") && err.contains("dnn2gp.architecture"),
        "{err}"
    );
    // The older folder's files: an architecture that makes no network.
    let model = dir.path().join("model");
    let json = legacy_folder(&trained, &model);
    let empty = json.replace("\"2:dense3,tanh,dense1\"", "\"2:\"");
    assert_ne!(empty, json, "the test edits the architecture");
    std::fs::write(model.join("model.json"), &empty).unwrap();
    let err = refused(&["gp", "--model", s(&model), "--out", s(&gp)]);
    assert!(
        err.contains("model.json") && err.contains("architecture"),
        "{err}"
    );
    // An architecture that does not fit params.npy.
    let other = json.replace("\"2:dense3,tanh,dense1\"", "\"2:dense4,tanh,dense1\"");
    std::fs::write(model.join("model.json"), &other).unwrap();
    let err = refused(&["gp", "--model", s(&model), "--out", s(&gp)]);
    assert!(err.contains("params.npy"), "{err}");
    // NaN in the weights names the file.
    std::fs::write(model.join("model.json"), &json).unwrap();
    let mut w = dnn2gp::io::read_npy(&model.join("params.npy")).unwrap().1;
    w[4] = f64::NAN;
    dnn2gp::io::write_npy(&model.join("params.npy"), &[w.len()], &w).unwrap();
    let err = refused(&["gp", "--model", s(&model), "--out", s(&gp)]);
    assert!(err.contains("params.npy: parameter 4 is NaN"), "{err}");
    // A shape whose product overflows.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 3), }"
            .to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 24]);
    std::fs::write(model.join("params.npy"), bytes).unwrap();
    let err = refused(&["gp", "--model", s(&model), "--out", s(&gp)]);
    assert!(
        err.contains("params.npy") && err.contains("larger than any file"),
        "{err}"
    );
    assert!(!gp.exists());
}

#[test]
fn predict_writes_the_predictive_at_new_inputs() {
    let dir = common::tmpdir();
    let model = dir.path().join("model");
    ok(&[
        "train",
        "--hidden",
        "6",
        "--epochs",
        "200",
        "--out",
        s(&model),
    ]);
    // Inputs only (the toy's [x, 1]), then with a target column.
    let new = dir.path().join("new.csv");
    std::fs::write(&new, "x,one\n-2,1\n0,1\n2,1\n").unwrap();
    let out = dir.path().join("p");
    ok(&[
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&new),
        "--out",
        s(&out),
    ]);
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("example,output,mean,var_f,var_y"));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 3);
    // var_y = var_f + σ² (σ = 1), and the same numbers from the function space.
    for r in &rows {
        assert!(r[3] > 0.0 && (r[4] - r[3] - 1.0).abs() < 1e-12, "{r:?}");
    }
    let out2 = dir.path().join("p2");
    ok(&[
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&new),
        "--space",
        "function",
        "--out",
        s(&out2),
    ]);
    let csv2 = std::fs::read_to_string(out2.join("predictions.csv")).unwrap();
    for (a, b) in csv.lines().zip(csv2.lines()).skip(1) {
        let (a, b): (Vec<f64>, Vec<f64>) = (
            a.split(',').map(|v| v.parse().unwrap()).collect(),
            b.split(',').map(|v| v.parse().unwrap()).collect(),
        );
        assert!((a[3] - b[3]).abs() < 1e-8 * a[3], "{a:?} vs {b:?}");
    }
    let with_y = dir.path().join("y.csv");
    std::fs::write(&with_y, "-2,1,-0.9\n0,1,0.0\n2,1,0.9\n").unwrap();
    let out3 = dir.path().join("p3");
    ok(&[
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&with_y),
        "--out",
        s(&out3),
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out3.join("predict.json")).unwrap()).unwrap();
    assert!(summary["test_mse"].as_f64().unwrap() >= 0.0);
    assert!(summary["test_nll"].as_f64().unwrap().is_finite());
    // Wrong width: the file and both accepted widths are named.
    let wide = dir.path().join("wide.csv");
    std::fs::write(&wide, "1,2,3,4\n").unwrap();
    let err = refused(&[
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&wide),
        "--out",
        s(&dir.path().join("p4")),
    ]);
    assert!(
        err.contains("wide.csv: 4 columns") && err.contains("2 inputs"),
        "{err}"
    );

    // A three-class model: probit probabilities per class summing to about 1, K×K blocks.
    let labels = dir.path().join("labels.csv");
    let mut text = String::new();
    for i in 0..30 {
        let c = i % 3;
        text += &format!(
            "{},{},{c}\n",
            c as f64 + 0.2 * (i as f64).sin(),
            (i as f64).cos()
        );
    }
    std::fs::write(&labels, text).unwrap();
    let cm = dir.path().join("cm");
    ok(&[
        "train",
        "--data",
        s(&labels),
        "--likelihood",
        "categorical",
        "--hidden",
        "5",
        "--epochs",
        "200",
        "--out",
        s(&cm),
    ]);
    let out5 = dir.path().join("p5");
    ok(&[
        "predict",
        "--model",
        s(&cm),
        "--data",
        s(&labels),
        "--out",
        s(&out5),
    ]);
    let (shape, blocks) = dnn2gp::io::read_npy(&out5.join("f_var.npy")).unwrap();
    assert_eq!(shape, [30, 3, 3]);
    for b in blocks.chunks(9) {
        assert!((0..3).all(|a| b[a * 3 + a] > 0.0) && (b[1] - b[3]).abs() < 1e-12 * b[0].max(1.0));
    }
    let csv = std::fs::read_to_string(out5.join("predictions.csv")).unwrap();
    let p: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    for e in p.chunks(3) {
        assert!((e.iter().sum::<f64>() - 1.0).abs() < 0.05, "{e:?}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out5.join("predict.json")).unwrap()).unwrap();
    assert!(summary["test_accuracy"].as_f64().unwrap() > 0.5);
}

#[test]
fn model_folders_work_from_any_working_directory_and_take_a_data_override() {
    let dir = common::tmpdir();
    let csv = dir.path().join("sep.csv");
    let mut text = String::from("x,y\n");
    for i in 0..30 {
        let x = -1.0 + 2.0 * i as f64 / 29.0;
        text += &format!("{x},{}\n", u8::from(x > 0.0));
    }
    std::fs::write(&csv, text).unwrap();
    // Trained with a relative data path from the temporary folder.
    let o = bin()
        .current_dir(dir.path())
        .args([
            "train",
            "--data",
            "sep.csv",
            "--likelihood",
            "bernoulli",
            "--hidden",
            "4",
        ])
        .args(["--epochs", "200", "--out", "model"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = dir.path().join("model");
    let gp = dir.path().join("gp");
    // Run from the repository's folder: the model still finds its data.
    ok(&[
        "gp",
        "--model",
        s(&model),
        "--samples",
        "10",
        "--out",
        s(&gp),
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gp.join("gp.json")).unwrap()).unwrap();
    // A Bernoulli model is judged by its probit probabilities, not a Gaussian density.
    let acc = summary["test_accuracy"].as_f64().unwrap();
    let nll = summary["test_nll"].as_f64().unwrap();
    assert!(
        acc > 0.9 && nll > 0.0 && nll < 0.7,
        "accuracy {acc}, NLL {nll}"
    );
    // Moved data: --data points at it.
    let moved = dir.path().join("moved.csv");
    std::fs::rename(&csv, &moved).unwrap();
    let err = refused(&[
        "gp",
        "--model",
        s(&model),
        "--out",
        s(&dir.path().join("g2")),
    ]);
    assert!(err.contains("sep.csv"), "{err}");
    ok(&[
        "gp",
        "--model",
        s(&model),
        "--data",
        s(&moved),
        "--samples",
        "10",
        "--out",
        s(&dir.path().join("g3")),
    ]);
    // The model file alone, moved anywhere, with its data: the same GP. Other data is warned
    // about (by the file's fingerprint of its training data), and the data is required.
    let file = dir.path().join("elsewhere.safetensors");
    std::fs::copy(model.join("model.safetensors"), &file).unwrap();
    let g4 = dir.path().join("g4");
    let o = ok_output(&[
        "gp",
        "--model",
        s(&file),
        "--data",
        s(&moved),
        "--samples",
        "10",
        "--out",
        s(&g4),
    ]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    let read = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("gp.json")).unwrap()).unwrap()
    };
    let (from_folder, from_file) = (read(&dir.path().join("g3")), read(&g4));
    assert_eq!(from_folder["log_marglik"], from_file["log_marglik"]);
    assert_eq!(from_folder["test_nll"], from_file["test_nll"]);
    let err = refused(&[
        "gp",
        "--model",
        s(&file),
        "--out",
        s(&dir.path().join("g5")),
    ]);
    assert!(
        err.contains("elsewhere.safetensors") && err.contains("--data"),
        "{err}"
    );
    let missing = dir.path().join("missing.safetensors");
    let err = refused(&[
        "gp",
        "--model",
        s(&missing),
        "--out",
        s(&dir.path().join("g7")),
    ]);
    assert!(err.contains("no such model folder or model file"), "{err}");
    let other = dir.path().join("other.csv");
    let text = std::fs::read_to_string(&moved)
        .unwrap()
        .replace("\n1,1", "\n1,0");
    std::fs::write(&other, text).unwrap();
    let g6 = dir.path().join("g6");
    let o = ok_output(&[
        "gp",
        "--model",
        s(&file),
        "--data",
        s(&other),
        "--samples",
        "10",
        "--out",
        s(&g6),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not the model's training data"));
    let warnings = read(&g6)["warnings"].as_array().unwrap().clone();
    assert!(
        warnings.iter().any(|w| w["kind"] == "other_data"),
        "{warnings:?}"
    );
}

#[test]
fn csv_messages_name_the_line_and_the_separator() {
    let dir = common::tmpdir();
    let out = dir.path().join("o");
    let latin1 = dir.path().join("latin1.csv");
    std::fs::write(&latin1, b"x,y\n1,2\n3,4\n5,\xe96\n").unwrap();
    let err = refused(&["train", "--data", s(&latin1), "--out", s(&out)]);
    assert!(
        err.contains("latin1.csv:4") && err.contains("0xe9"),
        "{err}"
    );
    let semi = dir.path().join("semi.csv");
    std::fs::write(&semi, "x;y\n1;2\n3;4\n").unwrap();
    let err = refused(&["train", "--data", s(&semi), "--out", s(&out)]);
    assert!(err.contains("';'-separated"), "{err}");
    let tab = dir.path().join("tab.csv");
    std::fs::write(&tab, "1,2\n3\t4\n").unwrap();
    let err = refused(&["train", "--data", s(&tab), "--out", s(&out)]);
    assert!(
        err.contains("tab.csv:2") && err.contains("tab-separated"),
        "{err}"
    );
}

#[test]
fn options_for_reproducing_the_papers_runs() {
    let dir = common::tmpdir();
    // A constant input column, as the paper's toy inputs [x, 1]: the network gets 2 inputs, and
    // gp (from model.json, or with --data given anew) reads the CSV the same way.
    let csv = dir.path().join("d.csv");
    let rows: String = (0..20)
        .map(|i| format!("{},{}\n", i as f64 / 10.0, (i as f64 / 10.0).sin()))
        .collect();
    std::fs::write(&csv, rows).unwrap();
    let model = dir.path().join("m");
    ok(&[
        "train",
        "--data",
        s(&csv),
        "--append-one",
        "--hidden",
        "4",
        "--epochs",
        "50",
        "--out",
        s(&model),
    ]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    assert_eq!(architecture(&model), "2:dense4,tanh,dense1");
    assert_eq!(m["data"]["ones"], true);
    ok(&[
        "gp",
        "--model",
        s(&model),
        "--samples",
        "5",
        "--out",
        s(&dir.path().join("g")),
    ]);
    ok(&[
        "gp",
        "--model",
        s(&model),
        "--data",
        s(&csv),
        "--samples",
        "5",
        "--out",
        s(&dir.path().join("g2")),
    ]);
    // --append-one is for CSV data; the plateau schedule's factor and patience are checked.
    refusals(
        &dir.path().join("t"),
        &[
            (
                vec!["train", "--data", "toy", "--append-one"],
                "--append-one",
            ),
            (vec!["train", "--plateau-factor", "1.5"], "--plateau-factor"),
            (
                vec!["train", "--plateau-patience", "0"],
                "--plateau-patience",
            ),
        ],
    );
    // UCI split ranges.
    let Some(data) = common::shared_data() else {
        return;
    };
    let toy = dnn2gp::data::toy::ToyConfig::default();
    let src =
        dnn2gp::data::source::Source::parse("uci:yacht:2-4", &data, toy.clone(), 1, None, false)
            .unwrap();
    let names: Vec<String> = src.load().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["yacht-split-2", "yacht-split-3", "yacht-split-4"]);
    for (spec, words) in [
        ("uci:yacht:4-2", "empty"),
        ("uci:yacht:0-20", "split 20 does not exist"),
    ] {
        let e = dnn2gp::data::source::Source::parse(spec, &data, toy.clone(), 1, None, false);
        let msg = e.err().unwrap().to_string();
        assert!(msg.contains(words), "{msg}");
    }
}

#[test]
fn several_csv_pairs_are_averaged_by_sweep_and_refused_elsewhere() {
    let dir = common::tmpdir();
    let mut trains = Vec::new();
    let mut tests = Vec::new();
    for set in 0..3 {
        for (kind, list) in [("train", &mut trains), ("test", &mut tests)] {
            let path = dir.path().join(format!("{kind}{set}.csv"));
            let rows: String = (0..15)
                .map(|i| {
                    let x = -1.5 + 0.2 * i as f64 + 0.05 * set as f64;
                    format!("{x},{}\n", x.sin())
                })
                .collect();
            std::fs::write(&path, rows).unwrap();
            list.push(s(&path).to_string());
        }
    }
    let out = dir.path().join("sw");
    let (data, test) = (trains.join(","), tests.join(","));
    ok(&[
        "sweep",
        "--data",
        &data,
        "--test",
        &test,
        "--grid",
        "0.5,2",
        "--epochs",
        "50",
        "--out",
        s(&out),
    ]);
    let sets = std::fs::read_to_string(out.join("sweep_sets.csv")).unwrap();
    let names: std::collections::BTreeSet<&str> = sets
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["train0", "train1", "train2"]
    );
    // sweep.csv holds the means over the three sets.
    let mean = |file: &str, row: usize, col: usize| -> f64 {
        file.lines()
            .nth(row)
            .unwrap()
            .split(',')
            .nth(col)
            .unwrap()
            .parse()
            .unwrap()
    };
    let main = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let per_set: f64 = (0..3).map(|k| mean(&sets, 1 + 2 * k, 3)).sum::<f64>() / 3.0;
    assert!((mean(&main, 1, 2) - per_set).abs() < 1e-9 * per_set.abs());
    let err = refused(&[
        "sweep",
        "--data",
        &data,
        "--test",
        &tests[0],
        "--out",
        s(&dir.path().join("x")),
    ]);
    assert!(err.contains("one test file per training file"), "{err}");
    let err = refused(&["train", "--data", &data, "--out", s(&dir.path().join("x"))]);
    assert!(err.contains("sweep"), "{err}");
}
