//! The backward pass of a linear map shared over positions (a convolution over its patches, a
//! Linear over the tokens of a sequence): `Z = W Cᵀ + b 1ᵀ` per example, with `Cᵀ` its
//! positions × q patch matrix and `W` (o × q). For a cotangent row `G_m` (positions × o):
//! `∂/∂W = G_mᵀ Cᵀ`, `∂/∂b = G_mᵀ 1`, the patches' cotangent `G_m W`; KFAC's sums
//! `A += C Cᵀ` (per example) and `G += G_mᵀ G_m`.

use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};

use crate::linalg::Real;
use crate::nn::{Factor, KronSums, Sink};

/// Receives row m's patch cotangent `G_m W` (positions × patch).
pub(crate) type PatchCotangent<'a> = dyn FnMut(usize, MatRef<'_, f64>) + 'a;

/// A linear map `W` (o × q) shared over `positions`, with or without a bias, whose weight
/// (row-major) starts at `w_off` in the flat vector and bias at `b_off`.
pub(crate) struct SharedLinear<'a> {
    pub w: MatRef<'a, f64>,
    pub bias: bool,
    pub w_off: usize,
    pub b_off: usize,
    pub positions: usize,
}

impl SharedLinear<'_> {
    fn o(&self) -> usize {
        self.w.nrows()
    }
    fn q(&self) -> usize {
        self.w.ncols()
    }
    /// Parameters (weight and bias).
    fn len(&self) -> usize {
        self.o() * self.q() + if self.bias { self.o() } else { 0 }
    }

    /// Backpropagates the rows `g_rows(m)` (positions × o each) of `m_rows` cotangent rows,
    /// `rpe` per example, whose patches are `patches(e)` (positions × q): parameter
    /// derivatives into `sink`, and, with `back`, each row's patch cotangent `G_m W`
    /// (positions × q). An example's rows go through one product each: stacked `G` (rows·
    /// positions × o) for `G W` and KFAC's `Σ Gᵀ G`, stacked `Gᵀ` (rows·o × positions) for the
    /// weight derivatives `Gᵀ C`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward<'g>(
        &self,
        sink: &mut Sink<'_>,
        m_rows: usize,
        rpe: usize,
        patches: &dyn Fn(usize) -> Mat<f64>,
        g_rows: &dyn Fn(usize) -> MatRef<'g, f64>,
        mut back: Option<&mut PatchCotangent<'_>>,
    ) {
        let (o, q, pos) = (self.o(), self.q(), self.positions);
        let mut kron = matches!(sink, Sink::Kron(_))
            .then(|| (Mat::<f64>::zeros(q, q), Mat::<f64>::zeros(o, o), 0usize));
        let mut block =
            matches!(sink, Sink::Factors(_)).then(|| Mat::<f64>::zeros(m_rows, self.len()));
        let derivs = !matches!(sink, Sink::Kron(_) | Sink::Discard);
        let mut gs = Mat::<f64>::zeros(rpe * pos, o);
        let mut gst = Mat::<f64>::zeros(if derivs { rpe * o } else { 0 }, pos);
        let mut d = Mat::<f64>::zeros(if derivs { rpe * o } else { 0 }, q);
        let mut bt = Mat::<f64>::zeros(if back.is_some() { rpe * pos } else { 0 }, q);
        for e in 0..m_rows.div_ceil(rpe) {
            let rows = e * rpe..((e + 1) * rpe).min(m_rows);
            let r = rows.len();
            let ct = patches(e);
            for (i, m) in rows.clone().enumerate() {
                let gt = g_rows(m);
                gs.as_mut().subrows_mut(i * pos, pos).copy_from(gt);
                if derivs {
                    gst.as_mut().subrows_mut(i * o, o).copy_from(gt.transpose());
                }
            }
            let gs_e = gs.as_ref().subrows(0, r * pos);
            if let Some((a, gg, count)) = kron.as_mut() {
                matmul(
                    a.as_mut(),
                    Accum::Add,
                    ct.transpose(),
                    ct.as_ref(),
                    1.0,
                    Par::Seq,
                );
                matmul(
                    gg.as_mut(),
                    Accum::Add,
                    gs_e.transpose(),
                    gs_e,
                    1.0,
                    Par::Seq,
                );
                *count += pos;
            }
            if derivs {
                matmul(
                    d.as_mut().subrows_mut(0, r * o),
                    Accum::Replace,
                    gst.as_ref().subrows(0, r * o),
                    ct.as_ref(),
                    1.0,
                    Par::Seq,
                );
                let (w_off, b_off, oq) = (self.w_off, self.b_off, o * q);
                let at = |i: usize| if i < oq { w_off + i } else { b_off + i - oq };
                for (i, m) in rows.clone().enumerate() {
                    let di = d.as_ref().subrows(i * o, o);
                    let bias: Vec<f64> = (0..o)
                        .map(|c| gst.as_ref().row(i * o + c).iter().sum::<f64>())
                        .collect();
                    let write = |dst: &mut dyn FnMut(usize, f64)| {
                        for rr in 0..o {
                            for c in 0..q {
                                dst(rr * q + c, di[(rr, c)]);
                            }
                        }
                        if self.bias {
                            bias.iter()
                                .enumerate()
                                .for_each(|(rr, v)| dst(o * q + rr, *v));
                        }
                    };
                    match sink {
                        Sink::Sum(acc) => write(&mut |i, v| acc[at(i)] += v),
                        Sink::SumSq(acc) => write(&mut |i, v| acc[at(i)] += v * v),
                        Sink::SumAndSumSq(acc, sq) => write(&mut |i, v| {
                            acc[at(i)] += v;
                            sq[at(i)] += v * v
                        }),
                        Sink::Rows(jac) => write(&mut |i, v| jac[(m, at(i))] = v),
                        Sink::Factors(_) => {
                            let b = block.as_mut().expect("made for factors");
                            write(&mut |i, v| b[(m, i)] = v)
                        }
                        Sink::Kron(_) | Sink::Discard => unreachable!("no derivatives"),
                    }
                }
            }
            if let Some(back) = back.as_mut() {
                let mut b = bt.as_mut().subrows_mut(0, r * pos);
                matmul(b.as_mut(), Accum::Replace, gs_e, self.w, 1.0, Par::Seq);
                for (i, m) in rows.enumerate() {
                    back(m, bt.as_ref().subrows(i * pos, pos));
                }
            }
        }
        match sink {
            Sink::Kron(f) => {
                let (a, g, count) = kron.expect("made for KFAC");
                f.push(KronSums {
                    a,
                    g,
                    positions: pos,
                    bias: self.bias,
                    count,
                });
            }
            Sink::Factors(f) => f.push(Factor::Block(block.expect("made for factors"))),
            _ => {}
        }
    }
}

/// Adds the parameter derivative rows `d` (M × the op's parameters, at `off` in the flat
/// vector) of an operation without a Kronecker form to `sink`; for KFAC, one exact block per
/// tensor of `lens` entries (`Σ_m d_m d_mᵀ` over its columns).
pub(crate) fn rows_into_sink(
    sink: &mut Sink<'_>,
    d: Mat<f64>,
    off: usize,
    lens: &[usize],
    examples: usize,
) {
    let cols = |j: usize| d.col(j).iter().copied();
    match sink {
        Sink::Discard => {}
        Sink::Sum(acc) => (0..d.ncols()).for_each(|j| acc[off + j] += cols(j).sum::<f64>()),
        Sink::SumSq(acc) => {
            (0..d.ncols()).for_each(|j| acc[off + j] += cols(j).map(|v| v * v).sum::<f64>())
        }
        Sink::SumAndSumSq(acc, sq) => (0..d.ncols()).for_each(|j| {
            acc[off + j] += cols(j).sum::<f64>();
            sq[off + j] += cols(j).map(|v| v * v).sum::<f64>();
        }),
        Sink::Rows(jac) => jac.rb_mut().subcols_mut(off, d.ncols()).copy_from(&d),
        // The backward pass lists an operation's shares last first: its tensors in reverse.
        Sink::Factors(f) => {
            let mut end = d.ncols();
            for &l in lens.iter().rev() {
                end -= l;
                f.push(Factor::Block(d.as_ref().subcols(end, l).to_owned()));
            }
        }
        Sink::Kron(f) => {
            let mut end = d.ncols();
            for &l in lens.iter().rev() {
                end -= l;
                let t = d.as_ref().subcols(end, l);
                f.push(KronSums {
                    a: Mat::from_fn(1, 1, |_, _| examples as f64),
                    g: crate::linalg::at_b(t, t),
                    positions: 1,
                    bias: false,
                    count: examples,
                });
            }
        }
    }
}

/// The transposed view `G_m` (positions × o) of row `m` of `g_t` (the cotangent rows as
/// contiguous columns, `width` each), for outputs stored channel-first (o × positions).
pub(crate) fn channel_first(g_t: &[f64], width: usize, m: usize, o: usize) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(&g_t[m * width..(m + 1) * width], o, width / o).transpose()
}

/// The view `G_m` (positions × o) of row `m` of `g_t`, for outputs stored position-first.
pub(crate) fn position_first(g_t: &[f64], width: usize, m: usize, o: usize) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(&g_t[m * width..(m + 1) * width], width / o, o)
}

/// The rows of `g` (M × width) as contiguous slices: `g_t[m·width..]`.
pub(crate) fn rows_contiguous(g: MatRef<'_, f64>) -> Vec<f64> {
    let mut g_t = vec![0.0; g.nrows() * g.ncols()];
    crate::linalg::transpose_into(
        MatMut::from_column_major_slice_mut(&mut g_t, g.ncols(), g.nrows()),
        g,
    );
    g_t
}

/// `Y += 1 bᵀ` for a bias over outputs stored channel-first (`positions` each) or
/// position-first.
pub(crate) fn add_bias<T: Real>(
    mut y: MatMut<'_, T>,
    b: &[T],
    positions: usize,
    channel_first: bool,
) {
    let o = b.len();
    for j in 0..y.ncols() {
        let c = if channel_first { j / positions } else { j % o };
        y.rb_mut().col_mut(j).iter_mut().for_each(|v| *v += b[c]);
    }
}
