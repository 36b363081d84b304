//! A convolution as a dense layer on image patches: with `C_n` the `(c·k·k) × (OH·OW)` patch
//! matrix of example n (im2col), `Z_n = W C_n + b 1ᵀ`, so for a cotangent `G_m` (out × OH·OW)
//! `∂/∂W = G_m C_nᵀ`, `∂/∂b = G_m 1`, and the input cotangent is `col2im(Wᵀ G_m)`; and the 2×2
//! pooling windows.

use faer::reborrow::ReborrowMut;
use faer::{MatRef, RowMut};

use super::layer::Layer;
use crate::linalg::col;

/// Conv2d geometry: (c, out, k, h, w, oh, ow).
pub(crate) type ConvShape = (usize, usize, usize, usize, usize, usize, usize);

pub(crate) fn conv_shape(l: &Layer) -> ConvShape {
    match *l {
        Layer::Conv2d {
            in_channels,
            out_channels,
            kernel,
            height,
            width,
        } => (
            in_channels,
            out_channels,
            kernel,
            height,
            width,
            height + 1 - kernel,
            width + 1 - kernel,
        ),
        _ => unreachable!("a convolution"),
    }
}

/// The patch matrix (c·k·k) × (oh·ow) of one example, row-major.
pub(crate) fn im2col(x: &[f64], (c, _, k, h, w, oh, ow): ConvShape) -> Vec<f64> {
    let mut cols = vec![0.0; c * k * k * oh * ow];
    for ci in 0..c {
        for ki in 0..k {
            for kj in 0..k {
                let row = (ci * k + ki) * k + kj;
                for y in 0..oh {
                    let src = &x[ci * h * w + (y + ki) * w + kj..][..ow];
                    cols[row * oh * ow + y * ow..][..ow].copy_from_slice(src);
                }
            }
        }
    }
    cols
}

/// Examples per batched product of a conv layer's forward pass.
pub(crate) const CONV_BATCH: usize = 32;

/// Adds a patch-matrix cotangent back onto the image (the adjoint of [`im2col`]), from its
/// transpose `cols_t` (OH·OW × C·k·k, each column contiguous).
pub(crate) fn col2im(cols_t: MatRef<'_, f64>, out: &mut [f64], (c, _, k, h, w, oh, ow): ConvShape) {
    for ci in 0..c {
        for ki in 0..k {
            for kj in 0..k {
                let src = col(cols_t, (ci * k + ki) * k + kj);
                for y in 0..oh {
                    out[ci * h * w + (y + ki) * w + kj..][..ow]
                        .iter_mut()
                        .zip(&src[y * ow..][..ow])
                        .for_each(|(o, v)| *o += v);
                }
            }
        }
    }
}

/// The 2×2 windows (stride 2) of a `c×h×w` input: for output `q = (ch, y, x)` in C order, the
/// four input indices.
pub(crate) fn pool_windows(c: usize, h: usize, w: usize) -> Vec<[usize; 4]> {
    let (ph, pw) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(c * ph * pw);
    for ch in 0..c {
        for y in 0..ph {
            for x in 0..pw {
                let base = ch * h * w + 2 * y * w + 2 * x;
                out.push([base, base + 1, base + w, base + w + 1]);
            }
        }
    }
    out
}

/// Writes one row's convolution derivatives (weights `d`, bias `bias`) into `dst` (a row of a
/// Jacobian, or a column of its transpose), at `w_off` and `b_off`.
pub(crate) fn write_row(
    mut dst: RowMut<'_, f64>,
    d: MatRef<'_, f64>,
    bias: &[f64],
    w_off: usize,
    b_off: usize,
) {
    let ckk = d.ncols();
    for (oc, b) in bias.iter().enumerate() {
        dst.rb_mut()
            .subcols_mut(w_off + oc * ckk, ckk)
            .iter_mut()
            .zip(d.row(oc).iter())
            .for_each(|(t, v)| *t = *v);
        dst[b_off + oc] = *b;
    }
}

/// Adds `f` of one row's convolution derivatives (weight block `d`, bias `bias`) to `acc`.
pub(crate) fn add_reduced(
    acc: &mut [f64],
    d: MatRef<'_, f64>,
    bias: &[f64],
    w_off: usize,
    b_off: usize,
    f: fn(f64) -> f64,
) {
    let ckk = d.ncols();
    for (oc, b) in bias.iter().enumerate() {
        for q in 0..ckk {
            acc[w_off + oc * ckk + q] += f(d[(oc, q)]);
        }
        acc[b_off + oc] += f(*b);
    }
}
