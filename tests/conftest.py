"""Shared fixtures: every test that takes ``backend`` runs once per available CPU backend."""

import pytest
import torch

import torchconv

CPU_BACKENDS = torchconv.backends.available("cpu")


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    """Runs the test with ``torchconv.backends.use(name)`` in force, for each CPU backend."""
    with torchconv.backends.use(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
