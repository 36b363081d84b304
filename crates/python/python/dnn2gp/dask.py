"""Kernels and GGNs past one machine, on Dask.

`ntk` returns a `dask.array` whose blocks are kernel tiles `J(X1_i) J(X2_j)ᵀ`, each computed by
the Rust core in one task from per-layer factors; `ggn_diagonal` is a tree reduction of
per-chunk partial sums `Σ_{i∈chunk} diag(J_iᵀ Λ_i J_i)`. Both run on whatever scheduler is
active: threads, a `distributed.LocalCluster`, or a Slurm cluster through dask-jobqueue.
A task holds its inputs and one tile (`chunks² · K²` values traced out, times 8 bytes) besides
the factors of its two row blocks.
"""

import numpy as np

from . import _dnn2gp

_FEATURES = "klmnopq"


def _rows(x, chunks, name):
    import dask.array as da

    if isinstance(x, da.Array):
        return x.rechunk({a: -1 for a in range(1, x.ndim)})
    x = np.asarray(x)
    if x.dtype != np.float64:
        raise TypeError(f"{name}: expected float64 values, got dtype {x.dtype}")
    return da.from_array(x, chunks=(chunks,) + x.shape[1:])


def _ntk_tile(x1, x2, model, trace_axes):
    # A diagonal tile is a Gram matrix: its factors once, its lower half mirrored.
    same = x1.shape == x2.shape and np.array_equal(x1, x2)
    x2 = None if same else np.ascontiguousarray(x2)
    return _dnn2gp.ntk(model, np.ascontiguousarray(x1), x2, trace_axes=trace_axes)


def ntk(model, x1, x2=None, chunks=256, trace_axes=(-1,)):
    """The empirical NTK `J(X1) J(X2)ᵀ` as a dask array of tiles of `chunks` rows a side, in
    neural-tangents' layouts: `(N1, N2)` traced over the outputs (`trace_axes=(-1,)`), or
    `(N1, N2, K, K)` (`trace_axes=()`)."""
    import dask.array as da

    trace_axes = tuple(trace_axes)
    if trace_axes not in {(), (-1,), (1,)}:
        raise ValueError(f"trace_axes: {trace_axes} (expected () or (-1,), the output axis)")
    a = _rows(x1, chunks, "X1")
    b = a if x2 is None else _rows(x2, chunks, "X2")
    feat = _FEATURES[: a.ndim - 1]
    k = model.n_outputs
    if trace_axes:
        return da.blockwise(_ntk_tile, "ij", a, "i" + feat, b, "j" + feat, dtype=np.float64,
                            concatenate=True, model=model, trace_axes=trace_axes)
    return da.blockwise(_ntk_tile, "ijab", a, "i" + feat, b, "j" + feat, dtype=np.float64,
                        concatenate=True, new_axes={"a": k, "b": k}, model=model, trace_axes=())


def _ggn_part(x, y, model):
    return _dnn2gp.ggn_diagonal(model, np.ascontiguousarray(x), np.ascontiguousarray(y))[None, :]


def ggn_diagonal(model, x, y, chunks=1024, split_every=2):
    """The GGN's diagonal `Σ_i diag(J_iᵀ Λ_i J_i)` (P) over the rows of (X, y), as a tree
    reduction (`split_every` partial sums per node) of one partial sum per chunk of rows."""
    import dask.array as da

    a = _rows(x, chunks, "X")
    y = np.asarray(y) if not isinstance(y, da.Array) else y
    yb = da.from_array(y, chunks=(a.chunks[0],) + y.shape[1:]) if isinstance(y, np.ndarray) else y
    feat = _FEATURES[: a.ndim - 1]
    yfeat = "z"[: yb.ndim - 1]
    parts = da.blockwise(_ggn_part, "ip", a, "i" + feat, yb, "i" + yfeat, dtype=np.float64,
                         concatenate=True, new_axes={"p": model.n_params},
                         adjust_chunks={"i": 1}, model=model)
    return parts.sum(axis=0, split_every=split_every)
