"""laplace-torch's workflows as its users write them, run with `from dnn2gp.torch import Laplace`
and with laplace-torch itself on the same float64 module: the numbers agree where laplace-torch
is exact, and where it runs an optimiser (Adam on the evidence) ours is at the optimum.
laplace-torch's default backend (curvlinops) gives a float64 GGN only to about 2e-8 of its
largest entry (negative eigenvalues near −1e-4 where H ≈ 3e3); its BackPACK backend is exact
(2e-16), so the comparisons take that backend where BackPACK runs the network. Skipped without
torch and laplace-torch (`scripts/test --torch` runs them)."""

import math
from copy import deepcopy
import warnings

import numpy as np
import pytest


def _sinusoid(torch, n=150):
    """laplace-torch's README regression data: sin(x) + 0.3 ε on [0, 8], one batch."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(711)
    x = (torch.rand(n, dtype=torch.float64) * 8).unsqueeze(-1)
    y = torch.sin(x) + torch.randn_like(x) * 0.3
    return x, y, DataLoader(TensorDataset(x, y), batch_size=n)


def _mlp(torch, train=None, hidden=50, outputs=1, inputs=1, epochs=300):
    torch.manual_seed(711)
    m = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.Tanh(),
                            torch.nn.Linear(hidden, outputs)).double()
    if train is not None:
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        loss = torch.nn.MSELoss() if outputs == 1 else torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            for x, y in train:
                opt.zero_grad()
                loss(m(x), y).backward()
                opt.step()
    return m


def _exact(laplace):
    """laplace-torch's Laplace with its exact (BackPACK) backend."""
    def make(*args, **kwargs):
        return laplace.Laplace(*args, backend=laplace.curvature.BackPackGGN, **kwargs)
    return make


def _close(a, b, tol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)
    assert err < tol, err


def _detach(t):
    return t.detach().cpu().numpy()


def test_the_readme_regression_runs_with_one_import_changed(torch, laplace):
    """All weights, full GGN, the prior and σ by 100 Adam steps through
    `log_marginal_likelihood(log_prior.exp(), log_sigma.exp())`, as laplace-torch's README:
    our evidence's gradient is exact, so the two runs take the same steps."""
    from dnn2gp.torch import Laplace

    x, y, loader = _sinusoid(torch)
    model = _mlp(torch, [(x, y)])
    x_test = torch.linspace(-5, 13, 50, dtype=torch.float64).unsqueeze(-1)
    runs = {}
    for name, cls in [("peer", _exact(laplace)), ("ours", Laplace)]:
        la = cls(model, "regression", subset_of_weights="all", hessian_structure="full")
        la.fit(loader)
        log_prior = torch.ones(1, dtype=torch.float64, requires_grad=True)
        log_sigma = torch.ones(1, dtype=torch.float64, requires_grad=True)
        hyper = torch.optim.Adam([log_prior, log_sigma], lr=1e-1)
        grads = None
        for i in range(100):
            hyper.zero_grad()
            neg_marglik = -la.log_marginal_likelihood(log_prior.exp(), log_sigma.exp())
            neg_marglik.backward()
            if i == 0:
                grads = (log_prior.grad.item(), log_sigma.grad.item())
            hyper.step()
        f_mu, f_var = la(x_test)
        assert isinstance(f_mu, torch.Tensor) and f_var.shape == (50, 1, 1)
        runs[name] = dict(grads=grads, prior=la.prior_precision.item(),
                          sigma=la.sigma_noise.item(),
                          lml=la.log_marginal_likelihood().item(),
                          f_mu=_detach(f_mu), f_var=_detach(f_var))
    peer, ours = runs["peer"], runs["ours"]
    _close(ours["grads"], peer["grads"], 1e-9)
    for key in ("prior", "sigma", "lml"):
        _close(ours[key], peer[key], 1e-8)
    _close(ours["f_mu"], peer["f_mu"], 1e-12)
    _close(ours["f_var"], peer["f_var"], 1e-8)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_every_term_of_the_evidence_equals_laplace_torchs(torch, laplace, structure):
    """log_likelihood, log_det_ratio, scatter and their evidence at a prior per tensor, σ and a
    temperature set after the fit; posterior_precision / variance / covariance where
    laplace-torch has them; the GLM predictive, marginal and joint."""
    from dnn2gp.torch import Laplace

    x, y, loader = _sinusoid(torch, n=60)
    model = _mlp(torch, [(x, y)], hidden=12)
    las = []
    for cls in (_exact(laplace), Laplace):
        la = cls(model, "regression", subset_of_weights="all", hessian_structure=structure)
        la.fit(loader)
        la.prior_precision = torch.tensor([0.5, 2.0, 1.5, 3.0], dtype=torch.float64)
        la.sigma_noise = 0.4
        la.temperature = 0.7
        las.append(la)
    peer, ours = las
    for term in ("log_likelihood", "log_det_ratio", "scatter"):
        _close(_detach(getattr(ours, term)), _detach(getattr(peer, term)), 1e-10)
    _close(_detach(ours.log_marginal_likelihood()), _detach(peer.log_marginal_likelihood()), 1e-10)
    identity = ours.log_likelihood - 0.5 * (ours.log_det_ratio + ours.scatter)
    _close(_detach(ours.log_marginal_likelihood()), _detach(identity), 1e-13)
    _close(_detach(ours.loss), _detach(peer.loss), 1e-12)
    if structure != "kron":
        _close(_detach(ours.posterior_precision), _detach(peer.posterior_precision), 1e-10)
        _close(_detach(ours.H), _detach(peer.H), 1e-10)
    if structure == "full":
        _close(_detach(ours.posterior_covariance), _detach(peer.posterior_covariance), 1e-9)
    if structure == "diag":
        _close(_detach(ours.posterior_variance), _detach(peer.posterior_variance), 1e-10)
    x_test = torch.linspace(-2, 10, 7, dtype=torch.float64).unsqueeze(-1)
    for joint in (False, True):
        (fm, fv), (pm, pv) = ours(x_test, joint=joint), peer(x_test, joint=joint)
        _close(_detach(fm), _detach(pm), 1e-12)
        _close(_detach(fv), _detach(pv), 1e-9)
    js, f = peer.backend.jacobians(x_test)
    _close(_detach(ours.backend.jacobians(x_test)[1]), _detach(f), 1e-12)
    _close(_detach(ours.functional_variance(js)), _detach(peer.functional_variance(js)), 1e-9)
    _close(_detach(ours.functional_covariance(js)), _detach(peer.functional_covariance(js)),
           1e-9)
    _close(_detach(ours.jacobians(x_test)[0]), _detach(js), 1e-12)


def _digits(torch, n_train=600, n_val=300):
    """Small images (8×8 digits from scikit-learn's set, in the shared data) for a CNN."""
    import os
    from torch.utils.data import DataLoader, TensorDataset

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data",
                        "digits", "digits.csv.gz")
    if not os.path.exists(path):
        pytest.skip("the shared digits data is not beside the repository")
    raw = np.loadtxt(path, delimiter=",")
    x = torch.tensor(raw[:, :64].reshape(-1, 1, 8, 8) / 16.0)
    y = torch.tensor(raw[:, 64], dtype=torch.long)
    tr = TensorDataset(x[:n_train], y[:n_train])
    va = TensorDataset(x[n_train:n_train + n_val], y[n_train:n_train + n_val])
    return DataLoader(tr, batch_size=100), DataLoader(va, batch_size=100), x[-50:]


def _cnn(torch, loader, epochs=15):
    torch.manual_seed(0)
    nn = torch.nn
    m = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(54, 20), nn.ReLU(), nn.Linear(20, 10)).double()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(xb), yb).backward()
            opt.step()
    return m


def test_the_calibration_workflow_a_cnn_from_a_dataloader(torch, laplace):
    """laplace-torch's MNIST workflow on a CNN: last-layer KFAC by default from a DataLoader,
    the prior by the evidence, probit probabilities; also the bridge links and all weights
    with a diagonal GGN."""
    from dnn2gp.torch import Laplace

    train, val, x_test = _digits(torch)
    model = _cnn(torch, train)
    peer, ours = _exact(laplace)(model, "classification"), Laplace(model, "classification")
    for la in (peer, ours):
        la.fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.optimize_prior_precision(method="marglik", pred_type="glm")
    ours.optimize_prior_precision(method="marglik", pred_type="glm")
    # Ours is the evidence's maximum: laplace-torch's 100 Adam steps end no higher.
    delta_ours, delta_peer = ours.prior_precision.item(), peer.prior_precision.item()
    at = lambda la, d: la.log_marginal_likelihood(torch.tensor([d], dtype=torch.float64)).item()
    assert at(peer, delta_ours) >= at(peer, delta_peer) - 1e-9
    _close(at(ours, delta_ours), at(peer, delta_ours), 1e-10)
    for link in ("probit", "bridge", "bridge_norm"):
        _close(_detach(ours(x_test, link_approx=link)), _detach(peer(x_test, link_approx=link)),
               1e-9)
    assert ours.n_params == peer.n_params == 210
    # All weights, diagonal GGN.
    peer = _exact(laplace)(model, "classification", subset_of_weights="all",
                           hessian_structure="diag", prior_precision=2.0)
    ours = Laplace(model, "classification", subset_of_weights="all", hessian_structure="diag",
                   prior_precision=2.0)
    for la in (peer, ours):
        la.fit(train)
    _close(_detach(ours.posterior_precision), _detach(peer.posterior_precision), 1e-10)
    _close(_detach(ours(x_test)), _detach(peer(x_test)), 1e-9)


def test_gridsearch_on_a_validation_loader_picks_laplace_torchs_prior(torch, laplace):
    from dnn2gp.torch import Laplace

    train, val, _ = _digits(torch)
    model = _cnn(torch, train)

    def nll(probs, y):
        return -torch.log(probs[torch.arange(len(y)), y]).mean()

    chosen = []
    for cls in (_exact(laplace), Laplace):
        la = cls(model, "classification")
        la.fit(train)
        la.optimize_prior_precision(method="gridsearch", pred_type="glm", val_loader=val,
                                    loss=nll, grid_size=21, log_prior_prec_min=-2,
                                    log_prior_prec_max=2)
        chosen.append(la.prior_precision.item())
    _close(chosen[1], chosen[0], 1e-12)
    # Without a loss: the mean NLL (laplace-torch's RunningNLLMetric, reset at every value).
    la = Laplace(model, "classification")
    la.fit(train)
    la.optimize_prior_precision(method="gridsearch", val_loader=val, grid_size=21,
                                log_prior_prec_min=-2, log_prior_prec_max=2)
    _close(la.prior_precision.item(), chosen[0], 1e-12)


def test_the_networks_predictive_and_the_samples_agree_in_distribution(torch, laplace):
    """pred_type='nn' (the network at weight draws) and predictive_samples: with 4,000 draws,
    ours and laplace-torch's agree to their Monte Carlo error; torch.manual_seed repeats ours."""
    from dnn2gp.torch import Laplace

    train, _, x_test = _digits(torch)
    model = _cnn(torch, train)
    peer, ours = laplace.Laplace(model, "classification"), Laplace(model, "classification")
    for la in (peer, ours):
        la.fit(train)
        la.prior_precision = 5.0
    torch.manual_seed(1)
    a = _detach(ours(x_test[:10], pred_type="nn", link_approx="mc", n_samples=4000))
    b = _detach(peer(x_test[:10], pred_type="nn", link_approx="mc", n_samples=4000))
    assert np.abs(a - b).max() < 0.03
    torch.manual_seed(1)
    again = _detach(ours(x_test[:10], pred_type="nn", link_approx="mc", n_samples=4000))
    assert np.array_equal(a, again)
    s = ours.predictive_samples(x_test[:10], n_samples=4000)
    assert s.shape == (4000, 10, 10)
    _close(_detach(s.mean(0)), _detach(peer(x_test[:10], link_approx="mc", n_samples=4000)), 0.05)
    w = ours.sample(2000)
    assert w.shape == (2000, ours.n_params)
    _close(_detach(w.var(0)), _detach(peer.sample(2000).var(0)), 0.3)


def test_parameters_without_grad_are_held_as_laplace_torch_holds_them(torch, laplace):
    """(BackPACK refuses networks with parameters held, so the peer runs its default backend,
    to its 2e-8.)"""
    from dnn2gp.torch import Laplace

    x, y, loader = _sinusoid(torch, n=60)
    model = _mlp(torch, [(x, y)], hidden=10)
    model[0].requires_grad_(False)  # a whole layer (half a layer is refused, naming it)
    peer = laplace.Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
    ours = Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
    for la in (peer, ours):
        la.fit(loader)
    assert ours.n_params == peer.n_params == 10 + 1
    _close(_detach(ours.mean), _detach(peer.mean), 1e-300)
    _close(_detach(ours.posterior_precision), _detach(peer.posterior_precision), 1e-7)
    _close(_detach(ours.log_marginal_likelihood()), _detach(peer.log_marginal_likelihood()), 1e-7)


def test_marglik_training_holds_the_hyperparameters_at_the_evidence_maximum(torch, laplace):
    """Immer et al.'s marglik training: the same first epoch as laplace-torch's (the same
    loss with the same initial hyperparameters), then at each estimate the prior and σ at the
    evidence's maximum (laplace-torch takes 10 Adam steps towards it)."""
    from laplace import marglik_training as peer_training

    from dnn2gp.torch import marglik_training

    x, y, loader = _sinusoid(torch, n=80)
    runs = []
    for train in (peer_training, marglik_training):
        model = _mlp(torch, hidden=16)
        la, model, margliks, losses = train(model, loader, likelihood="regression",
                                            hessian_structure="full", n_epochs=30,
                                            optimizer_kwargs={"lr": 1e-2},
                                            prior_structure="layerwise", marglik_frequency=10)
        runs.append((la, losses))
    (peer, peer_losses), (ours, losses) = runs
    _close(losses[0], peer_losses[0], 1e-12)
    assert len(losses) == 30 and ours.n_params == peer.n_params
    d_prior, d_sigma = ours._fitted().log_marginal_likelihood_gradient()
    assert np.abs(d_prior).max() < 1e-6 and abs(d_sigma) < 1e-6
    # At laplace-torch's hyperparameters, on our network, the evidence is no higher.
    best = ours.log_marginal_likelihood().item()
    assert ours.log_marginal_likelihood(peer.prior_precision, peer.sigma_noise).item() <= best + 1e-9


def test_fit_takes_tensors_float32_and_one_hot_labels(torch, laplace):
    """fit(X, y) with tensors; a float32 module gives float32 tensors, its forward passes run
    in float32 as laplace-torch's (the float64 module's in float64); one-hot rows are the labels
    they encode."""
    from dnn2gp.torch import Laplace

    train, _, x_test = _digits(torch)
    model = _cnn(torch, train, epochs=3)
    xs, ys = zip(*train)
    x, y = torch.cat(xs), torch.cat(ys)
    a = Laplace(model, "classification")
    a.fit(train)
    b = Laplace(model, "classification")
    b.fit(x, torch.nn.functional.one_hot(y, 10).double())
    _close(_detach(b(x_test)), _detach(a(x_test)), 1e-12)
    c = Laplace(deepcopy(model).float(), "classification")
    c.fit(x.float(), y)
    p = c(x_test.float())
    assert p.dtype == torch.float32
    assert (a._la.dtype, c._la.dtype) == ("f64", "f32")
    # bfloat16 inputs (numpy has no such dtype) are widened exactly.
    assert torch.equal(c(x_test.bfloat16()), c(x_test.bfloat16().float()))
    assert 0 < np.abs(_detach(p) - _detach(a(x_test))).max() < 1e-4


def test_what_laplace_torch_accepts_and_we_do_not_is_refused_with_the_reason(torch, laplace):
    from dnn2gp.torch import Laplace

    x, y, loader = _sinusoid(torch, n=20)
    model = _mlp(torch, hidden=4)
    with pytest.raises(ValueError, match="LongTensor"):
        Laplace(model, "regression", subset_of_weights="subnetwork", hessian_structure="full",
                subnetwork_indices=torch.ones(3))
    with pytest.raises(ValueError, match="empirical Fisher"):
        Laplace(model, "regression", backend=laplace.curvature.CurvlinopsEF)
    with pytest.raises(ValueError, match="zero prior mean"):
        Laplace(model, "regression", prior_mean=1.0)
    with pytest.raises(ValueError, match="'last'"):
        Laplace(model, "regression", subset_of_weights="last")
    la = Laplace(model, "regression", subset_of_weights="all", hessian_structure="kron")
    with pytest.raises(AttributeError, match="fit"):
        la(x)
    la.fit(loader)
    with pytest.raises(ValueError, match="gridsearch requires"):
        la.optimize_prior_precision(method="gridsearch")
    with pytest.raises(ValueError, match="'diag'"):
        la.optimize_prior_precision(prior_structure="diag")
    with pytest.raises(ValueError, match="Only mc"):
        la(x, pred_type="nn")
    with pytest.raises(ValueError, match="factored"):
        la.posterior_precision
    assert math.isfinite(la.log_marginal_likelihood().item())


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_subnetwork_laplace_equals_laplace_torchs(torch, laplace, structure):
    """laplace-torch's subnetwork Laplace (weights chosen by their index in
    parameters_to_vector(model.parameters())): the same precision, evidence, predictive and
    Jacobian-variance; draws move the chosen weights only."""
    from dnn2gp.torch import Laplace

    train, _, x_test = _digits(torch)
    model = _cnn(torch, train, epochs=5)
    n = sum(p.numel() for p in model.parameters())
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:40]
    peer = _exact(laplace)(model, "classification", subset_of_weights="subnetwork",
                           hessian_structure=structure, subnetwork_indices=idx,
                           prior_precision=0.5)
    ours = Laplace(model, "classification", subset_of_weights="subnetwork",
                   hessian_structure=structure, subnetwork_indices=idx, prior_precision=0.5)
    for la in (peer, ours):
        la.fit(train)
    assert ours.n_params == peer.n_params == n
    _close(_detach(ours.posterior_precision), _detach(peer.posterior_precision), 1e-10)
    _close(_detach(ours.log_marginal_likelihood()), _detach(peer.log_marginal_likelihood()), 1e-10)
    _close(_detach(ours(x_test)), _detach(peer(x_test)), 1e-9)
    _close(_detach(ours.mean), _detach(peer.mean), 1e-300)
    w = ours.sample(5)
    moved = (w != ours.mean).any(0)
    assert set(torch.nonzero(moved).reshape(-1).tolist()) <= set(idx.tolist())
    ours.optimize_prior_precision()
    d = ours._fitted().log_marginal_likelihood_gradient()[0]
    assert abs(d) < 1e-8
    with pytest.raises(ValueError, match="full or diagonal"):
        Laplace(model, "classification", subset_of_weights="subnetwork",
                hessian_structure="kron", subnetwork_indices=idx)


def test_a_forward_that_branches_on_the_data_is_refused_not_fitted_along_one_branch(torch):
    """torch's exporter traces the branch the example takes: the tracer's warning is passed
    on, and a batch whose outputs differ from the module's stops the fit, naming the cause."""
    from torch.utils.data import DataLoader, TensorDataset

    from dnn2gp.torch import Laplace

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x):
            h = self.lin(x)
            return torch.relu(h) if x.sum() > 0 else torch.tanh(h)

    torch.manual_seed(0)
    x = torch.cat([torch.ones(16, 3), -torch.ones(16, 3)])
    la = Laplace(Branchy(), "classification", subset_of_weights="all", hessian_structure="full")
    with pytest.warns(RuntimeWarning, match="branch"), pytest.raises(ValueError,
                                                                       match="control flow"):
        la.fit(DataLoader(TensorDataset(x, torch.zeros(32, dtype=torch.long)), batch_size=16))


def test_an_embedding_is_refused_naming_it(torch):
    import dnn2gp

    net = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(),
                              torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match="nn.Embedding"):
        dnn2gp.Model.from_torch(net, torch.randint(0, 10, (3, 2)))
