"""laplace-torch's regression example (its `examples/regression_example.py`) with one line
changed: `from laplace import Laplace, marglik_training` became the import below. The data
helper of laplace-torch's examples folder is written out here; the plots are left out (their
numbers are printed instead), and `backend=BackPackGGN` is left out of `marglik_training`
(dnn2gp computes the exact GGN whatever the backend).

    python examples/laplace_torch_regression.py      # needs torch and onnx

Its output is in examples/laplace_torch_regression.txt.
"""

import numpy as np
import torch
import torch.utils.data as data_utils

from dnn2gp.torch import Laplace, marglik_training  # was: from laplace import …

n_epochs = 1000
torch.manual_seed(711)


def get_sinusoid_example(n_data=150, sigma_noise=0.3, batch_size=150):
    # create simple sinusoid data set
    X_train = (torch.rand(n_data) * 8).unsqueeze(-1)
    y_train = torch.sin(X_train) + torch.randn_like(X_train) * sigma_noise
    train_loader = data_utils.DataLoader(
        data_utils.TensorDataset(X_train, y_train), batch_size=batch_size
    )
    X_test = torch.linspace(-5, 13, 500).unsqueeze(-1)
    return X_train, y_train, train_loader, X_test


# create toy regression data
X_train, y_train, train_loader, X_test = get_sinusoid_example(sigma_noise=0.3)


# construct single layer neural network
def get_model():
    torch.manual_seed(711)
    return torch.nn.Sequential(
        torch.nn.Linear(1, 50), torch.nn.Tanh(), torch.nn.Linear(50, 1)
    )


model = get_model()

# train MAP
criterion = torch.nn.MSELoss()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for i in range(n_epochs):
    for X, y in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(X), y)
        loss.backward()
        optimizer.step()

la = Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
la.fit(train_loader)

log_prior, log_sigma = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
hyper_optimizer = torch.optim.Adam([log_prior, log_sigma], lr=1e-1)
for i in range(n_epochs):
    hyper_optimizer.zero_grad()
    neg_marglik = -la.log_marginal_likelihood(log_prior.exp(), log_sigma.exp())
    neg_marglik.backward()
    hyper_optimizer.step()

print(
    f"sigma={la.sigma_noise.item():.2f}",
    f"prior precision={la.prior_precision.item():.2f}",
)

x = X_test.flatten().cpu().numpy()
f_mu, f_var = la(X_test)
f_mu = f_mu.squeeze().detach().cpu().numpy()
f_sigma = f_var.squeeze().sqrt().cpu().numpy()
pred_std = np.sqrt(f_sigma**2 + la.sigma_noise.item() ** 2)
# (laplace-torch plots here; the numbers instead:)
for at in (0, 125, 250, 375, 499):
    print(f"x={x[at]:6.2f}  f_mu={f_mu[at]:7.3f}  pred_std={pred_std[at]:.3f}")

# Marginal-likelihood training (Immer et al. 2021)
model = get_model()
la, model, margliks, losses = marglik_training(
    model=model,
    train_loader=train_loader,
    likelihood="regression",
    hessian_structure="full",
    n_epochs=n_epochs,
    optimizer_kwargs={"lr": 1e-2},
    prior_structure="scalar",
)

print(
    f"sigma={la.sigma_noise.item():.2f}",
    f"prior precision={la.prior_precision.numpy()}",
)

f_mu, f_var = la(X_test)
f_mu = f_mu.squeeze().detach().cpu().numpy()
f_sigma = f_var.squeeze().sqrt().cpu().numpy()
pred_std = np.sqrt(f_sigma**2 + la.sigma_noise.item() ** 2)
for at in (0, 125, 250, 375, 499):
    print(f"x={x[at]:6.2f}  f_mu={f_mu[at]:7.3f}  pred_std={pred_std[at]:.3f}")
