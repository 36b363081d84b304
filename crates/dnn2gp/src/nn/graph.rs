//! A network as a directed acyclic graph of operations ([`Op`]) over named parameter tensors:
//! value 0 is the input, value `i + 1` the output of node i, the last node the output. The
//! forward pass keeps every value; the backward pass walks the nodes in reverse and adds the
//! cotangents of a value used twice (skip connections). A chain of layers built from a spec
//! string keeps its [`Sequential`] as a fast path with the same numbers.

use faer::{Mat, MatRef};

use super::ops::{ConvPlan, Fused, Op, Role, Scratch};
use super::weights::ParamTensor;
use super::{
    forward_jacobian, kron_sums, reduce, Backprop, Cotangents, Dtype, JacobianFactors, KronSums,
    Network, Sequential, Sink, CHUNK, MAX_PARAMS,
};
use crate::error::{Error, Result};
use crate::linalg::{to_f64, to_real, Real};
use crate::rng::{seeded, uniform};

/// One operation applied to earlier values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// Its name: the prefix of its parameters' `state_dict` names (`layer1.0.conv1`).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// The values it reads: 0 the input, `i + 1` node i's output.
    pub inputs: Vec<usize>,
    /// Its per-example output shape.
    pub shape: Vec<usize>,
    /// Its parameter tensors' `state_dict` names, where they are not `{name}.weight`,
    /// `{name}.bias`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// Its parameters' values when they are held fixed (not in `w`; laplace-torch's
    /// `requires_grad=False`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<Vec<f64>>,
}

impl Node {
    /// Parameters in `w`: none when they are held fixed.
    fn free_params(&self) -> usize {
        if self.fixed.is_some() {
            0
        } else {
            self.op.n_params()
        }
    }
}

/// The Kronecker shape of one KFAC unit of a network (one per [`KronSums`] of
/// [`Network::kron_sums`]): a weight of `outputs × inputs` entries (and a bias of `outputs`,
/// with the same `G`), or a tensor without Kronecker form as `outputs × 1` with `A = [1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KronShape {
    /// Inputs (1 for a tensor without Kronecker form).
    pub inputs: usize,
    /// Outputs (the tensor's entries for one without Kronecker form).
    pub outputs: usize,
    /// Whether a bias shares the unit's `G`.
    pub bias: bool,
}

/// A network as a graph of operations.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "GraphFields")]
pub struct Graph {
    /// The per-example input shape.
    input: Vec<usize>,
    /// The operations, in an order where each reads only earlier values.
    nodes: Vec<Node>,
    /// Each node's parameter offset in `w`.
    #[serde(skip)]
    offsets: Vec<usize>,
    /// The chain of layers it was built from, run as such.
    #[serde(skip)]
    chain: Option<Sequential>,
}

impl PartialEq for Graph {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input && self.nodes == other.nodes
    }
}

#[derive(serde::Deserialize)]
struct GraphFields {
    input: Vec<usize>,
    nodes: Vec<Node>,
}

impl TryFrom<GraphFields> for Graph {
    type Error = Error;
    fn try_from(f: GraphFields) -> Result<Self> {
        Graph::new(f.input, f.nodes)
    }
}

/// Builds a [`Graph`] node by node, each node's shape inferred and checked against its inputs.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    input: Vec<usize>,
    nodes: Vec<Node>,
}

impl GraphBuilder {
    /// A graph on inputs of this per-example shape (value 0).
    pub fn new(input: Vec<usize>) -> Self {
        GraphBuilder {
            input,
            nodes: Vec::new(),
        }
    }

    /// The per-example shape of value `v`.
    pub fn shape(&self, v: usize) -> &[usize] {
        if v == 0 {
            &self.input
        } else {
            &self.nodes[v - 1].shape
        }
    }

    /// Adds a node reading `inputs`; its value's id, or why its inputs do not fit.
    pub fn push(&mut self, name: impl Into<String>, op: Op, inputs: Vec<usize>) -> Result<usize> {
        self.push_named(name, op, inputs, Vec::new())
    }

    /// [`GraphBuilder::push`] with the parameter tensors' `state_dict` names.
    pub fn push_named(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<usize>,
        params: Vec<String>,
    ) -> Result<usize> {
        let name = name.into();
        if let Some(v) = inputs.iter().find(|&&v| v > self.nodes.len()) {
            return Err(Error::Invalid(format!(
                "node '{name}' reads value {v}, not yet computed"
            )));
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|&v| self.shape(v)).collect();
        let shape = op
            .output_shape(&shapes)
            .map_err(|e| Error::Invalid(format!("node '{name}': {e}")))?;
        self.nodes.push(Node {
            name,
            op,
            inputs,
            shape,
            params,
            fixed: None,
        });
        Ok(self.nodes.len())
    }

    /// The last node, to amend (an ONNX `Add` that is a Linear's bias).
    pub fn last_mut(&mut self) -> Option<&mut Node> {
        self.nodes.last_mut()
    }

    /// The number of values (the input and the nodes' outputs).
    pub fn values(&self) -> usize {
        self.nodes.len() + 1
    }

    /// The graph whose output is the last node.
    pub fn finish(self) -> Result<Graph> {
        Graph::new(self.input, self.nodes)
    }
}

/// The values of one forward pass.
pub(crate) struct Tape {
    values: Vec<Mat<f64>>,
}

impl Graph {
    /// A graph, checked: every node reads earlier values, and its parameters fit.
    pub fn new(input: Vec<usize>, nodes: Vec<Node>) -> Result<Self> {
        if nodes.is_empty() {
            return Err(Error::Invalid(
                "a network needs at least one operation".into(),
            ));
        }
        let mut offsets = Vec::with_capacity(nodes.len() + 1);
        let mut p = 0usize;
        for (i, n) in nodes.iter().enumerate() {
            if let Some(v) = n.inputs.iter().find(|&&v| v > i) {
                return Err(Error::Invalid(format!(
                    "node {i} ('{}') reads value {v}, which is not computed before it",
                    n.name
                )));
            }
            let shapes: Vec<&[usize]> = n
                .inputs
                .iter()
                .map(|&v| {
                    if v == 0 {
                        &input[..]
                    } else {
                        &nodes[v - 1].shape[..]
                    }
                })
                .collect();
            match n.op.output_shape(&shapes) {
                Ok(s) if s == n.shape => {}
                Ok(s) => {
                    return Err(Error::Invalid(format!(
                        "node {i} ('{}') gives shape {s:?}, not the {:?} it records",
                        n.name, n.shape
                    )))
                }
                Err(e) => return Err(Error::Invalid(format!("node {i} ('{}'): {e}", n.name))),
            }
            if let Some(f) = n.fixed.as_ref().filter(|f| f.len() != n.op.n_params()) {
                return Err(Error::Invalid(format!(
                    "node {i} ('{}') holds {} fixed values for its {} parameters",
                    n.name,
                    f.len(),
                    n.op.n_params()
                )));
            }
            offsets.push(p);
            p = p.saturating_add(n.free_params());
        }
        offsets.push(p);
        if p > MAX_PARAMS {
            return Err(Error::Invalid(format!(
                "the network would have {p} parameters; at most {MAX_PARAMS} are supported"
            )));
        }
        Ok(Graph {
            input,
            nodes,
            offsets,
            chain: None,
        })
    }

    /// The graph of a chain of layers, run by the chain itself (same numbers, same speed).
    pub fn from_sequential(seq: Sequential) -> Self {
        let mut b = GraphBuilder::new(seq.layers()[0].in_shape());
        for (i, l) in seq.layers().iter().enumerate() {
            b.push(i.to_string(), l.op(), vec![i])
                .expect("a checked chain's layers fit");
        }
        let mut g = b.finish().expect("a checked chain is a graph");
        g.chain = Some(seq);
        g
    }

    /// The architecture as files and pickles record it: a chain's spec string, else the graph
    /// as JSON.
    pub fn architecture(&self) -> String {
        match &self.chain {
            Some(s) => s.spec(),
            None => serde_json::to_string(self).expect("a graph serialises"),
        }
    }

    /// The graph of an [`Graph::architecture`] string.
    pub fn from_architecture(s: &str) -> Result<Self> {
        if s.trim_start().starts_with('{') {
            serde_json::from_str(s).map_err(|e| Error::Invalid(format!("a graph in JSON: {e}")))
        } else {
            Sequential::parse(s).map(Graph::from)
        }
    }

    /// The same graph run node by node (no chain fast path): for tests.
    pub fn without_chain(&self) -> Self {
        Graph {
            chain: None,
            ..self.clone()
        }
    }

    /// The chain of layers the graph runs as, if it is one.
    pub fn chain(&self) -> Option<&Sequential> {
        self.chain.as_ref()
    }

    /// The per-example input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A spec string for a chain, else a summary (`a graph of 52 operations`).
    pub fn spec(&self) -> String {
        match &self.chain {
            Some(s) => s.spec(),
            None => format!("a graph of {} operations", self.nodes.len()),
        }
    }

    /// The parameter tensors under their `state_dict` names, in the order of `w`.
    pub fn param_layout(&self) -> Vec<ParamTensor> {
        if let Some(s) = &self.chain {
            return s.param_layout();
        }
        let mut out = Vec::new();
        for (n, off) in self.nodes.iter().zip(&self.offsets) {
            if n.fixed.is_some() {
                continue;
            }
            let mut at = *off;
            for (t, (suffix, shape, _)) in n.op.tensors().into_iter().enumerate() {
                let len = shape.iter().product::<usize>();
                out.push(ParamTensor {
                    name: n
                        .params
                        .get(t)
                        .cloned()
                        .unwrap_or_else(|| format!("{}.{suffix}", n.name)),
                    shape,
                    offset: at,
                });
                at += len;
            }
        }
        out
    }

    /// The KFAC units, first first: one per linear map with a Kronecker form (its bias
    /// sharing `G`), one per other tensor.
    pub fn kron_layout(&self) -> Vec<KronShape> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.fixed.is_none()) {
            let tensors = n.op.tensors();
            for (i, (_, shape, role)) in tensors.iter().enumerate() {
                match *role {
                    Role::Weight { inputs, outputs } => out.push(KronShape {
                        inputs,
                        outputs,
                        bias: matches!(tensors.get(i + 1), Some((_, _, Role::Bias))),
                    }),
                    Role::Bias => {}
                    Role::Other => out.push(KronShape {
                        inputs: 1,
                        outputs: shape.iter().product(),
                        bias: false,
                    }),
                }
            }
        }
        out
    }

    /// The node whose output is the network's output, when it is a Linear on one position
    /// with a bias that is not held, and the value it reads: the last-layer split (else what
    /// stands in the way).
    pub(crate) fn last_linear(&self) -> std::result::Result<(usize, super::ops::Linear), String> {
        let n = self.nodes.last().expect("a node");
        match &n.op {
            Op::Linear(_) if n.fixed.is_some() => Err(format!(
                "a last-layer posterior covers the last layer '{}', which is held fixed (the \
                 tensors held leave it out)",
                n.name
            )),
            Op::Linear(l) if l.positions == 1 && l.bias => Ok((n.inputs[0], *l)),
            _ => Err(format!(
                "a last-layer posterior needs a network whose output is a Linear layer with a \
                 bias; {} ends in '{}'",
                self.spec(),
                n.name
            )),
        }
    }

    /// The graph whose output is value `v` (the nodes that value needs).
    pub(crate) fn truncated(&self, v: usize) -> Result<Self> {
        if let Some(s) = &self.chain {
            let layers = s.layers()[..v].to_vec();
            return Ok(Graph::from_sequential(Sequential::new(layers)?));
        }
        Graph::new(self.input.clone(), self.nodes[..v].to_vec())
    }

    /// Node i's parameters: its fixed values, or its slice of `w`.
    fn params<'a>(&'a self, i: usize, w: &'a [f64]) -> &'a [f64] {
        match &self.nodes[i].fixed {
            Some(f) => f,
            None => &w[self.offsets[i]..self.offsets[i + 1]],
        }
    }

    /// The graph with the tensors named in `names` held fixed at their values in `w`, and the
    /// weights that stay free. A layer's tensors are held or left together (a weight without
    /// its bias is refused), as are names the network does not have.
    pub fn freeze(&self, w: &[f64], names: &[String]) -> Result<(Graph, Vec<f64>)> {
        let layout = self.param_layout();
        if let Some(n) = names.iter().find(|n| !layout.iter().any(|t| &t.name == *n)) {
            return Err(Error::Invalid(format!(
                "the network has no parameter tensor '{n}'; its tensors are {}",
                layout
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut nodes = self.nodes.clone();
        let mut free = Vec::new();
        let mut tensors = layout.iter();
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.fixed.is_some() {
                continue;
            }
            let own: Vec<&ParamTensor> = tensors.by_ref().take(n.op.tensors().len()).collect();
            let held = own.iter().filter(|t| names.contains(&t.name)).count();
            let values = &w[self.offsets[i]..self.offsets[i + 1]];
            if held == 0 {
                free.extend_from_slice(values);
            } else if held == own.len() {
                n.fixed = Some(values.to_vec());
            } else {
                let (held, fitted): (Vec<&str>, Vec<&str>) = own
                    .iter()
                    .map(|t| t.name.as_str())
                    .partition(|t| names.iter().any(|n| n == t));
                return Err(Error::Invalid(format!(
                    "'{}' would hold {} and fit {}: a layer's tensors are held or fitted \
                     together",
                    n.name,
                    held.join(", "),
                    fitted.join(", ")
                )));
            }
        }
        if free.is_empty() {
            return Err(Error::Invalid(
                "every parameter tensor would be held: a posterior needs at least one to cover"
                    .into(),
            ));
        }
        Ok((Graph::new(self.input.clone(), nodes)?, free))
    }

    /// The names of BatchNorm's tensors (γ, β), e.g. to hold them fixed.
    pub fn batchnorm_tensors(&self) -> Vec<String> {
        let mut tensors = self.param_layout().into_iter();
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.fixed.is_none()) {
            let own: Vec<ParamTensor> = tensors.by_ref().take(n.op.tensors().len()).collect();
            if matches!(n.op, Op::BatchNorm(_)) {
                out.extend(own.into_iter().map(|t| t.name));
            }
        }
        out
    }

    /// The forward pass on `X`, every value kept.
    fn run(&self, w: &[f64], x: MatRef<'_, f64>) -> Tape {
        let mut values = Vec::with_capacity(self.nodes.len() + 1);
        values.push(x.to_owned());
        for (i, n) in self.nodes.iter().enumerate() {
            let ins: Vec<&Mat<f64>> = n.inputs.iter().map(|&v| &values[v]).collect();
            let out = n.op.forward(self.params(i, w), &ins);
            values.push(out);
        }
        Tape { values }
    }

    /// The backward pass of the rows `g` into `sink`.
    fn back(&self, w: &[f64], tape: &Tape, g: Mat<f64>, rpe: usize, mut sink: Sink<'_>) {
        let mut cots: Vec<Option<Mat<f64>>> = vec![None; self.nodes.len() + 1];
        cots[self.nodes.len()] = Some(g);
        for (i, n) in self.nodes.iter().enumerate().rev() {
            let Some(g) = cots[i + 1].take() else {
                continue;
            };
            let ins: Vec<&Mat<f64>> = n.inputs.iter().map(|&v| &tape.values[v]).collect();
            let need: Vec<bool> = n.inputs.iter().map(|&v| v > 0).collect();
            let mut discard = Sink::Discard;
            let gi = n.op.backward(
                self.params(i, w),
                self.offsets[i],
                &ins,
                &tape.values[i + 1],
                g,
                rpe,
                if n.fixed.is_some() {
                    &mut discard
                } else {
                    &mut sink
                },
                &need,
            );
            for (&v, c) in n.inputs.iter().zip(gi) {
                let Some(c) = c.filter(|_| v > 0) else {
                    continue;
                };
                match &mut cots[v] {
                    Some(acc) => *acc += &c,
                    slot => *slot = Some(c),
                }
            }
        }
    }
}

impl From<Sequential> for Graph {
    fn from(s: Sequential) -> Self {
        Graph::from_sequential(s)
    }
}

impl Backprop for Graph {
    type Tape = Tape;

    fn params(&self) -> usize {
        self.n_params()
    }

    fn outputs(&self) -> usize {
        self.n_outputs()
    }

    fn record(&self, w: &[f64], x: MatRef<'_, f64>) -> Tape {
        self.run(w, x)
    }

    fn output(tape: &Tape) -> &Mat<f64> {
        tape.values.last().expect("output")
    }

    fn backprop(&self, w: &[f64], tape: &Tape, g: Mat<f64>, rpe: usize, sink: Sink<'_>) {
        self.back(w, tape, g, rpe, sink)
    }
}

/// Examples per forward pass of a large batch (so that the values stay small).
const FORWARD_BATCH: usize = 64;

/// The values `vs`, each kept until its last use.
fn kept<'a, T>(values: &'a [Option<Mat<T>>], vs: &[usize]) -> Vec<&'a Mat<T>> {
    (vs.iter())
        .map(|&v| values[v].as_ref().expect("kept until its last use"))
        .collect()
}

/// One step of a forward pass, timed ([`Graph::forward_profile`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepProfile {
    /// The names of its nodes (a convolution with the BatchNorm and function fused into it).
    pub nodes: Vec<String>,
    /// Floating-point operations per example (`2·out·positions·patch` for a convolution).
    pub flops: usize,
    /// Seconds, summed over the threads.
    pub seconds: f64,
}

/// One step of the forward pass: node `node`, with the nodes `fused` that read only its value
/// (a BatchNorm and an element-wise function after a convolution) applied as it is written.
struct Step {
    node: usize,
    fused: Vec<usize>,
}

impl Graph {
    /// The outputs `F` of `X` computed in `dtype` (f32: twice the GEMM rate, half the memory
    /// traffic; the outputs widened to f64).
    pub fn forward_in(&self, w: &[f64], x: MatRef<'_, f64>, dtype: Dtype) -> Mat<f64> {
        match dtype {
            Dtype::F64 => self.forward(w, x),
            Dtype::F32 => self.forward_as::<f32>(w, x),
        }
    }

    /// The steps of the forward pass: a convolution takes a BatchNorm and then an element-wise
    /// function that read only its value (and the value before) with it, a sum the element-wise
    /// function that reads only it.
    fn steps(&self) -> Vec<Step> {
        let mut uses = vec![0usize; self.nodes.len() + 1];
        self.nodes
            .iter()
            .for_each(|n| n.inputs.iter().for_each(|&v| uses[v] += 1));
        let mut steps: Vec<Step> = Vec::with_capacity(self.nodes.len());
        let mut i = 0;
        while i < self.nodes.len() {
            let mut fused = Vec::new();
            if matches!(self.nodes[i].op, Op::Conv(_)) {
                let mut last = i;
                let reads_only = |j: usize, last: usize| {
                    self.nodes.get(j).is_some_and(|n| n.inputs == [last + 1]) && uses[last + 1] == 1
                };
                if reads_only(last + 1, last) && matches!(self.nodes[last + 1].op, Op::BatchNorm(_))
                {
                    last += 1;
                    fused.push(last);
                }
                if reads_only(last + 1, last) && matches!(self.nodes[last + 1].op, Op::Unary(_)) {
                    last += 1;
                    fused.push(last);
                }
            }
            // A sum (a skip connection) takes the function after it along.
            if matches!(self.nodes[i].op, Op::Binary(_))
                && self.nodes.get(i + 1).is_some_and(|n| {
                    n.inputs == [i + 1] && uses[i + 1] == 1 && matches!(n.op, Op::Unary(_))
                })
            {
                fused.push(i + 1);
            }
            let next = fused.last().map_or(i + 1, |&l| l + 1);
            steps.push(Step { node: i, fused });
            i = next;
        }
        steps
    }

    /// The forward pass in `T`, a batch of examples at a time, each value dropped after its
    /// last use (no tape).
    fn forward_as<T: Real>(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        self.forward_timed::<T>(w, x, None)
    }

    /// Each step of the forward pass in `dtype` on `X` (in parallel over chunks of rows, as
    /// [`crate::nn::predict_in`] runs it): its nodes' names, floating-point operations per
    /// example (convolutions, Linears and products; 0 for the rest) and seconds summed over
    /// the threads, so that the slow step shows. The graph's pass (a chain built from a spec
    /// string runs its f64 forward through its layers instead).
    pub fn forward_profile(&self, w: &[f64], x: MatRef<'_, f64>, dtype: Dtype) -> Vec<StepProfile> {
        use rayon::prelude::*;
        let steps = self.steps();
        let starts: Vec<usize> = (0..x.nrows()).step_by(CHUNK).collect();
        let times = starts
            .par_iter()
            .map(|&s| {
                let xc = x.subrows(s, CHUNK.min(x.nrows() - s));
                let mut t = vec![0.0; steps.len()];
                match dtype {
                    Dtype::F64 => self.forward_timed::<f64>(w, xc, Some(&mut t)),
                    Dtype::F32 => self.forward_timed::<f32>(w, xc, Some(&mut t)),
                };
                t
            })
            .reduce(
                || vec![0.0; steps.len()],
                |a, b| a.iter().zip(&b).map(|(a, b)| a + b).collect(),
            );
        steps
            .iter()
            .zip(times)
            .map(|(step, seconds)| {
                let nodes = std::iter::once(step.node).chain(step.fused.iter().copied());
                StepProfile {
                    nodes: nodes.map(|i| self.nodes[i].name.clone()).collect(),
                    flops: self.nodes[step.node].op.flops(),
                    seconds,
                }
            })
            .collect()
    }

    /// [`Graph::forward_as`], each step's seconds added to `times` where given.
    fn forward_timed<T: Real>(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        mut times: Option<&mut [f64]>,
    ) -> Mat<f64> {
        let params: Vec<Vec<T>> = (0..self.nodes.len())
            .map(|i| self.params(i, w).iter().map(|&v| T::of(v)).collect())
            .collect();
        let steps = self.steps();
        let plans: Vec<Option<ConvPlan>> = (self.nodes.iter())
            .map(|n| match &n.op {
                Op::Conv(c) => Some(ConvPlan::new(c)),
                _ => None,
            })
            .collect();
        // What each step applies after its node: a BatchNorm's affine map, a function.
        let posts: Vec<Fused<T>> = (steps.iter())
            .map(|step| {
                let mut post = Fused::none();
                for &j in &step.fused {
                    match &self.nodes[j].op {
                        Op::BatchNorm(b) => post.affine = Some(b.affine(&params[j])),
                        Op::Unary(u) => post.unary = Some(*u),
                        _ => unreachable!("steps fuse BatchNorms and functions only"),
                    }
                }
                post
            })
            .collect();
        let mut scratch = Scratch::default();
        let mut last_use = vec![usize::MAX; self.nodes.len() + 1];
        for (i, n) in self.nodes.iter().enumerate() {
            n.inputs.iter().for_each(|&v| last_use[v] = i);
        }
        last_use[self.nodes.len()] = usize::MAX;
        let mut out = Mat::zeros(x.nrows(), self.n_outputs());
        for s in (0..x.nrows()).step_by(FORWARD_BATCH) {
            let xb = x.subrows(s, FORWARD_BATCH.min(x.nrows() - s));
            let mut values: Vec<Option<Mat<T>>> = vec![None; self.nodes.len() + 1];
            values[0] = Some(to_real(xb));
            for (k, step) in steps.iter().enumerate() {
                let t0 = times.is_some().then(std::time::Instant::now);
                let (i, n) = (step.node, &self.nodes[step.node]);
                let owned = n.op.in_place() && n.inputs.len() == 1 && last_use[n.inputs[0]] == i;
                let (first, rest) = (n.inputs[0], &n.inputs[1..]);
                let y = match (&n.op, &plans[i]) {
                    (Op::Conv(_), Some(plan)) => {
                        let x = kept(&values, &n.inputs)[0];
                        plan.forward(&params[i], x, &posts[k], &mut scratch)
                    }
                    (Op::Binary(b), _)
                        if b.left_in_place() && last_use[first] == i && !rest.contains(&first) =>
                    {
                        let a = values[first].take().expect("kept until its last use");
                        b.forward_over(a, &kept(&values, rest), posts[k].unary)
                    }
                    _ if owned => {
                        let x = values[first].take().expect("kept until its last use");
                        n.op.forward_owned(&params[i], x)
                    }
                    (op, _) => {
                        let y = op.forward(&params[i], &kept(&values, &n.inputs));
                        // A sum's function, where the sum could not take it along.
                        match posts[k].unary.filter(|_| matches!(op, Op::Binary(_))) {
                            Some(u) => u.forward_owned(y),
                            None => y,
                        }
                    }
                };
                for &v in &n.inputs {
                    if last_use[v] == i {
                        if let Some(m) = values[v].take() {
                            scratch.recycle(m);
                        }
                    }
                }
                values[step.fused.last().map_or(i, |&l| l) + 1] = Some(y);
                if let (Some(t), Some(t0)) = (times.as_deref_mut(), t0) {
                    t[k] += t0.elapsed().as_secs_f64();
                }
            }
            let f = values.pop().flatten().expect("output");
            out.as_mut()
                .subrows_mut(s, xb.nrows())
                .copy_from(to_f64(f.as_ref()));
        }
        out
    }
}

impl Network for Graph {
    fn n_params(&self) -> usize {
        *self.offsets.last().expect("offsets")
    }

    fn n_inputs(&self) -> usize {
        self.input.iter().product()
    }

    fn n_outputs(&self) -> usize {
        self.nodes.last().expect("a node").shape.iter().product()
    }

    fn forward(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        match &self.chain {
            Some(s) => s.forward(w, x),
            None => self.forward_as::<f64>(w, x),
        }
    }

    fn forward_reduce_into(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        requests: &mut dyn FnMut(MatRef<'_, f64>) -> Vec<Cotangents>,
        out: &mut Vec<Vec<f64>>,
    ) -> Mat<f64> {
        match &self.chain {
            Some(s) => s.forward_reduce_into(w, x, requests, out),
            None => reduce(self, w, x, requests, out),
        }
    }

    fn forward_jacobian(&self, w: &[f64], x: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
        match &self.chain {
            Some(s) => s.forward_jacobian(w, x),
            None => forward_jacobian(self, w, x),
        }
    }

    fn jacobian_factors(&self, w: &[f64], x: MatRef<'_, f64>) -> JacobianFactors<f64> {
        match &self.chain {
            Some(s) => s.jacobian_factors(w, x),
            None => JacobianFactors::new(self, w, x),
        }
    }

    fn jacobian_factors_f32(&self, w: &[f64], x: MatRef<'_, f64>) -> JacobianFactors<f32> {
        match &self.chain {
            Some(s) => s.jacobian_factors_f32(w, x),
            None => JacobianFactors::new(self, w, x),
        }
    }

    fn kron_sums(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        roots: &dyn Fn(MatRef<'_, f64>) -> Mat<f64>,
        rpe: usize,
    ) -> Vec<KronSums> {
        match &self.chain {
            Some(s) => s.kron_sums(w, x, roots, rpe),
            None => kron_sums(self, w, x, roots, rpe),
        }
    }

    /// PyTorch's defaults: Linear and Conv2d uniform in `±1/√fan_in`, BatchNorm and LayerNorm
    /// γ = 1, β = 0.
    fn init(&self, seed: u64) -> Vec<f64> {
        if let Some(s) = &self.chain {
            return s.init(seed);
        }
        let mut rng = seeded(seed);
        let mut w = Vec::with_capacity(self.n_params());
        for n in self.nodes.iter().filter(|n| n.fixed.is_none()) {
            let fan_in = match &n.op {
                Op::Linear(l) => Some(l.inputs),
                Op::Conv(c) => Some(c.patch()),
                _ => None,
            };
            for (suffix, shape, _) in n.op.tensors() {
                let len: usize = shape.iter().product();
                match fan_in {
                    Some(f) => {
                        let bound = 1.0 / (f as f64).sqrt();
                        (0..len).for_each(|_| w.push((2.0 * uniform(&mut rng) - 1.0) * bound));
                    }
                    None => w.extend(std::iter::repeat_n(
                        if suffix == "weight" { 1.0 } else { 0.0 },
                        len,
                    )),
                }
            }
        }
        w
    }
}
