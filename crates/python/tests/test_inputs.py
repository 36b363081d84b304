"""What numpy and torch users hand over is accepted, and what cannot be is named: float32
arrays, objects with `__array__` (torch tensors, detached and brought to the CPU), integer-
valued float labels; non-integer labels, non-float inputs and values that are not finite are
refused naming the value.
Numerical trouble reaches Python: a non-stationary θ* is warned by `GP.fit`, a diverging VOGN
run raises `ArithmeticError`."""

import warnings

import numpy as np
import pytest

import dnn2gp
from test_api import MLP, mlp_state
from test_gp import mlp_1d, regression_data


class Tensorish:
    """A stand-in for a torch tensor: `detach()`, `cpu()` and `__array__`, float32 values."""

    def __init__(self, a):
        self.a = np.asarray(a, dtype=np.float32)
        self.detached = False

    def detach(self):
        t = Tensorish(self.a)
        t.detached = True
        return t

    def cpu(self):
        return self

    def __array__(self, dtype=None, copy=None):
        assert self.detached, "a tensor is detached before it is read"
        return self.a if dtype is None else self.a.astype(dtype)


def data(seed=0, n=30):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)


def test_float32_arrays_and_tensors_are_read_as_their_values():
    x, y = data()
    x32 = x.astype(np.float32)
    model = dnn2gp.Model(MLP, {k: v.astype(np.float32) for k, v in mlp_state().items()})
    tensors = dnn2gp.Model(MLP, {k: Tensorish(v) for k, v in mlp_state().items()})
    assert np.array_equal(model.weights, tensors.weights)
    ref = dnn2gp.Laplace(model, "classification", "all", "kron")
    ref.fit(x32.astype(np.float64), y)
    for given in [x32, Tensorish(x), x32[:, ::1], np.asfortranarray(x32)]:
        la = dnn2gp.Laplace(model, "classification", "all", "kron")
        la.fit(given, y)
        assert la.log_marginal_likelihood() == ref.log_marginal_likelihood()
        np.testing.assert_array_equal(la(given), ref(x32.astype(np.float64)))
    np.testing.assert_array_equal(model(Tensorish(x)), model(x32.astype(np.float64)))


def test_labels_as_integer_valued_floats_are_labels():
    x, y = data()
    model = dnn2gp.Model(MLP, mlp_state())
    a, b = (dnn2gp.Laplace(model, "classification", "all", "diag") for _ in range(2))
    a.fit(x, y)
    b.fit(x, y.astype(float))
    assert a.log_marginal_likelihood() == b.log_marginal_likelihood()
    c = dnn2gp.Laplace(model, "classification", "all", "diag")
    c.fit(x, Tensorish(y))
    assert c.log_marginal_likelihood() == a.log_marginal_likelihood()
    bad = y.astype(float)
    bad[4] = 1.5
    with pytest.raises(ValueError, match=r"y\[4\] = 1.5: not a class label \(an integer 0 to 2\)"):
        b.fit(x, bad)
    with pytest.raises(TypeError, match="X: expected floating-point values"):
        b.fit(x.astype(np.int32), y)
    with pytest.raises(TypeError, match="X: expected an array"):
        b.fit("x", y)


def test_the_gp_warns_of_weights_that_are_not_stationary():
    x, y, _, _ = regression_data()
    model = dnn2gp.Model("1:dense8,tanh,dense1", mlp_1d(), "regression", sigma_noise=0.3)
    gp = dnn2gp.GP(model)
    with pytest.warns(RuntimeWarning, match="not_stationary: w\\* is not a stationary point"):
        gp.fit(x, y)
    assert any(w.startswith("not_stationary") for w in gp.warnings), gp.warnings
    assert gp.stationarity_gap > 0
    assert "train the network further" in gp.warnings[-1]


def test_a_diverging_vogn_run_raises_and_the_documented_call_converges():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (300, 1))
    y = np.sin(x[:, 0]) + 0.2 * rng.normal(size=300)
    state = {"0.weight": rng.normal(size=(50, 1)), "0.bias": rng.normal(size=50),
             "2.weight": rng.normal(size=(1, 50)) / 7, "2.bias": np.zeros(1)}
    model = dnn2gp.Model("1:dense50,tanh,dense1", state, "regression", sigma_noise=0.2)
    with pytest.raises(ArithmeticError, match=r"VOGN diverged in epoch \d+ .*lr sets α"):
        dnn2gp.vogn(model, x, y, epochs=200, covariance="diag", lr=0.1)
    # The README's call, at the default mean step.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = dnn2gp.vogn(model, x, y, epochs=1000, covariance="diag")
    h = q["history"]
    assert h[-1] < 1e-2 * h[0] and np.all(np.isfinite(q["precision"]))
    mse = np.mean((q["model"](x)[:, 0] - np.sin(x[:, 0])) ** 2)
    assert mse < 0.05, mse


def test_torch_tensors_go_in_as_they_are(torch):
    x, y = data()
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model = dnn2gp.Model(MLP, net.state_dict())
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    # torch computes in f32, dnn2gp in f64 from the same f32 inputs and weights.
    np.testing.assert_allclose(model(xt), net(xt).detach().double().numpy(), rtol=1e-5, atol=1e-6)
    exact = net.double()(xt.detach().double()).detach().numpy()
    np.testing.assert_allclose(model(xt), exact, rtol=1e-12, atol=1e-14)
    la = dnn2gp.Laplace(model, "classification", "all", "diag")
    la.fit(xt, torch.tensor(y))
    ref = dnn2gp.Laplace(model, "classification", "all", "diag")
    ref.fit(x.astype(np.float32).astype(np.float64), y)
    assert la.log_marginal_likelihood() == ref.log_marginal_likelihood()


def test_a_value_that_is_not_finite_is_named():
    x, y = data()
    model = dnn2gp.Model(MLP, mlp_state())
    la = dnn2gp.Laplace(model, "classification", "all", "diag")
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X\[3, 1\] = NaN: not a finite number"):
        la.fit(bad, y)
    # float32 arrays are read as they are, and checked alike.
    with pytest.raises(ValueError, match=r"X\[3, 1\] = NaN: not a finite number"):
        la.fit(bad.astype(np.float32), y)
    with pytest.raises(ValueError, match=r"y\[2\] = inf"):
        la.fit(x, np.where(np.arange(len(y)) == 2, np.inf, y.astype(float)))
    la.fit(x, y)
    with pytest.raises(ValueError, match=r"X\[0, 0\] = -inf"):
        la(np.full((2, 4), -np.inf))
    state = mlp_state()
    state["0.weight"] = state["0.weight"].copy()
    state["0.weight"][0, 2] = np.nan
    with pytest.raises(ValueError, match=r"state_dict\['0.weight'\]\[0, 2\] = NaN"):
        dnn2gp.Model(MLP, state)
    xr, yr, _, _ = regression_data()
    gp = dnn2gp.GP(dnn2gp.Model("1:dense8,tanh,dense1", mlp_1d(), "regression", sigma_noise=0.3))
    with pytest.raises(ValueError, match=r"y\[0\] = NaN"):
        gp.fit(xr, np.full_like(yr, np.nan))


def test_errors_name_the_python_arguments():
    with pytest.raises(ValueError, match="sigma_noise: the noise must be a positive number, got -1"):
        dnn2gp.Model(MLP, mlp_state(), "regression", sigma_noise=-1.0)
    with pytest.raises(ValueError, match="prior_precision: the prior precision must be a positive"):
        dnn2gp.Model(MLP, mlp_state(), prior_precision=0.0)
    x, y = data()
    with pytest.raises(ValueError, match="epochs: VOGN needs at least one epoch"):
        dnn2gp.vogn(dnn2gp.Model(MLP, mlp_state()), x, y, epochs=0)
