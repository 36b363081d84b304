//! 2-D convolution with stride, zero padding, dilation and groups (`nn.Conv2d`): per group, a
//! linear map of the group's patches, `Z = W Cᵀ + b`, W of shape [out, in/groups, kh, kw].
//! Kronecker form (one group): patches `in·kh·kw` × outputs, `oh·ow` positions.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use super::shared::{add_bias, channel_first, rows_contiguous, rows_into_sink, SharedLinear};
use crate::nn::Sink;

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

    /// The input index of patch entry `r` at output position `p` for group `gi`, or none in the
    /// padding.
    fn source(&self, gi: usize, r: usize, p: usize) -> Option<usize> {
        let [h, w] = self.input;
        let [kh, kw] = self.kernel;
        let ow = self.output()[1];
        let cg = self.in_channels / self.groups;
        let (ci, ki, kj) = (r / (kh * kw), (r / kw) % kh, r % kw);
        let (y, x) = (p / ow, p % ow);
        let iy = (y * self.stride[0] + ki * self.dilation[0]).checked_sub(self.padding[0])?;
        let ix = (x * self.stride[1] + kj * self.dilation[1]).checked_sub(self.padding[1])?;
        (iy < h && ix < w).then(|| (gi * cg + ci) * h * w + iy * w + ix)
    }

    /// For group `gi`, the input index of each patch entry (position-major, `usize::MAX` in
    /// the padding).
    fn table(&self, gi: usize) -> Vec<usize> {
        let (pos, q) = (self.positions(), self.patch());
        (0..pos * q)
            .map(|i| self.source(gi, i % q, i / q).unwrap_or(usize::MAX))
            .collect()
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

    fn group_weight<'a>(&self, w: &'a [f64], gi: usize) -> MatRef<'a, f64> {
        let (og, q) = (self.out_channels / self.groups, self.patch());
        MatRef::from_row_major_slice(&w[gi * og * q..(gi + 1) * og * q], og, q)
    }

    /// `Z` (N × out·oh·ow), `w` the op's parameters.
    pub(crate) fn forward(&self, w: &[f64], x: &Mat<f64>) -> Mat<f64> {
        let (n, pos) = (x.nrows(), self.positions());
        let og = self.out_channels / self.groups;
        let q = self.patch();
        let mut z = Mat::<f64>::zeros(n, self.out_channels * pos);
        // A batch of examples at a time: their patches stacked with rows (position p, example
        // e) at p·nb + e, so that each run of examples is a contiguous slice of an input
        // column and of an output column; one product with Wᵀ.
        const BATCH: usize = 32;
        let mut ct = Mat::<f64>::zeros(BATCH.min(n) * pos, q);
        let mut zt = Mat::<f64>::zeros(BATCH.min(n) * pos, og);
        for gi in 0..self.groups {
            let table = self.table(gi);
            for e0 in (0..n).step_by(BATCH) {
                let nb = BATCH.min(n - e0);
                for r in 0..q {
                    let dst = crate::linalg::col_mut(ct.as_mut(), r);
                    for p in 0..pos {
                        let d = &mut dst[p * nb..(p + 1) * nb];
                        match table[p * q + r] {
                            usize::MAX => d.fill(0.0),
                            i => d.copy_from_slice(&crate::linalg::col(x.as_ref(), i)[e0..e0 + nb]),
                        }
                    }
                }
                matmul(
                    zt.as_mut().subrows_mut(0, nb * pos),
                    Accum::Replace,
                    ct.as_ref().subrows(0, nb * pos),
                    self.group_weight(w, gi).transpose(),
                    1.0,
                    Par::Seq,
                );
                for c in 0..og {
                    let src = crate::linalg::col(zt.as_ref(), c);
                    for p in 0..pos {
                        crate::linalg::col_mut(z.as_mut(), (gi * og + c) * pos + p)[e0..e0 + nb]
                            .copy_from_slice(&src[p * nb..(p + 1) * nb]);
                    }
                }
            }
        }
        if self.bias {
            add_bias(
                z.as_mut(),
                &w[self.out_channels * self.patch()..],
                pos,
                true,
            );
        }
        z
    }

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
