//! ONNX networks into [`dnn2gp::nn::Graph`]: the file is decoded by `onnx-protobuf`; each node
//! becomes an operation, its initializers become the parameters under their names (PyTorch's
//! `state_dict` names when exported with `do_constant_folding=False`), and shape-only
//! subgraphs (`Shape`, `Gather`, `Unsqueeze`, `Concat` of constants feeding a `Reshape`) are
//! evaluated once here. `MatMul` or `Gemm` with an initializer is a Linear (so KFAC sees a
//! Linear), and an `Add` of an initializer right after it is that Linear's bias.

mod convert;

use std::path::Path;

use dnn2gp::nn::Graph;
use dnn2gp::{Error, Result};

/// A network read from an ONNX file: the graph, its weights `w` in the graph's order, and what
/// the reader noticed (a file whose BatchNorm was folded into the convolutions).
#[derive(Debug, Clone)]
pub struct Imported {
    /// The graph.
    pub graph: Graph,
    /// The weights, in the order of `graph.param_layout()`.
    pub weights: Vec<f64>,
    /// Warnings, one sentence each.
    pub warnings: Vec<String>,
}

/// The operations read, as their ONNX names.
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "LayerNormalization",
    "Relu",
    "LeakyRelu",
    "Elu",
    "Gelu",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "Erf",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Reciprocal",
    "Pow",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Softmax",
    "Identity",
    "Dropout",
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Slice",
    "Cast",
    "ConstantOfShape",
    "Mod",
];

/// Reads an ONNX file.
pub fn read(path: &Path) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes).map_err(|e| e.in_file(path))
}

/// Reads an ONNX model from its bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<Imported> {
    use onnx_protobuf::Message;
    let model = onnx_protobuf::ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::Invalid(format!("not an ONNX model: {e}")))?;
    convert::convert(&model)
}
