"""What the tests share: torch, where a test needs it."""

import os

import pytest


@pytest.fixture
def torch():
    """torch, or a skip without it; under `scripts/test --torch` (DNN2GP_REQUIRE_TORCH) a
    missing torch fails the test instead."""
    if os.environ.get("DNN2GP_REQUIRE_TORCH"):
        import torch

        return torch
    return pytest.importorskip("torch")


@pytest.fixture
def laplace(torch):
    """laplace-torch (the peer the torch API is compared with), or a skip without it; under
    `scripts/test --torch` a missing one fails the test."""
    if os.environ.get("DNN2GP_REQUIRE_TORCH"):
        import laplace

        return laplace
    return pytest.importorskip("laplace")
