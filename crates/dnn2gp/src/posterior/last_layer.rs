//! The last-layer split of a network (laplace-torch's `subset_of_weights="last_layer"`): the
//! layers below give the features φ(x), and the posterior covers the last dense layer alone,
//! the rest held at `w*`.

use faer::{Mat, MatRef};

use super::Subset;
use crate::error::{Error, Result};
use crate::nn::{Graph, Layer, Network, Sequential};

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
        }
    }

    /// The features φ(x) (the inputs themselves for a one-layer network).
    pub(crate) fn features(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        match &self.body {
            Some(b) => crate::nn::predict(b, &w[..self.offset], x),
            None => x.to_owned(),
        }
    }
}

/// The network a posterior over `subset` covers: all of `net`, or its last layer.
pub(crate) fn covered_network(net: &Graph, subset: Subset) -> Result<Graph> {
    Ok(match LastLayer::of_subset(net, subset)? {
        None => net.clone(),
        Some(ll) => ll.head,
    })
}
