//! A sequence of layers on flat per-example activations in PyTorch's layout (channels, height,
//! width, row-major; flattening is implicit): dense, 2-D convolution (stride 1, no padding),
//! 2×2 max-pooling (stride 2) and element-wise activations, with a hand-written backward pass
//! and per-example Jacobians. LeNet-5 is [`Sequential::lenet5`]; the layers are in [`super::layer`],
//! the spec strings in `spec.rs`, the convolution's patches in `conv.rs`.
//!
//! A convolution is a dense layer on image patches: with `C_n` the `(c·k·k) × (OH·OW)` patch
//! matrix of example n (im2col), `Z_n = W C_n + b 1ᵀ`, so for a cotangent `G_m` (out × OH·OW)
//! `∂/∂W = G_m C_nᵀ`, `∂/∂b = G_m 1`, and the input cotangent is `col2im(Wᵀ G_m)`.

use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};

use super::conv::{add_reduced, col2im, conv_shape, im2col, pool_windows, write_row, CONV_BATCH};
use super::dense::dense_param_derivs;
use super::layer::{Layer, MAX_PARAMS};
use super::Mlp;
use super::{
    forward_jacobian, kron_sums, reduce, Activation, Backprop, Cotangents, Factor, JacobianFactors,
    KronSums, Network, Sink,
};
use crate::error::{Error, Result};
use crate::linalg::{col, col_mut, transpose_into};
use crate::rng::{seeded, uniform};

/// A network of layers applied in order, PyTorch's `nn.Sequential`. Deserialising checks the
/// layers as [`Sequential::new`] does. A multi-layer perceptron (dense layers with one hidden
/// activation) runs on a fused dense path with the same numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "SequentialFields")]
pub struct Sequential {
    /// The layers.
    pub(super) layers: Vec<Layer>,
    /// The fused dense path of an MLP.
    #[serde(skip)]
    pub(super) fused: Option<Mlp>,
}

/// The fields of a [`Sequential`] as stored, before [`Sequential::new`] checks them.
#[derive(serde::Deserialize)]
struct SequentialFields {
    layers: Vec<Layer>,
}

impl TryFrom<SequentialFields> for Sequential {
    type Error = Error;
    fn try_from(f: SequentialFields) -> Result<Self> {
        Sequential::new(f.layers)
    }
}

/// What the forward pass keeps for the backward pass: every layer's input and output, and the
/// arg-max of each pooling window.
pub(crate) struct Tape {
    acts: Vec<Mat<f64>>,
    argmax: Vec<Option<Vec<usize>>>,
}

/// The MLP of `dense, act, dense, …, dense` with one activation, if the layers are one.
fn fused_mlp(layers: &[Layer]) -> Option<Mlp> {
    let mut sizes = vec![layers[0].in_dim()];
    let mut activation = None;
    for (i, l) in layers.iter().enumerate() {
        match (*l, i % 2) {
            (Layer::Dense { outputs, .. }, 0) => sizes.push(outputs),
            (Layer::Act { activation: a, .. }, 1) if activation.is_none_or(|b| b == a) => {
                activation = Some(a)
            }
            _ => return None,
        }
    }
    if layers.len().is_multiple_of(2) {
        return None;
    }
    Mlp::new(sizes, activation.unwrap_or(Activation::Identity)).ok()
}

impl Sequential {
    /// A network from layers whose widths chain.
    pub fn new(layers: Vec<Layer>) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::Invalid("a network needs at least one layer".into()));
        }
        for (l, pair) in layers.windows(2).enumerate() {
            if pair[0].out_dim() != pair[1].in_dim() {
                return Err(Error::Invalid(format!(
                    "layer {} outputs {} values but layer {} takes {}",
                    l + 1,
                    pair[0].out_dim(),
                    l + 2,
                    pair[1].in_dim()
                )));
            }
        }
        if let Some(l) = layers.iter().find(|l| l.out_dim() == 0) {
            return Err(Error::Invalid(format!("layer {l:?} has no outputs")));
        }
        // Sizes saturate instead of overflowing, so anything absurd lands above these bounds.
        let params = layers
            .iter()
            .fold(0usize, |a, l| a.saturating_add(l.n_params()));
        let widest = layers.iter().map(Layer::out_dim).max().unwrap_or(0);
        if params > MAX_PARAMS || widest > MAX_PARAMS {
            return Err(Error::Invalid(format!(
                "the network would have {params} parameters and a layer of {widest} values; \
                 at most {MAX_PARAMS} of each are supported"
            )));
        }
        let fused = fused_mlp(&layers);
        Ok(Sequential { layers, fused })
    }

    /// The layers, in PyTorch's `nn.Sequential` order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    fn offsets(&self) -> Vec<usize> {
        let mut off = Vec::with_capacity(self.layers.len() + 1);
        let mut o = 0;
        for l in &self.layers {
            off.push(o);
            o += l.n_params();
        }
        off.push(o);
        off
    }

    /// The forward pass; with `keep`, every layer's input and the max-pooling arg-maxes for
    /// the backward pass (the tape), else only the output.
    fn forward_tape(&self, w: &[f64], x: MatRef<'_, f64>, keep: bool) -> Tape {
        let off = self.offsets();
        let n = x.nrows();
        let mut acts = vec![x.to_owned()];
        let mut argmax = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let a = acts.last().expect("input pushed");
            let mut arg = None;
            let zeros = || Mat::<f64>::zeros(n, layer.out_dim());
            let out = match *layer {
                Layer::Dense { inputs, outputs } => {
                    let mut out = zeros();
                    let wl = MatRef::from_row_major_slice(
                        &w[off[l]..off[l] + outputs * inputs],
                        outputs,
                        inputs,
                    );
                    matmul(
                        out.as_mut(),
                        Accum::Replace,
                        a.as_ref(),
                        wl.transpose(),
                        1.0,
                        Par::Seq,
                    );
                    let b = &w[off[l] + outputs * inputs..off[l + 1]];
                    for (j, b) in b.iter().enumerate() {
                        out.col_mut(j).iter_mut().for_each(|v| *v += b);
                    }
                    out
                }
                Layer::Conv2d { .. } => {
                    let mut out = zeros();
                    let (c, o, k, h, wd, oh, ow) = conv_shape(layer);
                    let wl = MatRef::from_row_major_slice(
                        &w[off[l]..off[l] + o * c * k * k],
                        o,
                        c * k * k,
                    );
                    let b = &w[off[l] + o * c * k * k..off[l + 1]];
                    // A batch of examples at a time, one product: the patch matrix C with
                    // columns (position p, example e), each run of examples a contiguous slice
                    // of an input column, then `Zᵀ = Cᵀ Wᵀ` (p·nb+e × o), whose runs are the
                    // output columns' slices.
                    let (pos, ckk) = (oh * ow, c * k * k);
                    // Both buffers are overwritten whole by each batch.
                    let mut buf = vec![0.0; ckk * pos * CONV_BATCH.min(n)];
                    let mut zbuf = Mat::<f64>::zeros(pos * CONV_BATCH.min(n), o);
                    for e0 in (0..n).step_by(CONV_BATCH) {
                        let nb = CONV_BATCH.min(n - e0);
                        let cols = &mut buf[..ckk * pos * nb];
                        for (r, dst) in cols.chunks_mut(pos * nb).enumerate() {
                            let (ci, ki, kj) = (r / (k * k), (r / k) % k, r % k);
                            for y in 0..oh {
                                for x in 0..ow {
                                    let src = col(a.as_ref(), ci * h * wd + (y + ki) * wd + x + kj);
                                    dst[(y * ow + x) * nb..][..nb]
                                        .copy_from_slice(&src[e0..e0 + nb]);
                                }
                            }
                        }
                        let cm = MatRef::from_row_major_slice(cols, ckk, pos * nb);
                        let mut zt = zbuf.as_mut().subrows_mut(0, pos * nb);
                        matmul(
                            zt.rb_mut(),
                            Accum::Replace,
                            cm.transpose(),
                            wl.transpose(),
                            1.0,
                            Par::Seq,
                        );
                        for (oc, bias) in b.iter().enumerate() {
                            let z = col(zt.as_ref(), oc);
                            for p in 0..pos {
                                let dst = &mut col_mut(out.as_mut(), oc * pos + p)[e0..e0 + nb];
                                dst.iter_mut()
                                    .zip(&z[p * nb..(p + 1) * nb])
                                    .for_each(|(d, v)| *d = v + bias);
                            }
                        }
                    }
                    out
                }
                Layer::MaxPool2 {
                    channels,
                    height,
                    width,
                } => {
                    // Window by window over contiguous columns; the arg-max of output q for
                    // example e at `idx[q·N + e]`.
                    let mut out = zeros();
                    let windows = pool_windows(channels, height, width);
                    let mut idx = vec![0usize; if keep { n * windows.len() } else { 0 }];
                    for (q, cands) in windows.iter().enumerate() {
                        let src = cands.map(|c| &col(a.as_ref(), c)[..n]);
                        let dst = &mut col_mut(out.as_mut(), q)[..n];
                        if keep {
                            for (e, d) in dst.iter_mut().enumerate() {
                                let (mut v, mut best) = (src[0][e], 0);
                                for (j, s) in src.iter().enumerate().skip(1) {
                                    if s[e] > v {
                                        (v, best) = (s[e], j);
                                    }
                                }
                                *d = v;
                                idx[q * n + e] = cands[best];
                            }
                        } else {
                            // The same comparisons, branch-free so that they vectorise.
                            crate::linalg::wide(|| {
                                for (e, d) in dst.iter_mut().enumerate() {
                                    let mut v = src[0][e];
                                    for s in &src[1..] {
                                        v = if s[e] > v { s[e] } else { v };
                                    }
                                    *d = v;
                                }
                            });
                        }
                    }
                    arg = keep.then_some(idx);
                    out
                }
                Layer::AvgPool2 {
                    channels,
                    height,
                    width,
                } => {
                    let mut out = zeros();
                    for (q, cands) in pool_windows(channels, height, width).iter().enumerate() {
                        for e in 0..n {
                            out[(e, q)] = 0.25 * cands.iter().map(|&c| a[(e, c)]).sum::<f64>();
                        }
                    }
                    out
                }
                Layer::Act { activation, .. } => {
                    // Column by column over contiguous memory; in place without a tape.
                    let mut out = if keep {
                        a.clone()
                    } else {
                        acts.pop().expect("input pushed")
                    };
                    for j in 0..out.ncols() {
                        activation.apply_slice(col_mut(out.as_mut(), j), 0.0);
                    }
                    out
                }
                Layer::Flatten { .. } if !keep => acts.pop().expect("input pushed"),
                Layer::Flatten { .. } => a.clone(),
            };
            if !keep {
                acts.clear();
            }
            acts.push(out);
            argmax.push(arg);
        }
        Tape { acts, argmax }
    }

    /// Backpropagates cotangent rows `g` (M × K, row m of example `m / rpe`) into `sink`.
    fn backward(&self, w: &[f64], tape: &Tape, g: Mat<f64>, rpe: usize, mut sink: Sink<'_>) {
        let off = self.offsets();
        let mut g = g;
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let a_in = &tape.acts[l];
            let m_rows = g.nrows();
            let g_in = match *layer {
                Layer::Dense { inputs, outputs } => {
                    dense_param_derivs(
                        &mut sink,
                        a_in.as_ref(),
                        g.as_ref(),
                        rpe,
                        off[l],
                        inputs,
                        outputs,
                    );
                    let wl = MatRef::from_row_major_slice(
                        &w[off[l]..off[l] + outputs * inputs],
                        outputs,
                        inputs,
                    );
                    let mut gi = Mat::<f64>::zeros(m_rows, inputs);
                    matmul(gi.as_mut(), Accum::Replace, g.as_ref(), wl, 1.0, Par::Seq);
                    gi
                }
                Layer::Conv2d { .. } => {
                    let s @ (c, o, k, _, _, oh, ow) = conv_shape(layer);
                    let ckk = c * k * k;
                    let (w_off, b_off) = (off[l], off[l] + o * ckk);
                    let wl = MatRef::from_row_major_slice(&w[w_off..b_off], o, ckk);
                    // The input cotangent transposed (one contiguous column per row, which the
                    // patches' cotangents are added onto), transposed back once.
                    let mut gi_t =
                        Mat::<f64>::zeros(if l > 0 { layer.in_dim() } else { 0 }, m_rows);
                    let pos = oh * ow;
                    // For structured kernels: this layer's Jacobian block, transposed while it
                    // is written (one contiguous column per row).
                    let mut block_t = matches!(sink, Sink::Factors(_))
                        .then(|| Mat::<f64>::zeros(o * ckk + o, m_rows));
                    // For KFAC: the sums of patch and position-cotangent outer products.
                    let mut kron = matches!(sink, Sink::Kron(_))
                        .then(|| (Mat::<f64>::zeros(ckk, ckk), Mat::<f64>::zeros(o, o)));
                    // The rows of one example share its patches: all of them go through one
                    // product `D = G Cᵀ` (rows·o × ckk). With `g` transposed once, row m's
                    // cotangent is a contiguous pos × o block, so an example's rows are one
                    // pos × rows·o view.
                    let mut g_t = vec![0.0; g.ncols() * m_rows];
                    transpose_into(
                        MatMut::from_column_major_slice_mut(&mut g_t, g.ncols(), m_rows),
                        g.as_ref(),
                    );
                    // Per-example products, allocated once: the parameter derivatives `D` of
                    // an example's rows (not needed by KFAC) and one row's input cotangents
                    // in patch layout.
                    let mut d_buf =
                        Mat::<f64>::zeros(if kron.is_none() { rpe * o } else { 0 }, ckk);
                    let below = if l > 0 { rpe * pos } else { 0 };
                    let (mut side_buf, mut back_buf) =
                        (Mat::<f64>::zeros(below, o), Mat::<f64>::zeros(below, ckk));
                    for e in 0..m_rows.div_ceil(rpe) {
                        let rows = e * rpe..((e + 1) * rpe).min(m_rows);
                        let r = rows.len();
                        let xe: Vec<f64> = a_in.row(e).iter().copied().collect();
                        let cols = im2col(&xe, s);
                        let cm = MatRef::from_row_major_slice(&cols, ckk, pos);
                        // `Gᵀ` (pos × rows·o): column (i·o + oc) holds g_{m_i}[oc, ·].
                        let gs_t = MatRef::from_column_major_slice(
                            &g_t[rows.start * o * pos..rows.end * o * pos],
                            pos,
                            r * o,
                        );
                        if let Some((ka, kg)) = kron.as_mut() {
                            matmul(ka.as_mut(), Accum::Add, cm, cm.transpose(), 1.0, Par::Seq);
                            for i in 0..r {
                                let gi = gs_t.subcols(i * o, o);
                                matmul(kg.as_mut(), Accum::Add, gi.transpose(), gi, 1.0, Par::Seq);
                            }
                        }
                        let mut d = d_buf
                            .as_mut()
                            .subrows_mut(0, if kron.is_none() { r * o } else { 0 });
                        if kron.is_none() {
                            matmul(
                                d.rb_mut(),
                                Accum::Replace,
                                gs_t.transpose(),
                                cm.transpose(),
                                1.0,
                                Par::Seq,
                            );
                        }
                        for (i, m) in rows.clone().enumerate().filter(|_| kron.is_none()) {
                            let dm = d.as_ref().subrows(i * o, o);
                            let bias: Vec<f64> = (0..o)
                                .map(|oc| col(gs_t, i * o + oc).iter().sum())
                                .collect();
                            match &mut sink {
                                Sink::Sum(acc) => add_reduced(acc, dm, &bias, w_off, b_off, |v| v),
                                Sink::SumSq(acc) => {
                                    add_reduced(acc, dm, &bias, w_off, b_off, |v| v * v)
                                }
                                Sink::SumAndSumSq(acc, sq) => {
                                    add_reduced(acc, dm, &bias, w_off, b_off, |v| v);
                                    add_reduced(sq, dm, &bias, w_off, b_off, |v| v * v)
                                }
                                Sink::Factors(_) => {
                                    let b = block_t.as_mut().expect("made for factors");
                                    let dst = b.as_mut().col_mut(m).transpose_mut();
                                    write_row(dst, dm, &bias, 0, o * ckk);
                                }
                                Sink::Rows(jac) => {
                                    write_row(jac.rb_mut().row_mut(m), dm, &bias, w_off, b_off)
                                }
                                Sink::Kron(_) | Sink::Discard => {}
                            }
                        }
                        if l > 0 {
                            // `Gᵀ` with the rows stacked (rows·pos × o), one product
                            // `Bᵀ = Gᵀ W` (rows·pos × ckk), then each row back to the image.
                            let mut side_t = side_buf.as_mut().subrows_mut(0, r * pos);
                            for i in 0..r {
                                side_t
                                    .rb_mut()
                                    .subrows_mut(i * pos, pos)
                                    .copy_from(gs_t.subcols(i * o, o));
                            }
                            let mut back_t = back_buf.as_mut().subrows_mut(0, r * pos);
                            matmul(
                                back_t.rb_mut(),
                                Accum::Replace,
                                side_t.as_ref(),
                                wl,
                                1.0,
                                Par::Seq,
                            );
                            for (i, m) in rows.enumerate() {
                                let dst = col_mut(gi_t.as_mut(), m);
                                col2im(back_t.as_ref().subrows(i * pos, pos), dst, s);
                            }
                        }
                    }
                    if let (Some((a, g)), Sink::Kron(f)) = (kron, &mut sink) {
                        f.push(KronSums {
                            a,
                            g,
                            positions: pos,
                            bias: true,
                            count: a_in.nrows() * pos,
                        });
                    }
                    if let (Some(bt), Sink::Factors(f)) = (block_t, &mut sink) {
                        let mut b = Mat::<f64>::zeros(m_rows, bt.nrows());
                        transpose_into(b.as_mut(), bt.as_ref());
                        f.push(Factor::Block(b));
                    }
                    let mut gi = Mat::<f64>::zeros(m_rows, gi_t.nrows());
                    transpose_into(gi.as_mut(), gi_t.as_ref());
                    gi
                }
                Layer::MaxPool2 { .. } => {
                    let idx = tape.argmax[l].as_ref().expect("pooling keeps its arg-max");
                    let od = layer.out_dim();
                    let mut gi = Mat::<f64>::zeros(m_rows, layer.in_dim());
                    let n = a_in.nrows();
                    for q in 0..od {
                        let gq = col(g.as_ref(), q);
                        for (m, v) in gq.iter().enumerate() {
                            gi[(m, idx[q * n + m / rpe])] += v;
                        }
                    }
                    gi
                }
                Layer::AvgPool2 {
                    channels,
                    height,
                    width,
                } => {
                    let mut gi = Mat::<f64>::zeros(m_rows, layer.in_dim());
                    for (q, cands) in pool_windows(channels, height, width).iter().enumerate() {
                        for m in 0..m_rows {
                            let v = 0.25 * g[(m, q)];
                            cands.iter().for_each(|&c| gi[(m, c)] += v);
                        }
                    }
                    gi
                }
                Layer::Flatten { .. } => g,
                Layer::Act { activation, .. } => {
                    let a_out = &tape.acts[l + 1];
                    let mut g = g;
                    for j in 0..g.ncols() {
                        let (gc, ac) = (col_mut(g.as_mut(), j), col(a_out.as_ref(), j));
                        activation.scale_by_derivative(gc, ac, rpe);
                    }
                    g
                }
            };
            g = g_in;
        }
    }
}

impl Backprop for Sequential {
    type Tape = Tape;

    fn params(&self) -> usize {
        self.n_params()
    }

    fn outputs(&self) -> usize {
        self.n_outputs()
    }

    fn record(&self, w: &[f64], x: MatRef<'_, f64>) -> Self::Tape {
        self.forward_tape(w, x, true)
    }

    fn output(tape: &Self::Tape) -> &Mat<f64> {
        tape.acts.last().expect("output")
    }

    fn backprop(&self, w: &[f64], tape: &Self::Tape, g: Mat<f64>, rpe: usize, sink: Sink<'_>) {
        self.backward(w, tape, g, rpe, sink)
    }
}

impl Network for Sequential {
    fn n_params(&self) -> usize {
        self.layers.iter().map(Layer::n_params).sum()
    }

    fn n_inputs(&self) -> usize {
        self.layers[0].in_dim()
    }

    fn n_outputs(&self) -> usize {
        self.layers.last().expect("non-empty").out_dim()
    }

    fn forward(&self, w: &[f64], x: MatRef<'_, f64>) -> Mat<f64> {
        match &self.fused {
            Some(m) => m.forward(w, x),
            // A convolutional network a batch of examples at a time: its layers' outputs
            // for the batch stay in cache.
            None if x.nrows() > CONV_BATCH => {
                let mut out = Mat::zeros(x.nrows(), self.n_outputs());
                for s in (0..x.nrows()).step_by(CONV_BATCH) {
                    let xb = x.subrows(s, CONV_BATCH.min(x.nrows() - s));
                    let f = self.forward_tape(w, xb, false).acts.pop().expect("output");
                    out.as_mut().subrows_mut(s, xb.nrows()).copy_from(f);
                }
                out
            }
            None => self.forward_tape(w, x, false).acts.pop().expect("output"),
        }
    }

    fn forward_reduce_into(
        &self,
        w: &[f64],
        x: MatRef<'_, f64>,
        requests: &mut dyn FnMut(MatRef<'_, f64>) -> Vec<Cotangents>,
        out: &mut Vec<Vec<f64>>,
    ) -> Mat<f64> {
        match &self.fused {
            Some(m) => reduce(m, w, x, requests, out),
            None => reduce(self, w, x, requests, out),
        }
    }

    fn forward_jacobian(&self, w: &[f64], x: MatRef<'_, f64>) -> (Mat<f64>, Mat<f64>) {
        match &self.fused {
            Some(m) => forward_jacobian(m, w, x),
            None => forward_jacobian(self, w, x),
        }
    }

    fn jacobian_factors(&self, w: &[f64], x: MatRef<'_, f64>) -> JacobianFactors<f64> {
        match &self.fused {
            Some(m) => JacobianFactors::new(m, w, x),
            None => JacobianFactors::new(self, w, x),
        }
    }

    fn jacobian_factors_f32(&self, w: &[f64], x: MatRef<'_, f64>) -> JacobianFactors<f32> {
        match &self.fused {
            Some(m) => JacobianFactors::new(m, w, x),
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
        match &self.fused {
            Some(m) => kron_sums(m, w, x, roots, rpe),
            None => kron_sums(self, w, x, roots, rpe),
        }
    }

    /// PyTorch's default for `nn.Linear` and `nn.Conv2d`: uniform in `±1/√fan_in`.
    fn init(&self, seed: u64) -> Vec<f64> {
        let mut rng = seeded(seed);
        let mut w = Vec::with_capacity(self.n_params());
        for l in &self.layers {
            let fan_in = match *l {
                Layer::Dense { inputs, .. } => inputs,
                Layer::Conv2d {
                    in_channels,
                    kernel,
                    ..
                } => in_channels * kernel * kernel,
                _ => continue,
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            for _ in 0..l.n_params() {
                w.push((2.0 * uniform(&mut rng) - 1.0) * bound);
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::{Layer, Sequential};
    use crate::nn::{Activation, Network};
    use faer::Mat;

    /// The fused dense path of an MLP gives the layered path's numbers: initial weights,
    /// outputs, Jacobians, kernels from factors and gradients.
    #[test]
    fn the_fused_mlp_path_equals_the_layered_one() {
        for act in [Activation::Tanh, Activation::Relu, Activation::Sigmoid] {
            let fused = Sequential::mlp(vec![3, 7, 5, 2], act).unwrap();
            assert!(fused.fused.is_some());
            let layered = Sequential {
                layers: fused.layers.clone(),
                fused: None,
            };
            let w = fused.init(4);
            assert_eq!(layered.init(4), w);
            let x = Mat::from_fn(9, 3, |i, j| ((i * 3 + j) as f64 * 0.37).sin());
            let (a, b) = (
                fused.forward_jacobian(&w, x.as_ref()),
                layered.forward_jacobian(&w, x.as_ref()),
            );
            assert_eq!(a.0, b.0);
            let close = |p: &Mat<f64>, q: &Mat<f64>| {
                (0..p.nrows())
                    .all(|i| (0..p.ncols()).all(|j| (p[(i, j)] - q[(i, j)]).abs() < 1e-13))
            };
            assert!(close(&a.1, &b.1), "{act}");
            let (ka, kb) = (
                fused.ntk(&w, x.as_ref(), x.as_ref()),
                layered.ntk(&w, x.as_ref(), x.as_ref()),
            );
            assert!(close(&ka, &kb), "{act}");
            let cot = |f: faer::MatRef<'_, f64>| f.to_owned();
            let (ga, gb) = (
                fused.forward_vjp(&w, x.as_ref(), &mut |f| cot(f)).1,
                layered.forward_vjp(&w, x.as_ref(), &mut |f| cot(f)).1,
            );
            assert!(
                ga.iter().zip(&gb).all(|(p, q)| (p - q).abs() < 1e-13),
                "{act}"
            );
        }
        // Two activations, or a trailing activation, are not an MLP.
        let mixed = Sequential::new(vec![
            Layer::Dense {
                inputs: 2,
                outputs: 3,
            },
            Layer::Act {
                activation: Activation::Tanh,
                size: 3,
            },
            Layer::Dense {
                inputs: 3,
                outputs: 3,
            },
            Layer::Act {
                activation: Activation::Relu,
                size: 3,
            },
            Layer::Dense {
                inputs: 3,
                outputs: 1,
            },
        ])
        .unwrap();
        assert!(mixed.fused.is_none());
    }
}
