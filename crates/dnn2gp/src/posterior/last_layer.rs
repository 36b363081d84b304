//! The last-layer split of a network (laplace-torch's `subset_of_weights="last_layer"`): the
//! layers below give the features φ(x), and the posterior covers the last dense layer alone,
//! the rest held at `w*`.

use faer::{Mat, MatRef};

use super::Subset;
use crate::error::{Error, Result};
use crate::nn::{Layer, Network, Sequential};

/// The layers below (the features φ) and the last dense layer, whose weights start at
/// `offset` in `w`.
#[derive(Debug, Clone)]
pub(crate) struct LastLayer {
    body: Option<Sequential>,
    pub(crate) head: Sequential,
    pub(crate) offset: usize,
}

impl LastLayer {
    /// The split of `net`; refused unless its last layer is dense.
    pub(crate) fn of(net: &Sequential) -> Result<Self> {
        let layers = net.layers();
        let last = layers.last().expect("a network has layers");
        if !matches!(last, Layer::Dense { .. }) {
            return Err(Error::Invalid(format!(
                "a last-layer posterior needs a network whose last layer is dense; {} ends in \
                 {last:?}",
                net.spec()
            )));
        }
        let body = (layers.len() > 1)
            .then(|| Sequential::new(layers[..layers.len() - 1].to_vec()))
            .transpose()?;
        Ok(LastLayer {
            head: Sequential::new(vec![*last])?,
            offset: net.n_params() - last.n_params(),
            body,
        })
    }

    /// The split a subset asks for: none for all weights.
    pub(crate) fn of_subset(net: &Sequential, subset: Subset) -> Result<Option<Self>> {
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
pub(crate) fn covered_network(net: &Sequential, subset: Subset) -> Result<Sequential> {
    Ok(match LastLayer::of_subset(net, subset)? {
        None => net.clone(),
        Some(ll) => ll.head,
    })
}
