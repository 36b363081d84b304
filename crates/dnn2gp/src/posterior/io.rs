//! A posterior in one safetensors file: the model's weights and metadata
//! ([`crate::train::model::Model::save`]), the structure and subset, the data terms of the
//! evidence, a layerwise prior, and H's tensors (`posterior.ggn`, or the Kronecker factors
//! `posterior.ggn.{l}.a` and `.g`, or the eigenpairs `posterior.ggn.u` and `.s`).

use std::path::Path;

use super::base::Posterior;
use super::curvature::DataTerms;
use super::last_layer::{covered_network, Cover};
use super::structure::{self, tensor_names, tensor_shapes};
use super::{HessianStructure, PriorPrecision};
use super::{Laplace, Subset};
use crate::error::{Error, Result};
use crate::nn::weights::{self, ParamTensor, StoredDtype};
use crate::nn::Network;
use crate::train::model::{metadata_error, Model};

/// Metadata keys of a saved posterior.
const STRUCTURE: &str = "dnn2gp.posterior.structure";
/// A layerwise prior's δ_g, comma-separated (a scalar prior is the model's δ).
const LAYERWISE_PRIOR: &str = "dnn2gp.posterior.layerwise_prior";
const SUBSET: &str = "dnn2gp.posterior.subset";
const NLL: &str = "dnn2gp.posterior.nll";
const SSE: &str = "dnn2gp.posterior.sse";
const NK: &str = "dnn2gp.posterior.nk";
const RANK: &str = "dnn2gp.posterior.rank";
/// A subnetwork's size; its indices are the tensor `posterior.subnetwork` after H's.
const SUBNETWORK: &str = "dnn2gp.posterior.subnetwork";
const SUBNETWORK_TENSOR: &str = "posterior.subnetwork";
/// The temperature (absent: 1); the GGN is stored scaled by it.
const TEMPERATURE: &str = "dnn2gp.posterior.temperature";

impl Laplace {
    /// Whether the safetensors file at `path` holds a saved posterior (not only a model).
    pub fn is_saved_posterior(path: &Path) -> Result<bool> {
        Ok(weights::read_metadata(path)?.contains_key(STRUCTURE))
    }

    /// Writes the posterior to one safetensors file: the model's weights and metadata
    /// ([`Model::save`]), the structure and subset, the data terms of the evidence, and H's
    /// tensors. PyTorch reads the weights with `load_state_dict(…, strict=False)`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut layout = self.model.net.param_layout();
        let mut flat = self.model.w.clone();
        let tensors = self.ggn.tensors();
        let rank = match tensors.last() {
            Some((_, s, _)) if self.ggn.kind() == HessianStructure::LowRank => Some(s[0]),
            _ => None,
        };
        let mut meta = self.model.metadata();
        let mut tensors = tensors;
        if let Cover::Weights(idx) = &self.cover {
            meta.insert(SUBNETWORK.to_string(), idx.len().to_string());
            let values = idx.iter().map(|i| *i as f64).collect();
            tensors.push((SUBNETWORK_TENSOR.into(), vec![idx.len()], values));
        }
        for (name, shape, values) in tensors {
            layout.push(ParamTensor {
                name,
                shape,
                offset: flat.len(),
            });
            flat.extend(values);
        }
        if let Some(rank) = rank {
            meta.insert(RANK.to_string(), rank.to_string());
        }
        if self.temperature != 1.0 {
            meta.insert(TEMPERATURE.to_string(), format!("{:?}", self.temperature));
        }
        if let PriorPrecision::Layerwise(d) = &self.prior {
            let d: Vec<String> = d.iter().map(|v| format!("{v:?}")).collect();
            meta.insert(LAYERWISE_PRIOR.to_string(), d.join(","));
        }
        meta.extend([
            (STRUCTURE.to_string(), self.ggn.kind().to_string()),
            (SUBSET.to_string(), self.subset().to_string()),
            (NLL.to_string(), format!("{:?}", self.data.nll)),
            (SSE.to_string(), format!("{:?}", self.data.sse)),
            (NK.to_string(), self.data.nk.to_string()),
        ]);
        weights::save_with_metadata(path, &layout, &flat, StoredDtype::F64, &meta)
    }

    /// Reads a posterior written by [`Laplace::save`]: the same numbers, without the data.
    pub fn load(path: &Path) -> Result<Self> {
        let mut p = 0;
        let mut structure = HessianStructure::Full;
        let mut subset = Subset::All;
        let mut shapes = Vec::new();
        let (meta, flat) = weights::load_with_metadata(path, |meta| {
            let in_file = |e: Error| e.in_file(path);
            let net = Model::architecture_in(meta).map_err(in_file)?;
            let word = |key: &str| {
                meta.get(key).ok_or_else(|| {
                    metadata_error(
                        key,
                        format!("no '{key}' in its metadata: not a saved posterior"),
                    )
                    .in_file(path)
                })
            };
            structure = word(STRUCTURE)?
                .parse()
                .map_err(|e: Error| metadata_error(STRUCTURE, e.to_string()).in_file(path))?;
            // Posteriors saved before subsets existed cover all weights.
            subset = meta
                .get(SUBSET)
                .map_or(Ok(Subset::All), |s| s.parse())
                .map_err(|e: Error| metadata_error(SUBSET, e.to_string()).in_file(path))?;
            p = net.n_params();
            let rank = match structure {
                HessianStructure::LowRank => meta
                    .get(RANK)
                    .and_then(|r| r.parse::<usize>().ok())
                    .ok_or_else(|| {
                    metadata_error(RANK, format!("'{RANK}' is missing or not a count"))
                        .in_file(path)
                })?,
                _ => 0,
            };
            let names = match subset {
                Subset::Subnetwork => {
                    let m = meta
                        .get(SUBNETWORK)
                        .and_then(|r| r.parse::<usize>().ok())
                        .ok_or_else(|| {
                            metadata_error(
                                SUBNETWORK,
                                format!("'{SUBNETWORK}' is missing or not a count"),
                            )
                            .in_file(path)
                        })?;
                    shapes = match structure {
                        HessianStructure::Full => vec![vec![m, m]],
                        _ => vec![vec![m]],
                    };
                    let mut names = tensor_names(structure, shapes.len());
                    shapes.push(vec![m]);
                    names.push(SUBNETWORK_TENSOR.to_string());
                    names
                }
                _ => {
                    let sub = covered_network(&net, subset).map_err(in_file)?;
                    shapes = tensor_shapes(structure, &sub, rank);
                    tensor_names(structure, shapes.len())
                }
            };
            let mut layout = net.param_layout();
            let mut offset = p;
            for (name, shape) in names.into_iter().zip(&shapes) {
                let len = shape.iter().product::<usize>();
                layout.push(ParamTensor {
                    name,
                    shape: shape.clone(),
                    offset,
                });
                offset += len;
            }
            Ok(layout)
        })?;
        let number = |key: &str| -> Result<f64> {
            meta.get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| {
                    metadata_error(key, format!("'{key}' is missing or not a number")).in_file(path)
                })
        };
        let model = Model::from_metadata(&meta, flat[..p].to_vec()).map_err(|e| e.in_file(path))?;
        let nk = number(NK)? as usize;
        let data = DataTerms {
            nll: number(NLL)?,
            sse: number(SSE)?,
            n: nk / model.net.n_outputs().max(1),
            nk,
        };
        let mut at = p;
        let mut tensors: Vec<_> = shapes
            .into_iter()
            .map(|shape| {
                let len = shape.iter().product::<usize>();
                at += len;
                (shape, flat[at - len..at].to_vec())
            })
            .collect();
        let cover = match subset {
            Subset::Subnetwork => {
                let (_, idx) = tensors.pop().expect("the subnetwork's indices were read");
                Cover::weights(idx.iter().map(|i| *i as usize).collect(), model.w.len())
                    .map_err(|e| e.in_file(path))?
            }
            _ => Cover::of_subset(&model.net, subset)?,
        };
        let ggn = structure::from_tensors(structure, tensors).map_err(|e| e.in_file(path))?;
        let mut la = Self::assemble(model, cover, ggn, data)?;
        if meta.contains_key(TEMPERATURE) {
            la.temperature = number(TEMPERATURE)?;
            if !(la.temperature.is_finite() && la.temperature > 0.0) {
                return Err(
                    metadata_error(TEMPERATURE, "not a positive number".into()).in_file(path)
                );
            }
        }
        if let Some(d) = meta.get(LAYERWISE_PRIOR) {
            let d = (d.split(',').map(|v| v.parse::<f64>()))
                .collect::<std::result::Result<Vec<f64>, _>>()
                .map_err(|_| {
                    metadata_error(
                        LAYERWISE_PRIOR,
                        format!("'{LAYERWISE_PRIOR}' is not a list of numbers"),
                    )
                    .in_file(path)
                })?;
            la.set_prior(PriorPrecision::Layerwise(d))
                .map_err(|e| e.in_file(path))?;
        }
        Ok(la)
    }
}
