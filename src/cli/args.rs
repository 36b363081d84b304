//! Arguments, with laplace-torch's words where they fit (`--hessian full|diag`,
//! `--likelihood regression`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dnn2gp::gp::Space;
use dnn2gp::likelihood::LikelihoodKind;
use dnn2gp::nn::Activation;
use dnn2gp::nn::Dtype;
use dnn2gp::posterior::{HessianStructure, LinkApprox, PredType, PriorStructure, Subset};
use dnn2gp::select::SweepParam;
use dnn2gp::train::vogn::{Covariance, Curvature};

dnn2gp::words! {
    /// The posteriors of `sweep --method`: Laplace, VI, or both.
    pub enum Methods("method") {
        /// MAP and Laplace-GGN.
        Laplace = ["laplace"],
        /// VOGN.
        Vi = ["vi"],
        /// Both, one figure of the two −log marglik curves.
        Both = ["both"],
    }
}

dnn2gp::words! {
    /// The image data of the image experiments.
    pub enum ImageData("image data") {
        /// MNIST's IDX files.
        Mnist = ["mnist"],
        /// The 8×8 handwritten digits.
        Digits = ["digits"],
    }
}

dnn2gp::words! {
    /// Which split of the images the GP views show.
    pub enum ImageSplit("image split") {
        /// The training images (as the paper's code).
        Train = ["train"],
        /// The test images.
        Test = ["test"],
    }
}

/// `--prior`: the evidence's maximum, the model's δ, or a given δ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriorArg {
    /// `marglik`: δ at the maximum of the Laplace evidence.
    Marglik,
    /// `model`: the δ the model was trained with.
    Model,
    /// A positive number.
    Value(f64),
}

impl std::str::FromStr for PriorArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "marglik" => Ok(PriorArg::Marglik),
            "model" => Ok(PriorArg::Model),
            v => match v.parse::<f64>() {
                Ok(d) if d.is_finite() && d > 0.0 => Ok(PriorArg::Value(d)),
                _ => Err(format!(
                    "'{v}': expected marglik, model or a positive number"
                )),
            },
        }
    }
}

impl std::fmt::Display for PriorArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PriorArg::Marglik => f.write_str("marglik"),
            PriorArg::Model => f.write_str("model"),
            PriorArg::Value(d) => write!(f, "{d}"),
        }
    }
}

/// `--sigma`: the model's noise, the evidence's maximum, or a given σ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseArg {
    /// `marglik`: σ (with δ) at the maximum of the Laplace evidence.
    Marglik,
    /// `model`: the σ the model was trained with.
    Model,
    /// A positive number.
    Value(f64),
}

impl std::str::FromStr for NoiseArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<PriorArg>()? {
            PriorArg::Marglik => Ok(NoiseArg::Marglik),
            PriorArg::Model => Ok(NoiseArg::Model),
            PriorArg::Value(v) => Ok(NoiseArg::Value(v)),
        }
    }
}

/// The posterior `gp` and `predict` fit on the training data, and its prior and noise.
#[derive(Debug, Args, Clone)]
pub struct PosteriorArgs {
    /// Posterior precision: full (the GGN), diag (its diagonal), kron (KFAC, per layer) or
    /// lowrank (the GGN's top --rank eigenpairs) [default: full].
    #[arg(long)]
    pub hessian: Option<HessianStructure>,
    /// Weights the posterior covers: all, or last-layer (the rest held at w*; laplace-torch's
    /// default) [default: all].
    #[arg(long)]
    pub subset: Option<Subset>,
    /// Eigenpairs of a lowrank posterior [default: 100].
    #[arg(long)]
    pub rank: Option<usize>,
    /// Prior precision δ: model (the model's), marglik (the maximum of the Laplace evidence)
    /// or a number; `--delta` is the same option.
    #[arg(
        long,
        visible_alias = "delta",
        value_name = "PRIOR",
        allow_hyphen_values = true
    )]
    pub prior: Option<PriorArg>,
    /// With --prior marglik: one δ (scalar) or one per parameter tensor (layerwise; full, diag
    /// and kron).
    #[arg(long, default_value = "scalar")]
    pub prior_structure: PriorStructure,
    /// Noise σ of a Gaussian likelihood: model, marglik (with δ at the maximum of the evidence)
    /// or a number.
    #[arg(long, value_name = "SIGMA", allow_hyphen_values = true)]
    pub sigma: Option<NoiseArg>,
    /// δ, and σ for a Gaussian likelihood, at the maximum of the Laplace evidence (laplace-torch's
    /// `optimize_prior_precision(method="marglik")`): --prior marglik --sigma marglik.
    #[arg(long, conflicts_with_all = ["prior", "sigma"])]
    pub marglik: bool,
}

impl PosteriorArgs {
    /// `--hessian`, full when not given.
    pub fn structure(&self) -> HessianStructure {
        self.hessian.unwrap_or(HessianStructure::Full)
    }

    /// `--subset`, all when not given.
    pub fn weights(&self) -> Subset {
        self.subset.unwrap_or(Subset::All)
    }
}

/// Turn a trained deep network into a Gaussian process (DNN2GP, Khan et al. 2019).
#[derive(Debug, Parser)]
#[command(name = "dnn2gp", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Memory limit in GiB for large matrices (default: the memory available).
    #[arg(long, global = true, value_name = "GIB", allow_negative_numbers = true)]
    pub max_memory: Option<f64>,
}

const EXAMPLES: &str = "Examples:
  dnn2gp demo                                   # toy data: train, GP, δ sweep, figures, summary.json
  dnn2gp train --data snelson --data-dir DATA --hidden 32 --activation sigmoid \\
               --delta 0.1 --sigma 0.286 --out snelson-model
  dnn2gp gp --model snelson-model --out snelson-gp
  dnn2gp sweep --data toy --sets 10 --param delta --grid logspace:-2:2:21 --out sweep-delta
  dnn2gp sweep --data uci:yacht:0-4 --data-dir DATA --param sigma --grid logspace:-2:0:9 \\
               --out sweep-sigma
  dnn2gp predict --model snelson-model --inputs new-x.csv --out snelson-pred
  dnn2gp evaluate --model lenet5.safetensors --arch SPEC --hessian kron,diag \
                  --subset last-layer,all --angles 0,30,60,90,180 --data-dir DATA --out eval
  dnn2gp data fetch mnist --data-dir DATA
  dnn2gp reproduce mnist --data-dir DATA --out mnist    # LeNet-5, Laplace, kernel figures";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the main job on built-in toy data: δ sweeps by Laplace and VI, the GP, the figures.
    #[command(after_help = "Example:\n  dnn2gp demo --out demo-out")]
    Demo(DemoArgs),
    /// Train the MAP network (Adam, then an L-BFGS polish) and save it.
    #[command(
        after_help = "Example:\n  dnn2gp train --data toy --hidden 20 --delta 0.6 --out model"
    )]
    Train(TrainCmd),
    /// Make a model folder from a network trained elsewhere (PyTorch `nn.Sequential` weights in
    /// a safetensors file, an MLP by --hidden, any chain by --arch; or any network as ONNX by
    /// --onnx), for `gp`: no training.
    #[command(
        after_help = "Examples (weights from safetensors.torch.save_file(model.state_dict(), \"w.safetensors\")
for nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))):
  dnn2gp import --weights w.safetensors --data my.csv --hidden 50 --activation tanh \\
                --sigma 0.1 --delta 1 --out imported
  dnn2gp gp --model imported --out imported-gp
Any network, from torch.onnx.export(net.eval(), x, \"net.onnx\", do_constant_folding=False, dynamo=False):
  dnn2gp import --onnx net.onnx --data my.csv --likelihood categorical --out imported"
    )]
    Import(ImportCmd),
    /// Laplace-GGN and the DNN2GP GP of a saved model: kernel, predictive, marginal likelihood.
    #[command(
        after_help = "Example:\n  dnn2gp gp --model model --hessian full --space auto --out gp"
    )]
    Gp(GpCmd),
    /// Train with VOGN; DNN-VI and DNN2GP-VI predictives, the VI marginal likelihood and the
    /// kernel during training.
    #[command(
        after_help = "Example:\n  dnn2gp vi --data snelson --data-dir DATA --hidden 32 --activation sigmoid --delta 1 \\\n            --sigma 0.286 --mc-samples 10 --vi-batch-size 20 --covariance diag --out snelson-vi"
    )]
    Vi(ViCmd),
    /// The predictive of a saved model at new inputs: mean and variance (regression) or class
    /// probabilities (classification), with its Laplace-GGN posterior.
    #[command(after_help = "Examples:
  dnn2gp predict --model model --inputs new.csv --out pred      # new.csv: one column per input
  dnn2gp predict --model model --inputs test.csv --hessian diag # a last column of targets adds
                                                                # MSE or accuracy and NLL
  dnn2gp predict --model mnist --inputs DATA/mnist/t10k-images-idx3-ubyte.gz \\
                 --labels DATA/mnist/t10k-labels-idx1-ubyte.gz --out mnist-pred")]
    Predict(PredictCmd),
    /// Calibration of a classifier and its Laplace posteriors (kron, diag, full; last layer or
    /// all weights) on clean and rotated test images and against out-of-distribution images:
    /// accuracy, NLL, ECE, Brier, confidence, AUROC, FPR95; reliability diagrams.
    #[command(after_help = "Examples:
  dnn2gp evaluate --model model.safetensors --data-dir DATA --angles 0,30,60,90,180 --out eval
  dnn2gp evaluate --model lenet5.safetensors --arch \
        1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,flatten,dense120,relu,dense84,relu,dense10 \
        --hessian kron,diag --subset last-layer,all --link probit --data-dir DATA --out eval
  dnn2gp evaluate --model resnet.onnx --hessian kron --subset last-layer --dtype f32 \
        --data-dir DATA --out eval-f32           # forward passes in f32, as laplace-torch
  dnn2gp evaluate --model model.safetensors --test-images rotated-images.idx.gz \
        --test-labels rotated-labels.idx.gz --rotated --angles 0,15,30,45,60,90,120,180 \
        --ood-images fashion-t10k-images-idx3-ubyte.gz --out eval")]
    Evaluate(EvaluateCmd),
    /// Retrain over a grid of δ, σ or width and record −log marglik, train and test MSE.
    #[command(
        after_help = "Example:\n  dnn2gp sweep --data toy --param delta --grid logspace:-2:2:21 --out sweep"
    )]
    Sweep(SweepCmd),
    /// Reproduce the paper's image experiments: train, compute the GP views, draw the figures.
    #[command(subcommand)]
    Reproduce(ReproduceCmd),
    /// Run one of the peers' workloads B1–B8 (or `gemm`, the machine's GEMM peak) on their data
    /// files and print one JSON line per run with its phase timings and its agreement with the
    /// peer (`B6` and `B8` run every variant; `B6:kron:last_layer` one).
    #[command(after_help = "Examples:
  dnn2gp bench B1 --baselines ../shared/baselines/data
  for w in gemm B1 B2 B3 B4 B5; do dnn2gp bench $w --baselines ../shared/baselines/data; done
  DNN2GP_DATA=../shared/data dnn2gp bench B6:kron:last_layer --baselines ../shared/baselines/data
  DNN2GP_DATA=../shared/data dnn2gp bench B8:map --dtype f32 --baselines ../shared/baselines/data
  dnn2gp bench layers:B8 --dtype f32 --baselines ../shared/baselines/data   # GFLOP/s per step
  DNN2GP_DATA=../shared/data dnn2gp bench B8:kron:all:frozen_bn --baselines ../shared/baselines/data")]
    Bench(BenchCmd),
    /// Data sets: download them into a cache folder.
    #[command(subcommand)]
    Data(DataCmd),
}

#[derive(Debug, Subcommand)]
pub enum ReproduceCmd {
    /// LeNet-5 on MNIST by Adam, the diagonal Laplace-GGN over the training set, then the GP on
    /// 30 images per class: kernel (full, diag, sum), GP posterior mean J(x)w*, p, var_f, var_y.
    #[command(after_help = "Examples:
  dnn2gp reproduce mnist --data-dir DATA --out mnist            # train 10 epochs, then the GP
  dnn2gp reproduce mnist --data-dir DATA --model mnist/model.safetensors --out mnist-gp
  dnn2gp reproduce mnist --data digits --data-dir DATA --epochs 30 --lr 0.01   # 8×8, seconds")]
    Mnist(ImagesCmd),
    /// Binary MNIST (two digits, Bernoulli likelihood) trained by VOGN with a diagonal
    /// covariance; the same GP views with the kernel `J(x) δ⁻¹ J(x')ᵀ` and `Σ` from q.
    #[command(
        name = "binary-mnist",
        after_help = "Examples:
  dnn2gp reproduce binary-mnist --data-dir DATA --digits 0,1 --out binary
  dnn2gp reproduce binary-mnist --data-dir DATA --digits 4,9 --epochs 15"
    )]
    BinaryMnist(BinaryCmd),
}

#[derive(Debug, Args)]
pub struct BenchCmd {
    /// B1, B2, B3, B4, B5, B6, B6:map, B6:STRUCTURE:SUBSET[:layerwise] (e.g. B6:kron:all), B7,
    /// B7:M[:coupled], B8, B8:map, B8:STRUCTURE:SUBSET[:frozen_bn] (the ResNet, from its ONNX file),
    /// layers:B6 or layers:B8 (each step of the network's forward pass, timed, in GFLOP/s) or
    /// gemm.
    pub workload: String,
    /// The baselines' data folder (weights, inputs and the peers' outputs).
    #[arg(
        long,
        env = "DNN2GP_BASELINES",
        default_value = "../shared/baselines/data"
    )]
    pub baselines: PathBuf,
    /// Runs; each prints its own JSON line.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// The scalar type of B6's, B8's and layers:…'s forward passes (features, outputs): f64
    /// (the default) or f32, as the peers run them.
    #[arg(long, value_name = "f64|f32")]
    pub dtype: Option<Dtype>,
}

#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Download a data set into a cache folder and check its checksums.
    #[command(after_help = "Examples:
  dnn2gp data fetch mnist                          # into data/mnist, where reproduce reads it
  dnn2gp data fetch digits                         # into data/digits (reproduce --data digits)
  dnn2gp data fetch mnist --data-dir DATA          # into DATA/mnist (reproduce --data-dir DATA)
  dnn2gp data fetch mnist --mirror http://127.0.0.1:8000/mnist/")]
    Fetch(FetchCmd),
}

dnn2gp::words! {
    /// The data sets `data fetch` downloads.
    pub enum DataSetName("data set") {
        /// MNIST's four IDX files.
        Mnist = ["mnist"],
        /// The 8×8 handwritten digits.
        Digits = ["digits"],
    }
}

#[derive(Debug, Args)]
pub struct FetchCmd {
    /// The data set: mnist (the four IDX files, 11 MB) or digits (the 8×8 handwritten digits,
    /// 1,797 images, 26 kB).
    pub dataset: DataSetName,
    /// Folder holding the data sets: the files go to DATA_DIR/mnist or DATA_DIR/digits, where
    /// `reproduce mnist --data-dir DATA_DIR` reads them.
    #[arg(long, env = "DNN2GP_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// Folder to put the files in instead of DATA_DIR/<data set>.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Base URL of the mirror holding `<name>.gz` (default: torchvision's MNIST mirror;
    /// scikit-learn's repository for the digits).
    #[arg(long)]
    pub mirror: Option<String>,
}

/// Images, network and training shared by the image experiments.
#[derive(Debug, Args, Clone)]
pub struct ImageArgs {
    /// Images: mnist (the IDX files in DATA_DIR/mnist) or digits (DATA_DIR/digits/digits.csv.gz,
    /// 8×8 pixels, 1500 training and 297 test images).
    #[arg(long, default_value = "mnist")]
    pub data: ImageData,
    /// Folder holding `mnist/` (see `dnn2gp data fetch mnist`) and `digits/`.
    #[arg(long, env = "DNN2GP_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// Architecture spec, e.g. `1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,flatten,dense120,relu,dense84,relu,dense10`
    /// (default: LeNet-5 for MNIST, `1x8x8:conv6k3,relu,pool,flatten,dense32,relu,dense<K>` for
    /// digits).
    #[arg(long)]
    pub arch: Option<String>,
    /// Trained weights to load instead of training (safetensors with PyTorch's
    /// `nn.Sequential` names, f32 or f64).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Use only the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Images per class in the GP views (the paper: the first 30 of each class).
    #[arg(long, default_value_t = 30)]
    pub per_class: usize,
    /// The first N images of the split in the GP views instead of --per-class of each class
    /// (sorted by class for the figures; the accuracy is on exactly these images).
    #[arg(long, conflicts_with = "per_class")]
    pub first: Option<usize>,
    /// Split the GP-view images come from: train (as the paper's code) or test.
    #[arg(long, default_value = "train")]
    pub images: ImageSplit,
    /// Seed of the initialisation and the minibatches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct ImagesCmd {
    #[command(flatten)]
    pub images: ImageArgs,
    /// Prior precision δ of N(0, δ⁻¹I) on the weights (the loss is the sum over the data).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub delta: f64,
    /// Adam epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f64,
    /// Output folder.
    #[arg(long, default_value = "dnn2gp-out/mnist")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BinaryCmd {
    #[command(flatten)]
    pub images: ImageArgs,
    /// The two digits; the second is the positive class.
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub digits: Vec<usize>,
    /// Prior precision δ of N(0, δ⁻¹I) on the weights. It also bounds every posterior variance
    /// by 1/δ, which keeps VOGN's steps `α Σ ∇` stable; δ = 1 diverges on 4 vs 9.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub delta: f64,
    /// VOGN epochs (`--vi-epochs` is the same option).
    #[arg(
        long = "epochs",
        visible_alias = "vi-epochs",
        value_name = "EPOCHS",
        default_value_t = 10
    )]
    pub vi_epochs: usize,
    /// Step β of the precision update.
    #[arg(long, default_value_t = 0.003)]
    pub beta: f64,
    /// Step α of the mean update (`--vi-lr` is the same option).
    #[arg(
        long = "lr",
        visible_alias = "vi-lr",
        value_name = "LR",
        default_value_t = 0.003,
        allow_negative_numbers = true
    )]
    pub vi_lr: f64,
    /// Momentum on the gradient.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Initial precision of q (Σ₀⁻¹ = s I): small initial noise lets the network leave the
    /// flat start (with 100, 4 vs 9 stays at chance for 5 epochs).
    #[arg(long, default_value_t = 1000.0)]
    pub init_precision: f64,
    /// Monte Carlo samples of q per step.
    #[arg(long, default_value_t = 1)]
    pub mc_samples: usize,
    /// Output folder.
    #[arg(long, default_value = "dnn2gp-out/binary-mnist")]
    pub out: PathBuf,
}

/// Where the data come from.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// `toy`, `snelson`, `uci:NAME[:SPLIT|A-B|all]`, or a CSV file (last column = target).
    #[arg(long, default_value = "toy")]
    pub data: String,
    /// CSV test file (for CSV data; default: the training file).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Folder holding `snelson/` and `uci/NAME/`.
    #[arg(long, env = "DNN2GP_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// CSV data: append a constant input column of ones, as the paper's toy inputs `[x, 1]`.
    #[arg(long)]
    pub append_one: bool,
    /// Toy data: number of independent data sets [default: 1].
    #[arg(long)]
    pub sets: Option<usize>,
    /// Toy data: noise standard deviations of the three clusters [default: 0.1,1,0.1] (the
    /// poster's higher-variance variant: 0.3,1.5,0.3).
    #[arg(long, value_delimiter = ',')]
    pub toy_noise: Option<Vec<f64>>,
    /// Toy data: training points per set [default: 100].
    #[arg(long)]
    pub toy_n: Option<usize>,
    /// Toy data: test points per set [default: 2000].
    #[arg(long)]
    pub toy_n_test: Option<usize>,
    /// Seed of the toy generator [default: 7].
    #[arg(long)]
    pub data_seed: Option<u64>,
}

/// Architecture, likelihood and prior.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Architecture spec instead of an MLP of --hidden and --activation: layers after the input
    /// shape, e.g. `1x8x8:conv6k3,relu,pool,flatten,dense32,relu,dense10` (CxHxW for images, D
    /// for vectors; dense<N>, conv<C>k<K>, pool, avgpool, flatten, relu, tanh, sigmoid,
    /// identity); its inputs and outputs must fit the data.
    #[arg(long, value_name = "SPEC", conflicts_with_all = ["hidden", "activation"])]
    pub arch: Option<String>,
    /// Hidden widths, e.g. `20` or `50,50`.
    #[arg(long, value_delimiter = ',', default_values_t = [20])]
    pub hidden: Vec<usize>,
    /// Hidden activation: tanh, sigmoid, relu, identity.
    #[arg(long, default_value = "tanh")]
    pub activation: Activation,
    /// Likelihood: gaussian (alias: regression), bernoulli (one 0/1 target column) or
    /// categorical (alias: classification; one column of labels 0..K−1, or K one-hot columns).
    #[arg(long, default_value = "gaussian")]
    pub likelihood: LikelihoodKind,
    /// Categorical: the number of classes K (default: the largest training label + 1).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Noise standard deviation σ of the Gaussian likelihood.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub sigma: f64,
    /// Prior precision δ (prior N(0, δ⁻¹ I) on the weights).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub delta: f64,
}

/// Training settings.
#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Adam epochs.
    #[arg(long, default_value_t = 10_000)]
    pub epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub lr: f64,
    /// Minibatch size (default: full batch).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Keep the learning rate fixed (no decay on plateau).
    #[arg(long)]
    pub no_plateau: bool,
    /// Multiply the learning rate by this after a plateau (the paper's UCI runs: 0.8).
    #[arg(
        long,
        default_value_t = 0.5,
        conflicts_with = "no_plateau",
        allow_negative_numbers = true
    )]
    pub plateau_factor: f64,
    /// Epochs without improvement that make a plateau.
    #[arg(long, default_value_t = 200, conflicts_with = "no_plateau")]
    pub plateau_patience: usize,
    /// L-BFGS iterations after Adam, to reach a stationary point (0: none).
    #[arg(long, default_value_t = 1000)]
    pub polish_iters: usize,
    /// Seed of the initialisation (PyTorch's default uniform ±1/√fan_in).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// VOGN settings.
#[derive(Debug, Args, Clone)]
pub struct VognArgs {
    /// VOGN epochs (passes over the data).
    #[arg(long, default_value_t = 2000)]
    pub vi_epochs: usize,
    /// Step β of the precision update, Σ⁻¹ ← (1−β)Σ⁻¹ + β(Ĥ + δI).
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Step α of the mean update μ ← μ − α Σ (ĝ + δμ) (default: β for a full covariance, the
    /// form of Theorem 2; β/10 for a diagonal one, whose steps overshoot at α = β).
    #[arg(long, allow_negative_numbers = true)]
    pub vi_lr: Option<f64>,
    /// Monte Carlo samples of q per step.
    #[arg(long, default_value_t = 1)]
    pub mc_samples: usize,
    /// VOGN minibatch size (default: full batch).
    #[arg(long)]
    pub vi_batch_size: Option<usize>,
    /// Covariance of q: full (P×P) or diag.
    #[arg(long, default_value = "full")]
    pub covariance: Covariance,
    /// Curvature: ggn (the paper's VOGGN) or squared-gradients (the official VOGN code).
    #[arg(long, default_value = "ggn")]
    pub curvature: Curvature,
    /// Momentum on the gradient (e.g. 0.9).
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Initial precision of q, Σ₀⁻¹ = s I.
    #[arg(long, default_value_t = 1.0)]
    pub init_precision: f64,
    /// Deterministic OGN: the mean instead of a sample.
    #[arg(long)]
    pub ogn: bool,
    /// Samples of q at which the converged GP is linearised (0: at the mean).
    #[arg(long, default_value_t = 10)]
    pub vi_gp_samples: usize,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "dnn2gp-out/demo")]
    pub out: PathBuf,
    /// Toy data sets in the δ sweep (the paper uses 10).
    #[arg(long, default_value_t = 10)]
    pub sets: usize,
    /// Adam epochs per fit.
    #[arg(long, default_value_t = 2000)]
    pub epochs: usize,
    /// VOGN epochs per fit.
    #[arg(long, default_value_t = 1000)]
    pub vi_epochs: usize,
    /// Toy data sets in the VI sweep, the first ones of the Laplace sweep [default: 3, or
    /// --sets when fewer].
    #[arg(long)]
    pub vi_sets: Option<usize>,
    /// The δ grid: `logspace:A:B:N`, `linspace:A:B:N` or a list, as `sweep --grid` takes it.
    #[arg(long, default_value = "logspace:-2:2:21")]
    pub grid: String,
    /// The δ grid as logspace(−2, 2, N): the older spelling of `--grid logspace:-2:2:N`.
    #[arg(long, conflicts_with = "grid", hide = true)]
    pub grid_points: Option<usize>,
}

#[derive(Debug, Args)]
pub struct TrainCmd {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Output folder for model.json, params.npy, model.safetensors (PyTorch state_dict keys of
    /// `nn.Sequential(Linear, act, …)`) and history.csv.
    #[arg(long, default_value = "dnn2gp-out/model")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportCmd {
    /// The weights: a safetensors file with keys `0.weight`, `0.bias`, `2.weight`, … (f32 or
    /// f64), as `nn.Sequential(nn.Linear, activation, nn.Linear, …)` names them.
    #[arg(long, required_unless_present = "onnx")]
    pub weights: Option<PathBuf>,
    /// The network and its weights as ONNX (`torch.onnx.export(net.eval(), x, path,
    /// do_constant_folding=False, dynamo=False)`): any network of the operations `dnn2gp evaluate` reads,
    /// instead of --weights and an architecture.
    #[arg(long, conflicts_with_all = ["weights", "arch", "hidden", "activation"])]
    pub onnx: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder (read by `dnn2gp gp --model`).
    #[arg(long, default_value = "dnn2gp-out/model")]
    pub out: PathBuf,
}

/// The training data of a saved model, when it is not where `model.json` says.
#[derive(Debug, Args, Clone)]
pub struct ModelDataArgs {
    /// Training data instead of the one `model.json` records: `snelson`, `uci:NAME[:SPLIT]` or
    /// a CSV file (`--train-data` is the same option, as `predict` spells it).
    #[arg(long, visible_alias = "train-data")]
    pub data: Option<String>,
    /// CSV test file (with a CSV `--data`).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Folder holding `snelson/` and `uci/NAME/` (with `--data`).
    #[arg(long, env = "DNN2GP_DATA", default_value = "data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct GpCmd {
    /// Folder written by `dnn2gp train` or `import`, or a model file (`model.safetensors`)
    /// with `--data`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: ModelDataArgs,
    #[command(flatten)]
    pub posterior: PosteriorArgs,
    /// Where to compute the GP: auto, weight (P×P) or function (NK×NK).
    #[arg(long, default_value = "auto")]
    pub space: Space,
    /// Posterior sampled for the DNN-Laplace (Monte Carlo) panel: diag, as in the paper's code,
    /// or full.
    #[arg(long, default_value = "diag")]
    pub mc_hessian: HessianStructure,
    /// Monte Carlo samples for the DNN-Laplace predictive (and the categorical `p_mc`).
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Points on the plotting grid (1-D inputs).
    #[arg(long, default_value_t = 400)]
    pub grid_points: usize,
    /// Also evaluate the marginal likelihoods over a δ grid at this MAP, from one
    /// eigendecomposition (`logspace:A:B:N`, `linspace:A:B:N` or a list): `marglik_path.csv`.
    #[arg(long)]
    pub delta_grid: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "dnn2gp-out/gp")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ViCmd {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub vogn: VognArgs,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save the GP kernel on a fixed set of inputs every this many steps (0: never).
    #[arg(long, default_value_t = 0)]
    pub kernel_every: usize,
    /// Inputs on which the kernel is saved during training.
    #[arg(long, default_value_t = 40)]
    pub kernel_points: usize,
    /// Monte Carlo samples for the DNN-VI predictive.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Points on the plotting grid (1-D inputs).
    #[arg(long, default_value_t = 400)]
    pub grid_points: usize,
    /// Output folder.
    #[arg(long, default_value = "dnn2gp-out/vi")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SweepCmd {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub vogn: VognArgs,
    /// Posterior: laplace, vi or both (both draws the two −log marglik curves in one figure).
    #[arg(long, default_value = "laplace")]
    pub method: Methods,
    /// Parameter swept: delta, sigma or width.
    #[arg(long, default_value = "delta")]
    pub param: SweepParam,
    /// Values: `logspace:A:B:N` (10^A..10^B), `linspace:A:B:N`, or a list `0.1,1,10`.
    #[arg(long, default_value = "logspace:-2:2:21")]
    pub grid: String,
    /// Where to compute the GP: auto, weight or function.
    #[arg(long, default_value = "auto")]
    pub space: Space,
    /// Output folder.
    #[arg(long, default_value = "dnn2gp-out/sweep")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PredictCmd {
    /// Folder written by `dnn2gp train` or `import` (or a model file with `--train-data`): the
    /// posterior is fitted on its training data; or a saved posterior (a folder written by
    /// `reproduce`, or a `posterior.safetensors`).
    #[arg(long)]
    pub model: PathBuf,
    /// The training data of a model file: `snelson`, `uci:NAME[:SPLIT]` (under `$DNN2GP_DATA`,
    /// default `data`) or a CSV file.
    #[arg(long)]
    pub train_data: Option<String>,
    /// New inputs: a CSV with one column per network input, or one more holding the target
    /// (then the MSE or accuracy and the NLL are reported too), or an IDX image file (gzipped
    /// or not). (`--data`, its name before, is still read here; elsewhere `--data` is the
    /// training data.)
    #[arg(long, alias = "data")]
    pub inputs: PathBuf,
    /// An IDX label file for IDX images (accuracy, NLL).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub posterior: PosteriorArgs,
    /// Where to compute the full posterior over all weights: auto, weight (P×P) or function
    /// (NK×NK).
    #[arg(long, default_value = "auto")]
    pub space: Space,
    /// Class probabilities from the Gaussian over the logits (a classifier): probit, mc (Monte
    /// Carlo) or bridge (the Laplace bridge) [default: probit].
    #[arg(long)]
    pub link: Option<LinkApprox>,
    /// Monte Carlo draws of f per input for the p_mc column of a classifier's predictions.csv
    /// (written beside p_<link>) and for `--link mc`.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Output folder: predictions.csv, predict.json (and f_var.npy, the K×K blocks, for a
    /// classifier).
    #[arg(long, default_value = "dnn2gp-out/predict")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvaluateCmd {
    /// A dnn2gp model file (`model.safetensors`), an ONNX network (`model.onnx`, as
    /// `torch.onnx.export(..., do_constant_folding=False, dynamo=False)` writes it: ResNets with BatchNorm,
    /// mixers, attention), or a PyTorch `state_dict` in safetensors with
    /// `--arch`.
    #[arg(long)]
    pub model: PathBuf,
    /// The architecture of a bare `state_dict` (a classifier: categorical for K > 1 outputs,
    /// Bernoulli for one), e.g. `1x28x28:conv6k5,relu,pool,flatten,dense10`.
    #[arg(long)]
    pub arch: Option<String>,
    /// Training images (IDX, gzipped or not); default: MNIST's in `--data-dir`/mnist.
    #[arg(long)]
    pub train_images: Option<PathBuf>,
    /// Training labels (IDX).
    #[arg(long)]
    pub train_labels: Option<PathBuf>,
    /// Test images (IDX); default: MNIST's test set.
    #[arg(long)]
    pub test_images: Option<PathBuf>,
    /// Test labels (IDX).
    #[arg(long)]
    pub test_labels: Option<PathBuf>,
    /// Rotations of the test images in degrees (counter-clockwise, bilinear), comma-separated.
    #[arg(
        long,
        default_value = "0",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub angles: Vec<f64>,
    /// The test files already hold the rotated images, angle-major (one block per angle of
    /// `--angles`, as the B6 baseline writes them).
    #[arg(long)]
    pub rotated: bool,
    /// Test images per angle: the first N.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Out-of-distribution images (IDX), repeatable: AUROC and FPR95 of the confidence against
    /// the first test set.
    #[arg(long)]
    pub ood_images: Vec<PathBuf>,
    /// Posterior structures, comma-separated: kron, diag, full, lowrank.
    #[arg(long, default_value = "kron", value_delimiter = ',')]
    pub hessian: Vec<HessianStructure>,
    /// Eigenpairs of a lowrank posterior (top eigenvalues of the GGN, matrix-free)
    /// [default: 100].
    #[arg(long)]
    pub rank: Option<usize>,
    /// Seed of the lowrank posterior's random start.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights the posteriors cover, comma-separated: last-layer, all.
    #[arg(long, default_value = "last-layer", value_delimiter = ',')]
    pub subset: Vec<Subset>,
    /// Tensors held at their trained values, out of every posterior (laplace-torch's
    /// `requires_grad=False`), comma-separated: `batchnorm` (every BatchNorm's γ and β) or
    /// state_dict names (`layer1.0.bn1.weight,layer1.0.bn1.bias`).
    #[arg(long, value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// Prior precision: marglik (the evidence's maximum), model (the model's δ) or a number
    /// (`--delta` is the same option).
    #[arg(
        long,
        visible_alias = "delta",
        default_value = "marglik",
        allow_hyphen_values = true
    )]
    pub prior: PriorArg,
    /// With `--prior marglik`: one δ (scalar) or one per parameter tensor (layerwise; full,
    /// diag and kron posteriors).
    #[arg(long, default_value = "scalar")]
    pub prior_structure: PriorStructure,
    /// Predictive link of the linearised network: probit, mc, bridge or bridge_norm
    /// [default: probit].
    #[arg(long)]
    pub link: Option<LinkApprox>,
    /// Monte Carlo draws per input for `--link mc` or `--pred-type nn` [default: 100].
    #[arg(long)]
    pub samples: Option<usize>,
    /// The predictive: glm (the linearised network, through `--link`) or nn (the network at
    /// `--samples` weight draws from the posterior, laplace-torch's `pred_type="nn"`).
    #[arg(long, default_value = "glm")]
    pub pred_type: PredType,
    /// Temperature T of the posterior `N(θ*, (H/T + D)⁻¹)`; the evidence's data fit is divided
    /// by T (laplace-torch's `temperature`).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// The scalar type of the network's forward passes (its outputs, a last layer's features,
    /// the `nn` predictive's draws): f64, or f32 (float32), as laplace-torch runs them, with
    /// probabilities within about 1e-5: the MAP and last-layer posteriors about twice as fast;
    /// all-weights posteriors are bound by their Jacobians and curvature, which stay in f64.
    #[arg(long, default_value = "f64", value_name = "f64|f32")]
    pub dtype: Dtype,
    /// Folder holding `mnist/` (for the default training and test files).
    #[arg(long, env = "DNN2GP_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// Output folder: evaluate.json, metrics.csv, reliability.csv, ood.csv, reliability and
    /// shift figures (PNG and SVG).
    #[arg(long, default_value = "dnn2gp-out/evaluate")]
    pub out: PathBuf,
}
