//! ONNX nodes into graph operations. Values are activations or constants (initializers,
//! `Constant` nodes and what shape subgraphs compute from them, evaluated here). An activation
//! has the shape ONNX gives it for a batch of one: the network run on one example is the
//! per-example function, so reshapes and transposes that move the batch axis (as torch's
//! attention does) need no special case; the batch axis is followed where it can be, to refuse
//! operations across examples.

use std::collections::HashMap;

use dnn2gp::nn::ops::*;
use dnn2gp::nn::GraphBuilder;
use dnn2gp::{Error, Result};
use onnx_protobuf::{AttributeProto, ModelProto, NodeProto, TensorProto};

use super::{Imported, SUPPORTED};

/// A constant: its shape, values, and the initializer it is (or is the transpose of).
#[derive(Debug, Clone)]
struct Const {
    dims: Vec<usize>,
    values: Vec<f64>,
    /// The initializer's name, and whether these values are its transpose.
    origin: Option<(String, bool)>,
}

#[derive(Debug, Clone)]
enum Value {
    Act(usize),
    Const(Const),
}

fn tensor(t: &TensorProto) -> Result<Const> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let raw = &t.raw_data;
    let values: Vec<f64> = match t.data_type {
        1 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        1 => t.float_data.iter().map(|&v| v as f64).collect(),
        11 if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        11 => t.double_data.clone(),
        7 if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
            .collect(),
        7 => t.int64_data.iter().map(|&v| v as f64).collect(),
        6 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        9 if !raw.is_empty() => raw.iter().map(|&v| v as f64).collect(),
        6 | 9 => t.int32_data.iter().map(|&v| v as f64).collect(),
        d => {
            let name = match d {
                10 => "float16 (ONNX data type 10)".to_string(),
                16 => "bfloat16 (ONNX data type 16)".to_string(),
                d => format!("ONNX data type {d}"),
            };
            return Err(Error::Invalid(format!(
                "tensor '{}' is {name}; float32, float64 and integer tensors are read (a torch \
                 module in half precision: convert it with .float() first)",
                t.name
            )));
        }
    };
    if values.len() != n {
        return Err(Error::Invalid(format!(
            "tensor '{}' has {} values for shape {dims:?} (external data is not read)",
            t.name,
            values.len()
        )));
    }
    Ok(Const {
        dims,
        values,
        origin: None,
    })
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
fn attr_f(n: &NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).map_or(default, |a| a.f as f64)
}
fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// The refusal of node `n`.
fn refuse(n: &NodeProto, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("node '{}' ({}): {why}", n.name, n.op_type))
}

/// An axis as a non-negative index into `rank` axes.
fn axis(a: i64, rank: usize) -> usize {
    if a < 0 {
        (rank as i64 + a).max(0) as usize
    } else {
        a as usize
    }
}

fn row_major_transpose(c: &Const, perm: &[usize]) -> Const {
    let idx = transpose_index(&c.dims, perm);
    Const {
        dims: perm.iter().map(|&p| c.dims[p]).collect(),
        values: idx.iter().map(|&i| c.values[i]).collect(),
        origin: c.origin.clone().map(|(n, t)| {
            (
                n,
                if perm.len() == 2 && perm == [1, 0] {
                    !t
                } else {
                    t
                },
            )
        }),
    }
}

struct Reader {
    b: GraphBuilder,
    values: HashMap<String, Value>,
    weights: Vec<f64>,
    folded: bool,
    /// The parameter tensors taken so far.
    used: std::collections::HashSet<String>,
    /// Each activation's batch axis, where it is known.
    batch: HashMap<usize, Option<usize>>,
}

impl Reader {
    fn get(&self, n: &NodeProto, i: usize) -> Result<&Value> {
        let name = n
            .input
            .get(i)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refuse(n, format!("input {i} is missing")))?;
        self.values
            .get(name)
            .ok_or_else(|| refuse(n, format!("input '{name}' is not computed before it")))
    }
    fn opt_const(&self, n: &NodeProto, i: usize) -> Result<Option<Const>> {
        if n.input.get(i).is_none_or(|s| s.is_empty()) {
            return Ok(None);
        }
        match self.get(n, i)? {
            Value::Const(c) => Ok(Some(c.clone())),
            Value::Act(_) => Err(refuse(
                n,
                format!("input {i} must be a constant (an initializer), not an activation"),
            )),
        }
    }
    fn konst(&self, n: &NodeProto, i: usize) -> Result<Const> {
        self.opt_const(n, i)?
            .ok_or_else(|| refuse(n, format!("input {i} is missing")))
    }
    fn act(&self, n: &NodeProto, i: usize) -> Result<usize> {
        match self.get(n, i)? {
            Value::Act(v) => Ok(*v),
            Value::Const(_) => Err(refuse(
                n,
                format!("input {i} is a constant where an activation is expected"),
            )),
        }
    }
    fn shape(&self, v: usize) -> Vec<usize> {
        self.b.shape(v).to_vec()
    }
    /// A parameter tensor's name: its initializer's, else the node's and `suffix`.
    fn param_name(n: &NodeProto, c: &Const, suffix: &str) -> String {
        c.origin
            .as_ref()
            .map_or_else(|| format!("{}.{suffix}", n.name), |(o, _)| o.clone())
    }
    /// Adds a node with parameters (their values appended to the weights).
    fn push(
        &mut self,
        n: &NodeProto,
        op: Op,
        inputs: Vec<usize>,
        params: Vec<(String, Vec<f64>)>,
    ) -> Result<usize> {
        let names: Vec<String> = params.iter().map(|(s, _)| s.clone()).collect();
        self.claim(n, &names)?;
        let inputs_batch = inputs.first().and_then(|&v| self.batch_of(v));
        let node = names
            .first()
            .and_then(|s| s.strip_suffix(".weight"))
            .map_or(n.name.clone(), str::to_string);
        let v = self
            .b
            .push_named(node, op, inputs, names)
            .map_err(|e| refuse(n, e))?;
        for (_, vals) in params {
            self.weights.extend(vals);
        }
        let batch = inputs_batch;
        self.batch.insert(v, batch);
        self.set(n, Value::Act(v));
        Ok(v)
    }
    /// The batch axis of activation `v`, where known.
    fn batch_of(&self, v: usize) -> Option<usize> {
        self.batch.get(&v).copied().flatten()
    }
    /// Refuses an operation over `axes` of `v` that include its batch axis.
    fn not_across(&self, n: &NodeProto, v: usize, axes: &[usize]) -> Result<()> {
        match self.batch_of(v) {
            Some(b) if axes.contains(&b) => Err(refuse(
                n,
                "an operation across the batch axis (across examples)",
            )),
            _ => Ok(()),
        }
    }
    /// Refuses an image operation unless `v` is one image `[1, c, h, w]` with its batch axis
    /// first; its `[c, h, w]`.
    fn image(&self, n: &NodeProto, v: usize) -> Result<Vec<usize>> {
        let s = self.shape(v);
        if s.len() != 4 || s[0] != 1 || self.batch_of(v).is_some_and(|b| b != 0) {
            return Err(refuse(
                n,
                format!("input of shape {s:?}; an image batch (N, C, H, W) is read"),
            ));
        }
        Ok(s[1..].to_vec())
    }
    /// Refuses a parameter tensor used by a second node (tied weights).
    fn claim(&mut self, n: &NodeProto, names: &[String]) -> Result<()> {
        for name in names {
            if !self.used.insert(name.clone()) {
                return Err(refuse(
                    n,
                    format!(
                    "parameter '{name}' is used by another node too: tied (shared) weights are \
                     not supported yet; give each use its own module"
                ),
                ));
            }
        }
        Ok(())
    }
    fn set(&mut self, n: &NodeProto, v: Value) {
        if let Some(o) = n.output.first() {
            self.values.insert(o.clone(), v);
        }
    }
    fn unary(&mut self, n: &NodeProto, kind: UnaryKind, alpha: f64) -> Result<()> {
        let u = Unary { kind, alpha };
        match self.get(n, 0)?.clone() {
            Value::Const(mut c) => {
                c.values.iter_mut().for_each(|v| *v = u.value(*v));
                c.origin = None;
                self.set(n, Value::Const(c));
            }
            Value::Act(v) => {
                self.push(n, Op::Unary(u), vec![v], Vec::new())?;
            }
        }
        Ok(())
    }
    /// A constant as an operand.
    fn operand(c: &Const) -> Operand {
        Operand::Constant {
            shape: c.dims.clone(),
            values: c.values.clone(),
        }
    }
    fn binary(&mut self, n: &NodeProto, kind: BinaryKind) -> Result<()> {
        let (mut a, mut b) = (self.get(n, 0)?.clone(), self.get(n, 1)?.clone());
        // `b + x` is `x + b` (torch writes a Linear's bias first).
        if kind == BinaryKind::Add && matches!((&a, &b), (Value::Const(_), Value::Act(_))) {
            std::mem::swap(&mut a, &mut b);
        }
        match (a, b) {
            (Value::Const(x), Value::Const(y)) => {
                let shape = broadcast_shape(&x.dims, &y.dims)
                    .ok_or_else(|| refuse(n, "constant shapes do not broadcast"))?;
                let (ia, ib) = (
                    broadcast_index(&x.dims, &shape),
                    broadcast_index(&y.dims, &shape),
                );
                let values = ia
                    .iter()
                    .zip(&ib)
                    .map(|(&i, &j)| kind.apply(x.values[i], y.values[j]))
                    .collect();
                self.set(
                    n,
                    Value::Const(Const {
                        dims: shape,
                        values,
                        origin: None,
                    }),
                );
            }
            (Value::Act(v), Value::Const(c)) => {
                let s = self.shape(v);
                // `MatMul` + `Add` of an initializer: the Linear's bias.
                if kind == BinaryKind::Add && c.origin.is_some() && v + 1 == self.b.values() {
                    if let Some(node) = self.b.last_mut() {
                        if let Op::Linear(l) = &mut node.op {
                            if !l.bias && c.values.len() == l.outputs {
                                let name = Self::param_name(n, &c, "bias");
                                if !self.used.insert(name.clone()) {
                                    return Err(refuse(n, format!("parameter '{name}' is used by another node too: tied (shared) weights are not supported yet")));
                                }
                                l.bias = true;
                                node.params.push(name);
                                self.weights.extend(c.values.iter());
                                self.set(n, Value::Act(v));
                                return Ok(());
                            }
                        }
                    }
                }
                let op = Binary::new(kind, Operand::Input { shape: s.clone() }, Self::operand(&c))
                    .map_err(|e| refuse(n, e))?;
                self.push(n, Op::Binary(op), vec![v], Vec::new())?;
            }
            (Value::Const(c), Value::Act(v)) => {
                let s = self.shape(v);
                let op = Binary::new(kind, Self::operand(&c), Operand::Input { shape: s.clone() })
                    .map_err(|e| refuse(n, e))?;
                self.push(n, Op::Binary(op), vec![v], Vec::new())?;
            }
            (Value::Act(x), Value::Act(y)) => {
                let op = Binary::new(
                    kind,
                    Operand::Input {
                        shape: self.shape(x),
                    },
                    Operand::Input {
                        shape: self.shape(y),
                    },
                )
                .map_err(|e| refuse(n, e))?;
                self.push(n, Op::Binary(op), vec![x, y], Vec::new())?;
            }
        }
        Ok(())
    }
    /// `v` reshaped; its batch axis kept where the axes before it keep their sizes' product
    /// and a new axis of length 1 starts there.
    fn reshape_to(&mut self, n: &NodeProto, v: usize, shape: Vec<usize>) -> Result<usize> {
        let old = self.shape(v);
        let batch = self.batch_of(v).and_then(|b| {
            let before: usize = old[..b].iter().product();
            (0..shape.len())
                .find(|&a| shape[a] == 1 && shape[..a].iter().product::<usize>() == before)
        });
        let out = self.push(
            n,
            Op::Gather(Gather { index: None, shape }),
            vec![v],
            Vec::new(),
        )?;
        self.batch.insert(out, batch);
        Ok(out)
    }
    /// The node's first input in shape `dims`: activation `x` reshaped, or the constant.
    fn reshape_input(&mut self, n: &NodeProto, x: Option<usize>, dims: Vec<usize>) -> Result<()> {
        match x {
            Some(x) => {
                self.reshape_to(n, x, dims)?;
            }
            None => {
                let c = self.konst(n, 0)?;
                self.set(
                    n,
                    Value::Const(Const {
                        dims,
                        values: c.values,
                        origin: None,
                    }),
                );
            }
        }
        Ok(())
    }
    /// A linear map `x W + b` with the weight as ONNX holds it (`[in, out]`; `transposed`:
    /// `[out, in]`, as `nn.Linear` and `Gemm(transB=1)` hold it).
    fn linear(
        &mut self,
        n: &NodeProto,
        x: usize,
        w: &Const,
        transposed: bool,
        bias: Option<Const>,
    ) -> Result<()> {
        if w.dims.len() != 2 {
            return Err(refuse(
                n,
                format!(
                    "a weight of shape {:?}; a 2-D initializer is read as a Linear",
                    w.dims
                ),
            ));
        }
        // The state_dict's [out, in]: the initializer's own layout when it is one, else its
        // transpose.
        let w_oi = if transposed {
            w.clone()
        } else {
            row_major_transpose(w, &[1, 0])
        };
        let (outputs, inputs) = (w_oi.dims[0], w_oi.dims[1]);
        let s = self.shape(x);
        let size: usize = s.iter().product();
        let positions = size / inputs.max(1);
        let mut params = vec![(Self::param_name(n, &w_oi, "weight"), w_oi.values.clone())];
        if let Some(b) = &bias {
            if b.values.len() != outputs {
                return Err(refuse(
                    n,
                    format!("a bias of {} values for {outputs} outputs", b.values.len()),
                ));
            }
            params.push((Self::param_name(n, b, "bias"), b.values.clone()));
        }
        let op = Op::Linear(Linear {
            inputs,
            outputs,
            positions,
            bias: bias.is_some(),
        });
        self.push(n, op, vec![x], params)?;
        Ok(())
    }
}

pub(crate) fn convert(model: &ModelProto) -> Result<Imported> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Invalid("the ONNX model has no graph".into()))?;
    let mut values: HashMap<String, Value> = HashMap::new();
    for t in &g.initializer {
        let mut c = tensor(t)?;
        c.origin = Some((t.name.clone(), false));
        values.insert(t.name.clone(), Value::Const(c));
    }
    let inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !values.contains_key(&i.name))
        .collect();
    let [input] = inputs[..] else {
        return Err(Error::Invalid(format!(
            "the graph has {} inputs besides its initializers; one is read",
            inputs.len()
        )));
    };
    if g.output.len() != 1 {
        return Err(Error::Invalid(format!(
            "the graph has {} outputs; a network with one output is read",
            g.output.len()
        )));
    }
    let dims: Vec<i64> = input
        .type_
        .tensor_type()
        .shape
        .dim
        .iter()
        .map(|d| if d.has_dim_value() { d.dim_value() } else { -1 })
        .collect();
    if dims.len() < 2 || dims[1..].iter().any(|&d| d <= 0) {
        return Err(Error::Invalid(format!(
            "input '{}' has shape {dims:?}; a batch axis and fixed per-example sizes are read",
            input.name
        )));
    }
    let mut one = vec![1];
    one.extend(dims[1..].iter().map(|&d| d as usize));
    values.insert(input.name.clone(), Value::Act(0));
    let mut r = Reader {
        b: GraphBuilder::new(one),
        values,
        weights: Vec::new(),
        folded: false,
        used: Default::default(),
        batch: HashMap::from([(0, Some(0))]),
    };
    for n in &g.node {
        node(&mut r, n)?;
    }
    let out = match r.values.get(&g.output[0].name) {
        Some(Value::Act(v)) => *v,
        _ => {
            return Err(Error::Invalid(format!(
                "output '{}' is not computed from the input",
                g.output[0].name
            )))
        }
    };
    if out + 1 != r.b.values() {
        let s = r.shape(out);
        r.b.push(
            "output",
            Op::Gather(Gather {
                index: None,
                shape: s,
            }),
            vec![out],
        )?;
    }
    let graph = r.b.finish()?;
    let mut warnings = Vec::new();
    if r.folded {
        warnings.push(
            "the file's convolution weights are named 'onnx::…': torch's default export folded \
             BatchNorm into them, a different parameterisation (Laplace is not invariant to it); \
             export with torch.onnx.export(..., do_constant_folding=False, dynamo=False), or Python's \
             Model.from_torch, to keep the network's own parameters"
                .to_string(),
        );
    }
    Ok(Imported {
        graph,
        weights: r.weights,
        warnings,
    })
}

fn node(r: &mut Reader, n: &NodeProto) -> Result<()> {
    use UnaryKind as U;
    match n.op_type.as_str() {
        "Identity" | "Dropout" | "Cast" => {
            if n.op_type == "Dropout" && attr_i(n, "training_mode", 0) != 0 {
                return Err(refuse(
                    n,
                    "training-mode dropout; export the network in eval mode (model.eval())",
                ));
            }
            let mut v = r.get(n, 0)?.clone();
            // An alias of an initializer is a parameter under its own name (torch writes one
            // initializer for equal tensors).
            if let Value::Const(c) = &mut v {
                if c.origin.is_some() {
                    c.origin = n.output.first().map(|o| (o.clone(), false));
                }
            }
            r.set(n, v);
        }
        "Constant" => {
            let a = n.attribute.first().ok_or_else(|| refuse(n, "no value"))?;
            let c = match a.name.as_str() {
                "value" => tensor(a.t.as_ref().ok_or_else(|| refuse(n, "no tensor"))?)?,
                "value_float" => Const {
                    dims: vec![],
                    values: vec![a.f as f64],
                    origin: None,
                },
                "value_int" => Const {
                    dims: vec![],
                    values: vec![a.i as f64],
                    origin: None,
                },
                "value_ints" => Const {
                    dims: vec![a.ints.len()],
                    values: a.ints.iter().map(|&v| v as f64).collect(),
                    origin: None,
                },
                "value_floats" => Const {
                    dims: vec![a.floats.len()],
                    values: a.floats.iter().map(|&v| v as f64).collect(),
                    origin: None,
                },
                other => return Err(refuse(n, format!("a constant given as '{other}'"))),
            };
            r.set(n, Value::Const(c));
        }
        "Conv" => {
            let x = r.act(n, 0)?;
            let w = r.konst(n, 1)?;
            let b = r.opt_const(n, 2)?;
            let s = r.image(n, x)?;
            if w.dims.len() != 4 {
                return Err(refuse(
                    n,
                    format!("a weight of shape {:?}; 2-D convolutions are read", w.dims),
                ));
            }
            if attr(n, "auto_pad").is_some_and(|a| a.s != b"NOTSET") {
                return Err(refuse(n, "auto_pad; explicit pads are read"));
            }
            let two = |name: &str, d: i64| -> Result<[usize; 2]> {
                let v = attr_ints(n, name).unwrap_or(vec![d, d]);
                Ok([v[0].max(0) as usize, v[1].max(0) as usize])
            };
            let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
            if pads.len() != 4 || pads[0] != pads[2] || pads[1] != pads[3] {
                return Err(refuse(
                    n,
                    format!("pads {pads:?}; the same padding on both sides is read"),
                ));
            }
            if w.origin
                .as_ref()
                .is_some_and(|(o, _)| o.starts_with("onnx::"))
            {
                r.folded = true;
            }
            let conv = Conv {
                in_channels: s[0],
                out_channels: w.dims[0],
                input: [s[1], s[2]],
                kernel: [w.dims[2], w.dims[3]],
                stride: two("strides", 1)?,
                padding: [pads[0] as usize, pads[1] as usize],
                dilation: two("dilations", 1)?,
                groups: attr_i(n, "group", 1).max(1) as usize,
                bias: b.is_some(),
            };
            let mut params = vec![(Reader::param_name(n, &w, "weight"), w.values.clone())];
            if let Some(b) = &b {
                params.push((Reader::param_name(n, b, "bias"), b.values.clone()));
            }
            r.push(n, Op::Conv(conv), vec![x], params)?;
        }
        "BatchNormalization" => {
            if attr_i(n, "training_mode", 0) != 0 || n.output.len() > 1 {
                return Err(refuse(
                    n,
                    "training-mode BatchNorm; export the network in eval mode (model.eval())",
                ));
            }
            let x = r.act(n, 0)?;
            let (scale, bias, mean, var) = (
                r.konst(n, 1)?,
                r.konst(n, 2)?,
                r.konst(n, 3)?,
                r.konst(n, 4)?,
            );
            let s = r.shape(x);
            if s.len() < 2 || s[0] != 1 || r.batch_of(x).is_some_and(|b| b != 0) {
                return Err(refuse(
                    n,
                    format!("input of shape {s:?}; a batch (N, C, …) is read"),
                ));
            }
            let c = s[1];
            let op = Op::BatchNorm(BatchNorm {
                channels: c,
                spatial: s.iter().product::<usize>() / c.max(1),
                mean: mean.values,
                var: var.values,
                eps: attr_f(n, "epsilon", 1e-5),
                affine: true,
            });
            let params = vec![
                (
                    Reader::param_name(n, &scale, "weight"),
                    scale.values.clone(),
                ),
                (Reader::param_name(n, &bias, "bias"), bias.values.clone()),
            ];
            r.push(n, op, vec![x], params)?;
        }
        "LayerNormalization" => {
            let x = r.act(n, 0)?;
            let s = r.shape(x);
            if axis(attr_i(n, "axis", -1), s.len()) + 1 != s.len() {
                return Err(refuse(n, "normalisation over more than the last axis"));
            }
            r.not_across(n, x, &[s.len() - 1])?;
            let scale = r.konst(n, 1)?;
            let bias = r.opt_const(n, 2)?;
            let size = *s.last().expect("rank ≥ 1");
            let op = Op::LayerNorm(LayerNorm {
                size,
                positions: s.iter().product::<usize>() / size,
                eps: attr_f(n, "epsilon", 1e-5),
                scale: true,
                shift: bias.is_some(),
            });
            let mut params = vec![(
                Reader::param_name(n, &scale, "weight"),
                scale.values.clone(),
            )];
            if let Some(b) = &bias {
                params.push((Reader::param_name(n, b, "bias"), b.values.clone()));
            }
            r.push(n, op, vec![x], params)?;
        }
        "Gemm" => {
            let x = r.act(n, 0)?;
            let w = r.konst(n, 1)?;
            let c = r.opt_const(n, 2)?;
            if attr_i(n, "transA", 0) != 0
                || attr_f(n, "alpha", 1.0) != 1.0
                || attr_f(n, "beta", 1.0) != 1.0
            {
                return Err(refuse(n, "transA, alpha or beta other than 0, 1, 1"));
            }
            r.linear(n, x, &w, attr_i(n, "transB", 0) != 0, c)?;
        }
        "MatMul" => match (r.get(n, 0)?.clone(), r.get(n, 1)?.clone()) {
            (Value::Act(x), Value::Const(w)) => {
                let transposed = w.origin.as_ref().is_some_and(|(_, t)| *t);
                // A transposed initializer: back to its own layout ([out, in]).
                let w = if transposed {
                    row_major_transpose(&w, &[1, 0])
                } else {
                    w
                };
                r.linear(n, x, &w, transposed, None)?;
            }
            (Value::Act(a), Value::Act(b)) => {
                let (sa, sb) = (r.shape(a), r.shape(b));
                if sa.len() < 2
                    || sb.len() < 2
                    || sa[..sa.len() - 2] != sb[..sb.len() - 2]
                    || sa[sa.len() - 1] != sb[sb.len() - 2]
                {
                    return Err(refuse(
                        n,
                        format!("a product of {sa:?} and {sb:?}; equal batch axes are read"),
                    ));
                }
                r.not_across(n, a, &[sa.len() - 2, sa.len() - 1])?;
                r.not_across(n, b, &[sb.len() - 2, sb.len() - 1])?;
                let batch = sa[..sa.len() - 2].iter().product();
                let op = MatMul {
                    batch,
                    rows: sa[sa.len() - 2],
                    inner: sa[sa.len() - 1],
                    cols: sb[sb.len() - 1],
                };
                r.push(n, Op::MatMul(op), vec![a, b], Vec::new())?;
            }
            _ => {
                return Err(refuse(
                    n,
                    "a constant times an activation; x·W with W an initializer is read",
                ))
            }
        },
        "Add" => r.binary(n, BinaryKind::Add)?,
        "Sub" => r.binary(n, BinaryKind::Sub)?,
        "Mul" => r.binary(n, BinaryKind::Mul)?,
        "Div" => r.binary(n, BinaryKind::Div)?,
        "Relu" => r.unary(n, U::Relu, 0.0)?,
        "LeakyRelu" => r.unary(n, U::LeakyRelu, attr_f(n, "alpha", 0.01))?,
        "Elu" => r.unary(n, U::Elu, attr_f(n, "alpha", 1.0))?,
        "Gelu" => {
            let tanh = attr(n, "approximate").is_some_and(|a| a.s == b"tanh");
            r.unary(n, if tanh { U::GeluTanh } else { U::Gelu }, 0.0)?
        }
        "Sigmoid" => r.unary(n, U::Sigmoid, 0.0)?,
        "Tanh" => r.unary(n, U::Tanh, 0.0)?,
        "Softplus" => r.unary(n, U::Softplus, 1.0)?,
        "Erf" => r.unary(n, U::Erf, 0.0)?,
        "Exp" => r.unary(n, U::Exp, 0.0)?,
        "Log" => r.unary(n, U::Log, 0.0)?,
        "Sqrt" => r.unary(n, U::Sqrt, 0.0)?,
        "Neg" => r.unary(n, U::Neg, 0.0)?,
        "Reciprocal" => r.unary(n, U::Reciprocal, 0.0)?,
        "Pow" => {
            let p = r.konst(n, 1)?;
            if p.values.len() != 1 {
                return Err(refuse(n, "a power that is not one number"));
            }
            r.unary(n, U::Pow, p.values[0])?
        }
        "MaxPool" | "AveragePool" => {
            let x = r.act(n, 0)?;
            let s = r.image(n, x)?;
            let k = attr_ints(n, "kernel_shape").ok_or_else(|| refuse(n, "no kernel_shape"))?;
            let st = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
            let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
            if k.len() != 2
                || pads[0] != pads[2]
                || pads[1] != pads[3]
                || attr_i(n, "ceil_mode", 0) != 0
                || attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
            {
                return Err(refuse(
                    n,
                    "2-D pooling with the same padding on both sides, floor mode and no dilation \
                     is read",
                ));
            }
            let kind = match (n.op_type.as_str(), attr_i(n, "count_include_pad", 0)) {
                ("MaxPool", _) => PoolKind::Max,
                (_, 0) => PoolKind::AvgExcludePad,
                _ => PoolKind::Avg,
            };
            let p = Pool {
                kind,
                channels: s[0],
                input: [s[1], s[2]],
                kernel: [k[0] as usize, k[1] as usize],
                stride: [st[0] as usize, st[1] as usize],
                padding: [pads[0] as usize, pads[1] as usize],
            };
            r.push(n, Op::Pool(p), vec![x], Vec::new())?;
        }
        "GlobalAveragePool" => {
            let x = r.act(n, 0)?;
            let s = r.image(n, x)?;
            let shape = [vec![1], s].concat();
            r.push(
                n,
                Op::Mean(Mean {
                    shape,
                    axes: vec![2, 3],
                }),
                vec![x],
                Vec::new(),
            )?;
        }
        "ReduceMean" => {
            let x = r.act(n, 0)?;
            let s = r.shape(x);
            let given = match attr_ints(n, "axes") {
                Some(a) => a,
                None => r
                    .opt_const(n, 1)?
                    .map(|c| c.values.iter().map(|&v| v as i64).collect())
                    .unwrap_or_default(),
            };
            let axes: Vec<usize> = if given.is_empty() {
                (0..s.len()).collect()
            } else {
                given.iter().map(|&a| axis(a, s.len())).collect()
            };
            r.not_across(n, x, &axes)?;
            let v = r.push(
                n,
                Op::Mean(Mean {
                    shape: s.clone(),
                    axes: axes.clone(),
                }),
                vec![x],
                Vec::new(),
            )?;
            if attr_i(n, "keepdims", 1) == 0 {
                let kept = (0..s.len())
                    .filter(|a| !axes.contains(a))
                    .map(|a| s[a])
                    .collect();
                r.reshape_to(n, v, kept)?;
            }
        }
        "Flatten" => {
            let x = r.act(n, 0)?;
            let s = r.shape(x);
            let a = axis(attr_i(n, "axis", 1), s.len());
            let shape = vec![s[..a].iter().product(), s[a..].iter().product()];
            r.reshape_to(n, x, shape)?;
        }
        "Reshape" => {
            let t = r.konst(n, 1)?;
            let (s, x) = match r.get(n, 0)?.clone() {
                Value::Act(x) => (r.shape(x), Some(x)),
                Value::Const(c) => (c.dims.clone(), None),
            };
            let size: usize = s.iter().product();
            let target: Vec<i64> = t.values.iter().map(|&v| v as i64).collect();
            let mut out: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d == 0 {
                        s.get(i).map_or(1, |&v| v as i64)
                    } else {
                        d
                    }
                })
                .collect();
            let known: i64 = out.iter().filter(|&&d| d > 0).product();
            if let Some(m) = out.iter_mut().find(|d| **d < 0) {
                *m = size as i64 / known.max(1);
            }
            let out: Vec<usize> = out.iter().map(|&d| d.max(0) as usize).collect();
            if out.iter().product::<usize>() != size {
                return Err(refuse(n, format!("a reshape of {s:?} to {target:?}")));
            }
            r.reshape_input(n, x, out)?;
        }
        "Unsqueeze" | "Squeeze" => {
            let axes_given: Option<Vec<i64>> = attr_ints(n, "axes").or(r
                .opt_const(n, 1)?
                .map(|c| c.values.iter().map(|&v| v as i64).collect()));
            let (dims, act) = match r.get(n, 0)?.clone() {
                Value::Const(c) => (c.dims.clone(), None),
                Value::Act(v) => (r.shape(v), Some(v)),
            };
            let dims = if n.op_type == "Unsqueeze" {
                let rank = dims.len() + axes_given.as_ref().map_or(0, Vec::len);
                let mut at: Vec<usize> = axes_given
                    .unwrap_or_default()
                    .iter()
                    .map(|&a| axis(a, rank))
                    .collect();
                at.sort_unstable();
                let mut out = dims.clone();
                for a in at {
                    out.insert(a.min(out.len()), 1);
                }
                out
            } else {
                let at: Vec<usize> = match axes_given {
                    Some(a) => a.iter().map(|&a| axis(a, dims.len())).collect(),
                    None => (0..dims.len()).filter(|&a| dims[a] == 1).collect(),
                };
                dims.iter()
                    .enumerate()
                    .filter(|(a, _)| !at.contains(a))
                    .map(|(_, &d)| d)
                    .collect()
            };
            r.reshape_input(n, act, dims)?;
        }
        "Transpose" => match r.get(n, 0)?.clone() {
            Value::Const(c) => {
                let perm: Vec<usize> = attr_ints(n, "perm").map_or_else(
                    || (0..c.dims.len()).rev().collect(),
                    |p| p.iter().map(|&v| v as usize).collect(),
                );
                r.set(n, Value::Const(row_major_transpose(&c, &perm)));
            }
            Value::Act(x) => {
                let s = r.shape(x);
                let perm: Vec<usize> = attr_ints(n, "perm").map_or_else(
                    || (0..s.len()).rev().collect(),
                    |p| p.iter().map(|&v| v as usize).collect(),
                );
                let shape = perm.iter().map(|&a| s[a]).collect();
                let g = Gather {
                    index: Some(transpose_index(&s, &perm)),
                    shape,
                };
                let batch = r
                    .batch_of(x)
                    .and_then(|b| perm.iter().position(|&p| p == b));
                let v = r.push(n, Op::Gather(g), vec![x], Vec::new())?;
                r.batch.insert(v, batch);
            }
        },
        "Gather" => match r.get(n, 0)?.clone() {
            // A table looked up by the input (nn.Embedding): the rows chosen depend on the data.
            Value::Const(_) if matches!(r.get(n, 1)?, Value::Act(_)) => {
                return Err(refuse(
                    n,
                    "a lookup of a weight table by the input (nn.Embedding, integer inputs) is \
                     not supported: the rows used depend on the data; feed the embedded vectors \
                     to the network instead",
                ))
            }
            Value::Const(data) => {
                let idx = r.konst(n, 1)?;
                if data.dims.len() != 1 {
                    return Err(refuse(n, "a gather from a constant of more than one axis"));
                }
                let values = idx
                    .values
                    .iter()
                    .map(|&i| data.values[axis(i as i64, data.values.len())])
                    .collect();
                r.set(
                    n,
                    Value::Const(Const {
                        dims: idx.dims.clone(),
                        values,
                        origin: None,
                    }),
                );
            }
            Value::Act(x) => {
                // Entries `indices` along an axis: an index map.
                let idx = r.konst(n, 1)?;
                let s = r.shape(x);
                let a = axis(attr_i(n, "axis", 0), s.len());
                r.not_across(n, x, &[a])?;
                let picks: Vec<usize> = idx.values.iter().map(|&i| axis(i as i64, s[a])).collect();
                let inner: usize = s[a + 1..].iter().product();
                let outer: usize = s[..a].iter().product();
                let index = (0..outer)
                    .flat_map(|o| {
                        let picks = &picks;
                        let s = &s;
                        picks
                            .iter()
                            .flat_map(move |&p| (0..inner).map(move |j| (o * s[a] + p) * inner + j))
                    })
                    .collect();
                let shape = [&s[..a], &idx.dims[..], &s[a + 1..]].concat();
                let batch = r
                    .batch_of(x)
                    .map(|b| if b > a { b + idx.dims.len() - 1 } else { b });
                let v = r.push(
                    n,
                    Op::Gather(Gather {
                        index: Some(index),
                        shape,
                    }),
                    vec![x],
                    Vec::new(),
                )?;
                r.batch.insert(v, batch);
            }
        },
        "Softmax" => {
            let x = r.act(n, 0)?;
            let s = r.shape(x);
            if axis(attr_i(n, "axis", -1), s.len()) + 1 != s.len() {
                return Err(refuse(n, "a softmax over an axis other than the last"));
            }
            r.not_across(n, x, &[s.len() - 1])?;
            let op = Op::Softmax(Softmax {
                size: *s.last().expect("rank ≥ 1"),
            });
            r.push(n, op, vec![x], Vec::new())?;
        }
        "Concat" => {
            let vals: Vec<Value> = (0..n.input.len())
                .map(|i| r.get(n, i).cloned())
                .collect::<Result<_>>()?;
            if vals.iter().all(|v| matches!(v, Value::Const(_))) {
                // Shapes: 1-D constants end to end.
                let values = vals
                    .iter()
                    .flat_map(|v| match v {
                        Value::Const(c) => c.values.clone(),
                        Value::Act(_) => unreachable!("all constants"),
                    })
                    .collect::<Vec<_>>();
                r.set(
                    n,
                    Value::Const(Const {
                        dims: vec![values.len()],
                        values,
                        origin: None,
                    }),
                );
            } else {
                let acts: Vec<usize> = (0..n.input.len())
                    .map(|i| r.act(n, i))
                    .collect::<Result<_>>()?;
                let shapes: Vec<Vec<usize>> = acts.iter().map(|&v| r.shape(v)).collect();
                let ax = axis(attr_i(n, "axis", 0), shapes[0].len());
                r.not_across(n, acts[0], &[ax])?;
                r.push(n, Op::Concat(Concat { shapes, axis: ax }), acts, Vec::new())?;
            }
        }
        "Shape" => {
            let dims: Vec<f64> = match r.get(n, 0)?.clone() {
                Value::Act(x) => r.shape(x).iter().map(|&d| d as f64).collect(),
                Value::Const(c) => c.dims.iter().map(|&d| d as f64).collect(),
            };
            r.set(
                n,
                Value::Const(Const {
                    dims: vec![dims.len()],
                    values: dims,
                    origin: None,
                }),
            );
        }
        "Mod" => {
            let (a, b) = (r.konst(n, 0)?, r.konst(n, 1)?);
            let shape = broadcast_shape(&a.dims, &b.dims)
                .ok_or_else(|| refuse(n, "shapes that do not broadcast"))?;
            let (ia, ib) = (
                broadcast_index(&a.dims, &shape),
                broadcast_index(&b.dims, &shape),
            );
            let fmod = attr_i(n, "fmod", 0) != 0;
            let values = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (x, y) = (a.values[i], b.values[j]);
                    if fmod {
                        x % y
                    } else {
                        x - y * (x / y).floor()
                    }
                })
                .collect();
            r.set(
                n,
                Value::Const(Const {
                    dims: shape,
                    values,
                    origin: None,
                }),
            );
        }
        "Slice" => {
            let c = r.konst(n, 0)?;
            if c.dims.len() != 1 {
                return Err(refuse(
                    n,
                    "a slice of an activation or of a constant of more than one axis",
                ));
            }
            let (st, en) = (
                r.konst(n, 1)?.values[0] as i64,
                r.konst(n, 2)?.values[0] as i64,
            );
            let len = c.values.len() as i64;
            let clamp = |v: i64| if v < 0 { (len + v).max(0) } else { v.min(len) } as usize;
            let values = c.values[clamp(st)..clamp(en).max(clamp(st))].to_vec();
            r.set(
                n,
                Value::Const(Const {
                    dims: vec![values.len()],
                    values,
                    origin: None,
                }),
            );
        }
        "ConstantOfShape" => {
            let s = r.konst(n, 0)?;
            let v = attr(n, "value")
                .and_then(|a| a.t.as_ref())
                .map(tensor)
                .transpose()?
                .map_or(0.0, |t| t.values[0]);
            let dims: Vec<usize> = s.values.iter().map(|&d| d as usize).collect();
            let len = dims.iter().product();
            r.set(
                n,
                Value::Const(Const {
                    dims,
                    values: vec![v; len],
                    origin: None,
                }),
            );
        }
        other => {
            return Err(Error::Invalid(format!(
                "node '{}' ({other}): not supported; the operations read are {}",
                n.name,
                SUPPORTED.join(", ")
            )))
        }
    }
    Ok(())
}
