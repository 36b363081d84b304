from os import PathLike
from typing import Any, List, Dict, Literal, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class SupportsArray(Protocol):
    """Anything numpy reads as an array: a torch tensor (detached and brought to the CPU), …"""

    def __array__(self) -> npt.NDArray[Any]: ...

Array = npt.NDArray[np.float64]
"""What comes out: float64 numpy arrays."""
ArrayIn = Union[npt.NDArray[np.floating], SupportsArray]
"""What goes in: floating-point arrays of any width, or tensors."""
Labels = Union[npt.NDArray[np.generic], SupportsArray]
"""Targets: class labels (integers, or floats that are integers) or one-hot rows; values."""
StateDict = Union[Mapping[str, ArrayIn], str, PathLike]

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
    def from_onnx(
        path: Union[str, PathLike, bytes],
        likelihood: Literal["classification", "regression"] = "classification",
        sigma_noise: float = 1.0,
        prior_precision: float = 1.0,
    ) -> "Model": ...
    @staticmethod
    def from_torch(
        module: Any,
        example_input: Any,
        likelihood: Literal["classification", "regression"] = "classification",
        sigma_noise: float = 1.0,
        prior_precision: float = 1.0,
    ) -> "Model": ...
    @staticmethod
    def load(path: Union[str, PathLike]) -> "Model": ...
    def save(self, path: Union[str, PathLike]) -> None: ...
    @property
    def arch(self) -> str: ...
    @property
    def tensors(self) -> List[str]: ...
    @property
    def n_params(self) -> int: ...
    @property
    def n_outputs(self) -> int: ...
    @property
    def likelihood(self) -> Literal["classification", "regression"]: ...
    @property
    def prior_precision(self) -> float: ...
    @property
    def sigma_noise(self) -> float: ...
    @property
    def weights(self) -> Array: ...
    def __call__(
        self, x: ArrayIn, dtype: Union[None, Literal["float64", "float32", "f64", "f32"], Any] = None
    ) -> Array: ...

class Laplace:
    """The Laplace-GGN posterior N(θ*, (Σ J_iᵀ Λ_i J_i / T + P₀)⁻¹) in laplace-torch's shape."""

    def __init__(
        self,
        model: Model,
        likelihood: Literal["classification", "regression"],
        subset_of_weights: Union[Literal["all", "last_layer", "subnetwork"], Sequence[str]] = "last_layer",
        hessian_structure: Literal["full", "diag", "kron", "lowrank"] = "kron",
        prior_precision: Union[None, float, ArrayIn] = None,
        sigma_noise: Optional[float] = None,
        temperature: float = 1.0,
        subnetwork_indices: Optional[ArrayIn] = None,
        rank: int = 100,
        seed: int = 0,
        max_memory_gib: Optional[float] = None,
        dtype: Union[None, Literal["float64", "float32", "f64", "f32"], Any] = None,
    ) -> None: ...
    def fit(self, x: ArrayIn, y: Labels, progress: bool = False) -> None: ...
    @property
    def dtype(self) -> Literal["f64", "f32"]: ...
    @dtype.setter
    def dtype(self, value: Union[Literal["float64", "float32", "f64", "f32"], Any]) -> None: ...
    def curvature(self, x: ArrayIn, y: Labels) -> "Curvature": ...
    def fit_curvature(self, curvature: "Curvature") -> None: ...
    @property
    def model(self) -> Model: ...
    @property
    def likelihood(self) -> Literal["classification", "regression"]: ...
    @property
    def subset_of_weights(self) -> Union[Literal["all", "last_layer"], List[str]]: ...
    @property
    def hessian_structure(self) -> Literal["full", "diag", "kron", "lowrank"]: ...
    def optimize_prior_precision(
        self,
        method: Literal["marglik"] = "marglik",
        prior_structure: Literal["scalar", "layerwise"] = "scalar",
        pred_type: Literal["glm", "nn"] = "glm",
    ) -> None: ...
    def optimize_noise_and_prior(self) -> None: ...
    def log_marginal_likelihood(
        self,
        prior_precision: Union[None, float, ArrayIn] = None,
        sigma_noise: Optional[float] = None,
    ) -> float: ...
    def log_marginal_likelihood_gradient(
        self,
        prior_precision: Union[None, float, ArrayIn] = None,
        sigma_noise: Optional[float] = None,
    ) -> Tuple[Union[float, Array], Optional[float]]: ...
    @property
    def prior_precision(self) -> Union[float, Array]: ...
    @prior_precision.setter
    def prior_precision(self, value: Union[float, ArrayIn]) -> None: ...
    @property
    def prior_tensors(self) -> list[str]: ...
    @property
    def sigma_noise(self) -> float: ...
    @sigma_noise.setter
    def sigma_noise(self, value: float) -> None: ...
    @property
    def temperature(self) -> float: ...
    @temperature.setter
    def temperature(self, value: float) -> None: ...
    @property
    def n_params(self) -> int: ...
    @property
    def mean(self) -> Array: ...
    @property
    def posterior_precision(self) -> Array: ...
    @property
    def posterior_covariance(self) -> Array: ...
    @property
    def posterior_variance(self) -> Array: ...
    @property
    def log_likelihood(self) -> float: ...
    @property
    def log_det_ratio(self) -> float: ...
    @property
    def scatter(self) -> float: ...
    def predictive(
        self,
        x: ArrayIn,
        pred_type: Literal["glm", "nn"] = "glm",
        link_approx: Literal["probit", "mc", "bridge", "bridge_norm"] = "probit",
        n_samples: int = 100,
        joint: bool = False,
        seed: int = 0,
    ) -> Union[Array, Tuple[Array, Array]]: ...
    def __call__(
        self,
        x: ArrayIn,
        pred_type: Literal["glm", "nn"] = "glm",
        link_approx: Literal["probit", "mc", "bridge", "bridge_norm"] = "probit",
        n_samples: int = 100,
        joint: bool = False,
        seed: int = 0,
    ) -> Union[Array, Tuple[Array, Array]]: ...
    def features(self, x: ArrayIn) -> Array: ...
    def predictive_at_features(
        self,
        phi: ArrayIn,
        link_approx: Literal["probit", "mc", "bridge", "bridge_norm"] = "probit",
        n_samples: int = 100,
        seed: int = 0,
    ) -> Union[Array, Tuple[Array, Array]]: ...
    def functional_samples(
        self, x: ArrayIn, pred_type: Literal["glm", "nn"] = "glm", n_samples: int = 100,
        seed: int = 0,
    ) -> Array: ...
    def functional_variance(
        self, x: Optional[ArrayIn] = None, jacobians: Optional[ArrayIn] = None
    ) -> Array: ...
    def functional_covariance(
        self, x: Optional[ArrayIn] = None, jacobians: Optional[ArrayIn] = None
    ) -> Array: ...
    def jacobians(self, x: ArrayIn) -> Array: ...
    def kernel(self, x1: ArrayIn, x2: Optional[ArrayIn] = None) -> Array: ...
    def sample(self, n_samples: int = 100, seed: int = 0) -> Array: ...
    def save(self, path: Union[str, PathLike]) -> None: ...
    @staticmethod
    def load(path: Union[str, PathLike]) -> "Laplace": ...

class Curvature:
    """What a Laplace fit sums over its data; chunks add up (`c1 + c2`) and pickle."""

    def __add__(self, other: "Curvature") -> "Curvature": ...
    @property
    def n(self) -> int: ...
    @property
    def hessian_structure(self) -> Literal["full", "diag", "kron"]: ...

class GP:
    """The DNN2GP GP: kernel δ⁻¹ J(x) J(x')ᵀ, pseudo-targets ỹ = Jθ* − Λ⁻¹r, noise Λ⁻¹."""

    def __init__(
        self,
        model: Model,
        space: Literal["auto", "weight", "function"] = "auto",
        prior_precision: Optional[float] = None,
        max_memory_gib: Optional[float] = None,
    ) -> None: ...
    def fit(self, x: ArrayIn, y: Labels) -> None: ...
    def predict(self, x: ArrayIn) -> Tuple[Array, Array]: ...
    def __call__(self, x: ArrayIn) -> Tuple[Array, Array]: ...
    def log_marginal_likelihood(self) -> float: ...
    def laplace_log_evidence(self) -> float: ...
    @property
    def stationarity_gap(self) -> float: ...
    @property
    def pseudo_targets(self) -> Array: ...
    @property
    def prior_precision(self) -> float: ...
    @property
    def space(self) -> Literal["weight", "function"]: ...
    @property
    def jitter(self) -> float: ...
    @property
    def warnings(self) -> list[str]: ...
    def kernel(self, x1: ArrayIn, x2: Optional[ArrayIn] = None) -> Array: ...

def ntk(
    model: Model,
    x1: ArrayIn,
    x2: Optional[ArrayIn] = None,
    trace_axes: Sequence[int] = (-1,),
    diagonal_axes: Sequence[int] = (),
) -> Array: ...

def pseudo_targets(model: Model, x: ArrayIn, y: Labels) -> Tuple[Array, Array]: ...

def sweep(
    x: ArrayIn,
    y: ArrayIn,
    x_test: ArrayIn,
    y_test: ArrayIn,
    values: Sequence[float],
    param: Literal["delta", "sigma", "width"] = "delta",
    hidden: Sequence[int] = (20,),
    activation: str = "tanh",
    prior_precision: float = 1.0,
    sigma_noise: float = 1.0,
    method: Literal["laplace", "vi"] = "laplace",
    epochs: int = 10000,
    lr: float = 0.05,
    vi_epochs: int = 2000,
    beta: float = 0.1,
    seed: int = 0,
    space: Literal["auto", "weight", "function"] = "auto",
    progress: bool = False,
    max_memory_gib: Optional[float] = None,
) -> Dict[str, Any]: ...

def vogn(
    model: Model,
    x: ArrayIn,
    y: Labels,
    epochs: int = 1000,
    beta: float = 0.1,
    lr: Optional[float] = None,
    mc_samples: int = 1,
    batch_size: Optional[int] = None,
    covariance: Literal["full", "diag"] = "full",
    curvature: Literal["ggn", "squared-gradients"] = "ggn",
    momentum: Optional[float] = None,
    init_precision: float = 1.0,
    seed: int = 0,
    snapshot_every: int = 0,
    progress: bool = False,
) -> Dict[str, Any]: ...

def ggn_diagonal(model: Model, x: ArrayIn, y: Labels) -> Array: ...
