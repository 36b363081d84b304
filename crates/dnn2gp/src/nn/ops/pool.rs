//! Max and average pooling over `kh × kw` windows with stride and zero padding, channel by
//! channel: `y_q = max_{i ∈ W_q} x_i` (VJP: the cotangent to the first arg-max) or
//! `y_q = Σ_{i ∈ W_q} x_i / c_q` (c_q the window's size, padding counted or not).

use faer::Mat;

use crate::linalg::{col, col_mut, Real};

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// The window's maximum.
    Max,
    /// The window's mean, dividing by the whole window (padding included).
    Avg,
    /// The window's mean over its entries inside the image.
    AvgExcludePad,
}

/// Pooling of a `channels × height × width` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// Channels.
    pub channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding at the top and left (the same at the bottom and right).
    pub padding: [usize; 2],
}

impl Pool {
    /// Output height and width (floor mode, as PyTorch's default).
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|a| {
            (self.input[a] + 2 * self.padding[a]).saturating_sub(self.kernel[a])
                / self.stride[a].max(1)
                + 1
        })
    }

    /// For each output entry, the input entries of its window (inside the image) and its
    /// divisor.
    fn windows(&self) -> Vec<(Vec<usize>, f64)> {
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let mut out = Vec::with_capacity(self.channels * oh * ow);
        for c in 0..self.channels {
            for y in 0..oh {
                for x in 0..ow {
                    let mut idx = Vec::with_capacity(self.kernel[0] * self.kernel[1]);
                    for ky in 0..self.kernel[0] {
                        for kx in 0..self.kernel[1] {
                            let iy = (y * self.stride[0] + ky).checked_sub(self.padding[0]);
                            let ix = (x * self.stride[1] + kx).checked_sub(self.padding[1]);
                            if let (Some(iy), Some(ix)) = (iy, ix) {
                                if iy < h && ix < w {
                                    idx.push(c * h * w + iy * w + ix);
                                }
                            }
                        }
                    }
                    let div = match self.kind {
                        PoolKind::AvgExcludePad => idx.len() as f64,
                        _ => (self.kernel[0] * self.kernel[1]) as f64,
                    };
                    out.push((idx, div));
                }
            }
        }
        out
    }

    /// The first arg-max of a window in one example's row.
    fn argmax(x: &Mat<f64>, e: usize, idx: &[usize]) -> usize {
        let mut best = idx[0];
        for &i in &idx[1..] {
            if x[(e, i)] > x[(e, best)] {
                best = i;
            }
        }
        best
    }

    /// `Y` (N × channels·oh·ow).
    pub(crate) fn forward<T: Real>(&self, x: &Mat<T>) -> Mat<T> {
        let win = self.windows();
        let n = x.nrows();
        let mut y = Mat::<T>::zeros(n, win.len());
        // Window by window over contiguous columns (examples), so that the loops vectorise.
        for (q, (idx, div)) in win.iter().enumerate() {
            let dst = col_mut(y.as_mut(), q);
            let Some((&first, rest)) = idx.split_first() else {
                continue;
            };
            dst.copy_from_slice(col(x.as_ref(), first));
            crate::linalg::wide(|| {
                for &i in rest {
                    let src = col(x.as_ref(), i);
                    match self.kind {
                        PoolKind::Max => (dst.iter_mut().zip(src))
                            .for_each(|(d, &v)| *d = if v > *d { v } else { *d }),
                        _ => dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v),
                    }
                }
                if self.kind != PoolKind::Max {
                    let div = T::of(*div);
                    dst.iter_mut().for_each(|d| *d /= div);
                }
            });
        }
        y
    }

    /// `∂X` for rows `g` (`rpe` per example).
    pub(crate) fn vjp(&self, x: &Mat<f64>, g: &Mat<f64>, rpe: usize) -> Mat<f64> {
        let win = self.windows();
        let mut gi = Mat::<f64>::zeros(g.nrows(), x.ncols());
        for (q, (idx, div)) in win.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            match self.kind {
                PoolKind::Max => {
                    let best: Vec<usize> =
                        (0..x.nrows()).map(|e| Self::argmax(x, e, idx)).collect();
                    for m in 0..g.nrows() {
                        gi[(m, best[m / rpe])] += g[(m, q)];
                    }
                }
                _ => {
                    for m in 0..g.nrows() {
                        let v = g[(m, q)] / div;
                        idx.iter().for_each(|&i| gi[(m, i)] += v);
                    }
                }
            }
        }
        gi
    }
}
