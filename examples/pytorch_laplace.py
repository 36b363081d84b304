"""A PyTorch user's network as a GP: train a small classifier, hand its state_dict to dnn2gp,
get the prior precision by the evidence, the GP predictive and the kernel.

    python examples/pytorch_laplace.py            # with torch if installed, else numpy

Without torch the same network is trained by full-batch gradient descent in numpy, so the
script (and the test that runs it) needs only numpy and dnn2gp.
"""

import numpy as np

import dnn2gp

ARCH = "2:dense16,tanh,dense3"  # torch: Linear(2, 16), Tanh(), Linear(16, 3)


def data(n=150, seed=0):
    """Three Gaussian blobs in the plane."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    return centres[y] + rng.normal(size=(n, 2)), y


def train_torch(x, y, delta):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(1500):
        opt.zero_grad()
        w2 = sum((p**2).sum() for p in net.parameters())
        loss = torch.nn.functional.cross_entropy(net(xt), yt, reduction="sum") + 0.5 * delta * w2
        loss.backward()
        opt.step()
    return net


def train_numpy(x, y, delta, steps=3000, lr=2e-3, seed=0):
    """The same network and loss (sum of cross-entropies + δ/2 ‖w‖²) by gradient descent."""
    rng = np.random.default_rng(seed)
    w0, b0 = rng.normal(scale=0.5, size=(16, 2)), np.zeros(16)
    w2, b2 = rng.normal(scale=0.5, size=(3, 16)), np.zeros(3)
    onehot = np.eye(3)[y]
    for _ in range(steps):
        h = np.tanh(x @ w0.T + b0)
        f = h @ w2.T + b2
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = p - onehot
        gh = (g @ w2) * (1 - h**2)
        w2 -= lr * (g.T @ h + delta * w2)
        b2 -= lr * (g.sum(0) + delta * b2)
        w0 -= lr * (gh.T @ x + delta * w0)
        b0 -= lr * (gh.sum(0) + delta * b0)
    return {"0.weight": w0, "0.bias": b0, "2.weight": w2, "2.bias": b2}


def main():
    x, y = data()
    try:
        state = train_torch(x, y, delta=1.0).state_dict()  # torch tensors go in as they are
        how = "torch"
    except ImportError:
        state = train_numpy(x, y, delta=1.0)
        how = "numpy"
    model = dnn2gp.Model(ARCH, state, likelihood="classification", prior_precision=1.0)
    la = dnn2gp.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
    la.fit(x, y)
    la.optimize_prior_precision(method="marglik")
    grid = np.array([[0.0, 0.0], [-2.0, 0.0], [6.0, 6.0]])
    probs = la(grid, link_approx="probit")
    kernel = la.kernel(grid)  # J(x) Σ J(x')ᵀ, (3, 3, K, K)
    print(f"trained with {how}; accuracy {np.mean(model(x).argmax(1) == y):.3f}")
    print(f"prior precision by the evidence: {la.prior_precision:.4f}")
    print(f"log marginal likelihood: {la.log_marginal_likelihood():.4f}")
    for point, p, k in zip(grid, probs, np.einsum("iikk->ik", kernel)):
        print(f"x = {point}: p = {np.round(p, 3)}, var f = {np.round(k, 3)}")
    return la


if __name__ == "__main__":
    main()
