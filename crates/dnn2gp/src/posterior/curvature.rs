//! What a fit sums over its data ([`Curvature`]): the GGN in the posterior's structure, and the
//! data terms of the evidence ([`DataTerms`]: `−log p(D|θ*)`, the squared error, the counts).
//! Chunks of the data add up to the whole data's, so a fit can run in pieces, on other
//! processes, and end in [`Laplace::from_curvature`]. The memory a fit needs is checked here,
//! before any work.

use faer::{Mat, MatRef};

use super::last_layer::{checked_indices, covered_network, LastLayer};
use super::link::inputs_per_block;
use super::structure::{self, kron_shapes, ComputeOptions, GgnStructure, Tensor};
use super::HessianStructure;
use super::{Laplace, Subset};
use crate::curvature::{Backend, Linearization};
use crate::error::{Error, Result};
use crate::linalg::{check_memory, mat_bytes};
use crate::nn::{Graph, Network};
use crate::progress::Progress;
use crate::train::model::Model;

/// What [`Laplace::fit`] may use.
pub struct FitOptions<'a> {
    /// Bytes the fit may allocate at once (the Jacobian and the P×P GGN of a full fit).
    pub memory_limit: u128,
    /// Told of the examples done (diag, kron and lowrank fits; lowrank makes four passes).
    pub progress: Option<&'a dyn Progress>,
    /// Eigenpairs of a low-rank posterior.
    pub rank: usize,
    /// Seed of the low-rank posterior's random start.
    pub seed: u64,
}

impl Default for FitOptions<'_> {
    /// Three quarters of the available memory, no progress, rank 100, seed 0.
    fn default() -> Self {
        FitOptions {
            memory_limit: crate::linalg::available_memory() / 4 * 3,
            progress: None,
            rank: 100,
            seed: 0,
        }
    }
}

/// The data terms of the evidence over some examples: they add up over chunks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataTerms {
    /// `−log p(D | θ*)` at the fitted σ.
    pub nll: f64,
    /// `Σ_i ‖f(x_i) − y_i‖²` (for the evidence at another σ).
    pub sse: f64,
    /// The examples N.
    pub n: usize,
    /// The outputs NK.
    pub nk: usize,
}

impl DataTerms {
    /// The terms of outputs `F` (N×K) against targets `Y` under `lik`.
    pub fn of(
        lik: &dyn crate::likelihood::Likelihood,
        f: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
    ) -> Self {
        DataTerms {
            nll: lik.nll_sum(f, y),
            sse: crate::linalg::sq_diff(f, y),
            n: f.nrows(),
            nk: f.nrows() * f.ncols(),
        }
    }

    /// Both chunks' terms.
    fn add(&mut self, other: &DataTerms) {
        self.nll += other.nll;
        self.sse += other.sse;
        self.n += other.n;
        self.nk += other.nk;
    }
}

/// The additive statistics of a fit on some of the training data ([`Laplace::curvature`]):
/// the GGN `Σ_i J_iᵀ Λ_i J_i` over those examples in the posterior's structure and the data
/// terms of the evidence.
#[derive(Debug, Clone)]
pub struct Curvature {
    pub(crate) ggn: Box<dyn GgnStructure>,
    pub(crate) subset: Subset,
    /// A subnetwork's weights (indices into `w`); empty for the other subsets.
    pub(crate) indices: Vec<usize>,
    pub(crate) data: DataTerms,
}

impl Curvature {
    /// Adds another chunk's statistics: `H += H′` (KFAC's `A`, a mean over the examples,
    /// becomes `(n A + n′ A′)/(n + n′)`) and the data terms.
    pub fn add(&mut self, other: &Curvature) -> Result<()> {
        let message = format!(
            "cannot add a {} curvature over the {} to a {} one over the {}",
            other.structure(),
            other.subset,
            self.structure(),
            self.subset
        );
        let mismatch = move || Error::Invalid(message);
        if self.subset != other.subset || self.indices != other.indices {
            return Err(mismatch());
        }
        self.ggn
            .add(other.ggn.as_ref(), self.data.n, other.data.n)
            .map_err(|_| mismatch())?;
        self.data.add(&other.data);
        Ok(())
    }

    /// The structure of its GGN.
    pub fn structure(&self) -> HessianStructure {
        self.ggn.kind()
    }

    /// The weights it covers.
    pub fn subset(&self) -> Subset {
        self.subset
    }

    /// The examples it sums over.
    pub fn n(&self) -> usize {
        self.data.n
    }

    /// Its data terms.
    pub fn data(&self) -> DataTerms {
        self.data
    }

    /// Its GGN as row-major tensors (full: P×P; diag: P; kron: each layer's `A` then `G`;
    /// a subnetwork's indices last) and its data terms: what another process needs to rebuild
    /// it ([`Curvature::from_parts`]).
    pub fn to_parts(&self) -> (Vec<Tensor>, DataTerms) {
        let mut tensors: Vec<Tensor> = self
            .ggn
            .tensors()
            .into_iter()
            .map(|(_, s, v)| (s, v))
            .collect();
        if self.subset == Subset::Subnetwork {
            let idx = self.indices.iter().map(|i| *i as f64).collect();
            tensors.push((vec![self.indices.len()], idx));
        }
        (tensors, self.data)
    }

    /// The statistics from [`Curvature::to_parts`]'s tensors and data terms.
    pub fn from_parts(
        structure: HessianStructure,
        subset: Subset,
        mut tensors: Vec<Tensor>,
        data: DataTerms,
    ) -> Result<Self> {
        let indices = match subset {
            Subset::Subnetwork => tensors
                .pop()
                .map(|(_, v)| v.iter().map(|i| *i as usize).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(Curvature {
            ggn: structure::from_tensors(structure, tensors)?,
            subset,
            indices,
            data,
        })
    }
}

impl Laplace {
    /// What a fit of `structure` over `subset` sums over the data `(X, Y)`: the GGN (full,
    /// its diagonal, or KFAC's factors) and the data terms. The statistics of chunks of the data
    /// add up ([`Curvature::add`]) to the whole data's, so a fit can run in pieces, on other
    /// processes, and end in [`Laplace::from_curvature`]. A low-rank GGN is no such sum and is
    /// refused.
    pub fn curvature(
        model: &Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        subset: Subset,
        opts: &FitOptions<'_>,
    ) -> Result<Curvature> {
        if structure == HessianStructure::LowRank {
            return Err(Error::Invalid(
                "a lowrank GGN is not a sum over chunks of the data (its eigenvectors are of the \
                 whole sum); use full, diag or kron"
                    .into(),
            ));
        }
        Self::curvature_of(model, x, y, structure, subset, opts)
    }

    /// The fit's additive statistics ([`Laplace::curvature`], also low rank). For the last
    /// layer, the network below is run once to give the features φ(x), and the GGN is that of
    /// the last layer on them.
    pub(crate) fn curvature_of(
        model: &Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        subset: Subset,
        opts: &FitOptions<'_>,
    ) -> Result<Curvature> {
        let (net, lik) = (&model.net, model.likelihood()?);
        check_data(net, x, y)?;
        Self::check_memory(net, x.nrows(), structure, subset, opts.memory_limit)?;
        let last_layer = LastLayer::of_subset(net, subset)?;
        let features;
        let (sub, w, inputs) = match &last_layer {
            None => (net, &model.w[..], x),
            Some(ll) => {
                features = ll.features(&model.w, x, model.dtype);
                (&ll.head, &model.w[ll.offset..], features.as_ref())
            }
        };
        let data = DataTerms::of(
            lik.as_ref(),
            crate::nn::predict_in(sub, w, inputs, model.dtype).as_ref(),
            y,
        );
        let ggn = structure::compute(
            structure,
            Backend::new(sub, lik.as_ref(), w),
            inputs,
            y,
            ComputeOptions {
                progress: opts.progress,
                rank: opts.rank,
                seed: opts.seed,
                dense_layer: last_layer.is_some(),
            },
        )?;
        Ok(Curvature {
            ggn,
            subset,
            indices: Vec::new(),
            data,
        })
    }

    /// What a subnetwork fit ([`Laplace::fit_subnetwork`]) sums over `(X, Y)`: the full GGN
    /// of the Jacobian's columns at `indices` (or its diagonal) and the data terms, a block of
    /// inputs at a time (at most 256 MiB of Jacobian); memory checked first.
    pub fn curvature_subnetwork(
        model: &Model,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        structure: HessianStructure,
        indices: Vec<usize>,
        opts: &FitOptions<'_>,
    ) -> Result<Curvature> {
        let (net, lik) = (&model.net, model.likelihood()?);
        let indices = checked_indices(indices, model.w.len())?;
        let m = indices.len();
        let (k, p) = (net.n_outputs(), net.n_params());
        let bytes = match structure {
            HessianStructure::Full => 3 * mat_bytes(m, m),
            HessianStructure::Diag => mat_bytes(m, 1),
            other => {
                return Err(Error::option(
                    "hessian structure",
                    format!("a subnetwork's posterior is full or diag, not {other}"),
                ))
            }
        } + 2 * (256u128 << 20);
        check_memory(
            &format!("a {structure} GGN over {m} chosen weights and a block of Jacobian"),
            bytes,
            opts.memory_limit,
            "choose fewer weights, or a diag posterior",
        )?;
        check_data(net, x, y)?;
        let rows = inputs_per_block(k, p, x.nrows());
        let mut h = Mat::<f64>::zeros(
            m,
            if structure == HessianStructure::Full {
                m
            } else {
                1
            },
        );
        for s in (0..x.nrows()).step_by(rows) {
            let n = rows.min(x.nrows() - s);
            let lin = Linearization::new(
                net,
                lik.as_ref(),
                x.subrows(s, n),
                y.subrows(s, n),
                &model.w,
            );
            let root = lin.sqrt_lambda_jac();
            let cols = Mat::from_fn(root.nrows(), m, |r, c| root[(r, indices[c])]);
            match structure {
                HessianStructure::Full => h += crate::linalg::at_b(cols.as_ref(), cols.as_ref()),
                _ => (0..m).for_each(|c| h[(c, 0)] += cols.col(c).squared_norm_l2()),
            }
            if let Some(pb) = opts.progress {
                pb.advance(n as u64);
            }
        }
        let data = DataTerms::of(lik.as_ref(), model.predict(x).as_ref(), y);
        let ggn: Box<dyn GgnStructure> = match structure {
            HessianStructure::Full => Box::new(structure::Full::new(h)),
            _ => Box::new(structure::Diag::new(h.col(0).iter().copied().collect())),
        };
        Ok(Curvature {
            ggn,
            subset: Subset::Subnetwork,
            indices,
            data,
        })
    }

    /// Refuses a fit of `structure` over `subset` of `net` on N examples whose largest
    /// allocation exceeds `limit` bytes, before any work: the full GGN needs the Jacobian
    /// (NK×P) and three P×P matrices (the last layer's: no Jacobian, its features), KFAC its
    /// factors and their eigenvectors (`Σ_l 3(i_l² + o_l²)` values), the diagonal a few
    /// P-vectors per thread; a predictive at most 256 MiB of Jacobian per block of inputs.
    pub fn check_memory(
        net: &Graph,
        n: usize,
        structure: HessianStructure,
        subset: Subset,
        limit: u128,
    ) -> Result<()> {
        let sub = covered_network(net, subset)?;
        let (k, p) = (net.n_outputs(), sub.n_params());
        let threads = rayon::current_num_threads() as u128;
        let (what, bytes) = match structure {
            HessianStructure::Full if subset == Subset::LastLayer => (
                "the full P×P GGN, its K² blocks and the features",
                4 * mat_bytes(p, p) + 3 * mat_bytes(n, p / k),
            ),
            HessianStructure::Full => (
                "the Jacobian (NK×P) and the full P×P GGN",
                mat_bytes(n * k, p) + 3 * mat_bytes(p, p),
            ),
            HessianStructure::Kron => (
                "the KFAC factors and their eigenvectors",
                kron_shapes(&sub)
                    .iter()
                    .map(|s| 3 * (mat_bytes(s.inputs, s.inputs) + mat_bytes(s.outputs, s.outputs)))
                    .sum(),
            ),
            HessianStructure::Diag => ("the GGN diagonal", (threads + 3) * 8 * p as u128),
            HessianStructure::LowRank => (
                "the Jacobians of a group of chunks and the subspace (P × (rank + 10), four copies)",
                8 * mat_bytes(64 * k, p) + 4 * mat_bytes(p, 110),
            ),
        };
        let subset_advice = if subset == Subset::All {
            ", or --subset last-layer"
        } else {
            ""
        };
        // A predictive's block of Jacobians: at most 256 MiB, or that of N inputs (1,024 at least,
        // for a figure's grid) when fewer.
        let block = mat_bytes(k, p) * inputs_per_block(k, p, n.max(1024)) as u128;
        check_memory(
            &format!("a {structure} posterior over {p} weights: {what}"),
            bytes + block,
            limit,
            &format!("use --hessian kron or diag{subset_advice}"),
        )
    }
}

/// Refuses data that is not the network's: inputs and targets of different counts, or columns
/// other than its inputs and outputs.
fn check_data(net: &Graph, x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Result<()> {
    if x.nrows() != y.nrows() || x.ncols() != net.n_inputs() || y.ncols() != net.n_outputs() {
        return Err(Error::Invalid(format!(
            "data of {} inputs × {} columns and {} targets × {} columns for a network of {} \
             inputs and {} outputs",
            x.nrows(),
            x.ncols(),
            y.nrows(),
            y.ncols(),
            net.n_inputs(),
            net.n_outputs()
        )));
    }
    Ok(())
}
