//! The layers of a [`super::Sequential`]: dense, 2-D convolution (stride 1, no padding), 2×2
//! max and average pooling (stride 2), flatten and element-wise activations, with their widths
//! and parameter counts.

use super::ops::{Conv, Gather, Linear, Op, Pool, PoolKind, Unary, UnaryKind};
use super::Activation;

/// One layer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Layer {
    /// `z = W a + b`, W of shape [outputs, inputs].
    Dense {
        /// Input width.
        inputs: usize,
        /// Output width.
        outputs: usize,
    },
    /// 2-D convolution, stride 1, no padding; W of shape [out, in, k, k].
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side k.
        kernel: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
    },
    /// 2×2 max-pooling with stride 2 (odd edges dropped, as in PyTorch).
    MaxPool2 {
        /// Channels.
        channels: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
    },
    /// 2×2 average pooling with stride 2 (odd edges dropped, as in PyTorch's `AvgPool2d(2)`).
    AvgPool2 {
        /// Channels.
        channels: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
    },
    /// Flattening (a no-op on the flat layout, kept so that layer indices match PyTorch's
    /// `nn.Sequential` numbering).
    Flatten {
        /// Width.
        size: usize,
    },
    /// Element-wise activation.
    Act {
        /// The non-linearity.
        activation: Activation,
        /// Width.
        size: usize,
    },
}

impl Layer {
    /// Per-example input shape: `[channels, height, width]` for a convolution or pooling
    /// layer, `[width]` for the others.
    pub fn in_shape(&self) -> Vec<usize> {
        match *self {
            Layer::Dense { inputs, .. } => vec![inputs],
            Layer::Conv2d {
                in_channels: channels,
                height,
                width,
                ..
            }
            | Layer::MaxPool2 {
                channels,
                height,
                width,
            }
            | Layer::AvgPool2 {
                channels,
                height,
                width,
            } => vec![channels, height, width],
            Layer::Act { size, .. } | Layer::Flatten { size } => vec![size],
        }
    }

    /// Input width (saturating, so that absurd sizes are caught, not wrapped).
    pub fn in_dim(&self) -> usize {
        self.in_shape().iter().fold(1, |a, &d| a.saturating_mul(d))
    }

    /// The layer as a graph operation.
    pub fn op(&self) -> Op {
        match *self {
            Layer::Dense { inputs, outputs } => Op::Linear(Linear {
                inputs,
                outputs,
                positions: 1,
                bias: true,
            }),
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                height,
                width,
            } => Op::Conv(Conv {
                in_channels,
                out_channels,
                input: [height, width],
                kernel: [kernel; 2],
                stride: [1; 2],
                padding: [0; 2],
                dilation: [1; 2],
                groups: 1,
                bias: true,
            }),
            Layer::MaxPool2 {
                channels,
                height,
                width,
            }
            | Layer::AvgPool2 {
                channels,
                height,
                width,
            } => Op::Pool(Pool {
                kind: if matches!(self, Layer::MaxPool2 { .. }) {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                },
                channels,
                input: [height, width],
                kernel: [2; 2],
                stride: [2; 2],
                padding: [0; 2],
            }),
            Layer::Flatten { size } => Op::Gather(Gather {
                index: None,
                shape: vec![size],
            }),
            Layer::Act { activation, .. } => Op::Unary(Unary::new(
                activation
                    .word()
                    .parse::<UnaryKind>()
                    .expect("every activation is an element-wise function"),
            )),
        }
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        match *self {
            Layer::Dense { outputs, .. } => outputs,
            Layer::Conv2d {
                out_channels,
                kernel,
                height,
                width,
                ..
            } => out_channels
                .saturating_mul((height + 1).saturating_sub(kernel))
                .saturating_mul((width + 1).saturating_sub(kernel)),
            Layer::MaxPool2 {
                channels,
                height,
                width,
            }
            | Layer::AvgPool2 {
                channels,
                height,
                width,
            } => channels
                .saturating_mul(height / 2)
                .saturating_mul(width / 2),
            Layer::Act { size, .. } | Layer::Flatten { size } => size,
        }
    }

    /// Number of parameters (weights then biases).
    pub fn n_params(&self) -> usize {
        match *self {
            Layer::Dense { inputs, outputs } => outputs.saturating_mul(inputs.saturating_add(1)),
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => out_channels.saturating_mul(
                in_channels
                    .saturating_mul(kernel)
                    .saturating_mul(kernel)
                    .saturating_add(1),
            ),
            _ => 0,
        }
    }
}

/// Largest number of parameters, and of values in one layer, of a [`Sequential`](super::Sequential) (2³²).
pub const MAX_PARAMS: usize = 1 << 32;
