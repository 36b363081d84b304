from os import PathLike
from typing import Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

Array = npt.NDArray[np.float64]
StateDict = Union[Mapping[str, npt.NDArray[np.floating]], str, PathLike]

class Model:
    """A trained network with its likelihood, σ and δ, from a state_dict and an architecture."""

    def __init__(
        self,
        arch: str,
        state_dict: StateDict,
        likelihood: Literal["classification", "regression"] = "classification",
        sigma_noise: float = 1.0,
        prior_precision: float = 1.0,
    ) -> None: ...
    @staticmethod
    def load(path: Union[str, PathLike]) -> "Model": ...
    def save(self, path: Union[str, PathLike]) -> None: ...
    @property
    def arch(self) -> str: ...
    @property
    def n_params(self) -> int: ...
    @property
    def n_outputs(self) -> int: ...
    @property
    def weights(self) -> Array: ...
    def __call__(self, x: Array) -> Array: ...

class Laplace:
    """The Laplace-GGN posterior N(θ*, (Σ J_iᵀ Λ_i J_i + δI)⁻¹) in laplace-torch's shape."""

    def __init__(
        self,
        model: Model,
        likelihood: Literal["classification", "regression"],
        subset_of_weights: Literal["all", "last_layer"] = "last_layer",
        hessian_structure: Literal["full", "diag", "kron", "lowrank"] = "kron",
        prior_precision: Optional[float] = None,
        sigma_noise: Optional[float] = None,
        rank: int = 100,
        seed: int = 0,
        max_memory_gib: Optional[float] = None,
    ) -> None: ...
    def fit(self, x: Array, y: npt.NDArray[np.generic]) -> None: ...
    def optimize_prior_precision(
        self,
        method: Literal["marglik"] = "marglik",
        prior_structure: Literal["scalar", "layerwise"] = "scalar",
    ) -> None: ...
    def optimize_noise_and_prior(self) -> None: ...
    def log_marginal_likelihood(
        self,
        prior_precision: Union[None, float, Array] = None,
        sigma_noise: Optional[float] = None,
    ) -> float: ...
    @property
    def prior_precision(self) -> Union[float, Array]: ...
    @property
    def prior_tensors(self) -> list[str]: ...
    @property
    def sigma_noise(self) -> float: ...
    @property
    def n_params(self) -> int: ...
    def __call__(
        self,
        x: Array,
        pred_type: Literal["glm"] = "glm",
        link_approx: Literal["probit", "mc", "bridge"] = "probit",
        n_samples: int = 100,
    ) -> Union[Array, Tuple[Array, Array]]: ...
    def functional_variance(self, x: Array) -> Array: ...
    def kernel(self, x1: Array, x2: Optional[Array] = None) -> Array: ...
    def sample(self, n_samples: int = 100, seed: int = 0) -> Array: ...
    def save(self, path: Union[str, PathLike]) -> None: ...
    @staticmethod
    def load(path: Union[str, PathLike]) -> "Laplace": ...

def ntk(
    model: Model,
    x1: Array,
    x2: Optional[Array] = None,
    trace_axes: Sequence[int] = (-1,),
) -> Array: ...

def ggn_diagonal(model: Model, x: Array, y: npt.NDArray[np.generic]) -> Array: ...
