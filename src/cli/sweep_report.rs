//! A sweep's files, figures and printed table (`sweep`, `demo`).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::ctx::{fmt_g, Ctx};
use crate::report::plot::save;
use crate::report::sweep::{figure, write_sweep};
use dnn2gp::data::Split;
use dnn2gp::io::write_json;

use dnn2gp::select::{run_sweep, Method, SweepResult, SweepSpec};
use dnn2gp::Warning;

pub(crate) fn sweep_summary(res: &SweepResult, warnings: &[Warning]) -> serde_json::Value {
    let best = res.argmin(|p| p.neg_log_marglik);
    let best_test = res.argmin(|p| p.test_mse);
    serde_json::json!({
        "param": res.param,
        "chosen_by_marglik": best,
        "best_by_test_mse": best_test,
        "mean": res.mean,
        "warnings": warnings,
    })
}

/// Runs the sweep for each method (into `out/<method>/` when there are several, plus a combined
/// figure `out/sweep_both`); prints the chosen values.
pub(crate) fn run_methods(
    ctx: &Ctx,
    base: &SweepSpec,
    methods: &[Method],
    splits: &[Split],
    out: &Path,
    title: &str,
    files: &mut Vec<PathBuf>,
) -> Result<Vec<(Method, SweepResult)>> {
    let mut results = Vec::new();
    for &method in methods {
        let spec = SweepSpec {
            method,
            ..base.clone()
        };
        let dir = if methods.len() > 1 {
            out.join(method.to_string())
        } else {
            out.to_path_buf()
        };
        println!("{method}:");
        let res = run_and_report(
            ctx,
            &spec,
            splits,
            &dir,
            &format!("{title} ({method})"),
            files,
        )?;
        let best = res.argmin(|p| p.neg_log_marglik);
        let best_test = res.argmin(|p| p.test_mse);
        println!(
            "{method}: {} = {} minimises −log marglik ({:.4}); {} = {} minimises test MSE ({:.4})",
            spec.param,
            fmt_g(best.value),
            best.neg_log_marglik,
            spec.param,
            fmt_g(best_test.value),
            best_test.test_mse
        );
        results.push((method, res));
    }
    if results.len() > 1 {
        let labelled: Vec<(String, &SweepResult)> =
            results.iter().map(|(m, r)| (label(*m), r)).collect();
        let refs: Vec<(&str, &SweepResult)> =
            labelled.iter().map(|(l, r)| (l.as_str(), *r)).collect();
        files.extend(save(&figure(&refs, title), &out.join("sweep_both"))?);
    }
    Ok(results)
}

pub(crate) fn label(m: Method) -> String {
    match m {
        Method::Laplace => "Laplace".into(),
        Method::Vi => "VI".into(),
    }
}

pub(crate) fn run_and_report(
    ctx: &Ctx,
    spec: &SweepSpec,
    splits: &[Split],
    out: &Path,
    title: &str,
    files: &mut Vec<PathBuf>,
) -> Result<SweepResult> {
    let pb = ctx.bar((spec.values.len() * splits.len()) as u64, "sweep");
    let res = run_sweep(spec, splits, Some(&pb))
        .map_err(|e| crate::cli::training::vogn_options(e, crate::cli::training::VOGN_OPTIONS))?;
    pb.finish_and_clear();
    files.extend(write_sweep(out, &res, title)?);
    let mut warnings = Vec::new();
    ctx.warn(&mut warnings, res.warnings());
    let jpath = out.join("sweep.json");
    write_json(&jpath, &sweep_summary(&res, &warnings))?;
    files.push(jpath);
    print_sweep_table(&res);
    Ok(res)
}

pub(crate) fn print_sweep_table(res: &SweepResult) {
    println!(
        "{:>10} {:>16} {:>12} {:>12}",
        res.param.to_string(),
        "neg_log_marglik",
        "train_mse",
        "test_mse"
    );
    for p in &res.mean {
        println!(
            "{:>10.4} {:>16.4} {:>12.5} {:>12.5}",
            p.value, p.neg_log_marglik, p.train_mse, p.test_mse
        );
    }
}
