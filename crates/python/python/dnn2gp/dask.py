"""Kernels, GGNs and the GP past one machine, on Dask.

- `ntk` returns a `dask.array` whose blocks are kernel tiles `J(X1_i) J(X2_j)ᵀ`, each computed
  by the Rust core in one task from per-layer factors; for a symmetric kernel (`X2` omitted)
  only the tiles on and above the diagonal are computed, those below are their transposes.
- `ggn_diagonal` and `fit` are tree reductions of per-chunk partial sums: the GGN's diagonal,
  and a Laplace posterior's whole curvature (full GGN, diagonal or KFAC factors, with the data
  terms of the evidence), which `Laplace.fit_curvature` turns into the posterior.
- `GP` is the function-space DNN2GP GP on a dask array: `G = δ⁻¹ J Jᵀ + Λ⁻¹` from kernel
  tiles, its blocked Cholesky factor (`dask.array.linalg.cholesky`), the marginal likelihood
  and the predictive from triangular solves.

All run on whatever scheduler is active: threads, a `distributed.LocalCluster`, or a Slurm
cluster through dask-jobqueue. A kernel task holds its inputs and one tile (`chunks² · K²`
values, times 8 bytes) besides the factors of its two row blocks.
"""

import functools
import math
import numbers
import operator

import numpy as np

from . import _dnn2gp

_FEATURES = "klmnopq"


def _check(chunks, split_every=2):
    if not (isinstance(chunks, numbers.Integral) and chunks >= 1):
        raise ValueError(f"chunks: {chunks!r} (expected a positive number of rows)")
    if not (isinstance(split_every, numbers.Integral) and split_every >= 2):
        raise ValueError(f"split_every: {split_every!r} (expected at least 2 partial sums a node)")


def _rows(x, chunks, name):
    import dask.array as da

    _check(chunks)
    if isinstance(x, da.Array):
        return x.rechunk({a: -1 for a in range(1, x.ndim)})
    x = np.asarray(x)
    if x.dtype != np.float64:
        raise TypeError(f"{name}: expected float64 values, got dtype {x.dtype}")
    return da.from_array(x, chunks=(chunks,) + x.shape[1:])


def _targets(y, rows):
    """y as a dask array chunked along its rows like `rows`."""
    import dask.array as da

    if isinstance(y, da.Array):
        return y.rechunk((rows.chunks[0],) + tuple((s,) for s in y.shape[1:]))
    y = np.asarray(y)
    return da.from_array(y, chunks=(rows.chunks[0],) + y.shape[1:])


def _check_trace(trace_axes):
    trace_axes = tuple(trace_axes)
    if trace_axes not in {(), (-1,), (1,)}:
        raise ValueError(f"trace_axes: {trace_axes} (expected () or (-1,), the output axis)")
    return trace_axes


def _ntk_tile(x1, x2, model, trace_axes):
    return _dnn2gp.ntk(model, np.ascontiguousarray(x1),
                       None if x2 is None else np.ascontiguousarray(x2), trace_axes=trace_axes)


def _mirror(tile, traced):
    """Tile (j, i) of a symmetric kernel from tile (i, j): `K(x_j, x_i)_{ab} = K(x_i, x_j)_{ba}`."""
    return tile.T.copy() if traced else tile.transpose(1, 0, 3, 2).copy()


def ntk(model, x1, x2=None, chunks=256, trace_axes=(-1,)):
    """The empirical NTK `J(X1) J(X2)ᵀ` as a dask array of tiles of `chunks` rows a side, in
    neural-tangents' layouts: `(N1, N2)` traced over the outputs (`trace_axes=(-1,)`), or
    `(N1, N2, K, K)` (`trace_axes=()`). With X2 omitted the kernel is symmetric: a diagonal tile
    is a Gram matrix (its factors once), and a tile below the diagonal is the transpose of the
    one above it, so `n(n+1)/2` of the `n²` tiles are computed."""
    import dask
    import dask.array as da

    trace_axes = _check_trace(trace_axes)
    traced = bool(trace_axes)
    k = model.n_outputs
    a = _rows(x1, chunks, "X1")
    feat = _FEATURES[: a.ndim - 1]
    if x2 is not None:
        b = _rows(x2, chunks, "X2")
        kwargs = dict(dtype=np.float64, concatenate=True, model=model, trace_axes=trace_axes)
        if traced:
            return da.blockwise(_ntk_tile, "ij", a, "i" + feat, b, "j" + feat, **kwargs)
        return da.blockwise(_ntk_tile, "ijab", a, "i" + feat, b, "j" + feat,
                            new_axes={"a": k, "b": k}, **kwargs)
    blocks = a.to_delayed().ravel()
    sizes = a.chunks[0]
    m = dask.delayed(model, pure=True)
    tile = dask.delayed(_ntk_tile, pure=True)
    mirror = dask.delayed(_mirror, pure=True)
    upper = {}
    rows = []
    for i, bi in enumerate(blocks):
        row = []
        for j, bj in enumerate(blocks):
            shape = (sizes[i], sizes[j]) + (() if traced else (k, k))
            if i <= j:
                upper[i, j] = tile(bi, None if i == j else bj, m, trace_axes)
                d = upper[i, j]
            else:
                d = mirror(upper[j, i], traced)
            row.append(da.from_delayed(d, shape=shape, dtype=np.float64))
        rows.append(da.concatenate(row, axis=1))
    return da.concatenate(rows, axis=0)


def _ggn_part(x, y, model):
    return _dnn2gp.ggn_diagonal(model, np.ascontiguousarray(x), np.ascontiguousarray(y))[None, :]


def ggn_diagonal(model, x, y, chunks=1024, split_every=2):
    """The GGN's diagonal `Σ_i diag(J_iᵀ Λ_i J_i)` (P) over the rows of (X, y), as a tree
    reduction (`split_every` partial sums per node) of one partial sum per chunk of rows."""
    import dask.array as da

    _check(chunks, split_every)
    a = _rows(x, chunks, "X")
    yb = _targets(y, a)
    feat = _FEATURES[: a.ndim - 1]
    yfeat = "z"[: yb.ndim - 1]
    parts = da.blockwise(_ggn_part, "ip", a, "i" + feat, yb, "i" + yfeat, dtype=np.float64,
                         concatenate=True, new_axes={"p": model.n_params},
                         adjust_chunks={"i": 1}, model=model)
    return parts.sum(axis=0, split_every=split_every)


def _curvature_part(model, likelihood, subset, structure, x, y):
    la = _dnn2gp.Laplace(model, likelihood, subset_of_weights=subset,
                         hessian_structure=structure)
    return la.curvature(np.ascontiguousarray(x), np.ascontiguousarray(y))


def _add(*parts):
    return functools.reduce(operator.add, parts)


def fit(la, x, y, chunks=1024, split_every=4):
    """Fits the `Laplace` posterior `la` on (X, y) as a tree reduction: one `Curvature` per
    chunk of rows (the GGN in `la`'s structure, full, diag or kron, and the data terms of the
    evidence), added `split_every` at a time, the sum handed to `la.fit_curvature`. The same
    posterior as `la.fit(X, y)`, up to the order of the sums. A task holds one chunk and one
    curvature (P² values full, P diag, the Kronecker factors kron). Returns `la`."""
    import dask

    _check(chunks, split_every)
    a = _rows(x, chunks, "X")
    yb = _targets(y, a)
    args = (la.model, la.likelihood, la.subset_of_weights, la.hessian_structure)
    part = dask.delayed(_curvature_part, pure=True)
    parts = [part(*args, xb, ybb)
             for xb, ybb in zip(a.to_delayed().ravel(), yb.to_delayed().ravel())]
    add = dask.delayed(_add, pure=True)
    while len(parts) > 1:
        parts = [add(*parts[i:i + split_every]) for i in range(0, len(parts), split_every)]
    (total,) = dask.compute(parts[0])
    la.fit_curvature(total)
    return la


def _example_major(tile, k):
    """A `(n1, n2, K, K)` kernel tile as the `(n1 K, n2 K)` block, row `i K + a`."""
    n1, n2 = tile.shape[:2]
    return tile.transpose(0, 2, 1, 3).reshape(n1 * k, n2 * k)


def _kernel_matrix(model, x1, x2, chunks):
    """`J(X1) J(X2)ᵀ` (N1K × N2K, example-major) as a dask array."""
    k = model.n_outputs
    kern = ntk(model, x1, x2, chunks=chunks, trace_axes=())
    return kern.map_blocks(_example_major, k, drop_axis=[2, 3], dtype=np.float64,
                           chunks=tuple(tuple(c * k for c in cs) for cs in kern.chunks[:2]))


def _block_diag(blocks):
    n, k, _ = blocks.shape
    out = np.zeros((n * k, n * k))
    for i in range(n):
        out[i * k:(i + 1) * k, i * k:(i + 1) * k] = blocks[i]
    return out


class GP:
    """The function-space DNN2GP GP of a trained network (Gaussian or Bernoulli likelihood) on
    dask arrays, for training sets whose NK×NK kernel needs more than one machine:

    `G = δ⁻¹ J Jᵀ + Λ⁻¹ = L Lᵀ` (tiles of `chunks` examples, blocked Cholesky),
    `log p(ỹ) = −½ ‖L⁻¹ỹ‖² − Σ log L_ii − (NK/2) log 2π`,
    `mean(x*) = δ⁻¹ K*ᵀ G⁻¹ ỹ`, `var(x*) = δ⁻¹ k** − ‖L⁻¹ δ⁻¹ K*‖²`,

    with the pseudo-targets `ỹ` and the noise `Λ⁻¹` computed chunk by chunk
    (`dnn2gp.pseudo_targets`). `dnn2gp.GP` computes the same in one process (no jitter is
    added here: a Gram matrix that is not positive definite raises). A Cholesky task holds a
    few tiles of `(chunks K)²` values."""

    def __init__(self, model, chunks=256):
        _check(chunks)
        self.model = model
        self.chunks = chunks
        self.delta = model.prior_precision

    def fit(self, x, y):
        """Factorises G on the training data (the factor is persisted on the cluster) and
        computes the log marginal likelihood. Returns self."""
        import dask
        import dask.array as da

        model, k, c = self.model, self.model.n_outputs, self.chunks
        a = _rows(x, c, "X")
        yb = _targets(y, a)
        # Each chunk's (ỹ, Λ⁻¹) once, kept on the workers for both G and the solves.
        parts = dask.persist(*[dask.delayed(_dnn2gp.pseudo_targets, pure=True)(model, xb, ybb)
                               for xb, ybb in zip(a.to_delayed().ravel(), yb.to_delayed().ravel())])
        sizes = a.chunks[0]
        targets = da.concatenate([da.from_delayed(p[0], (n, k), dtype=np.float64)
                                  for p, n in zip(parts, sizes)]).reshape(-1)
        noise = [[da.from_delayed(dask.delayed(_block_diag, pure=True)(p[1]), (n * k, n * k),
                                  dtype=np.float64) if i == j
                  else da.zeros((n * k, m * k), chunks=(n * k, m * k))
                  for j, m in enumerate(sizes)]
                 for i, (p, n) in enumerate(zip(parts, sizes))]
        gram = _kernel_matrix(model, a, None, c) / self.delta + da.block(noise)
        # dask's blocked Cholesky takes equal square tiles: G is padded to a multiple of the
        # tile with an identity block, `[[G, 0], [0, I]] = [[L, 0], [0, I]] [[L, 0], [0, I]]ᵀ`,
        # and the targets with zeros, which leaves every solve and log-determinant unchanged.
        nk, tile = gram.shape[0], c * k
        self.pad_ = pad = -nk % tile
        if pad:
            gram = da.block([[gram, da.zeros((nk, pad))], [da.zeros((pad, nk)), da.eye(pad)]])
            targets_p = da.concatenate([targets, da.zeros(pad)])
        else:
            targets_p = targets
        gram = gram.rechunk(tile)
        chol = da.linalg.cholesky(gram, lower=True)
        z = da.linalg.solve_triangular(chol, targets_p.rechunk(tile), lower=True)
        chol, z = dask.persist(chol, z)
        alpha = da.linalg.solve_triangular(chol.T, z, lower=False)
        logml = (-0.5 * (z ** 2).sum() - da.log(da.diagonal(chol)).sum()
                 - 0.5 * nk * math.log(2 * math.pi))
        self.x_, self.cholesky_, self.alpha_ = a, chol, alpha.persist()
        (self.log_marginal_likelihood_, self.pseudo_targets_) = dask.compute(
            logml, targets.reshape(-1, k))
        if not np.isfinite(self.log_marginal_likelihood_):
            raise ArithmeticError(
                "the GP Gram matrix δ⁻¹JJᵀ + Λ⁻¹ is not numerically positive definite "
                "(its Cholesky factor has NaNs); dnn2gp.GP adds jitter and warns")
        return self

    def log_marginal_likelihood(self):
        """`log p(ỹ)`, from the fit."""
        return float(self.log_marginal_likelihood_)

    def predict(self, x):
        """The predictive of f at X*: `(mean, var)`, each a dask array of M × K."""
        import dask.array as da

        model, k = self.model, self.model.n_outputs
        xs = _rows(x, self.chunks, "X*")
        ks = _kernel_matrix(model, xs, self.x_, self.chunks) / self.delta
        if self.pad_:
            ks = da.concatenate([ks, da.zeros((ks.shape[0], self.pad_))], axis=1)
        ks = ks.rechunk((ks.chunks[0], self.cholesky_.chunks[0]))
        mean = (ks @ self.alpha_).reshape(-1, k)
        v = da.linalg.solve_triangular(self.cholesky_, ks.T, lower=True)
        kss = xs.map_blocks(
            lambda b: np.diagonal(_dnn2gp.ntk(model, np.ascontiguousarray(b), trace_axes=(),
                                              diagonal_axes=(0,)), axis1=1, axis2=2),
            drop_axis=list(range(2, xs.ndim)) if xs.ndim > 2 else None,
            chunks=(xs.chunks[0], (k,)), dtype=np.float64)
        var = kss / self.delta - (v ** 2).sum(axis=0).reshape(-1, k)
        return mean, var
