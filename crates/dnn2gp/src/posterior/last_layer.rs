//! What a posterior covers (`Cover`): all weights; the last layer (laplace-torch's
//! `subset_of_weights="last_layer"`: the layers below give the features φ(x), and the posterior
//! covers the last dense layer alone, the rest held at `w*`); or weights chosen by index
//! (laplace-torch's subnetwork).

use faer::{Mat, MatRef};

use super::Subset;
use crate::error::{Error, Result};
use crate::nn::{Dtype, Graph, Layer, Network, Sequential};

/// The layers below (the features φ) and the last dense layer, whose weights start at
/// `offset` in `w`.
#[derive(Debug, Clone)]
pub(crate) struct LastLayer {
    body: Option<Graph>,
    pub(crate) head: Graph,
    pub(crate) offset: usize,
}

impl LastLayer {
    /// The split of `net`; refused unless its output is a Linear layer with a bias.
    pub(crate) fn of(net: &Graph) -> Result<Self> {
        let (value, last) = net.last_linear().map_err(Error::Invalid)?;
        let body = (value > 0).then(|| net.truncated(value)).transpose()?;
        let head = Sequential::new(vec![Layer::Dense {
            inputs: last.inputs,
            outputs: last.outputs,
        }])?;
        Ok(LastLayer {
            head: head.into(),
            offset: net.n_params() - last.n_params(),
            body,
        })
    }

    /// The split a subset asks for: none for all weights.
    pub(crate) fn of_subset(net: &Graph, subset: Subset) -> Result<Option<Self>> {
        match subset {
            Subset::All => Ok(None),
            Subset::LastLayer => Self::of(net).map(Some),
            Subset::Subnetwork => Err(Error::Invalid(
                "a subnetwork's weights are chosen by their indices (Laplace::fit_subnetwork; \
                 Python: subset_of_weights='subnetwork', subnetwork_indices=…)"
                    .into(),
            )),
        }
    }

    /// The features φ(x) (the inputs themselves for a one-layer network).
    pub(crate) fn features(&self, w: &[f64], x: MatRef<'_, f64>, dtype: Dtype) -> Mat<f64> {
        match &self.body {
            Some(b) => crate::nn::predict_in(b, &w[..self.offset], x, dtype),
            None => x.to_owned(),
        }
    }
}

/// What a posterior covers: all weights, the last layer on its features, or the weights at
/// distinct indices of `w`, in the order given (a subnetwork).
#[derive(Debug, Clone)]
pub(crate) enum Cover {
    All,
    LastLayer(Box<LastLayer>),
    Weights(Vec<usize>),
}

impl Cover {
    /// The cover of a subset word (a subnetwork needs its indices: refused here).
    pub(crate) fn of_subset(net: &Graph, subset: Subset) -> Result<Self> {
        Ok(match LastLayer::of_subset(net, subset)? {
            None => Cover::All,
            Some(ll) => Cover::LastLayer(Box::new(ll)),
        })
    }

    /// The subnetwork of `indices` into a network of `p` weights ([`checked_indices`]).
    pub(crate) fn weights(indices: Vec<usize>, p: usize) -> Result<Self> {
        Ok(Cover::Weights(checked_indices(indices, p)?))
    }

    /// Its subset word.
    pub(crate) fn subset(&self) -> Subset {
        match self {
            Cover::All => Subset::All,
            Cover::LastLayer(_) => Subset::LastLayer,
            Cover::Weights(_) => Subset::Subnetwork,
        }
    }

    /// The covered weights of `w`.
    pub(crate) fn take(&self, w: &[f64]) -> Vec<f64> {
        match self {
            Cover::All => w.to_vec(),
            Cover::LastLayer(ll) => w[ll.offset..].to_vec(),
            Cover::Weights(i) => i.iter().map(|&i| w[i]).collect(),
        }
    }

    /// `w` with the covered weights replaced by θ.
    pub(crate) fn place(&self, w: &[f64], theta: &[f64]) -> Vec<f64> {
        let mut out = w.to_vec();
        match self {
            Cover::All => out.copy_from_slice(theta),
            Cover::LastLayer(ll) => out[ll.offset..].copy_from_slice(theta),
            Cover::Weights(idx) => idx.iter().zip(theta).for_each(|(&i, v)| out[i] = *v),
        }
        out
    }

    /// The covered parameter tensors, as a prior per tensor orders them: their names and sizes
    /// (a subnetwork is one group, `subnetwork`).
    pub(crate) fn prior_tensors(&self, net: &Graph) -> Vec<(String, usize)> {
        let offset = match self {
            Cover::Weights(i) => return vec![("subnetwork".into(), i.len())],
            Cover::All => 0,
            Cover::LastLayer(ll) => ll.offset,
        };
        net.param_layout()
            .into_iter()
            .filter(|t| t.offset >= offset)
            .map(|t| (t.name, t.shape.iter().product()))
            .collect()
    }
}

/// The weights of a subnetwork, `indices` into a network of `p` weights: distinct, in range,
/// at least one; kept in their order (the posterior's).
pub(crate) fn checked_indices(indices: Vec<usize>, p: usize) -> Result<Vec<usize>> {
    if indices.is_empty() {
        return Err(Error::option("subnetwork_indices", "no weights chosen"));
    }
    if let Some(i) = indices.iter().find(|i| **i >= p) {
        return Err(Error::option(
            "subnetwork_indices",
            format!("index {i} is past the network's {p} weights"),
        ));
    }
    let mut sorted = indices.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::option(
            "subnetwork_indices",
            format!("index {} is chosen twice", w[0]),
        ));
    }
    Ok(indices)
}

/// The network a posterior over `subset` covers: all of `net`, or its last layer.
pub(crate) fn covered_network(net: &Graph, subset: Subset) -> Result<Graph> {
    Ok(match LastLayer::of_subset(net, subset)? {
        None => net.clone(),
        Some(ll) => ll.head,
    })
}
