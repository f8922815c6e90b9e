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
    """Seeds the CPU generator before every test.

    Not ``torch.manual_seed``: that also seeds (lazily) the cuda/mps/xpu/mtia
    generators, queueing calls that record a stack trace (~0.6 ms per test
    under pytest, against ~3 us); seeding the CPU generator directly is the
    same for CPU tensors, the only ones these tests make.
    """
    torch.random.default_generator.manual_seed(0)
