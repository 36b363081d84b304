"""Networks as they are: an ONNX file (the B8 ResNet with BatchNorm) and torch modules (a
ResNet block, a mixer with LayerNorm and GELU, a transformer encoder with
nn.MultiheadAttention) go in, with the module's outputs and every posterior on them; what
cannot be read (an operation across examples, tied weights) is refused by name."""

import os
import warnings

import numpy as np
import pytest

import dnn2gp

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "baselines", "data")


def test_the_b8_resnet_from_onnx_has_torchs_probabilities():
    path = os.path.join(SHARED, "b8_seed0_resnet.onnx")
    model = dnn2gp.Model.from_onnx(path)
    assert model.n_params == 174_970
    assert len(model.tensors) == 47 and model.tensors[:3] == ["0.weight", "1.weight", "1.bias"]
    # A posterior over chosen tensors: not none of them, not half a layer.
    with pytest.raises(ValueError, match="every parameter tensor"):
        dnn2gp.Laplace(model, "classification", subset_of_weights=[])
    with pytest.raises(ValueError, match="would hold 1.bias and fit 1.weight"):
        dnn2gp.Laplace(model, "classification", subset_of_weights=[t for t in model.tensors if t != "1.bias"])
    want = np.loadtxt(os.path.join(SHARED, "b8_seed0_probs_map.csv"), delimiter=",")[:20]
    import gzip

    with gzip.open(os.path.join(SHARED, "b6_seed0_rotated-images.idx.gz")) as f:
        raw = f.read()
    images = np.frombuffer(raw[16:16 + 20 * 784], dtype=np.uint8).reshape(20, 1, 28, 28) / 255.0
    f = model(images)
    p = np.exp(f - f.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.abs(p - want).max() < 1e-5
    # The forward pass in float32 (as torch ran it): within float32's rounding.
    for dtype in ["float32", np.float32, np.dtype("float32"), "f32"]:
        f32 = model(images, dtype=dtype)
        assert 0 < np.abs(f32 - f).max() < 1e-4 * np.abs(f).max()
    with pytest.raises(ValueError, match="dtype"):
        model(images, dtype="float16")
    # numpy's names: float is float64.
    assert np.array_equal(model(images, dtype=float), f)
    assert np.array_equal(model(images, dtype="float"), f)
    for bad in [3, True, b"f32", object()]:
        with pytest.raises(TypeError, match="dtype"):
            model(images, dtype=bad)
    # A posterior's forward passes in float32: its probabilities within 1e-4 of float64's.
    labels = np.argmax(f, 1)
    probs = {}
    for dtype in ["float64", "float32"]:
        la = dnn2gp.Laplace(model, "classification", dtype=dtype)
        la.fit(images, labels)
        la.optimize_prior_precision()
        assert la.dtype == dtype.replace("float", "f")
        probs[dtype] = la(images)
    assert 0 < np.abs(probs["float32"] - probs["float64"]).max() < 1e-4
    # A posterior's dtype is set after the fit (a loaded one's is float64).
    la.dtype = "float64"
    assert la.dtype == "f64" and np.abs(la(images) - probs["float64"]).max() < 1e-4
    assert "dtype='f64'" in repr(la)


def test_a_file_that_is_no_onnx_is_refused():
    with pytest.raises(ValueError, match="ONNX"):
        dnn2gp.Model.from_onnx(b"not a model")


def _modules(torch):
    """The three networks of the fixtures' script (tests/fixtures/pytorch/make_graphs.py) with
    an input batch each; BatchNorm's running statistics moved away from 0 and 1, as after
    training."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "fixtures", "pytorch",
                        "make_graphs.py")
    spec = importlib.util.spec_from_file_location("make_graphs", path)
    make_graphs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_graphs)
    out = []
    for _, net, shape in make_graphs.modules(torch):
        net.train()
        with torch.no_grad():
            net(torch.randn((16,) + shape) * 2 + 0.5)
        out.append((net, torch.randn((5,) + shape)))
    return out


def test_torch_modules_go_in_with_their_outputs_and_posteriors(torch):
    for module, x in _modules(torch):
        module.eval()
        model = dnn2gp.Model.from_torch(module, x)
        assert model.n_params == sum(p.numel() for p in module.parameters())
        with torch.no_grad():
            want = module(x.double() if False else x).double().numpy()
        f = model(x.double().numpy())
        assert np.abs(f - want).max() < 1e-5 * (1 + np.abs(want).max()), type(module).__name__
        y = want.argmax(1)
        for structure, subset in [("kron", "all"), ("diag", "all"), ("full", "all"), ("kron", "last_layer")]:
            la = dnn2gp.Laplace(model, "classification", subset_of_weights=subset, hessian_structure=structure)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                la.fit(x.double().numpy(), y)
            p = la(x.double().numpy(), link_approx="probit")
            assert np.allclose(p.sum(1), 1.0) and np.isfinite(la.log_marginal_likelihood())


def test_what_cannot_be_read_is_refused_by_name(torch):
    n = torch.nn

    class AcrossExamples(n.Module):
        def __init__(self):
            super().__init__()
            self.fc = n.Linear(4, 3)

        def forward(self, x):
            return self.fc(x - x.mean(0, keepdim=True))

    class Tied(n.Module):
        def __init__(self):
            super().__init__()
            self.fc = n.Linear(4, 4)

        def forward(self, x):
            return self.fc(torch.tanh(self.fc(x)))

    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="ReduceMean.*across the batch axis"):
        dnn2gp.Model.from_torch(AcrossExamples(), x)
    with pytest.raises(ValueError, match="fc.weight.*tied"):
        dnn2gp.Model.from_torch(Tied(), x)
    # Half precision is named, with what to do.
    with pytest.raises(ValueError, match=r"float16.*\.float\(\)"):
        dnn2gp.Model.from_torch(n.Linear(4, 3).half(), x.half())


def test_batchnorm_held_kfac_and_last_layer_kfac_equal_laplace_torch(torch):
    """laplace-torch refuses all-weights KFAC with BatchNorm; with BatchNorm frozen
    (requires_grad=False, its maintainers' work-around) it runs, and dnn2gp's posterior over
    the same tensors (subset_of_weights=[names]) gives its probabilities and evidence in f64.
    Its last-layer KFAC on the same ResNet block too."""
    laplace = pytest.importorskip("laplace")
    torch.manual_seed(1)
    block = _modules(torch)[0][0].double().eval()
    x = torch.randn(40, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        y = (block(x).argmax(1) + (torch.arange(40) % 5 == 0).long()) % 3
    xt = torch.randn(6, 2, 6, 6, dtype=torch.float64)
    model = dnn2gp.Model.from_torch(block, x[:4])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=40)
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    names = [n for n, p in block.named_parameters() if p.requires_grad]
    for subset, ours in [("all", names), ("last_layer", "last_layer")]:
        peer = laplace.Laplace(block, "classification", subset_of_weights=subset,
                               hessian_structure="kron", prior_precision=0.7)
        peer.fit(loader)
        want_p = peer(xt, pred_type="glm", link_approx="probit").detach().numpy()
        want_lml = peer.log_marginal_likelihood().item()
        la = dnn2gp.Laplace(model, "classification", subset_of_weights=ours,
                            hessian_structure="kron", prior_precision=0.7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            la.fit(x.numpy(), y.numpy())
        assert la.subset_of_weights == ours
        p = la(xt.numpy(), link_approx="probit")
        assert np.abs(p - want_p).max() < 1e-10, subset
        assert abs(la.log_marginal_likelihood() - want_lml) < 1e-8 * abs(want_lml), subset
