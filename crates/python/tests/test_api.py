"""The Python API against the Rust core (the `dnn2gp` command on the same inputs, bit for bit),
its identities, and its refusals: wrong dtypes, shapes, contiguity, architecture and options
are named; the memory pre-flight raises MemoryError."""

import gzip
import json
import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest

import dnn2gp

ROOT = pathlib.Path(__file__).resolve().parents[3]
SHARED = ROOT.parent / "shared"
LENET5 = "1x28x28:conv6k5,relu,pool,conv16k5,relu,pool,flatten,dense120,relu,dense84,relu,dense10"
MLP = "4:dense5,tanh,dense3"


def shared():
    if not (SHARED / "data").is_dir():
        if os.environ.get("DNN2GP_REQUIRE_SHARED") == "1":
            pytest.fail("../shared/data is missing")
        pytest.skip("no ../shared/data beside the repository")
    return SHARED


def read_idx(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def write_idx(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(head + arr.tobytes())


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    m = shared() / "data" / "mnist"
    d = tmp_path_factory.mktemp("mnist")
    out = {"dir": d, "weights": SHARED / "baselines" / "data" / "b6_seed0_lenet5.safetensors"}
    for stem, name, n in [("train", "train", 600), ("test", "t10k", 120)]:
        x = read_idx(m / f"{name}-images-idx3-ubyte.gz")[:n]
        y = read_idx(m / f"{name}-labels-idx1-ubyte.gz")[:n]
        write_idx(d / f"{stem}-images.idx", x)
        write_idx(d / f"{stem}-labels.idx", y)
        # As the command reads them: bytes / 255 in float64.
        out[stem] = (x.astype(np.float64).reshape(n, 1, 28, 28) / 255.0, y.astype(np.int64))
    return out


def cli(*args):
    exe = os.environ.get("DNN2GP_BIN", str(ROOT / "target" / "release" / "dnn2gp"))
    run = subprocess.run([exe, *args, "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run


@pytest.mark.parametrize("prior_structure", ["scalar", "layerwise"])
def test_laplace_equals_the_command_bit_for_bit(mnist, prior_structure):
    """The same model, images and words give the command's δ and evidence to the bit."""
    d = mnist["dir"]
    out = d / f"eval-{prior_structure}"
    cli("evaluate", "--model", str(mnist["weights"]), "--arch", LENET5,
        "--train-images", str(d / "train-images.idx"), "--train-labels", str(d / "train-labels.idx"),
        "--test-images", str(d / "test-images.idx"), "--test-labels", str(d / "test-labels.idx"),
        "--hessian", "kron,diag,full", "--prior-structure", prior_structure, "--out", str(out))
    report = json.loads((out / "evaluate.json").read_text())
    model = dnn2gp.Model(LENET5, str(mnist["weights"]))
    x, y = mnist["train"]
    for r in report["methods"][1:]:
        la = dnn2gp.Laplace(model, "classification", subset_of_weights="last_layer",
                            hessian_structure=r["structure"])
        la.fit(x, y)
        la.optimize_prior_precision(method="marglik", prior_structure=prior_structure)
        prior = la.prior_precision
        if prior_structure == "scalar":
            assert prior == r["prior_precision"]
        else:
            assert list(prior) == r["prior_precision"]
            assert la.prior_tensors == ["11.weight", "11.bias"]
        assert la.log_marginal_likelihood() == r["log_marglik"]
        probs = la(mnist["test"][0], link_approx="probit")
        assert probs.shape == (120, 10)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=0, atol=1e-12)


def mlp_state(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "0.weight": rng.normal(size=(5, 4)).astype(dtype),
        "0.bias": rng.normal(size=5).astype(dtype),
        "2.weight": rng.normal(size=(3, 5)).astype(dtype),
        "2.bias": rng.normal(size=3).astype(dtype),
    }


def data(n=30, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)


def test_a_state_dict_gives_pytorchs_outputs():
    sd = mlp_state()
    x, _ = data()
    f = dnn2gp.Model(MLP, sd)(x)
    want = np.tanh(x @ sd["0.weight"].T + sd["0.bias"]) @ sd["2.weight"].T + sd["2.bias"]
    np.testing.assert_allclose(f, want, rtol=1e-13, atol=1e-13)
    f32 = dnn2gp.Model(MLP, mlp_state(dtype=np.float32))(x)
    np.testing.assert_allclose(f32, want, rtol=1e-5, atol=1e-5)


def test_the_posteriors_identities():
    """Full posterior on an MLP: the functional variance is the kernel's diagonal block; the
    kernel is symmetric; one δ per tensor equal everywhere is the scalar evidence; δ by the
    evidence is a maximum; the NTK's layouts agree; save and load give the same numbers."""
    model = dnn2gp.Model(MLP, mlp_state())
    x, y = data()
    la = dnn2gp.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
    la.fit(x, y)
    la.optimize_prior_precision()
    d = la.prior_precision
    e = la.log_marginal_likelihood()
    assert e >= la.log_marginal_likelihood(prior_precision=d * 1.01)
    assert e >= la.log_marginal_likelihood(prior_precision=d / 1.01)
    same = la.log_marginal_likelihood(prior_precision=np.full(4, d))
    assert abs(same - e) <= 1e-10 * abs(e)
    k = la.kernel(x[:7])
    assert k.shape == (7, 7, 3, 3)
    np.testing.assert_allclose(k, k.transpose(1, 0, 3, 2), rtol=0, atol=1e-14)
    fv = la.functional_variance(x[:7])
    np.testing.assert_allclose(fv, np.stack([k[i, i] for i in range(7)]), rtol=1e-10, atol=1e-14)
    full = dnn2gp.ntk(model, x[:7], trace_axes=())
    traced = dnn2gp.ntk(model, x[:7], x[:7])
    np.testing.assert_allclose(traced, np.einsum("ijkk->ij", full), rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(traced) > -1e-10)
    draws = la.sample(5, seed=3)
    assert draws.shape == (5, model.n_params)
    np.testing.assert_array_equal(draws, la.sample(5, seed=3))
    la.optimize_prior_precision(prior_structure="layerwise")
    assert la.log_marginal_likelihood() >= e - 1e-9
    assert la.prior_tensors == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_save_and_load(tmp_path):
    model = dnn2gp.Model(MLP, mlp_state())
    x, y = data()
    la = dnn2gp.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all")
    la.fit(x, y)
    la.optimize_prior_precision(prior_structure="layerwise")
    la.save(tmp_path / "post.safetensors")
    back = dnn2gp.Laplace.load(tmp_path / "post.safetensors")
    assert back.log_marginal_likelihood() == la.log_marginal_likelihood()
    np.testing.assert_array_equal(back.prior_precision, la.prior_precision)
    np.testing.assert_array_equal(back(x), la(x))
    model.save(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(dnn2gp.Model.load(tmp_path / "model.safetensors")(x), model(x))


def test_regression_gives_the_mean_and_the_covariance():
    rng = np.random.default_rng(4)
    sd = {"0.weight": rng.normal(size=(8, 2)), "0.bias": rng.normal(size=8),
          "2.weight": rng.normal(size=(1, 8)), "2.bias": rng.normal(size=1)}
    model = dnn2gp.Model("2:dense8,tanh,dense1", sd, likelihood="regression")
    x = rng.normal(size=(40, 2))
    y = np.sin(x[:, 0])
    la = dnn2gp.Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
    la.fit(x, y)
    la.optimize_noise_and_prior()
    mean, var = la(x[:5])
    assert mean.shape == (5, 1) and var.shape == (5, 1, 1) and np.all(var > 0)
    assert la.sigma_noise > 0


def test_hyperparameters_are_set_after_the_fit_and_the_predictives_are_laplace_torchs():
    """prior_precision, sigma_noise and temperature set after the fit refit from the same
    curvature (equal to a fit made with them); the evidence is log_likelihood − ½(log_det_ratio
    + scatter) and its gradient its finite difference; joint, nn and the Jacobians' variants."""
    rng = np.random.default_rng(5)
    sd = {"0.weight": rng.normal(size=(8, 2)), "0.bias": rng.normal(size=8),
          "2.weight": rng.normal(size=(1, 8)), "2.bias": rng.normal(size=1)}
    model = dnn2gp.Model("2:dense8,tanh,dense1", sd, likelihood="regression")
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = np.sin(x[:, 0])
    la = dnn2gp.Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
    la.fit(x, y)
    la.prior_precision, la.sigma_noise, la.temperature = np.array([0.5, 2.0, 1.0, 3.0]), 0.3, 0.8
    made = dnn2gp.Laplace(model, "regression", subset_of_weights="all", hessian_structure="full",
                          prior_precision=np.array([0.5, 2.0, 1.0, 3.0]), sigma_noise=0.3,
                          temperature=0.8)
    made.fit(x, y)
    np.testing.assert_allclose(la.posterior_precision, made.posterior_precision, rtol=1e-12)
    assert abs(la.log_marginal_likelihood() - made.log_marginal_likelihood()) < 1e-9
    e = la.log_marginal_likelihood()
    assert abs(e - (la.log_likelihood - 0.5 * (la.log_det_ratio + la.scatter))) < 1e-10
    np.testing.assert_allclose(np.diag(la.posterior_covariance), la.posterior_variance, rtol=1e-12)
    d_prior, d_sigma = la.log_marginal_likelihood_gradient()
    h = 1e-5
    fd = (la.log_marginal_likelihood(sigma_noise=0.3 * np.exp(h))
          - la.log_marginal_likelihood(sigma_noise=0.3 * np.exp(-h))) / (2 * h)
    assert abs(d_sigma - fd) < 1e-6 * abs(fd)
    assert d_prior.shape == (4,)
    mean, cov = la(x[:4], joint=True)
    assert mean.shape == (4,) and cov.shape == (4, 4)
    np.testing.assert_allclose(np.diag(cov), la(x[:4])[1].reshape(-1), rtol=1e-10)
    js = la.jacobians(x[:4])
    assert js.shape == (4, 1, la.n_params)
    np.testing.assert_allclose(la.functional_variance(jacobians=js), la.functional_variance(x[:4]),
                               rtol=1e-10)
    np.testing.assert_allclose(la.functional_covariance(x[:4]), cov, rtol=1e-10)
    m, v = la(x[:4], pred_type="nn", link_approx="mc", n_samples=300, seed=2)
    assert m.shape == v.shape == (4, 1) and np.all(v > 0)
    np.testing.assert_array_equal(m, la(x[:4], pred_type="nn", link_approx="mc", n_samples=300,
                                         seed=2)[0])
    assert la.functional_samples(x[:4], n_samples=6).shape == (6, 4, 1)
    with pytest.raises(ValueError, match="pred_type"):
        la(x, pred_type="mean")
    with pytest.raises(ValueError, match="link_approx='mc'"):
        la(x, pred_type="nn")
    with pytest.raises(ValueError, match="temperature"):
        la.temperature = -1.0
    with pytest.raises(ValueError, match="gridsearch"):
        la.optimize_prior_precision(method="gridsearch")


def test_bad_inputs_are_named():
    model = dnn2gp.Model(MLP, mlp_state())
    x, y = data()
    la = dnn2gp.Laplace(model, "classification")
    with pytest.raises(ValueError, match="fit"):
        la.log_marginal_likelihood()
    with pytest.raises(TypeError, match=r"X: expected floating-point values \(numpy float32 or float64, or a tensor\), got an array of dtype int64"):
        la.fit(x.astype(np.int64), y)
    with pytest.raises(ValueError, match=r"X: shape \[30, 3\] gives 3 values per row; the network takes 4"):
        la.fit(x[:, :3].copy(), y)
    with pytest.raises(ValueError, match=r"y\[0\] = 7"):
        la.fit(x, np.full(30, 7))
    with pytest.raises(ValueError, match="hessian_structure"):
        dnn2gp.Laplace(model, "classification", hessian_structure="bogus")
    with pytest.raises(ValueError, match="subset_of_weights"):
        dnn2gp.Laplace(model, "classification", subset_of_weights="first_layer")
    with pytest.raises(ValueError, match="likelihood"):
        dnn2gp.Laplace(model, "ranking")
    la.fit(x, y)
    with pytest.raises(ValueError, match="link_approx"):
        la(x, link_approx="logit")
    with pytest.raises(ValueError, match="prior_structure"):
        la.optimize_prior_precision(prior_structure="per-weight")
    with pytest.raises(ValueError, match="trace_axes"):
        dnn2gp.ntk(model, x, trace_axes=(0,))
    bad = mlp_state()
    bad["2.weight"] = np.zeros((3, 6))
    with pytest.raises(ValueError, match=r"tensor '2.weight': shape \[3, 6\], the architecture needs \[3, 5\]"):
        dnn2gp.Model(MLP, bad)
    del bad["2.weight"]
    with pytest.raises(ValueError, match="tensor '2.weight': missing"):
        dnn2gp.Model(MLP, bad)
    with pytest.raises(ValueError, match="arch"):
        dnn2gp.Model("4:dense5,bogus", mlp_state())
    low = dnn2gp.Laplace(model, "classification", subset_of_weights="all", hessian_structure="lowrank", rank=3)
    low.fit(x, y)
    with pytest.raises(ValueError, match="low-rank"):
        low.optimize_prior_precision(prior_structure="layerwise")


def test_the_memory_preflight_raises_memory_error():
    model = dnn2gp.Model(MLP, mlp_state())
    x, y = data()
    la = dnn2gp.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full",
                        max_memory_gib=1e-6)
    with pytest.raises(MemoryError, match="GiB"):
        la.fit(x, y)


def test_the_pytorch_example_runs_on_numpy_alone(monkeypatch, capsys):
    """`examples/pytorch_laplace.py` without torch: it fits, and a point far from the data is
    more uncertain than a class centre."""
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    spec = importlib.util.spec_from_file_location("example", ROOT / "examples" / "pytorch_laplace.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    la = example.main()
    out = capsys.readouterr().out
    assert "trained with numpy" in out
    x, y = example.data()
    assert np.mean(la(x).argmax(1) == y) > 0.9
    var = np.einsum("ikk->ik", la.functional_variance(np.array([[-2.0, 0.0], [6.0, 6.0]])))
    assert np.all(var[1] > 2 * var[0])


def test_the_pytorch_example_trains_in_torch_and_hands_over_its_state_dict(torch, capsys):
    """`examples/pytorch_laplace.py` with torch: the state_dict goes in as torch tensors, and
    the model gives the torch network's outputs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("example", ROOT / "examples" / "pytorch_laplace.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    la = example.main()
    assert "trained with torch" in capsys.readouterr().out
    x, y = example.data()
    assert np.mean(la(x).argmax(1) == y) > 0.9
    net = example.train_torch(x, y, delta=1.0)
    np.testing.assert_allclose(la.model(x), net(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes on this machine."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        yield client


def test_dask_kernels_and_ggn_equal_the_single_process_results(cluster):
    """On two worker processes: NTK tiles (both layouts, rectangular) and the GGN diagonal's tree
    reduction equal the single-process results to 1e-12; the model pickles to the workers."""
    import pickle

    import dnn2gp.dask

    model = dnn2gp.Model(MLP, mlp_state())
    back = pickle.loads(pickle.dumps(model))
    x, y = data(n=70)
    np.testing.assert_array_equal(back(x), model(x))
    tiles = dnn2gp.dask.ntk(model, x, x[:50], chunks=16)
    assert tiles.numblocks == (5, 4)
    np.testing.assert_allclose(tiles.compute(), dnn2gp.ntk(model, x, x[:50]), rtol=1e-12, atol=1e-12)
    full = dnn2gp.dask.ntk(model, x, chunks=32, trace_axes=())
    np.testing.assert_allclose(full.compute(), dnn2gp.ntk(model, x, trace_axes=()), rtol=1e-12, atol=1e-12)
    h = dnn2gp.dask.ggn_diagonal(model, x, y, chunks=16).compute()
    np.testing.assert_allclose(h, dnn2gp.ggn_diagonal(model, x, y), rtol=1e-12, atol=1e-14)
    assert h.shape == (model.n_params,) and np.all(h >= 0)


@pytest.mark.parametrize("graph", ["ntk", "fit", "gp"])
def test_a_worker_killed_mid_run_is_retried(cluster, tmp_path, graph):
    """A worker process dies in the middle of the graph (after computing its first block): the
    scheduler recomputes what it held on the other worker, and the kernel, the Laplace fit and
    the GP are unchanged."""
    import dask.array as da

    import dnn2gp.dask

    x, y = data(n=64)
    marker = str(tmp_path / "died")

    def die_once(block):
        import os

        if block.size and not os.path.exists(marker):  # not while dask infers the meta
            open(marker, "w").close()
            os._exit(1)
        return block

    if graph == "ntk":
        model = dnn2gp.Model(MLP, mlp_state())
        tiles = dnn2gp.dask.ntk(model, x, chunks=16).map_blocks(
            die_once, meta=np.empty((0, 0), dtype=np.float64)
        )
        out = tiles.compute()
        np.testing.assert_allclose(out, dnn2gp.ntk(model, x), rtol=1e-12, atol=1e-12)
    inputs = da.from_array(x, chunks=16).map_blocks(die_once, meta=np.empty((0, 0)))
    if graph == "fit":
        model = dnn2gp.Model(MLP, mlp_state())
        la = dnn2gp.Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron")
        la.fit(x, y)
        lb = dnn2gp.dask.fit(dnn2gp.Laplace(model, "classification", subset_of_weights="all",
                                            hessian_structure="kron"), inputs, y, chunks=16)
        np.testing.assert_allclose(lb.log_marginal_likelihood(), la.log_marginal_likelihood(), rtol=1e-12)
    if graph == "gp":
        model = dnn2gp.Model(MLP, mlp_state(), "regression", sigma_noise=0.5)
        yr = np.random.default_rng(8).normal(size=(64, 3))
        gp = dnn2gp.GP(model, space="function")
        gp.fit(x, yr)
        dg = dnn2gp.dask.GP(model, chunks=16).fit(inputs, yr)
        np.testing.assert_allclose(dg.log_marginal_likelihood(), gp.log_marginal_likelihood(), rtol=1e-12)
    assert os.path.exists(marker)


def test_dask_fit_is_the_fit_as_a_tree_reduction(cluster):
    """On two worker processes: a Laplace posterior fitted from per-chunk curvatures (full, diag,
    kron; all weights and the last layer), added in a tree, has the single-process fit's
    evidence and predictive to 1e-12; curvatures pickle and add; lowrank and unlike curvatures
    are refused."""
    import pickle

    import dnn2gp.dask

    model = dnn2gp.Model(MLP, mlp_state())
    x, y = data(n=70)
    for structure in ["full", "diag", "kron"]:
        for subset in ["all", "last_layer"]:
            words = dict(subset_of_weights=subset, hessian_structure=structure)
            la = dnn2gp.Laplace(model, "classification", **words)
            la.fit(x, y)
            lb = dnn2gp.dask.fit(dnn2gp.Laplace(model, "classification", **words), x, y,
                                 chunks=16, split_every=2)
            for d in [None, 3.0]:
                np.testing.assert_allclose(lb.log_marginal_likelihood(d), la.log_marginal_likelihood(d),
                                           rtol=1e-12)
            np.testing.assert_allclose(lb(x[:9]), la(x[:9]), rtol=1e-12, atol=1e-14)
            c = la.curvature(x[:30], y[:30]) + pickle.loads(pickle.dumps(la.curvature(x[30:], y[30:])))
            assert (c.n, c.hessian_structure) == (70, structure)
    la = dnn2gp.Laplace(model, "classification", hessian_structure="lowrank")
    with pytest.raises(ValueError, match="lowrank GGN is not a sum over chunks"):
        la.curvature(x, y)
    kron = dnn2gp.Laplace(model, "classification", hessian_structure="kron")
    diag = dnn2gp.Laplace(model, "classification", hessian_structure="diag")
    with pytest.raises(ValueError, match="cannot add a diag curvature"):
        kron.curvature(x, y) + diag.curvature(x, y)
    with pytest.raises(ValueError, match="curvature: a diag curvature"):
        kron.fit_curvature(diag.curvature(x, y))
    with pytest.raises(ValueError, match="split_every: 1"):
        dnn2gp.dask.fit(kron, x, y, split_every=1)
    with pytest.raises(ValueError, match="chunks: 0"):
        dnn2gp.dask.ntk(model, x, chunks=0)
    with pytest.raises(ValueError, match="chunks: -4"):
        dnn2gp.dask.GP(model, chunks=-4)


def test_a_symmetric_dask_kernel_computes_only_its_upper_tiles():
    """X2 omitted: n(n+1)/2 tile tasks for n row blocks, the rest transposes, in both layouts,
    equal to the single-process kernel; the diagonal blocks (`diagonal_axes=(0,)`) are the
    kernel's."""
    import dnn2gp.dask

    model = dnn2gp.Model(MLP, mlp_state())
    x, _ = data(n=70)
    for trace_axes in [(-1,), ()]:
        k = dnn2gp.dask.ntk(model, x, chunks=16, trace_axes=trace_axes)
        graph = dict(k.__dask_graph__())
        tiles = [key for key in graph if "_ntk_tile" in str(key)]
        mirrors = [key for key in graph if "_mirror" in str(key)]
        assert (len(tiles), len(mirrors)) == (15, 10)
        np.testing.assert_allclose(k.compute(scheduler="threads"),
                                   dnn2gp.ntk(model, x, trace_axes=trace_axes), rtol=1e-12, atol=1e-12)
    full = dnn2gp.ntk(model, x, trace_axes=())
    blocks = dnn2gp.ntk(model, x, trace_axes=(), diagonal_axes=(0,))
    np.testing.assert_allclose(blocks, full[np.arange(70), np.arange(70)], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dnn2gp.ntk(model, x, diagonal_axes=(0,)),
                               np.einsum("iikk->i", full), rtol=1e-12)
    with pytest.raises(ValueError, match="omit X2"):
        dnn2gp.ntk(model, x, x, diagonal_axes=(0,))


@pytest.mark.parametrize("likelihood", ["regression", "bernoulli"])
def test_the_dask_gp_is_the_single_process_gp(cluster, likelihood):
    """On two worker processes, tiles of 16 examples (the last one partial, padded): the blocked
    Cholesky's log marginal likelihood, predictive mean and variance equal `dnn2gp.GP`'s in
    function space to 1e-12."""
    import dnn2gp.dask

    rng = np.random.default_rng(5)
    x = rng.normal(size=(70, 4))
    if likelihood == "regression":
        model = dnn2gp.Model(MLP, mlp_state(), "regression", sigma_noise=0.5, prior_precision=2.0)
        y = rng.normal(size=(70, 3))
    else:
        sd = mlp_state()
        sd["2.weight"], sd["2.bias"] = sd["2.weight"][:1], sd["2.bias"][:1]
        model = dnn2gp.Model("4:dense5,tanh,dense1", sd, prior_precision=2.0)
        y = rng.integers(0, 2, size=70)
    gp = dnn2gp.GP(model, space="function")
    gp.fit(x, y)
    mean, var = gp(x[:23])
    dg = dnn2gp.dask.GP(model, chunks=16).fit(x, y)
    dm, dv = dg.predict(x[:23])
    np.testing.assert_allclose(dg.log_marginal_likelihood(), gp.log_marginal_likelihood(), rtol=1e-12)
    np.testing.assert_allclose(dm.compute(), mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dv.compute(), var, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dg.pseudo_targets_, gp.pseudo_targets, rtol=1e-12, atol=1e-12)
