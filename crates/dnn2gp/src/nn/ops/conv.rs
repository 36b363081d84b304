//! 2-D convolution with stride, zero padding, dilation and groups (`nn.Conv2d`): per group, a
//! linear map of the group's patches, `Z = W Cᵀ + b`, W of shape [out, in/groups, kh, kw].
//! Kronecker form (one group): patches `in·kh·kw` × outputs, `oh·ow` positions.

use faer::linalg::matmul::matmul;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatRef, Par};

use super::shared::{channel_first, rows_contiguous, rows_into_sink, SharedLinear};
use super::{Unary, UnaryKind};
use crate::linalg::Real;
use crate::nn::Sink;

/// Bytes of patches per product of the forward pass: 512 KiB (measured against 128 KiB–4 MiB
/// with `bench layers`: B6's pass 0.11 s at 512 KiB, 0.13–0.14 s at 2 MiB; B8's 5.0 s, 5.2 s).
const TILE_BYTES: usize = 512 << 10;

/// What the forward pass applies to a convolution's output as it writes it, channel by
/// channel: `y = φ(a_c (z + b_c) + s_c)`, a BatchNorm (`a`, `s`) and an element-wise `φ` that
/// follow it, each optional; the same operations in the same order as the separate passes.
#[derive(Debug, Clone)]
pub(crate) struct Fused<T> {
    /// A BatchNorm's per-channel `(a, s)`.
    pub affine: Option<(Vec<T>, Vec<T>)>,
    /// An element-wise function.
    pub unary: Option<Unary>,
}

impl<T: Real> Fused<T> {
    /// Nothing fused.
    pub(crate) fn none() -> Self {
        Fused {
            affine: None,
            unary: None,
        }
    }

    /// `dst ← φ(a_c (src + bias) + s_c)` for channel `c`, in one pass where `φ` is ReLU.
    fn write(&self, c: usize, bias: T, src: &[T], dst: &mut [T]) {
        let (a, s) = self
            .affine
            .as_ref()
            .map_or((T::one_impl(), T::zero_impl()), |(a, s)| (a[c], s[c]));
        let zero = T::zero_impl();
        match self.unary {
            Some(u) if u.kind == UnaryKind::Relu => dst.iter_mut().zip(src).for_each(|(d, &v)| {
                let t = a * (v + bias) + s;
                *d = if t > zero { t } else { zero };
            }),
            _ => {
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, &v)| *d = a * (v + bias) + s);
                if let Some(u) = self.unary {
                    u.apply(dst);
                }
            }
        }
    }
}

/// A convolution of a `in_channels × h × w` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conv {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding on each side.
    pub padding: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Groups (in and out channels split into this many independent convolutions).
    pub groups: usize,
    /// Whether it has a bias.
    pub bias: bool,
}

impl Conv {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|a| {
            (self.input[a] + 2 * self.padding[a])
                .saturating_sub(self.dilation[a] * (self.kernel[a] - 1) + 1)
                / self.stride[a].max(1)
                + 1
        })
    }

    /// Patch entries per group: `(in/groups)·kh·kw`.
    pub fn patch(&self) -> usize {
        self.in_channels / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// Parameters: the weight, then the bias.
    pub fn n_params(&self) -> usize {
        self.out_channels * self.patch() + if self.bias { self.out_channels } else { 0 }
    }

    fn positions(&self) -> usize {
        let [oh, ow] = self.output();
        oh * ow
    }

    /// For group `gi`, the input index of each patch entry (position-major: entry
    /// `r = (ci, ki, kj)` at output position `p = (y, x)` reads `(ci, y·s + ki·d − pad,
    /// x·s + kj·d − pad)`), `usize::MAX` in the padding.
    fn table(&self, gi: usize) -> Vec<usize> {
        let [h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [oh, ow] = self.output();
        let cg = self.in_channels / self.groups;
        let coord = |o: usize, k: usize, a: usize, len: usize| {
            (o * self.stride[a] + k * self.dilation[a])
                .checked_sub(self.padding[a])
                .filter(|&i| i < len)
        };
        let mut table = Vec::with_capacity(oh * ow * self.patch());
        for y in 0..oh {
            for x in 0..ow {
                for ci in 0..cg {
                    for ki in 0..kh {
                        for kj in 0..kw {
                            table.push(match (coord(y, ki, 0, h), coord(x, kj, 1, w)) {
                                (Some(iy), Some(ix)) => (gi * cg + ci) * h * w + iy * w + ix,
                                _ => usize::MAX,
                            });
                        }
                    }
                }
            }
        }
        table
    }

    /// The patch matrix `Cᵀ` (positions × patch) of example row `e` of `x`, by `table`.
    fn patches(&self, x: &Mat<f64>, e: usize, table: &[usize]) -> Mat<f64> {
        let q = self.patch();
        let row: Vec<f64> = x.row(e).iter().copied().collect();
        Mat::from_fn(self.positions(), q, |p, r| {
            let i = table[p * q + r];
            if i == usize::MAX {
                0.0
            } else {
                row[i]
            }
        })
    }

    fn group_weight<'a, T>(&self, w: &'a [T], gi: usize) -> MatRef<'a, T> {
        let (og, q) = (self.out_channels / self.groups, self.patch());
        MatRef::from_row_major_slice(&w[gi * og * q..(gi + 1) * og * q], og, q)
    }

    /// `Z` (N × out·oh·ow), `w` the op's parameters.
    pub(crate) fn forward<T: Real>(&self, w: &[T], x: &Mat<T>) -> Mat<T> {
        let plan = ConvPlan::new(self);
        plan.forward(w, x, &Fused::none(), &mut Scratch::default())
    }

    /// Each group's [`Conv::table`].
    fn tables(&self) -> Vec<Vec<usize>> {
        (0..self.groups).map(|gi| self.table(gi)).collect()
    }
}

/// The buffers a forward pass reuses: patches and products, and values no longer read (whose
/// memory a later output of the same shape takes, every entry overwritten).
pub(crate) struct Scratch<T> {
    patches: Vec<T>,
    free: Vec<Mat<T>>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            patches: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: Real> Scratch<T> {
    /// A matrix of this shape whose entries the caller overwrites: a freed one, else zeros.
    fn output(&mut self, rows: usize, cols: usize) -> Mat<T> {
        match (self.free.iter()).position(|m| m.nrows() == rows && m.ncols() == cols) {
            Some(i) => self.free.swap_remove(i),
            None => Mat::zeros(rows, cols),
        }
    }

    /// Keeps `m` for a later [`Scratch::output`] (a few at most).
    pub(crate) fn recycle(&mut self, m: Mat<T>) {
        if self.free.len() < 8 {
            self.free.push(m);
        }
    }
}

/// A convolution with its patch tables, made once for every batch of a forward pass.
pub(crate) struct ConvPlan<'a> {
    conv: &'a Conv,
    tables: Vec<Vec<usize>>,
}

impl<'a> ConvPlan<'a> {
    /// The plan of `conv`.
    pub(crate) fn new(conv: &'a Conv) -> Self {
        ConvPlan {
            conv,
            tables: conv.tables(),
        }
    }

    /// `post(Z)`, channel by channel as each block of outputs is written: the im2col patches
    /// of a tile of positions for all examples (rows `(p, e)`, about 512 KiB, so that they stay
    /// in cache), one product with Wᵀ per tile, then the bias and `post` on the way out;
    /// `scratch` holds the patches and products (grown, never cleared: both are overwritten).
    pub(crate) fn forward<T: Real>(
        &self,
        w: &[T],
        x: &Mat<T>,
        post: &Fused<T>,
        scratch: &mut Scratch<T>,
    ) -> Mat<T> {
        let c = self.conv;
        let (n, pos) = (x.nrows(), c.positions());
        let og = c.out_channels / c.groups;
        let q = c.patch();
        if n == 0 {
            return Mat::zeros(0, c.out_channels * pos);
        }
        // Every entry is written below.
        let mut z = scratch.output(n, c.out_channels * pos);
        let tile = (TILE_BYTES / (n * q * std::mem::size_of::<T>())).clamp(1, pos);
        let rows = tile * n;
        let buf = &mut scratch.patches;
        if buf.len() < rows * (q + og) {
            buf.resize(rows * (q + og), T::zero_impl());
        }
        let (cbuf, zbuf) = buf.split_at_mut(rows * q);
        let mut ct = faer::MatMut::from_column_major_slice_mut(cbuf, rows, q);
        let mut zt = faer::MatMut::from_column_major_slice_mut(&mut zbuf[..rows * og], rows, og);
        let zero = T::zero_impl();
        let bias = c.bias.then(|| &w[c.out_channels * q..]);
        for (gi, table) in self.tables.iter().enumerate() {
            let wt = c.group_weight(w, gi).transpose();
            for p0 in (0..pos).step_by(tile) {
                let pt = tile.min(pos - p0);
                for r in 0..q {
                    let dst = crate::linalg::col_mut(ct.rb_mut(), r);
                    for p in 0..pt {
                        let d = &mut dst[p * n..(p + 1) * n];
                        match table[(p0 + p) * q + r] {
                            usize::MAX => d.fill(zero),
                            i => d.copy_from_slice(crate::linalg::col(x.as_ref(), i)),
                        }
                    }
                }
                matmul(
                    zt.rb_mut().subrows_mut(0, pt * n),
                    Accum::Replace,
                    ct.rb().subrows(0, pt * n),
                    wt,
                    T::one_impl(),
                    Par::Seq,
                );
                crate::linalg::wide(|| {
                    for j in 0..og {
                        let oc = gi * og + j;
                        let src = crate::linalg::col(zt.rb(), j);
                        let b = bias.map_or(zero, |b| b[oc]);
                        for p in 0..pt {
                            let dst = crate::linalg::col_mut(z.as_mut(), oc * pos + p0 + p);
                            post.write(oc, b, &src[p * n..(p + 1) * n], dst);
                        }
                    }
                });
            }
        }
        z
    }
}

impl Conv {
    /// Parameter derivatives of the rows `g` into `sink` (parameters at `off`) and, with
    /// `need_input`, the input cotangent (the patches' cotangents added back onto the image).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        w: &[f64],
        off: usize,
        x: &Mat<f64>,
        g: &Mat<f64>,
        rpe: usize,
        sink: &mut Sink<'_>,
        need_input: bool,
    ) -> Option<Mat<f64>> {
        let (m_rows, pos, q) = (g.nrows(), self.positions(), self.patch());
        let og = self.out_channels / self.groups;
        let g_t = rows_contiguous(g.as_ref());
        let width = g.ncols();
        // The input cotangent transposed (a contiguous column per row), transposed back once.
        let mut gi_t = need_input.then(|| Mat::<f64>::zeros(x.ncols(), m_rows));
        let b_off = off + self.out_channels * q;
        // Several groups have no Kronecker form together: their rows go to the sink as one
        // block.
        let mut rows = (self.groups > 1
            && !matches!(
                sink,
                Sink::Sum(_) | Sink::SumSq(_) | Sink::SumAndSumSq(..) | Sink::Discard
            ))
        .then(|| Mat::<f64>::zeros(m_rows, self.n_params()));
        for gi in 0..self.groups {
            let table = self.table(gi);
            let shared = SharedLinear {
                w: self.group_weight(w, gi),
                bias: self.bias,
                w_off: if rows.is_some() {
                    gi * og * q
                } else {
                    off + gi * og * q
                },
                b_off: if rows.is_some() {
                    self.out_channels * q
                } else {
                    b_off
                } + gi * og,
                positions: pos,
            };
            let patches = |e: usize| self.patches(x, e, &table);
            // The table patch entry by patch entry, so that the scatter reads a cotangent column
            // at a time.
            let by_entry: Vec<usize> = (0..q * pos)
                .map(|k| table[(k % pos) * q + k / pos])
                .collect();
            let g_rows =
                |m: usize| channel_first(&g_t, width, m, self.out_channels).subcols(gi * og, og);
            let mut back = |m: usize, b: MatRef<'_, f64>| {
                let dst = crate::linalg::col_mut(gi_t.as_mut().expect("asked for").as_mut(), m);
                for r in 0..q {
                    let src = crate::linalg::col(b, r);
                    for (&i, v) in by_entry[r * pos..(r + 1) * pos].iter().zip(src) {
                        if i != usize::MAX {
                            dst[i] += v;
                        }
                    }
                }
            };
            let back = need_input.then_some(&mut back as &mut dyn FnMut(usize, MatRef<'_, f64>));
            match rows.as_mut() {
                Some(d) => shared.backward(
                    &mut Sink::Rows(d.as_mut()),
                    m_rows,
                    rpe,
                    &patches,
                    &g_rows,
                    back,
                ),
                None => shared.backward(sink, m_rows, rpe, &patches, &g_rows, back),
            }
        }
        if let Some(d) = rows {
            let mut lens = vec![self.out_channels * q];
            if self.bias {
                lens.push(self.out_channels);
            }
            rows_into_sink(sink, d, off, &lens, m_rows.div_ceil(rpe));
        }
        gi_t.map(|t| {
            let mut gi = Mat::<f64>::zeros(m_rows, t.nrows());
            crate::linalg::transpose_into(gi.as_mut(), t.as_ref());
            gi
        })
    }
}
