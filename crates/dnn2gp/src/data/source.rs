//! Named data sources as users write them on the command line: `toy`, `snelson`,
//! `uci:NAME[:SPLIT]`, or the path of a CSV file.

use std::path::{Path, PathBuf};

use faer::Mat;

use super::toy::{self, ToyConfig};
use super::{csv, linspace, snelson, uci, Split};
use crate::error::{Error, Result};

/// Where data comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// The paper's toy generator, `sets` independent data sets.
    Toy {
        /// Generator settings.
        config: ToyConfig,
        /// Number of data sets.
        sets: usize,
    },
    /// Snelson's 1-D data in `dir`.
    Snelson {
        /// Folder holding `train_inputs`, `train_outputs`.
        dir: PathBuf,
    },
    /// A UCI set in `dir`, the given splits.
    Uci {
        /// Folder of the set.
        dir: PathBuf,
        /// Split indices.
        splits: Vec<usize>,
    },
    /// User CSV files; without a test file the training file doubles as test set.
    Csv {
        /// Training file.
        train: PathBuf,
        /// Optional test file.
        test: Option<PathBuf>,
        /// Append a constant input column of ones (the paper's toy inputs `[x, 1]`).
        #[serde(default)]
        ones: bool,
    },
    /// Several data sets, one split each (CSV train/test pairs averaged like the toy's sets).
    Sets {
        /// The data sets.
        sets: Vec<Source>,
    },
}

impl Source {
    /// Parses a spec. `data_dir` holds `snelson/` and `uci/NAME/`.
    /// With `ones`, CSV inputs get a constant column of ones appended (refused for the other
    /// sources).
    pub fn parse(
        spec: &str,
        data_dir: &Path,
        toy: ToyConfig,
        sets: usize,
        test: Option<PathBuf>,
        ones: bool,
    ) -> Result<Self> {
        let parts: Vec<&str> = spec.split(':').collect();
        if test.is_some() && matches!(parts[0], "toy" | "snelson" | "uci") {
            return Err(Error::Invalid(format!(
                "--test applies to CSV data only; --data {spec} has its own test set"
            )));
        }
        if ones && matches!(parts[0], "toy" | "snelson" | "uci") {
            return Err(Error::Invalid(format!(
                "--append-one applies to CSV data (the toy's inputs are [x, 1] already), not \
                 --data {spec}"
            )));
        }
        if spec.contains(',') {
            // Several CSV files, each with its test file in the same place of --test.
            let trains: Vec<&str> = spec.split(',').map(str::trim).collect();
            let tests: Vec<Option<PathBuf>> = match &test {
                None => vec![None; trains.len()],
                Some(t) => t
                    .to_string_lossy()
                    .split(',')
                    .map(|p| Some(PathBuf::from(p.trim())))
                    .collect(),
            };
            if tests.len() != trains.len() {
                return Err(Error::Invalid(format!(
                    "--data names {} CSV files but --test {}; give one test file per training file",
                    trains.len(),
                    tests.len()
                )));
            }
            if let Some(t) = trains
                .iter()
                .find(|t| t.is_empty() || t.contains(':') || matches!(**t, "toy" | "snelson"))
            {
                return Err(Error::Invalid(format!(
                    "--data {spec}: '{t}' in a list: lists are of CSV files"
                )));
            }
            return Ok(Source::Sets {
                sets: trains
                    .into_iter()
                    .zip(tests)
                    .map(|(train, test)| Source::Csv {
                        train: PathBuf::from(train),
                        test,
                        ones,
                    })
                    .collect(),
            });
        }
        match parts[0] {
            "toy" if sets == 0 => Err(Error::Invalid("--sets must be positive".into())),
            "toy" => Ok(Source::Toy { config: toy, sets }),
            "snelson" => {
                let dir = data_dir.join("snelson");
                if !dir.is_dir() {
                    return Err(Error::option(
                        "--data",
                        format!(
                            "snelson: no folder {} (set --data-dir, or DNN2GP_DATA, to the folder \
                             holding snelson/)",
                            dir.display()
                        ),
                    ));
                }
                Ok(Source::Snelson { dir })
            }
            "uci" => {
                let name = parts.get(1).filter(|s| !s.is_empty()).ok_or_else(|| {
                    Error::Invalid("--data uci:NAME needs a set name, e.g. uci:yacht".into())
                })?;
                let dir = data_dir.join("uci").join(name);
                if !dir.is_dir() {
                    return Err(Error::option(
                        "--data",
                        format!(
                            "{spec}: no folder {} (set --data-dir, or DNN2GP_DATA, to the folder \
                             holding uci/)",
                            dir.display()
                        ),
                    ));
                }
                let available = uci::n_splits(&dir);
                let number = |t: &str| {
                    t.parse::<usize>().map_err(|_| {
                        Error::Invalid(format!(
                            "--data {spec}: split '{t}' is not a number, a range A-B or 'all'"
                        ))
                    })
                };
                let splits: Vec<usize> = match parts.get(2) {
                    None | Some(&"all") => (0..available).collect(),
                    Some(s) => match s.split_once('-') {
                        Some((a, b)) => {
                            let (a, b) = (number(a)?, number(b)?);
                            if a > b {
                                return Err(Error::Invalid(format!(
                                    "--data {spec}: the range {a}-{b} is empty"
                                )));
                            }
                            (a..=b).collect()
                        }
                        None => vec![number(s)?],
                    },
                };
                if let Some(&s) = splits.iter().find(|&&s| s >= available) {
                    return Err(Error::Invalid(format!(
                        "--data {spec}: split {s} does not exist ({} has splits 0-{})",
                        dir.display(),
                        available.saturating_sub(1)
                    )));
                }
                if splits.is_empty() {
                    return Err(Error::Invalid(format!(
                        "{}: no index_train_*.txt splits",
                        dir.display()
                    )));
                }
                Ok(Source::Uci { dir, splits })
            }
            _ => Ok(Source::Csv {
                train: PathBuf::from(spec),
                test,
                ones,
            }),
        }
    }

    /// The same source with every path made absolute, so that a model file that records it
    /// can be read from any working directory.
    pub fn absolute(&self) -> Result<Self> {
        let abs = |p: &Path| p.canonicalize().map_err(|e| Error::io(p, e));
        Ok(match self {
            Source::Toy { .. } => self.clone(),
            Source::Snelson { dir } => Source::Snelson { dir: abs(dir)? },
            Source::Uci { dir, splits } => Source::Uci {
                dir: abs(dir)?,
                splits: splits.clone(),
            },
            Source::Csv { train, test, ones } => Source::Csv {
                train: abs(train)?,
                test: test.as_deref().map(abs).transpose()?,
                ones: *ones,
            },
            Source::Sets { sets } => Source::Sets {
                sets: sets.iter().map(Source::absolute).collect::<Result<_>>()?,
            },
        })
    }

    /// This source reading its CSV files as `like` does: with the column of ones appended if
    /// `like` appends it (for a model's data given anew).
    pub fn reading_as(self, like: &Source) -> Self {
        match (self, like) {
            (Source::Csv { train, test, .. }, Source::Csv { ones, .. }) => Source::Csv {
                train,
                test,
                ones: *ones,
            },
            (s, _) => s,
        }
    }

    /// The files and folders the source reads.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Source::Toy { .. } => Vec::new(),
            Source::Snelson { dir } | Source::Uci { dir, .. } => vec![dir.as_path()],
            Source::Csv { train, test, .. } => std::iter::once(train.as_path())
                .chain(test.as_deref())
                .collect(),
            Source::Sets { sets } => sets.iter().flat_map(Source::paths).collect(),
        }
    }

    /// Loads the train/test splits.
    pub fn load(&self) -> Result<Vec<Split>> {
        match self {
            Source::Toy { config, sets } => Ok(toy::toy_sets(config, *sets)),
            Source::Snelson { dir } => Ok(vec![snelson::load(dir)?]),
            Source::Uci { dir, splits } => splits.iter().map(|s| uci::load(dir, *s)).collect(),
            Source::Sets { sets } => {
                let mut out = Vec::new();
                for s in sets {
                    out.extend(s.load()?);
                }
                Ok(out)
            }
            Source::Csv { train, test, ones } => {
                let read = |p: &Path| -> Result<super::Dataset> {
                    let mut d = csv::read_dataset(p)?;
                    if *ones {
                        let (n, c) = (d.x.nrows(), d.x.ncols());
                        d.x = Mat::from_fn(n, c + 1, |i, j| if j < c { d.x[(i, j)] } else { 1.0 });
                    }
                    Ok(d)
                };
                let tr = read(train)?;
                let te = match test {
                    Some(t) => read(t)?,
                    None => tr.clone(),
                };
                if te.x.ncols() != tr.x.ncols() {
                    return Err(Error::Invalid(format!(
                        "test file has {} input columns, training file {}",
                        te.x.ncols(),
                        tr.x.ncols()
                    )));
                }
                Ok(vec![Split {
                    name: train
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    train: tr,
                    test: te,
                    y_scale: 1.0,
                }])
            }
        }
    }

    /// For 1-D problems: a plotting grid `xs` and the network inputs for it.
    pub fn plot_grid(&self, split: &Split, n: usize) -> Option<(Vec<f64>, Mat<f64>)> {
        let col = |xs: &[f64]| Mat::from_fn(xs.len(), 1, |i, _| xs[i]);
        match self {
            Source::Toy { .. } => {
                let xs = linspace(-5.0, 5.0, n);
                let f = toy::features(&xs);
                Some((xs, f))
            }
            Source::Snelson { .. } => {
                let xs = linspace(-4.0, 10.0, n);
                let f = col(&xs);
                Some((xs, f))
            }
            _ if split.train.x.ncols() == 1 => {
                let (lo, hi) = split
                    .train
                    .x
                    .col(0)
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                        (a.min(*v), b.max(*v))
                    });
                let pad = 0.4 * (hi - lo).max(1e-9);
                let xs = linspace(lo - pad, hi + pad, n);
                let f = col(&xs);
                Some((xs, f))
            }
            _ => None,
        }
    }

    /// The x coordinate to plot for training inputs (first column).
    pub fn plot_x(split: &Split) -> Vec<f64> {
        split.train.x.col(0).iter().copied().collect()
    }
}
