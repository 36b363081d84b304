//! The README's commands run as written on a fresh machine: every `dnn2gp` command in its
//! shell blocks parses (its options exist and its values are valid), and those that run in
//! seconds on the shared data run, in a fresh folder, as written (the downloads from a mirror
//! on 127.0.0.1, there being no network here).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::common;
use crate::fetch::serve;
use crate::util::*;

/// The commands of the README's shell blocks, continuation lines joined, comments cut.
fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(common::repository().join("README.md")).unwrap();
    let mut out = Vec::new();
    for block in text.split("```").skip(1).step_by(2) {
        let Some(body) = block.strip_prefix("sh\n") else {
            continue;
        };
        let mut cur = String::new();
        for line in body.lines() {
            cur.push_str(line.trim());
            if cur.ends_with('\\') {
                cur.pop();
                cur.push(' ');
                continue;
            }
            let cmd = cur.split(" # ").next().unwrap_or("").trim().to_string();
            if !cmd.is_empty() {
                out.push(cmd);
            }
            cur.clear();
        }
    }
    out
}

/// The arguments of a `dnn2gp …` command.
fn args(cmd: &str) -> Vec<String> {
    cmd.split_whitespace().skip(1).map(String::from).collect()
}

#[test]
fn every_readme_command_parses() {
    let cmds: Vec<String> = readme_commands()
        .into_iter()
        .filter(|c| c.starts_with("dnn2gp "))
        .collect();
    assert!(cmds.len() >= 15, "{cmds:?}");
    for c in &cmds {
        let mut a = args(c);
        a.push("--help".into());
        let out = Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
            .args(&a)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The README's command that starts with `prefix`, as its arguments.
fn readme(prefix: &str) -> Vec<String> {
    let cmds = readme_commands();
    let c = cmds
        .iter()
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no README command starts with '{prefix}': {cmds:?}"));
    args(c)
}

/// Runs `args` in `dir` (with `DATA` standing for the shared data folder), expecting success.
fn run_in(dir: &Path, args: &[String], data: &Path) {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "DATA" {
                s(data).to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
        .args(&args)
        .arg("--quiet")
        .current_dir(dir)
        .env_remove("DNN2GP_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_commands_run_as_written() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = common::tmpdir();
    let d = dir.path();
    // The digits: fetched, then the README's run on them.
    let mirror = serve(HashMap::from([(
        "/digits.csv.gz".to_string(),
        std::fs::read(data.join("digits/digits.csv.gz")).unwrap(),
    )]));
    let mut fetch = readme("dnn2gp data fetch digits");
    fetch.extend(["--mirror".into(), format!("{mirror}/")]);
    run_in(d, &fetch, &data);
    run_in(d, &readme("dnn2gp reproduce mnist --data digits"), &data);
    assert!(d.join("dnn2gp-out/mnist/posterior.safetensors").exists());
    // Your own network: weights of an MLP 1-50-1 tanh and its data, imported, then its GP.
    let csv: String = (0..60)
        .map(|i| {
            let x = i as f64 / 10.0 - 3.0;
            format!("{x},{}\n", x.sin())
        })
        .collect();
    std::fs::write(d.join("data.csv"), csv).unwrap();
    ok(&[
        "train",
        "--data",
        s(&d.join("data.csv")),
        "--hidden",
        "50",
        "--epochs",
        "200",
        "--out",
        s(&d.join("trained")),
    ]);
    std::fs::copy(
        d.join("trained/model.safetensors"),
        d.join("mlp.safetensors"),
    )
    .unwrap();
    run_in(d, &readme("dnn2gp import --weights mlp.safetensors"), &data);
    run_in(d, &readme("dnn2gp gp --model mlp-model"), &data);
    // Snelson: train, GP, predictive at new x.
    std::fs::write(d.join("new-x.csv"), "x\n1.0\n2.5\n4.0\n").unwrap();
    run_in(d, &readme("dnn2gp train --data snelson"), &data);
    run_in(d, &readme("dnn2gp gp    --model snelson-model"), &data);
    run_in(d, &readme("dnn2gp predict --model snelson-model"), &data);
    assert!(d.join("snelson-pred/predictions.csv").exists());
}
