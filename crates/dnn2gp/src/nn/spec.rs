//! A [`Sequential`] from and to its spec string (`1x28x28:conv6k5,relu,pool,…,dense10`), and
//! the networks built by name: MLPs and LeNet-5.

use super::layer::Layer;
use super::{Activation, Mlp, Sequential};
use crate::error::{Error, Result};

impl Sequential {
    /// The MLP `[D, h_1, …, K]` with `activation` on every hidden layer and a linear output:
    /// `dense h_1, act, …, dense K`.
    pub fn mlp(sizes: Vec<usize>, activation: Activation) -> Result<Self> {
        let mlp = Mlp::new(sizes, activation)?;
        let n = mlp.sizes.len() - 1;
        let layers = (0..n)
            .flat_map(|l| {
                let (inputs, outputs) = (mlp.sizes[l], mlp.sizes[l + 1]);
                let act = (l + 1 < n).then_some(Layer::Act {
                    activation,
                    size: outputs,
                });
                std::iter::once(Layer::Dense { inputs, outputs }).chain(act)
            })
            .collect();
        Sequential::new(layers)
    }

    /// The MLP of widths `"2-20-1"` (separated by `-`, `x` or `,`) with `activation`.
    pub fn parse_mlp(widths: &str, activation: Activation) -> Result<Self> {
        let m = Mlp::parse(widths, activation)?;
        Sequential::mlp(m.sizes, activation)
    }

    /// The spec string [`Sequential::parse`] reads back: `"2:dense20,tanh,dense1"`,
    /// `"1x28x28:conv6k5,relu,pool,…"`.
    pub fn spec(&self) -> String {
        let input = match self.layers[0] {
            Layer::Conv2d {
                in_channels: c,
                height: h,
                width: w,
                ..
            }
            | Layer::MaxPool2 {
                channels: c,
                height: h,
                width: w,
            }
            | Layer::AvgPool2 {
                channels: c,
                height: h,
                width: w,
            } => format!("{c}x{h}x{w}"),
            ref l => l.in_dim().to_string(),
        };
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| match *l {
                Layer::Dense { outputs, .. } => format!("dense{outputs}"),
                Layer::Conv2d {
                    out_channels,
                    kernel,
                    ..
                } => format!("conv{out_channels}k{kernel}"),
                Layer::MaxPool2 { .. } => "pool".into(),
                Layer::AvgPool2 { .. } => "avgpool".into(),
                Layer::Flatten { .. } => "flatten".into(),
                Layer::Act { activation, .. } => activation.to_string(),
            })
            .collect();
        format!("{input}:{}", layers.join(","))
    }

    /// The widths `[D, h_1, …, K]` and hidden activation of an MLP; `None` for other networks.
    pub fn as_mlp(&self) -> Option<(&[usize], Activation)> {
        self.fused
            .as_ref()
            .map(|m| (m.sizes.as_slice(), m.activation))
    }

    /// LeNet-5 as the paper uses it on `channels × side × side` images: conv 6@5×5, ReLU,
    /// pool; conv 16@5×5, ReLU, pool; flatten; dense 120, ReLU; dense 84, ReLU; dense
    /// `classes` (PyTorch indices 0, 3, 7, 9, 11 for the layers with parameters).
    pub fn lenet5(channels: usize, side: usize, classes: usize) -> Result<Self> {
        let relu = |size| Layer::Act {
            activation: Activation::Relu,
            size,
        };
        let c1 = Layer::Conv2d {
            in_channels: channels,
            out_channels: 6,
            kernel: 5,
            height: side,
            width: side,
        };
        let s1 = (side - 4) / 2;
        let c2 = Layer::Conv2d {
            in_channels: 6,
            out_channels: 16,
            kernel: 5,
            height: s1,
            width: s1,
        };
        let s2 = (s1 - 4) / 2;
        Sequential::new(vec![
            c1,
            relu(c1.out_dim()),
            Layer::MaxPool2 {
                channels: 6,
                height: side - 4,
                width: side - 4,
            },
            c2,
            relu(c2.out_dim()),
            Layer::MaxPool2 {
                channels: 16,
                height: s1 - 4,
                width: s1 - 4,
            },
            Layer::Flatten { size: 16 * s2 * s2 },
            Layer::Dense {
                inputs: 16 * s2 * s2,
                outputs: 120,
            },
            relu(120),
            Layer::Dense {
                inputs: 120,
                outputs: 84,
            },
            relu(84),
            Layer::Dense {
                inputs: 84,
                outputs: classes,
            },
        ])
    }

    /// Parses `"C×H×W:layer,layer,…"` (or `"D:…"` for flat inputs; `x` may stand for `×`), with
    /// layers `conv<out>k<k>`, `pool` (2×2 max), `avgpool` (2×2 mean), `dense<out>`, `flatten` and the activations `relu`,
    /// `tanh`, `sigmoid`, `identity`. LeNet-5 on MNIST is
    /// `1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,dense120,relu,dense84,relu,dense10`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |msg: String| Error::Invalid(format!("architecture '{spec}': {msg}"));
        let (shape, body) = spec.split_once(':').ok_or_else(|| {
            bad("expected INPUT:LAYERS, e.g. 1x28x28:conv6k5,relu,pool,dense10".into())
        })?;
        let dims = shape
            .split(['x', '×'])
            .map(|t| t.trim().parse::<usize>().ok().filter(|v| *v > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(format!("input shape '{shape}' is not D or C×H×W")))?;
        // Current shape: Some((c, h, w)) for images, None once flat.
        let (mut image, mut width) = match dims.as_slice() {
            [d] => (None, *d),
            [c, h, w] => (Some((*c, *h, *w)), c * h * w),
            _ => return Err(bad(format!("input shape '{shape}' is not D or C×H×W"))),
        };
        let mut layers = Vec::new();
        for tok in body.split(',').map(str::trim) {
            let num = |s: &str| {
                s.parse::<usize>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| bad(format!("'{tok}': '{s}' is not a positive number")))
            };
            let layer = if let Some(rest) = tok.strip_prefix("conv") {
                let (out, k) = rest.split_once('k').ok_or_else(|| {
                    bad(format!(
                        "'{tok}': expected conv<out>k<kernel>, e.g. conv6k5"
                    ))
                })?;
                let (out, k) = (num(out)?, num(k)?);
                let (c, h, w) = image.ok_or_else(|| {
                    bad(format!(
                        "'{tok}' needs an image input, but the values are already flat"
                    ))
                })?;
                if k > h || k > w {
                    return Err(bad(format!(
                        "'{tok}': kernel {k} is larger than the {h}×{w} image"
                    )));
                }
                image = Some((out, h + 1 - k, w + 1 - k));
                Layer::Conv2d {
                    in_channels: c,
                    out_channels: out,
                    kernel: k,
                    height: h,
                    width: w,
                }
            } else if tok == "pool" || tok == "avgpool" {
                let (c, h, w) =
                    image.ok_or_else(|| bad(format!("'{tok}' needs an image input")))?;
                if h < 2 || w < 2 {
                    return Err(bad(format!("'{tok}' on a {h}×{w} image")));
                }
                image = Some((c, h / 2, w / 2));
                let (channels, height, width) = (c, h, w);
                if tok == "pool" {
                    Layer::MaxPool2 {
                        channels,
                        height,
                        width,
                    }
                } else {
                    Layer::AvgPool2 {
                        channels,
                        height,
                        width,
                    }
                }
            } else if tok == "flatten" {
                image = None;
                Layer::Flatten { size: width }
            } else if let Some(rest) = tok.strip_prefix("dense") {
                let out = num(rest)?;
                image = None;
                Layer::Dense {
                    inputs: width,
                    outputs: out,
                }
            } else {
                let activation = tok.parse::<Activation>().map_err(|_| {
                    bad(format!("unknown layer '{tok}' (expected conv<out>k<k>, pool, avgpool, dense<out>, flatten, relu, tanh, sigmoid or identity)"))
                })?;
                Layer::Act {
                    activation,
                    size: width,
                }
            };
            width = layer.out_dim();
            layers.push(layer);
        }
        Sequential::new(layers).map_err(|e| bad(e.to_string()))
    }
}
