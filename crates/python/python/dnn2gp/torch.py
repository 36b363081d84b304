"""laplace-torch's API over dnn2gp's exact core: a laplace-torch script runs with one import
changed, ``from laplace import Laplace`` to ``from dnn2gp.torch import Laplace``::

    from dnn2gp.torch import Laplace
    la = Laplace(model, "classification")        # an nn.Module; last-layer KFAC by default
    la.fit(train_loader)                         # any iterable of (X, y) batches, streamed
    la.optimize_prior_precision(method="marglik")
    probs = la(x_test, link_approx="probit")     # a torch tensor on x_test's device

The module comes in through ``dnn2gp.Model.from_torch`` (ONNX export in eval mode), its outputs
checked against torch's on the first batch. As laplace-torch, the module's dtype sets the
forward passes' (a float64 module's in float64, any other's in float32: outputs, last-layer
features, the ``nn`` predictive's draws); Jacobians, curvature and the posterior are float64.
Results come back as tensors of the module's dtype on the input's device.
``marglik_training`` is laplace-torch's ``laplace.marglik_training`` with the hyperparameters
set at the evidence's maximum exactly at each step. Imports torch; the rest of dnn2gp does not.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping
from copy import deepcopy

import numpy as np
import torch

from ._dnn2gp import Laplace as _Laplace
from ._dnn2gp import Model

__all__ = ["Laplace", "marglik_training"]

_STRUCTURES = ("full", "diag", "kron", "lowrank")


def _seed(generator):
    """A seed for dnn2gp's draws from torch's random state (a `generator`, or the global one),
    so that ``torch.manual_seed`` makes them repeatable as it does laplace-torch's."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def _batches(data, y=None):
    """(X, y) batches of a loader (any iterable of pairs), or of one (X, y)."""
    if y is not None:
        return [(data, y)]
    if isinstance(data, (torch.Tensor, np.ndarray)):
        raise TypeError("fit: give a DataLoader (any iterable of (X, y) batches) or fit(X, y)")
    return data


def _pair(batch):
    if isinstance(batch, Mapping):
        raise TypeError("dnn2gp.torch takes (X, y) batches of tensors; dict batches (Hugging "
                        "Face inputs) are not supported")
    x, y = batch
    return x, y


class Laplace:
    """laplace-torch 0.3's ``Laplace(model, likelihood, subset_of_weights, hessian_structure,
    …)`` on dnn2gp: the Laplace-GGN posterior ``N(θ*, (H/(σ²T) + P₀)⁻¹)`` of an ``nn.Module``,
    its Jacobians, curvature and posterior exact in float64; the forward passes in the module's
    dtype (a float32 module's in float32, as laplace-torch).

    ``subset_of_weights``: ``"last_layer"`` (default), ``"all"`` (parameters with
    ``requires_grad=False`` are held at their values, as laplace-torch does), ``"subnetwork"``
    (the weights at ``subnetwork_indices`` of ``parameters_to_vector(model.parameters())``;
    full or diag) or a list of parameter names; ``hessian_structure``: ``"kron"`` (default), ``"full"``, ``"diag"``,
    ``"lowrank"``. ``backend`` and its arguments are accepted and not needed (the GGN is
    computed exactly); an empirical-Fisher backend is refused, its numbers are another
    approximation.
    """

    def __init__(self, model, likelihood, subset_of_weights="last_layer",
                 hessian_structure="kron", sigma_noise=1.0, prior_precision=1.0,
                 prior_mean=0.0, temperature=1.0, enable_backprop=False,
                 dict_key_x="input_ids", dict_key_y="labels", backend=None,
                 backend_kwargs=None, asdl_fisher_kwargs=None, last_layer_name=None,
                 subnetwork_indices=None, **kwargs):
        likelihood = getattr(likelihood, "value", likelihood)
        if likelihood not in ("classification", "regression"):
            raise ValueError(f"Invalid likelihood type {likelihood} (dnn2gp.torch: "
                             "'classification' or 'regression')")
        subset = getattr(subset_of_weights, "value", subset_of_weights)
        structure = getattr(hessian_structure, "value", hessian_structure)
        if not (isinstance(subset, (list, tuple))
                or subset in ("all", "last_layer", "subnetwork")):
            raise ValueError(f"subset_of_weights='{subset}': 'all', 'last_layer', 'subnetwork' "
                             "or a list of parameter names")
        if subset == "subnetwork":
            if structure not in ("full", "diag"):
                raise ValueError("Subnetwork Laplace requires a full or diagonal Hessian "
                                 "approximation!")
            if not (isinstance(subnetwork_indices, torch.Tensor)
                    and not subnetwork_indices.is_floating_point()
                    and subnetwork_indices.ndim == 1 and subnetwork_indices.numel() > 0):
                raise ValueError("Subnetwork indices must be non-empty 1-dimensional "
                                 "torch.LongTensor.")
        elif subnetwork_indices is not None:
            raise ValueError("subnetwork_indices: given with subset_of_weights='subnetwork' "
                             "only")
        if structure not in _STRUCTURES:
            raise ValueError(f"hessian_structure='{structure}': dnn2gp.torch has "
                             f"{', '.join(_STRUCTURES)} (the function-space GP is dnn2gp.GP)")
        if sigma_noise != 1 and likelihood != "regression":
            raise ValueError("Sigma noise != 1 only available for regression.")
        if not _is_zero(prior_mean):
            raise ValueError("prior_mean: only a zero prior mean is supported (the evidence "
                             "and the MAP loss assume N(0, P₀⁻¹))")
        if enable_backprop:
            raise ValueError("enable_backprop: dnn2gp computes outside torch's autograd; its "
                             "results carry no gradient")
        if backend is not None and "EF" in getattr(backend, "__name__", ""):
            raise ValueError(f"backend={backend.__name__}: the empirical Fisher is not "
                             "supported; dnn2gp computes the exact GGN (leave backend out)")
        if kwargs:
            warnings.warn(f"dnn2gp.torch.Laplace ignores {sorted(kwargs)}", stacklevel=2)
        self.model = model
        self.likelihood = likelihood
        self.subset_of_weights = subset
        self.hessian_structure = structure
        self.last_layer_name = last_layer_name
        self.subnetwork_indices = subnetwork_indices
        self._prior = prior_precision
        self._sigma = float(_scalar(sigma_noise, "sigma_noise"))
        self._temperature = float(temperature)
        if not (math.isfinite(self._temperature) and self._temperature > 0):
            raise ValueError(f"temperature: {temperature} is not a positive number")
        self._la = None
        self._stale = False  # prior or σ set since the posterior was last refitted
        self._curvature = None
        self._arch = None  # the converted network, reused by marglik_training
        self._branches = False  # torch's tracer warned: every batch's outputs are checked
        self.n_data = 0
        self.n_outputs = 0

    # -- fitting --------------------------------------------------------------------------

    def _dtype(self):
        p = next(self.model.parameters(), None)
        return p.dtype if p is not None and p.is_floating_point() else torch.float32

    def _names(self):
        """The covered parameters' names: those with requires_grad (all of them where the
        posterior covers every weight)."""
        if isinstance(self.subset_of_weights, (list, tuple)):
            return list(self.subset_of_weights)
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def _convert(self, x):
        """dnn2gp's model of the module now: exported at the first batch (outputs checked),
        or, once exported, its current parameters in the same graph (a module with buffers,
        BatchNorm's statistics, is exported again)."""
        if self._arch is not None and not any(True for _ in self.model.buffers()):
            arch, names = self._arch
            state = dict(self.model.state_dict())
            return Model(arch, {n: state[n] for n in names}, likelihood=self.likelihood,
                         sigma_noise=self._sigma)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = Model.from_torch(self.model, x[:8], likelihood=self.likelihood,
                                     sigma_noise=self._sigma)
        for w in caught:
            self._branches = self._branches or "follows the branch" in str(w.message)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._arch = (model.arch, model.tensors)
        return model

    def _posterior(self, model):
        subset, indices = self.subset_of_weights, None
        if subset == "all" or isinstance(subset, (list, tuple)):
            names = self._names()
            if isinstance(subset, (list, tuple)) or len(names) < len(model.tensors):
                missing = [n for n in names if n not in model.tensors]
                if missing:
                    raise ValueError(f"subset_of_weights: the network has no parameter "
                                     f"{missing[0]!r}; its parameters are {model.tensors}")
                subset = names
        elif subset == "subnetwork":
            # laplace-torch's indices are into parameters_to_vector(model.parameters()).
            perm = self._order(model)
            idx = self.subnetwork_indices.detach().cpu().numpy()
            if idx.min() < 0 or idx.max() >= len(perm):
                raise ValueError(f"Subnetwork indices must lie between 0 and "
                                 f"n_params={len(perm)}.")
            indices = perm[idx]
        elif subset == "last_layer" and self.last_layer_name is not None:
            if f"{self.last_layer_name}.weight" not in model.tensors[-2:]:
                raise ValueError(f"last_layer_name='{self.last_layer_name}': the last layer "
                                 f"is {model.tensors[-2].rsplit('.', 1)[0]!r}")
        return _Laplace(model, self.likelihood, subset_of_weights=subset,
                        hessian_structure=self.hessian_structure, subnetwork_indices=indices,
                        prior_precision=_prior_value(self._prior), sigma_noise=self._sigma,
                        temperature=self._temperature,
                        dtype="float64" if self._dtype() == torch.float64 else "float32")

    def _order(self, model):
        """For each entry of torch's parameter vector, its index in dnn2gp's."""
        sizes = {n: p.numel() for n, p in self.model.named_parameters()}
        ours, at = {}, 0
        for name in model.tensors:
            ours[name] = at
            at += sizes.get(name, 0)
        try:
            return np.concatenate([ours[n] + np.arange(sizes[n]) for n, _ in
                                   self.model.named_parameters()])
        except KeyError as e:
            raise ValueError(f"subnetwork_indices: the module's parameter {e} is not among "
                             f"the network's tensors {model.tensors}") from None

    def fit(self, train_loader, y=None, override=True, progress_bar=False):
        """Fits the posterior at the module's parameters on `train_loader` (any iterable of
        (X, y) batches, a DataLoader included, streamed: batches gathered into chunks of at most
        32 MiB of inputs; low rank, whose eigenpairs need every pass, gathers them all) or on
        ``fit(X, y)``;
        tensors or arrays, float32 or float64, labels as integers or one-hot rows.
        ``override=False`` adds the data to the curvature fitted before (sequential)."""
        if isinstance(y, bool):  # laplace-torch's positional fit(loader, override)
            y, override = None, y
        self.model.eval()
        batches = _batches(train_loader, y)
        la, total, n = None, None if override else self._curvature, 0
        if override:
            self.n_data = 0
        if not override and self._la is None:
            raise ValueError("fit(override=False) adds to a fitted posterior; fit first")
        lowrank = self.hessian_structure == "lowrank"
        stack, rows = [], 0  # batches gathered into chunks of at most _CHUNK_BYTES of inputs
        for i, batch in enumerate(batches):
            x, yb = _pair(batch)
            if la is None:
                la = self._fitted() if not override else self._posterior(self._convert(x))
                self.n_outputs = la.model.n_outputs
            if self.likelihood == "regression" and yb.ndim == 1 and self.n_outputs == 1:
                yb = yb.reshape(-1, 1)
            # Outputs checked against torch's: on the first batch of each chunk after the one
            # the export checked, or on every batch where the tracer warned that the forward
            # may branch on the data.
            if self._branches or (rows == 0 and i > 0):
                self._check_outputs(la, x, i)
            x, yb = _numpy(x), _numpy(yb)
            stack.append((x, yb))
            rows += len(x)
            n += len(x)
            # Low rank: the top eigenpairs need every pass over all the data.
            if not lowrank and rows * x[0].nbytes >= _CHUNK_BYTES:
                total = _add(total, la.curvature(*_stacked(stack)))
                stack, rows = [], 0
            if progress_bar:
                print(f"\r[Computing Hessian] batch {i + 1}, {n} examples", end="",
                      file=sys.stderr)
        if progress_bar:
            print(file=sys.stderr)
        if la is None:
            raise ValueError("fit: the loader gave no batches")
        if lowrank:
            la.fit(*_stacked(stack))
        else:
            if stack:
                total = _add(total, la.curvature(*_stacked(stack)))
            la.fit_curvature(total)
        self._la, self._curvature, self._stale = la, total, False
        self.n_data += n

    def _check_outputs(self, la, x, batch):
        """The network read from the module gives the module's outputs on (up to 16 rows of)
        a batch: a forward that branches on the data was exported along one branch only."""
        x = x if self._branches else x[:16]
        with torch.no_grad():
            want = self.model(x if isinstance(x, torch.Tensor) else
                              torch.as_tensor(np.asarray(x), dtype=self._dtype()))
        want = want.detach().cpu().double().numpy().reshape(len(x), -1)
        got = la.model(_numpy(x))
        worst, top = float(np.abs(got - want).max()), float(np.abs(want).max())
        if worst > 1e-4 * (1 + top):
            raise ValueError(f"batch {batch}: the network exported from the module gives outputs "
                             f"{worst:.3g} away from the module's (largest {top:.3g}): its "
                             f"forward depends on the data (control flow such as `if x.sum() "
                             f"> 0`), and the export traced one branch; dnn2gp needs a forward "
                             f"that is the same operations for every input")

    def _fitted(self):
        """The posterior, refitted at the prior and σ set since (the evidence and its gradient
        need no refit, so setting them in a loop of evidence steps costs nothing)."""
        if self._la is None:
            raise AttributeError("Laplace not fitted. Run fit() first.")
        if self._stale:
            if self.likelihood == "regression":
                self._la.sigma_noise = self._sigma
            self._la.prior_precision = _prior_value(self._prior)
            self._stale = False
        return self._la

    def _hyper(self):
        """The prior and σ as set (σ None for classification)."""
        return (_prior_value(self._prior),
                self._sigma if self.likelihood == "regression" else None)

    # -- hyperparameters ------------------------------------------------------------------

    @property
    def prior_precision(self):
        """The prior precision: a tensor of one value, or one per parameter tensor."""
        p = self._prior
        return torch.as_tensor(np.atleast_1d(np.asarray(_prior_value(p), dtype=np.float64)),
                               dtype=self._dtype())

    @prior_precision.setter
    def prior_precision(self, value):
        value = _prior_value(value)
        if not np.all(np.isfinite(value) & (np.asarray(value) > 0)):
            raise ValueError(f"prior_precision: {value} is not positive")
        self._prior, self._stale = value, self._la is not None

    @property
    def sigma_noise(self):
        return torch.as_tensor(self._sigma, dtype=self._dtype())

    @sigma_noise.setter
    def sigma_noise(self, value):
        value = float(_scalar(value, "sigma_noise"))
        if self.likelihood != "regression" and value != 1.0:
            raise ValueError("Sigma noise != 1 only available for regression.")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"sigma_noise: {value} is not a positive number")
        self._sigma, self._stale = value, self._la is not None

    @property
    def temperature(self):
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        if self._la is not None:
            self._fitted().temperature = float(value)
        elif not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"temperature: {value} is not a positive number")
        self._temperature = float(value)

    @property
    def prior_mean(self):
        return torch.zeros((), dtype=self._dtype())

    def optimize_prior_precision(self, pred_type="glm", method="marglik", n_steps=100, lr=1e-1,
                                 init_prior_prec=1.0, prior_structure="scalar", val_loader=None,
                                 loss=None, log_prior_prec_min=-4, log_prior_prec_max=4,
                                 grid_size=100, link_approx="probit", n_samples=100,
                                 verbose=False, progress_bar=False, log_prior_prec_base=10.0):
        """The prior precision by ``method="marglik"``: at the evidence's maximum, found
        exactly (one δ, or one per parameter tensor with ``prior_structure="layerwise"``;
        ``n_steps``, ``lr`` and ``init_prior_prec`` are not needed); or by
        ``method="gridsearch"``: the value of a log grid with the least ``loss`` on
        ``val_loader`` (by default the mean NLL of the predictive for classification, the
        mean squared error of its mean for regression)."""
        pred_type = getattr(pred_type, "value", pred_type)
        method = getattr(method, "value", method)
        prior_structure = getattr(prior_structure, "value", prior_structure)
        la = self._fitted()
        if pred_type not in ("glm", "nn"):
            raise ValueError("Only glm and nn supported as prediction types.")
        if method == "marglik":
            if val_loader is not None:
                warnings.warn("`val_loader` will be ignored when `method` == 'marglik'. Do "
                              "you mean to set `method = 'gridsearch'`?", stacklevel=2)
            if isinstance(init_prior_prec, torch.Tensor) and init_prior_prec.numel() > 1:
                prior_structure = "layerwise"
            la.optimize_prior_precision(method="marglik", prior_structure=prior_structure)
            self._prior = la.prior_precision
        elif method == "gridsearch":
            if val_loader is None:
                raise ValueError("gridsearch requires a validation set DataLoader")
            grid = log_prior_prec_base ** np.linspace(log_prior_prec_min, log_prior_prec_max,
                                                      grid_size)
            # A last-layer GLM predictive: the validation set's features once, for every value.
            if self.subset_of_weights == "last_layer" and pred_type == "glm":
                val_loader = [(_Features(la.features(x)), y) for x, y in map(_pair, val_loader)]
            scores = []
            for i, prior in enumerate(grid):
                self.prior_precision = float(prior)
                scores.append(self._validate(val_loader, loss, pred_type, link_approx,
                                             n_samples))
                if progress_bar:
                    print(f"\r[Grid search | prior_prec: {prior:.3e}, loss: {scores[-1]:.3f}] "
                          f"{i + 1}/{grid_size}", end="", file=sys.stderr)
            if progress_bar:
                print(file=sys.stderr)
            best = int(np.argmin(scores))
            if best in (0, grid_size - 1):
                warnings.warn(f"gridsearch: the least loss is at the grid's edge (prior "
                              f"precision {grid[best]:.3g}); widen log_prior_prec_min/max",
                              RuntimeWarning, stacklevel=2)
            self.prior_precision = float(grid[best])
        else:
            raise ValueError("For now only marglik and gridsearch is implemented.")
        if verbose:
            print(f"Optimized prior precision is {self.prior_precision}.")

    def _validate(self, val_loader, loss, pred_type, link_approx, n_samples):
        """laplace-torch's `validate`: the loss of the predictive over the loader (a metric
        with update/compute, reset first; or a callable on the concatenated outputs)."""
        metric = loss is not None and hasattr(loss, "update") and hasattr(loss, "compute")
        if metric and hasattr(loss, "reset"):
            loss.reset()
        outs, targets, total, count = [], [], 0.0, 0
        for batch in val_loader:
            x, y = _pair(batch)
            if isinstance(x, _Features):
                out = self._fitted().predictive_at_features(x.phi, link_approx=link_approx,
                                                            n_samples=n_samples,
                                                            seed=_seed(None))
                out = tuple(map(self._tensor, out)) if isinstance(out, tuple) else self._tensor(out)
            else:
                out = self(x, pred_type=pred_type, link_approx=link_approx, n_samples=n_samples)
            y = torch.as_tensor(y)
            if metric:
                try:
                    loss.update(*out, y) if isinstance(out, tuple) else loss.update(out, y)
                except TypeError:
                    loss.update(out[0], y)
            elif loss is not None:
                outs.append(out)
                targets.append(y)
            elif self.likelihood == "classification":
                total += float(-torch.log(out.double()[torch.arange(len(y)), y.long()]).sum())
                count += len(y)
            else:
                f = out[0].double()
                total += float(((f - y.double().reshape(f.shape)) ** 2).sum())
                count += f.numel()
        if metric:
            return float(loss.compute().sum())
        if loss is not None:
            if isinstance(outs[0], tuple):
                return float(loss(torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs]),
                                  torch.cat(targets)))
            return float(loss(torch.cat(outs), torch.cat(targets)))
        return total / count

    # -- the posterior --------------------------------------------------------------------

    def _tensor(self, a, like=None):
        device = like.device if isinstance(like, torch.Tensor) else torch.device("cpu")
        return torch.as_tensor(np.asarray(a), dtype=self._dtype(), device=device)

    @property
    def backend(self):
        """What laplace-torch's scripts call on its backend: ``backend.jacobians(x)``."""
        return _Backend(self)

    @property
    def loss(self):
        """laplace-torch's training loss at θ*: the summed cross-entropy (classification)
        or half the summed squared error (regression), untempered."""
        ll, t = float(self._fitted().log_likelihood), self._temperature
        if self.likelihood == "classification":
            return self._tensor(-ll * t)
        s2 = self._sigma ** 2
        c = self.n_data * self.n_outputs * math.log(self._sigma * math.sqrt(2 * math.pi))
        return self._tensor(-(ll + c) * s2 * t)

    @property
    def H(self):
        """laplace-torch's ``H``: the GGN without the factor 1/(σ²T) (full: P × P; diag: P
        values); KFAC holds it factored."""
        la = self._fitted()
        if la.hessian_structure not in ("full", "diag"):
            raise AttributeError(f"H: a {la.hessian_structure} posterior holds H factored; "
                                 "posterior_covariance and posterior_variance are there")
        prec = np.asarray(la.posterior_precision)
        d = self.prior_precision_diag.double().numpy()
        h = prec - (np.diag(d) if prec.ndim == 2 else d)
        return self._tensor(h * self._sigma ** 2 * self._temperature)

    @property
    def prior_precision_diag(self):
        """The prior precision per covered weight."""
        la = self._fitted()
        p = np.atleast_1d(np.asarray(_prior_value(self._prior), dtype=np.float64))
        sizes = _tensor_sizes(self, la)
        return self._tensor(np.repeat(p, sizes) if p.size > 1 else np.full(sum(sizes), p[0]))

    @property
    def n_params(self):
        """The covered weights' count (a subnetwork's: all the module's, as laplace-torch)."""
        if self.subset_of_weights == "subnetwork":
            return sum(p.numel() for p in self.model.parameters())
        return self._fitted().n_params

    @property
    def n_layers(self):
        return len(self._fitted().prior_tensors)

    @property
    def mean(self):
        if self.subset_of_weights == "subnetwork":
            return self._tensor(torch.nn.utils.parameters_to_vector(self.model.parameters())
                                .detach().cpu().double().numpy())
        return self._tensor(self._fitted().mean)

    @property
    def posterior_precision(self):
        return self._tensor(self._fitted().posterior_precision)

    @property
    def posterior_covariance(self):
        return self._tensor(self._fitted().posterior_covariance)

    @property
    def posterior_variance(self):
        return self._tensor(self._fitted().posterior_variance)

    @property
    def log_det_ratio(self):
        return self._tensor(self._fitted().log_det_ratio)

    @property
    def scatter(self):
        return self._tensor(self._fitted().scatter)

    @property
    def log_likelihood(self):
        return self._tensor(self._fitted().log_likelihood)

    def log_marginal_likelihood(self, prior_precision=None, sigma_noise=None):
        """The Laplace evidence ``log_likelihood − ½(log_det_ratio + scatter)``; as in
        laplace-torch, a `prior_precision` or `sigma_noise` given is set first, and the result
        is differentiable in them (tensors with ``requires_grad``): the exact gradient,
        ``∂/∂ log δ_g = ½(P_g − δ_g‖θ_g‖² − δ_g tr_g Σ)`` and
        ``∂/∂ log σ = SSE/(σ²T) − NK + P − tr(Σ P₀)``."""
        if self._la is None:
            raise AttributeError("Laplace not fitted. Run fit() first.")
        if prior_precision is not None:
            self.prior_precision = prior_precision
        if sigma_noise is not None:
            if self.likelihood != "regression":
                raise ValueError("Can only change sigma_noise for regression.")
            self.sigma_noise = sigma_noise
        value = self._la.log_marginal_likelihood(*self._hyper())
        wanted = [t for t in (prior_precision, sigma_noise)
                  if isinstance(t, torch.Tensor) and t.requires_grad]
        if not wanted:
            return self._tensor(value)
        d_prior, d_sigma = self._la.log_marginal_likelihood_gradient(*self._hyper())
        prior = prior_precision if isinstance(prior_precision, torch.Tensor) else None
        sigma = sigma_noise if isinstance(sigma_noise, torch.Tensor) else None
        return _Evidence.apply(self._tensor(value), np.asarray(d_prior), d_sigma, prior, sigma)

    def __call__(self, x, pred_type="glm", joint=False, link_approx="probit", n_samples=100,
                 diagonal_output=False, generator=None, fitting=False, **model_kwargs):
        """The predictive at `x`: for classification the class probabilities (``"glm"``: by
        `link_approx`, ``"nn"``: the mean softmax of the network at `n_samples` weight draws);
        for regression the mean and variance, ``(N, K)`` and ``(N, K, K)`` (``joint=True``:
        ``(NK,)`` and ``(NK, NK)``; ``diagonal_output=True``: ``(N, K)``). Tensors of the
        module's dtype on `x`'s device."""
        pred_type = getattr(pred_type, "value", pred_type)
        link_approx = getattr(link_approx, "value", link_approx)
        if pred_type not in ("glm", "nn"):
            raise ValueError("Only glm and nn supported as prediction types.")
        if link_approx not in ("probit", "mc", "bridge", "bridge_norm"):
            raise ValueError(f"Unsupported link approximation {link_approx}.")
        if pred_type == "nn" and link_approx != "mc":
            raise ValueError("Only mc link approximation is supported for nn prediction type.")
        if model_kwargs:
            raise TypeError(f"dnn2gp.torch takes the module's input alone, not "
                            f"{sorted(model_kwargs)}")
        if diagonal_output and self.likelihood == "classification" and link_approx == "mc":
            raise ValueError("diagonal_output with link_approx='mc' is not supported: the "
                             "draws use the full K × K covariance")
        out = self._fitted().predictive(x, pred_type=pred_type, link_approx=link_approx,
                                        n_samples=n_samples, joint=joint,
                                        seed=_seed(generator))
        if isinstance(out, tuple):
            mean, var = out
            if diagonal_output and not joint and var.ndim == 3:
                var = np.diagonal(var, axis1=1, axis2=2)
            return self._tensor(mean, x), self._tensor(var, x)
        return self._tensor(out, x)

    def predictive(self, x, pred_type="glm", link_approx="probit", n_samples=100):
        return self(x, pred_type=pred_type, link_approx=link_approx, n_samples=n_samples)

    def functional_samples(self, x, pred_type="glm", n_samples=100, diagonal_output=False,
                           generator=None):
        """`n_samples` draws of the outputs at `x`, ``(n_samples, N, K)``."""
        pred_type = getattr(pred_type, "value", pred_type)
        if diagonal_output:
            raise ValueError("diagonal_output: the draws use the full K × K covariance")
        f = self._fitted().functional_samples(x, pred_type=pred_type, n_samples=n_samples,
                                              seed=_seed(generator))
        return self._tensor(f, x)

    def predictive_samples(self, x, pred_type="glm", n_samples=100, diagonal_output=False,
                           generator=None):
        """`functional_samples` through the link: softmax for classification."""
        f = self.functional_samples(x, pred_type, n_samples, diagonal_output, generator)
        return torch.softmax(f, dim=-1) if self.likelihood == "classification" else f

    def sample(self, n_samples=100, generator=None):
        """`n_samples` draws of the covered weights, ``(n_samples, n_params)``."""
        la = self._fitted()
        w = la.sample(n_samples, seed=_seed(generator))
        if self.subset_of_weights == "subnetwork":  # every weight, in torch's order
            return self._tensor(w[:, self._order(la.model)])
        return self._tensor(w[:, w.shape[1] - la.n_params:])

    def functional_variance(self, Js):
        """``Js Σ Jsᵀ`` per input for Jacobians ``Js`` ``(N, K, n_params)``: ``(N, K, K)``."""
        return self._tensor(self._fitted().functional_variance(jacobians=Js), Js)

    def functional_covariance(self, Js):
        """``Js Σ Jsᵀ`` across inputs for Jacobians ``(N, K, n_params)``: ``(NK, NK)``."""
        return self._tensor(self._fitted().functional_covariance(jacobians=Js), Js)

    def jacobians(self, x):
        """The Jacobians of the outputs at `x` with respect to the covered weights and the
        outputs, ``((N, K, n_params), (N, K))``: laplace-torch's ``backend.jacobians``."""
        la = self._fitted()
        with torch.no_grad():
            f = self.model(x)
        return self._tensor(la.jacobians(x), x), f

    def __repr__(self):
        return (f"dnn2gp.torch.Laplace(likelihood='{self.likelihood}', subset_of_weights="
                f"{self.subset_of_weights!r}, hessian_structure='{self.hessian_structure}', "
                f"fitted={self._la is not None})")


class _Features:
    """A validation batch's last-layer features, computed once for a grid search."""

    def __init__(self, phi):
        self.phi = phi


class _Backend:
    """laplace-torch's ``la.backend``, as far as its users' scripts call it."""

    def __init__(self, la):
        self._la = la

    def jacobians(self, x, enable_backprop=False):
        """``(Js, f)``: the Jacobians ``(N, K, n_params)`` and the outputs ``(N, K)``."""
        return self._la.jacobians(x)


def _tensor_sizes(la, core):
    """The covered parameter tensors' sizes, in the prior's order."""
    if la.subset_of_weights == "subnetwork":
        return [core.n_params]
    sizes = {n: p.numel() for n, p in la.model.named_parameters()}
    return [sizes[n] for n in core.prior_tensors]


class _Evidence(torch.autograd.Function):
    """The evidence as a function of the prior precision and σ tensors, its gradient the
    exact one dnn2gp computes (given in log space, brought to δ and σ here)."""

    @staticmethod
    def forward(ctx, value, d_prior, d_sigma, prior, sigma):
        ctx.d_prior, ctx.d_sigma = d_prior, d_sigma
        ctx.save_for_backward(prior, sigma)
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        prior, sigma = ctx.saved_tensors
        g_prior = g_sigma = None
        if prior is not None and ctx.needs_input_grad[3]:
            d = torch.as_tensor(ctx.d_prior, dtype=prior.dtype, device=prior.device)
            g_prior = (grad * d.reshape(prior.shape) / prior.detach()).to(prior.dtype)
        if sigma is not None and ctx.needs_input_grad[4]:
            g_sigma = (grad * ctx.d_sigma / sigma.detach()).to(sigma.dtype)
        return None, None, None, g_prior, g_sigma


_CHUNK_BYTES = 32 << 20


def _stacked(batches):
    """(X, y) of gathered batches, one array each."""
    return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))


def _add(total, c):
    return c if total is None else total + c


def _numpy(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _scalar(value, name):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: one value (homoscedastic noise), got shape "
                             f"{tuple(value.shape)}")
        return value.item()
    return value


def _is_zero(value):
    return bool(np.all(_numpy(value) == 0))


def _prior_value(value):
    """A prior precision as dnn2gp takes it: a float, or an array of one δ per tensor."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    a = np.asarray(value, dtype=np.float64)
    return float(a.reshape(-1)[0]) if a.size == 1 else a.reshape(-1)


def marglik_training(model, train_loader, likelihood="classification",
                     hessian_structure="kron", backend=None, optimizer_cls=torch.optim.Adam,
                     optimizer_kwargs=None, scheduler_cls=None, scheduler_kwargs=None,
                     n_epochs=300, lr_hyp=1e-1, prior_structure="layerwise", n_epochs_burnin=0,
                     n_hypersteps=10, marglik_frequency=1, prior_prec_init=1.0,
                     sigma_noise_init=1.0, temperature=1.0, fix_sigma_noise=False,
                     progress_bar=False, enable_backprop=False, dict_key_x="input_ids",
                     dict_key_y="labels"):
    """laplace-torch's ``marglik_training`` (Immer et al. 2021, Algorithm 1): the network
    trained on the negative log joint while the prior precision (and, for regression, the
    noise σ) follow the Laplace evidence over all weights. Where laplace-torch takes
    `n_hypersteps` Adam steps of rate `lr_hyp` on the evidence, the hyperparameters here are
    set at its maximum exactly at each estimate (both arguments accepted, not needed).
    Returns ``(la, model, margliks, losses)``: the Laplace posterior at the best evidence
    seen, the module with those weights, the negative log evidence at each estimate and the
    mean training loss of each epoch."""
    prior_structure = getattr(prior_structure, "value", prior_structure)
    if prior_structure not in ("scalar", "layerwise"):
        raise ValueError(f"prior_structure='{prior_structure}': 'scalar' or 'layerwise'")
    if optimizer_kwargs is not None and "weight_decay" in optimizer_kwargs:
        warnings.warn("Weight decay is handled and optimized. Will be set to 0.", stacklevel=2)
        optimizer_kwargs["weight_decay"] = 0.0
    n = len(train_loader.dataset)
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    sizes = torch.tensor([p.numel() for _, p in params])
    prior = np.full(len(params) if prior_structure == "layerwise" else 1,
                    temperature * prior_prec_init)
    sigma = float(sigma_noise_init)
    criterion = (torch.nn.CrossEntropyLoss() if likelihood == "classification"
                 else torch.nn.MSELoss())
    optimizer = optimizer_cls(model.parameters(), **(optimizer_kwargs or {}))
    scheduler = scheduler_cls(optimizer, **(scheduler_kwargs or {})) if scheduler_cls else None
    best, best_state, margliks, losses, arch = np.inf, None, [], [], None

    def laplace():
        la = Laplace(model, likelihood, subset_of_weights="all",
                     hessian_structure=hessian_structure,
                     sigma_noise=sigma if likelihood == "regression" else 1.0,
                     prior_precision=prior if prior.size > 1 else float(prior[0]),
                     temperature=temperature, backend=backend)
        la._arch = arch
        la.fit(train_loader)
        return la

    for epoch in range(1, n_epochs + 1):
        epoch_loss = 0.0
        delta = torch.repeat_interleave(torch.as_tensor(prior), sizes if prior.size > 1
                                        else sizes.sum().reshape(1))
        for x, y in train_loader:
            optimizer.zero_grad()
            factor = (temperature / (2 * sigma**2) if likelihood == "regression"
                      else temperature)
            theta = torch.cat([p.reshape(-1) for _, p in params])
            f = model(x)
            loss = (criterion(f, y) + 0.5 * (delta.to(theta) * theta) @ theta / n / factor)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(y)
            if scheduler is not None:
                scheduler.step()
        losses.append(epoch_loss / n)
        if progress_bar:
            print(f"\r[Training] epoch {epoch}/{n_epochs}, loss {losses[-1]:.4f}", end="",
                  file=sys.stderr)
        if epoch % marglik_frequency != 0 or epoch < n_epochs_burnin:
            continue
        la = laplace()
        arch = la._arch
        _maximise_evidence(la, prior_structure,
                           noise=likelihood == "regression" and not fix_sigma_noise)
        prior = np.atleast_1d(np.asarray(la._la.prior_precision, dtype=np.float64))
        sigma = float(la._la.sigma_noise) if likelihood == "regression" else 1.0
        margliks.append(-float(la._la.log_marginal_likelihood()))
        if margliks[-1] < best:
            best, best_state = margliks[-1], (deepcopy(model.state_dict()), prior, sigma)
    if progress_bar:
        print(file=sys.stderr)
    if best_state is not None:
        model.load_state_dict(best_state[0])
        prior, sigma = best_state[1], best_state[2]
    return laplace(), model, margliks, losses


def _maximise_evidence(la, prior_structure, noise):
    """The prior (and with `noise` the Gaussian σ) at the evidence's maximum: exactly for one
    δ with σ; for δ per tensor with σ, alternately the exact δ_g at σ and σ at the δ_g (the
    root of the evidence's falling gradient in log σ) until the evidence rises by less than
    1e-12 of itself."""
    core = la._fitted()
    if not noise:
        core.optimize_prior_precision(method="marglik", prior_structure=prior_structure)
    elif prior_structure == "scalar":
        core.optimize_noise_and_prior()
    else:
        last = -np.inf
        for _ in range(200):
            core.optimize_prior_precision(method="marglik", prior_structure="layerwise")
            prior = core.prior_precision
            s = _root(lambda t: core.log_marginal_likelihood_gradient(prior, math.exp(t))[1],
                      math.log(core.sigma_noise))
            core.sigma_noise = math.exp(s)
            core.prior_precision = prior
            now = core.log_marginal_likelihood()
            if now - last <= 1e-12 * abs(now):
                break
            last = now
    la._prior, la._sigma = core.prior_precision, core.sigma_noise


def _root(g, t0):
    """The root of a falling g near t0: bracketed by steps doubling from 0.5 (to e^±20), then
    bisected to 1e-13."""
    lo, hi, step = t0, t0, 0.5
    while g(lo) <= 0 and step < 40:
        lo, step = lo - step, step * 2
    step = 0.5
    while g(hi) >= 0 and step < 40:
        hi, step = hi + step, step * 2
    if not (g(lo) > 0 > g(hi)):
        raise ArithmeticError("the evidence has no maximum in σ within e^±20 of its value")
    while hi - lo > 1e-13 * max(1.0, abs(hi)):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
    return (lo + hi) / 2
