//! A downstream program on the core library alone: fit a Laplace posterior to a network on the
//! paper's toy data and save it; then, in a fresh process, load it and predict.
//!
//! ```sh
//! cargo run --release -p dnn2gp --example posterior -- fit toy-posterior.safetensors
//! cargo run --release -p dnn2gp --example posterior -- predict toy-posterior.safetensors
//! ```

use std::path::Path;

use dnn2gp::data::toy::{toy_sets, ToyConfig};
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::{Activation, Network, Sequential};
use dnn2gp::posterior::{FitOptions, HessianStructure, Laplace, Link, Posterior};
use dnn2gp::train::model::{fingerprint, Model};
use dnn2gp::train::{fit_map, MapConfig, Objective};
use faer::Mat;

fn fit(path: &Path) -> dnn2gp::Result<()> {
    let split = toy_sets(&ToyConfig::default(), 1).remove(0);
    let (x, y) = (split.train.x.as_ref(), split.train.y.as_ref());
    let (sigma, delta) = (1.0, 0.6);
    let net = Sequential::mlp(vec![2, 20, 1], Activation::Tanh)?;
    let lik = LikelihoodKind::Gaussian.build(sigma)?;
    let obj = Objective {
        net: &net,
        lik: lik.as_ref(),
        x,
        y,
        delta,
    };
    let cfg = MapConfig {
        epochs: 2000,
        ..Default::default()
    };
    let w = fit_map(&obj, &net.init(0), &cfg, None)?.w;
    let mut model = Model::new(net, w, LikelihoodKind::Gaussian, sigma, delta)?;
    model.data = Some(fingerprint(x, y));
    let la = Laplace::fit(model, x, y, HessianStructure::Full, &FitOptions::default())?;
    println!(
        "fitted {} on {} points: log marglik {:.4} at δ = {delta}; {:.4} at δ = 2, σ = 0.8",
        la.model().net.spec(),
        x.nrows(),
        la.log_marginal_likelihood(None, None)?,
        la.log_marginal_likelihood(Some(2.0), Some(0.8))?
    );
    la.save(path)?;
    println!("saved {}", path.display());
    Ok(())
}

fn predict(path: &Path) -> dnn2gp::Result<()> {
    let la = Laplace::load(path)?;
    println!(
        "loaded {} ({} posterior, P = {}, trained on {})",
        la.model().net.spec(),
        la.structure(),
        la.model().net.n_params(),
        la.model().data.as_deref().unwrap_or("unknown data")
    );
    // Inputs [x, 1] on a grid from inside the data (|x| < 2) to far outside it.
    let grid: Vec<f64> = (0..9).map(|i| -8.0 + 2.0 * i as f64).collect();
    let xs = Mat::from_fn(grid.len(), 2, |i, j| if j == 0 { grid[i] } else { 1.0 });
    let pred = la.predict(xs.as_ref(), Link::Probit)?;
    println!("{:>6} {:>10} {:>10} {:>10}", "x", "mean", "sd f", "sd y");
    for (i, (fv, yv)) in pred
        .functional_variance()
        .iter()
        .zip(pred.variance())
        .enumerate()
    {
        println!(
            "{:>6.1} {:>10.4} {:>10.4} {:>10.4}",
            grid[i],
            pred.mean[(i, 0)],
            fv.sqrt(),
            yv.sqrt()
        );
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, path] if cmd == "fit" => fit(Path::new(path)),
        [cmd, path] if cmd == "predict" => predict(Path::new(path)),
        _ => {
            eprintln!("usage: posterior (fit | predict) FILE.safetensors");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(if e.is_input_error() { 2 } else { 1 });
    }
}
