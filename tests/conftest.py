"""Shared fixtures.

Every test that takes ``backend`` runs once per available CPU backend and,
on a machine with a GPU, once more on CUDA with the fastest CUDA backend
(``cuda`` when the extension was built with its CUDA kernels, else
``reference``). A CUDA run makes CUDA the default device for the test
(``with torch.device("cuda")``), so the tensors a test creates, and torch's
own ops it compares against, are on the GPU; with TF32 off, so that torch's
float32 convolutions are full float32 like torchconv's. Without a GPU the
CUDA parameters do not exist: nothing to skip, nothing fails.

They also run on the CUDA backend's sources compiled for the CPU
(``cuda-emulated``; see tests/cuda_emulation/emulated.py): the CUDA code's
arithmetic and host logic, checked without a GPU
(``TORCHCONV_TEST_CUDA_EMULATION=0`` leaves that out).

Tests that build tensors from a CPU ``torch.Generator`` move them with
:func:`to_test_device`.
"""

import contextlib
import os

import pytest
import torch
from torch.utils._pytree import tree_map

import torchconv
from torchconv._precision import full_float32

CPU_BACKENDS = torchconv.backends.available("cpu")
CUDA_BACKENDS = torchconv.backends.available("cuda")[:1] if torch.cuda.is_available() else []
# (device type, backend name); CPU ids stay the bare backend name.
DEVICE_BACKENDS = [("cpu", name) for name in CPU_BACKENDS] + [("cuda", name) for name in CUDA_BACKENDS]

# The core tests also run the CUDA backend's code compiled for the CPU
# (tests/cuda_emulation/), as backend "cuda-emulated", unless
# TORCHCONV_TEST_CUDA_EMULATION=0 or it cannot be built here (then
# tests/test_cuda_build.py says why).
EMULATION_ERROR = None
if os.environ.get("TORCHCONV_TEST_CUDA_EMULATION", "1") != "0":
    from cuda_emulation import emulated

    try:
        torchconv.backends.register(emulated.backend())
        DEVICE_BACKENDS.append(("cpu", "cuda-emulated"))
    except Exception as error:  # no compiler, or the sources do not compile
        EMULATION_ERROR = error


def _id(param):
    device, name = param
    return name if device == "cpu" else f"{device}-{name}"


@contextlib.contextmanager
def on_device(device: str, backend: str):
    """``backend`` in force; on CUDA also the default device, seeded, TF32 off."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torchconv.backends.use(backend))
        if device != "cpu":
            stack.enter_context(torch.device(device))
            stack.enter_context(full_float32())
            torch.cuda.manual_seed(0)
        yield


@pytest.fixture(params=DEVICE_BACKENDS, ids=_id)
def backend(request):
    """Runs the test with ``torchconv.backends.use(name)`` in force, per device and backend."""
    device, name = request.param
    with on_device(device, name):
        yield name


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Like ``backend``, CPU backends only: for tests of the registry's CPU behaviour."""
    with torchconv.backends.use(request.param):
        yield request.param


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"threads{n}")
def threads(request):
    """Runs the test with 1, 2 and 3 torch threads (the kernels' task
    splitting differs with each: fewer samples than threads, uneven blocks)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# The compiled kernels' CPU capability levels this machine can run (one
# placeholder when the extension is not built: the tests using it skip).
CAPABILITIES = torchconv.backends.cpp.supported_capabilities() if torchconv.backends.cpp.is_available() else ["none"]


@pytest.fixture(params=CAPABILITIES)
def capability(request):
    """Runs the test at each CPU capability level of the compiled kernels
    that this machine supports (csrc/cpu/capability.h): each level's kernel
    variants are tested wherever the CPU can run them."""
    if request.param == "none":
        yield None
        return
    with torchconv.backends.cpp.use_capability(request.param):
        yield request.param


def device_of_test() -> torch.device:
    """The device the running test creates tensors on (CUDA inside a CUDA run)."""
    return torch.get_default_device()


def to_test_device(tree):
    """Tensors in ``tree`` (nested lists/tuples/dicts) moved to the test's
    device as fresh leaves with the same requires_grad and strides; the tree
    itself is returned unchanged on the CPU."""
    device = device_of_test()
    if device.type == "cpu":
        return tree

    def move(value):
        if not isinstance(value, torch.Tensor):
            return value
        return value.detach().to(device).requires_grad_(value.requires_grad)

    return tree_map(move, tree)


@pytest.fixture(autouse=True)
def _seed():
    """Seeds the CPU generator before every test.

    Not ``torch.manual_seed``: that also seeds (lazily) the cuda/mps/xpu/mtia
    generators, queueing calls that record a stack trace (~0.6 ms per test
    under pytest, against ~3 us); seeding the CPU generator directly is the
    same for CPU tensors. CUDA runs seed the CUDA generator in ``backend``.
    """
    torch.random.default_generator.manual_seed(0)
