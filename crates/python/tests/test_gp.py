"""DNN2GP's own API from Python: the GP against `dnn2gp predict` (bit for bit) and its
identities; the sweep against `dnn2gp sweep` (bit for bit); VOGN; progress lines."""

import csv

import numpy as np
import pytest

import dnn2gp
from test_api import MLP, cli, mlp_state


def regression_data(seed=3, n=40, n_test=15):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)
    xt = rng.uniform(-2, 2, size=(n_test, 1))
    return x, y, xt, np.sin(2 * xt[:, 0])


def write_csv(path, x, y=None):
    cols = x if y is None else np.c_[x, y]
    names = [f"x{j}" for j in range(x.shape[1])] + ([] if y is None else ["y"])
    np.savetxt(path, cols, delimiter=",", header=",".join(names), comments="", fmt="%.17g")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def mlp_1d(seed=0):
    rng = np.random.default_rng(seed)
    return {"0.weight": rng.normal(size=(8, 1)), "0.bias": rng.normal(size=8),
            "2.weight": rng.normal(size=(1, 8)), "2.bias": rng.normal(size=1)}


def test_the_gp_is_the_commands_predictive(tmp_path):
    """The same model file, training data and inputs: `dnn2gp predict` (the posterior's
    predictive) gives `Laplace(…, "all", "full")`'s var_f to the bit in weight space, and the
    GP's (`GP(model)(X*)`) to rounding in both spaces; its mean is the network's outputs."""
    x, y, xt, _ = regression_data()
    model = dnn2gp.Model("1:dense8,tanh,dense1", mlp_1d(), "regression", sigma_noise=0.3,
                         prior_precision=0.5)
    model.save(tmp_path / "model.safetensors")
    write_csv(tmp_path / "train.csv", x, y)
    write_csv(tmp_path / "test.csv", xt)
    la = dnn2gp.Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
    la.fit(x, y)
    for space in ["weight", "function"]:
        out = tmp_path / space
        cli("predict", "--model", str(tmp_path / "model.safetensors"), "--train-data",
            str(tmp_path / "train.csv"), "--inputs", str(tmp_path / "test.csv"), "--space", space,
            "--out", str(out))
        rows = read_csv(out / "predictions.csv")
        var_f = np.array([float(r["var_f"]) for r in rows])
        gp = dnn2gp.GP(model, space=space)
        gp.fit(x, y)
        mean, var = gp(xt)
        assert gp.space == space
        np.testing.assert_allclose(var_f, var[:, 0], rtol=1e-10)
        if space == "weight":
            assert list(var_f) == list(la.functional_variance(xt)[:, 0, 0])
        assert [float(r["mean"]) for r in rows] == list(model(xt)[:, 0])


def test_the_gps_identities():
    """Weight and function space agree (1e-8); `log p(ỹ) − ½gᵀA⁻¹g` is the Laplace evidence;
    the kernel is `δ⁻¹ J Jᵀ`; the pseudo-targets are `dnn2gp.pseudo_targets`'s; the
    categorical likelihood and calls before fit are refused."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    model = dnn2gp.Model(MLP, mlp_state(), "regression", sigma_noise=0.5, prior_precision=2.0)
    gps = {}
    for space in ["weight", "function"]:
        gps[space] = dnn2gp.GP(model, space=space)
        gps[space].fit(x, y)
    (mw, vw), (mf, vf) = gps["weight"](x[:7]), gps["function"](x[:7])
    np.testing.assert_allclose(mw, mf, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(vw, vf, rtol=1e-8, atol=1e-10)
    for gp in gps.values():
        np.testing.assert_allclose(gp.log_marginal_likelihood() - gp.stationarity_gap,
                                   gp.laplace_log_evidence(), rtol=1e-9)
    gp = gps["function"]
    np.testing.assert_array_equal(gp.predict(x[:7])[1], vf)
    np.testing.assert_allclose(gps["weight"].log_marginal_likelihood(), gp.log_marginal_likelihood(),
                               rtol=1e-9)
    np.testing.assert_allclose(gp.kernel(x, x[:5]), dnn2gp.ntk(model, x, x[:5], trace_axes=()) / 2.0,
                               rtol=1e-14)
    targets, noise = dnn2gp.pseudo_targets(model, x, y)
    np.testing.assert_array_equal(gp.pseudo_targets, targets)
    np.testing.assert_allclose(noise, np.broadcast_to(0.25 * np.eye(3), (30, 3, 3)), rtol=1e-14)
    with pytest.raises(ValueError, match="fit"):
        dnn2gp.GP(model).log_marginal_likelihood()
    with pytest.raises(ValueError, match="space"):
        dnn2gp.GP(model, space="hilbert")
    softmax = dnn2gp.GP(dnn2gp.Model(MLP, mlp_state()))
    with pytest.raises(ValueError, match="rank K − 1"):
        softmax.fit(x, rng.integers(0, 3, size=30))


def test_jitter_is_warned():
    """A Gram matrix that needs jitter (a network whose kernel is near zero and noise 1e-150)
    raises a RuntimeWarning and lists it."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 4))
    sd = {k: 0.0 * v for k, v in mlp_state().items()}
    model = dnn2gp.Model(MLP, sd, "regression", sigma_noise=1e-150, prior_precision=1.0)
    gp = dnn2gp.GP(model, space="function")
    with pytest.warns(RuntimeWarning, match="jitter"):
        gp.fit(x, rng.normal(size=(40, 3)))
    assert gp.jitter > 0 and gp.warnings[0].startswith("jitter")


def test_the_sweep_is_the_commands_bit_for_bit(tmp_path):
    """`dnn2gp.sweep` on the same data and settings gives `dnn2gp sweep`'s numbers to the bit,
    and warns, as the command does, of a minimum at the grid's edge."""
    x, y, xt, yt = regression_data()
    write_csv(tmp_path / "train.csv", x, y)
    write_csv(tmp_path / "test.csv", xt, yt)
    cli("sweep", "--data", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
        "--grid", "0.1,1,10,100", "--hidden", "5", "--epochs", "300", "--out", str(tmp_path / "out"))
    rows = read_csv(tmp_path / "out" / "sweep.csv")
    with pytest.warns(RuntimeWarning, match="minimum_at_grid_edge"):
        out = dnn2gp.sweep(x, y, xt, yt, values=[0.1, 1, 10, 100], hidden=[5], epochs=300)
    for key in ["value", "neg_log_marglik", "laplace_neg_log_marglik", "train_mse", "test_mse"]:
        assert [float(r[key]) for r in rows] == list(out[key]), key
    assert out["best"] == out["value"][np.argmin(out["neg_log_marglik"])]
    with pytest.raises(ValueError, match="param"):
        dnn2gp.sweep(x, y, xt, yt, values=[1.0], param="depth")
    with pytest.raises(ValueError, match="method: 'both'"):
        dnn2gp.sweep(x, y, xt, yt, values=[1.0], method="both")
    with pytest.raises(ValueError, match="delta = -1: every swept value must be a positive number"):
        dnn2gp.sweep(x, y, xt, yt, values=[1.0, -1.0])
    with pytest.raises(ValueError, match="width = 1.5: every swept value must be a positive integer"):
        dnn2gp.sweep(x, y, xt, yt, values=[2.0, 1.5], param="width")
    with pytest.raises(TypeError, match=r"X: expected an array \(numpy, or an object with __array__ such as a torch tensor\), got a list"):
        dnn2gp.sweep(x.tolist(), y, xt, yt, values=[1.0])
    with pytest.raises(ValueError, match="X_test, y_test"):
        dnn2gp.sweep(x, y, np.c_[xt, xt], yt, values=[1.0])


def test_vogn_trains_and_repeats_with_its_seed(capsys):
    """VOGN from the model's weights: the loss falls, the precision has the covariance's shape
    and grows from its initial value, snapshots come every `snapshot_every` steps, the same
    seed gives the same bytes, bad settings are named, and `progress=True` draws a line."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 3))
    model = dnn2gp.Model(MLP, mlp_state(), "regression", prior_precision=1.0)
    a = dnn2gp.vogn(model, x, y, epochs=40, covariance="diag", snapshot_every=10, progress=True)
    assert "vogn: 100%|" in capsys.readouterr().err
    assert a["history"][-1] < a["history"][0]
    assert a["precision"].shape == (43,) and np.all(a["precision"] > 1.0)
    assert [t for t, _, _ in a["snapshots"]] == [0, 10, 20, 30]
    b = dnn2gp.vogn(model, x, y, epochs=40, covariance="diag", snapshot_every=10)
    np.testing.assert_array_equal(a["model"].weights, b["model"].weights)
    full = dnn2gp.vogn(model, x, y, epochs=5, batch_size=16)
    assert full["precision"].shape == (43, 43)
    with pytest.raises(ValueError, match="β must be in"):
        dnn2gp.vogn(model, x, y, beta=2.0)
    with pytest.raises(ValueError, match="momentum"):
        dnn2gp.vogn(model, x, y, momentum=1.5)
    with pytest.raises(ValueError, match="covariance"):
        dnn2gp.vogn(model, x, y, covariance="banded")


def test_a_fit_draws_a_progress_line(capsys):
    """`fit(..., progress=True)` writes a tqdm-like line to stderr ending at 100%."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(300, 4)), rng.integers(0, 3, size=300)
    la = dnn2gp.Laplace(dnn2gp.Model(MLP, mlp_state()), "classification", subset_of_weights="all",
                        hessian_structure="diag")
    la.fit(x, y, progress=True)
    err = capsys.readouterr().err
    np.testing.assert_array_equal(la.predictive(x[:5], link_approx="bridge"), la(x[:5], link_approx="bridge"))
    assert "fit: 100%|████████████████████| 300/300 examples" in err
    la.fit(x, y)
    assert capsys.readouterr().err == ""
