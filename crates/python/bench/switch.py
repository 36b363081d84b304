"""laplace-torch's workflows timed with `from laplace import Laplace` and with
`from dnn2gp.torch import Laplace`, the script otherwise the same, in one process and one
sitting (rounds interleaved, the first call of each library, which imports its modules, left
out). One JSON line per workflow and library: seconds per phase, and the numbers compared.

    python crates/python/bench/switch.py [--rounds 3] [--workflows readme,mnist,...]

Workflows (laplace-torch's documentation and README):
- `readme`: its regression example: sin data (150), MLP 1-50-1 tanh, all weights, full,
  1,000 Adam steps on log δ and log σ through `log_marginal_likelihood`, the GLM predictive
  at 500 points.
- `mnist`: its calibration workflow on B6's LeNet-5 (`../shared/baselines/data`): last-layer
  KFAC (the default) fitted from a DataLoader of MNIST's 60,000 training images, the prior by
  marglik, probit probabilities on 10,000 test images.
- `gridsearch`: the same, the prior by gridsearch (21 values) on 2,000 validation images.
- `nn`: the same posterior, `pred_type="nn"` with 100 weight draws on 2,000 test images.
- `subnetwork`: full subnetwork Laplace over 1,000 of LeNet-5's weights (chosen at random)
  on 10,000 training images, marglik, probit on 2,000 test images.
- `marglik_training`: `marglik_training` of the MLP 1-50-1 on the sin data, full GGN,
  scalar prior, 300 epochs, the evidence every 10.

Both run the module in float32 as a user's (laplace-torch computes in float32; dnn2gp in
float64 whatever the module's dtype). Peer: laplace-torch's default backend.
"""

import argparse
import gzip
import json
import os
import pathlib
import struct
import sys
import time
import warnings

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]
SHARED = ROOT.parent / "shared"
warnings.filterwarnings("ignore")


def idx(path):
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def lenet5():
    n = torch.nn
    m = n.Sequential(n.Conv2d(1, 6, 5), n.ReLU(), n.MaxPool2d(2), n.Conv2d(6, 16, 5), n.ReLU(),
                     n.MaxPool2d(2), n.Flatten(), n.Linear(256, 120), n.ReLU(), n.Linear(120, 84),
                     n.ReLU(), n.Linear(84, 10))
    from safetensors.torch import load_file
    m.load_state_dict(load_file(SHARED / "baselines" / "data" / "b6_seed0_lenet5.safetensors"))
    return m.eval()


def mnist():
    m = SHARED / "data" / "mnist"
    x = torch.tensor(idx(m / "train-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    y = torch.tensor(idx(m / "train-labels-idx1-ubyte.gz"), dtype=torch.long)
    xt = torch.tensor(idx(m / "t10k-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    yt = torch.tensor(idx(m / "t10k-labels-idx1-ubyte.gz"), dtype=torch.long)
    return x, y, xt, yt


def loader(x, y, batch=256):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def sinusoid():
    torch.manual_seed(711)
    x = (torch.rand(150) * 8).unsqueeze(-1)
    y = torch.sin(x) + torch.randn_like(x) * 0.3
    return x, y, loader(x, y, 150), torch.linspace(-5, 13, 500).unsqueeze(-1)


def mlp(x=None, y=None):
    torch.manual_seed(711)
    m = torch.nn.Sequential(torch.nn.Linear(1, 50), torch.nn.Tanh(), torch.nn.Linear(50, 1))
    if x is not None:
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(1000):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()
    return m


class Timer:
    def __init__(self):
        self.phases = {}

    def __call__(self, name):
        timer = self

        class Phase:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *a):
                timer.phases[name] = timer.phases.get(name, 0) + time.perf_counter() - self.t

        return Phase()


def readme(Laplace, ctx):
    x, y, train, x_test = ctx["sin"]
    model = ctx["mlp"]
    t = Timer()
    with t("fit"):
        la = Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
        la.fit(train)
    with t("marglik"):
        log_prior, log_sigma = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
        hyper = torch.optim.Adam([log_prior, log_sigma], lr=1e-1)
        for _ in range(1000):
            hyper.zero_grad()
            neg = -la.log_marginal_likelihood(log_prior.exp(), log_sigma.exp())
            neg.backward()
            hyper.step()
    with t("predict"):
        f_mu, f_var = la(x_test)
    return t.phases, {"sigma": la.sigma_noise.item(), "prior": la.prior_precision.item(),
                      "f_var": f_var.reshape(-1).detach().double().numpy()}


def mnist_workflow(Laplace, ctx, method="marglik"):
    x, y, xt, yt = ctx["mnist"]
    t = Timer()
    with t("fit"):
        la = Laplace(ctx["lenet"], "classification")
        la.fit(loader(x, y))
    with t("prior"):
        if method == "marglik":
            la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit")
        else:
            la.optimize_prior_precision(method="gridsearch", pred_type="glm",
                                        val_loader=loader(xt[8000:], yt[8000:], 500),
                                        grid_size=21, link_approx="probit")
    with t("predict"):
        p = torch.cat([la(xt[i:i + 500], link_approx="probit") for i in range(0, 8000 if method != "marglik" else 10000, 500)])
    return t.phases, {"prior": la.prior_precision.item(), "p": p.double().numpy()}


def nn_workflow(Laplace, ctx):
    x, y, xt, yt = ctx["mnist"]
    la = Laplace(ctx["lenet"], "classification")
    la.fit(loader(x, y))
    la.prior_precision = 40.0
    t = Timer()
    with t("predict"):
        p = torch.cat([la(xt[i:i + 500], pred_type="nn", link_approx="mc", n_samples=100)
                       for i in range(0, 2000, 500)])
    return t.phases, {"p": p.double().numpy()}


def subnetwork(Laplace, ctx):
    x, y, xt, yt = ctx["mnist"]
    model = ctx["lenet"]
    n = sum(p.numel() for p in model.parameters())
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:1000]
    t = Timer()
    with t("fit"):
        la = Laplace(model, "classification", subset_of_weights="subnetwork",
                     hessian_structure="full", subnetwork_indices=idx)
        la.fit(loader(x[:10000], y[:10000]))
    with t("prior"):
        la.optimize_prior_precision(method="marglik", pred_type="glm")
    with t("predict"):
        p = torch.cat([la(xt[i:i + 500]) for i in range(0, 2000, 500)])
    return t.phases, {"prior": la.prior_precision.item(), "p": p.double().numpy()}


def training(lib, ctx):
    x, y, train, x_test = ctx["sin"]
    if lib == "laplace":
        from laplace import marglik_training
    else:
        from dnn2gp.torch import marglik_training
    t = Timer()
    with t("train"):
        la, model, margliks, losses = marglik_training(
            mlp(), train, likelihood="regression", hessian_structure="full", n_epochs=300,
            optimizer_kwargs={"lr": 1e-2}, prior_structure="scalar", marglik_frequency=10)
    return t.phases, {"neg_marglik": margliks[-1], "loss": losses[-1],
                      "sigma": la.sigma_noise.item(), "prior": la.prior_precision.item()}


WORKFLOWS = {
    "readme": readme,
    "mnist": mnist_workflow,
    "gridsearch": lambda L, c: mnist_workflow(L, c, "gridsearch"),
    "nn": nn_workflow,
    "subnetwork": subnetwork,
    "marglik_training": None,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workflows", default=",".join(WORKFLOWS))
    ap.add_argument("--libraries", default="laplace,dnn2gp",
                    help="which to run (laplace-torch runs out of memory on `subnetwork`)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    from laplace import Laplace as Peer

    from dnn2gp.torch import Laplace as Ours

    x, y, train, x_test = sinusoid()
    ctx = {"sin": (x, y, train, x_test), "mlp": mlp(x, y)}
    wanted = a.workflows.split(",")
    if set(wanted) & {"mnist", "gridsearch", "nn", "subnetwork"}:
        ctx["mnist"], ctx["lenet"] = mnist(), lenet5()
    # The first call of each library imports its modules (torch.onnx; curvlinops): left out.
    for L in (Peer, Ours):
        readme(L, ctx)
    for name in wanted:
        for r in range(a.rounds):
            out = {}
            for lib, L in (("laplace", Peer), ("dnn2gp", Ours)):
                if lib not in a.libraries.split(","):
                    continue
                if name == "marglik_training":
                    phases, numbers = training(lib, ctx)
                else:
                    phases, numbers = WORKFLOWS[name](L, ctx)
                out[lib] = numbers
                print(json.dumps({"workflow": name, "round": r, "library": lib,
                                  "total_s": round(sum(phases.values()), 4),
                                  **{k: round(v, 4) for k, v in phases.items()}}), flush=True)
            if len(out) < 2:
                continue
            a_, b_ = out["laplace"], out["dnn2gp"]
            diff = {k: float(np.abs(np.asarray(a_[k]) - np.asarray(b_[k])).max())
                    for k in a_ if k in b_}
            print(json.dumps({"workflow": name, "round": r, "max_abs_difference": diff}),
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
