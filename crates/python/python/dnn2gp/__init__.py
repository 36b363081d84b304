"""dnn2gp: turn a trained deep network into a Gaussian process.

laplace-torch's words over a Rust core::

    import numpy as np, dnn2gp
    model = dnn2gp.Model("1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,flatten,"
                         "dense120,relu,dense84,relu,dense10",
                         {k: v.numpy() for k, v in torch_model.state_dict().items()})
    la = dnn2gp.Laplace(model, "classification",
                        subset_of_weights="last_layer", hessian_structure="kron")
    la.fit(X, y)                                  # X: float64 (N, 1, 28, 28), y: labels
    la.optimize_prior_precision(method="marglik") # exact, no learning rate
    probs = la(X_test, link_approx="probit")
    la.log_marginal_likelihood()

The posterior is `N(θ*, Σ)`, `Σ⁻¹ = Σ_i J_iᵀ Λ_i J_i + δI` (full, diag, kron or lowrank; all
weights or the last layer), and its GP view the kernel `J(x) Σ J(x')ᵀ` (`Laplace.kernel`);
`ntk` is the empirical NTK `J(x) J(x')ᵀ` in neural-tangents' layouts.
"""

from ._dnn2gp import (
    GP,
    Curvature,
    Laplace,
    Model,
    __version__,
    ggn_diagonal,
    ntk,
    pseudo_targets,
    sweep,
    vogn,
)

__all__ = ["GP", "Curvature", "Laplace", "Model", "ggn_diagonal", "ntk", "pseudo_targets",
           "sweep", "vogn", "__version__"]
