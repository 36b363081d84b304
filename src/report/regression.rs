//! Figure panels of the 1-D regression comparison ([`Comparison`]).

use dnn2gp::experiments::regression::Comparison;

use super::plot::BandPanel;

/// Figure panels with ±2 sd bands of y, titled `titles`: the network's Monte Carlo predictive
/// (DNN-Laplace, DNN-VI), the DNN2GP predictive centred on `dnn2gp_mean` (the network output
/// for Laplace, the Monte Carlo mean for VI) and the RBF GP.
pub fn panels(
    c: &Comparison,
    x_train: &[f64],
    y_train: &[f64],
    titles: [&str; 2],
    dnn2gp_mean: &[f64],
) -> Vec<BandPanel> {
    let sd = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .zip(&c.noise_var)
            .map(|(a, b)| (a.max(0.0) + b).sqrt())
            .collect()
    };
    let panel = |title: String, mean: &[f64], var: &[f64]| BandPanel {
        title,
        x_train: x_train.to_vec(),
        y_train: y_train.to_vec(),
        x_grid: c.x.clone(),
        mean: mean.to_vec(),
        sd: sd(var),
    };
    vec![
        panel(titles[0].to_string(), &c.mc_mean, &c.mc_var_f),
        panel(titles[1].to_string(), dnn2gp_mean, &c.gp_var_f),
        panel("GP (RBF kernel)".into(), &c.rbf_mean, &c.rbf_var_f),
    ]
}
