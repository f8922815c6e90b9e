"""The backend registry: torchconv.backends.

Precedence: the innermost ``use(name)`` block, then the TORCHCONV_BACKEND
environment variable, then the highest-priority backend available for the
device. Fake backends registered here are removed from the registry in a
``finally``.

Tests that check what runs *by default* or *by the environment variable*
cannot take the ``backend`` fixture (its ``use()`` block would take
precedence over both); the tests that select with ``use()`` take it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

import torchconv
from torchconv import backends
from torchconv.backends import reference

ENV = "TORCHCONV_BACKEND"
KERNEL_NAMES = reference.__all__


@contextlib.contextmanager
def temporary(backend: backends.Backend):
    """Registers ``backend`` for the duration of the block, then removes it
    (restoring whatever it replaced)."""
    previous = backends.registered().get(backend.name)
    backends.register(backend)
    try:
        yield backend
    finally:
        if previous is None:
            backends._REGISTRY.pop(backend.name, None)
        else:
            backends.register(previous)


def counting_kernels():
    """The reference kernels, each counting its calls in ``.calls``."""
    calls = Counter()

    def wrap(name):
        fn = getattr(reference, name)

        def kernel(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return kernel

    return SimpleNamespace(calls=calls, **{name: wrap(name) for name in KERNEL_NAMES})


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert backends.chosen() is None, "a use() block leaked into this test"


def _all_ops():
    """Runs every torchconv op forward and backward."""
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = torchconv.conv2d(x, w, padding=1)
    y = torchconv.conv_transpose2d(y, w)  # 4 -> 3 channels
    y = torchconv.max_pool2d(y, 2)
    y = torchconv.avg_pool2d(y, 2)
    y.sum().backward()
    return y


# ---------------------------------------------------------------- listing


def test_reference_is_registered_and_available():
    assert "reference" in backends.registered()
    assert "reference" in backends.available("cpu")
    assert "reference" in backends.available(torch.device("cpu"))
    assert "reference" in backends.available("cpu:0")
    assert backends.ENV_VAR == ENV


def test_registered_returns_a_copy():
    listing = backends.registered()
    listing.pop("reference")
    assert "reference" in backends.registered()


def test_available_is_sorted_by_priority():
    names = backends.available("cpu")
    registry = backends.registered()
    priorities = [registry[n].priority for n in names]
    assert priorities == sorted(priorities, reverse=True)
    for name, b in registry.items():
        assert (name in names) == ("cpu" in b.devices and b.is_available())


# ---------------------------------------------------------------- use()


def test_use_sets_current_nests_and_restores(cpu_backend):
    # The fixture's own use() block is in force.
    assert backends.current("cpu") == cpu_backend
    with temporary(backends.Backend("_test_other", counting_kernels(), devices=("cpu",), priority=-50)):
        with backends.use("_test_other"):
            assert backends.current("cpu") == "_test_other"
            with backends.use("reference"):
                assert backends.current("cpu") == "reference"
                with backends.use("_test_other"):
                    assert backends.current() == "_test_other"
                assert backends.current("cpu") == "reference"
            assert backends.current("cpu") == "_test_other"
        assert backends.current("cpu") == cpu_backend


def test_use_restores_after_an_exception(cpu_backend):
    with temporary(backends.Backend("_test_other", counting_kernels(), devices=("cpu",), priority=-50)):
        with pytest.raises(KeyError):
            with backends.use("_test_other"):
                raise KeyError("boom")
        assert backends.current("cpu") == cpu_backend


def test_use_runs_the_chosen_kernels(cpu_backend):
    kernels = counting_kernels()
    with temporary(backends.Backend("_test_counting", kernels, devices=("cpu",), priority=-50)):
        y_ref = None
        with backends.use("reference"):
            torch.manual_seed(0)
            y_ref = _all_ops()
        assert sum(kernels.calls.values()) == 0
        with backends.use("_test_counting"):
            torch.manual_seed(0)
            y = _all_ops()
        torch.testing.assert_close(y, y_ref)
        # forward and backward of every op
        assert set(kernels.calls) == set(KERNEL_NAMES), kernels.calls
        # and nothing after the block
        before = sum(kernels.calls.values())
        _all_ops()
        assert sum(kernels.calls.values()) == before


@pytest.mark.parametrize("name", ["nope", "", "REFERENCE", None, 3])
def test_use_rejects_unknown_names(name):
    with pytest.raises(ValueError, match=r"unknown backend .*registered backends are \[.*'reference'.*\]"):
        with backends.use(name):
            pass  # pragma: no cover
    assert backends.chosen() is None


def test_use_error_names_every_registered_backend():
    with temporary(backends.Backend("_test_listed", counting_kernels(), devices=("cpu",))):
        with pytest.raises(ValueError) as info:
            with backends.use("nope"):
                pass  # pragma: no cover
        for name in backends.registered():
            assert repr(name) in str(info.value)


def test_use_applies_to_backward_run_on_another_thread(cpu_backend):
    """A backward run by another thread runs on the backend its forward was chosen for."""
    kernels = counting_kernels()
    with temporary(backends.Backend("_test_counting", kernels, devices=("cpu",), priority=-50)):
        with backends.use("_test_counting"):
            x = torch.randn(1, 2, 5, 5, requires_grad=True)
            y = torchconv.conv2d(x, torch.randn(3, 2, 3, 3))
            errors = []

            def run():
                try:
                    y.sum().backward()
                except Exception as e:  # pragma: no cover
                    errors.append(e)

            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
        assert not errors
        assert kernels.calls["conv_transpose2d"] == 1


def test_threads_choose_their_backends_independently(cpu_backend):
    """Two threads inside use() blocks of different backends at the same time:
    each runs its own choice, forward and backward."""
    first, second = counting_kernels(), counting_kernels()
    barrier = threading.Barrier(2, timeout=30)
    errors = []

    def run(name):
        try:
            with backends.use(name):
                barrier.wait()  # both blocks are open from here on
                for _ in range(5):
                    x = torch.randn(1, 2, 5, 5, requires_grad=True)
                    torchconv.max_pool2d(torchconv.conv2d(x, torch.randn(3, 2, 3, 3)), 2).sum().backward()
                    assert backends.chosen() == name
                barrier.wait()
        except Exception as e:  # pragma: no cover
            errors.append(e)

    with temporary(backends.Backend("_test_first", first, devices=("cpu",), priority=-50)), temporary(
        backends.Backend("_test_second", second, devices=("cpu",), priority=-50)
    ):
        threads = [threading.Thread(target=run, args=(name,)) for name in ("_test_first", "_test_second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for kernels in (first, second):
        assert kernels.calls["conv2d"] == kernels.calls["conv_transpose2d"] == kernels.calls["max_pool2d"] == 5
    assert backends.chosen() == cpu_backend  # this thread's choice, untouched by the others'


def test_asyncio_tasks_choose_their_backends_independently(cpu_backend):
    import asyncio

    first, second = counting_kernels(), counting_kernels()

    async def run(name, other_started, started):
        with backends.use(name):
            started.set()
            await other_started.wait()  # the other task's block is open too
            torchconv.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3))
            return backends.chosen()

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(run("_test_first", b, a), run("_test_second", a, b))

    with temporary(backends.Backend("_test_first", first, devices=("cpu",), priority=-50)), temporary(
        backends.Backend("_test_second", second, devices=("cpu",), priority=-50)
    ):
        assert asyncio.run(main()) == ["_test_first", "_test_second"]
    assert first.calls["conv2d"] == second.calls["conv2d"] == 1


def test_backward_after_the_block_runs_on_the_forwards_backend(cpu_backend):
    kernels = counting_kernels()
    with temporary(backends.Backend("_test_counting", kernels, devices=("cpu",), priority=-50)):
        with backends.use("_test_counting"):
            x = torch.randn(1, 2, 5, 5, requires_grad=True)
            y = torchconv.avg_pool2d(torchconv.conv2d(x, torch.randn(3, 2, 3, 3)), 2)
        y.sum().backward()
    assert kernels.calls["avg_pool2d_backward"] == kernels.calls["conv_transpose2d"] == 1


# ---------------------------------------------------------------- default: highest priority


def test_current_default_is_highest_priority_available(no_env):
    names = backends.available("cpu")
    assert backends.current("cpu") == names[0]
    registry = backends.registered()
    best = max(registry[n].priority for n in names)
    assert registry[backends.current()].priority == best


def test_higher_priority_backend_becomes_default_and_runs(no_env):
    kernels = counting_kernels()
    top = max(b.priority for b in backends.registered().values()) + 100
    with temporary(backends.Backend("_test_fast", kernels, devices=("cpu",), priority=top)):
        assert backends.available("cpu")[0] == "_test_fast"
        assert backends.current("cpu") == "_test_fast"
        y = _all_ops()
        assert set(kernels.calls) == set(KERNEL_NAMES), kernels.calls
        # an explicit choice still wins
        with backends.use("reference"):
            before = sum(kernels.calls.values())
            _all_ops()
            assert sum(kernels.calls.values()) == before
        assert y.shape == (2, 3, 2, 2)
    assert "_test_fast" not in backends.registered()
    assert backends.current("cpu") != "_test_fast"


def test_cuda_only_backend_is_not_listed_for_cpu(no_env):
    kernels = counting_kernels()
    with temporary(backends.Backend("_test_cuda", kernels, devices=("cuda",), priority=10_000)):
        assert "_test_cuda" not in backends.available("cpu")
        assert "_test_cuda" in backends.available("cuda")
        assert backends.available("cuda")[0] == "_test_cuda"
        assert "_test_cuda" in backends.registered()
        assert backends.current("cpu") != "_test_cuda"
        _all_ops()
        assert not kernels.calls
        # Forcing it onto CPU tensors is an error that says why.
        with backends.use("_test_cuda"):
            with pytest.raises(RuntimeError, match=r"'_test_cuda'.*does not run on 'cpu' tensors"):
                backends.current("cpu")
            with pytest.raises(RuntimeError, match=r"'_test_cuda'.*does not run on 'cpu' tensors"):
                torchconv.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))


HOW_TO = "Build it with `make magic` (test backend)."


def test_unavailable_backend_is_not_listed_and_says_how_to_enable(no_env):
    kernels = counting_kernels()
    with temporary(backends.Backend("_test_off", kernels, devices=("cpu",), priority=10_000,
                                    is_available=lambda: False, how_to_enable=HOW_TO)):
        assert "_test_off" not in backends.available("cpu")
        assert "_test_off" in backends.registered()
        assert backends.current("cpu") != "_test_off"  # not the default despite its priority
        with backends.use("_test_off"):  # a registered name: use() accepts it...
            with pytest.raises(RuntimeError, match=r"'_test_off'.*is not available\..*" + "make magic"):
                backends.current("cpu")
            # ...but running an op says it cannot run, and how to enable it.
            with pytest.raises(RuntimeError, match=r"make magic"):
                torchconv.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))
            with pytest.raises(RuntimeError, match=r"make magic"):
                torchconv.max_pool2d(torch.randn(1, 1, 4, 4), 2)
        assert not kernels.calls


def test_register_replaces_a_backend_of_the_same_name(no_env):
    first, second = counting_kernels(), counting_kernels()
    with temporary(backends.Backend("_test_twice", first, devices=("cpu",), priority=-5)):
        with temporary(backends.Backend("_test_twice", second, devices=("cpu",), priority=-5)):
            with backends.use("_test_twice"):
                torchconv.avg_pool2d(torch.randn(1, 1, 4, 4), 2)
            assert second.calls["avg_pool2d"] == 1 and not first.calls
        assert backends.registered()["_test_twice"].kernels is first


# ---------------------------------------------------------------- TORCHCONV_BACKEND


def test_env_var_selects(monkeypatch, no_env):
    kernels = counting_kernels()
    top = max(b.priority for b in backends.registered().values()) + 100
    with temporary(backends.Backend("_test_fast", kernels, devices=("cpu",), priority=top)):
        monkeypatch.setenv(ENV, "reference")
        assert backends.current("cpu") == "reference"
        _all_ops()
        assert not kernels.calls  # the higher-priority default did not run
        monkeypatch.setenv(ENV, "_test_fast")
        assert backends.current("cpu") == "_test_fast"
        # use() beats the environment variable
        with backends.use("reference"):
            assert backends.current("cpu") == "reference"
        monkeypatch.setenv(ENV, "")  # empty: as if unset
        assert backends.current("cpu") == "_test_fast"


def test_env_var_picks_a_lower_priority_backend(monkeypatch, no_env):
    kernels = counting_kernels()
    with temporary(backends.Backend("_test_slow", kernels, devices=("cpu",), priority=-1000)):
        monkeypatch.setenv(ENV, "_test_slow")
        assert backends.current("cpu") == "_test_slow"
        _all_ops()
        assert set(kernels.calls) == set(KERNEL_NAMES)


def test_env_var_invalid_value_fails_clearly_when_an_op_runs(monkeypatch, no_env):
    monkeypatch.setenv(ENV, "no_such_backend")
    pattern = rf"'no_such_backend'.*{ENV}.*not registered.*registered backends are \[.*'reference'.*\]"
    with pytest.raises(RuntimeError, match=pattern):
        backends.current("cpu")
    with pytest.raises(RuntimeError, match=pattern):
        torchconv.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))
    with pytest.raises(RuntimeError, match=pattern):
        torchconv.avg_pool2d(torch.randn(1, 1, 4, 4), 2)
    # An explicit use() still works.
    with backends.use("reference"):
        torchconv.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))


def test_env_var_unavailable_backend_says_how_to_enable(monkeypatch, no_env):
    with temporary(backends.Backend("_test_off", counting_kernels(), devices=("cpu",),
                                    is_available=lambda: False, how_to_enable=HOW_TO)):
        monkeypatch.setenv(ENV, "_test_off")
        with pytest.raises(RuntimeError, match=rf"'_test_off'.*{ENV}.*not available\..*make magic"):
            torchconv.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))


def test_import_without_the_extension_falls_back_to_reference():
    """A pure-Python install (no torchconv._C): importing works, only the reference backend is available."""
    code = (
        "import sys; sys.modules['torchconv._C'] = None\n"
        "import torch, torchconv\n"
        "print(torchconv.backends.available('cpu'), torchconv.backends.available('cuda'))\n"
        "print(tuple(torchconv.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)).shape))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    env.pop("TORCHCONV_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['reference'] ['reference']", "(1, 3, 3, 3)"]
