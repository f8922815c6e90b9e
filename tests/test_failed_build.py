"""A failed build is loud: `import torchconv` warns once, with the reason and
the fix, when the compiled extension exists but fails to load, or a source
checkout's build did not make it; torchconv.backends.unavailable_reason says
why. Each case runs in a fresh process whose import of torchconv._C is made
to fail (an import hook), the rest of the package as installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Installs a finder that makes `torchconv._C` fail as MODE says, imports
# torchconv with every warning recorded, and prints what the user would see.
_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, importlib.util, sys, warnings

    MODE = sys.argv[1]
    real_find_spec = importlib.util.find_spec

    class Broken(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise ImportError("torchconv/_C.so: undefined symbol: _ZN3c106detail14torchCheckFailE")

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "torchconv._C":
                return None
            if MODE == "broken":
                return importlib.machinery.ModuleSpec(name, Broken())
            raise ImportError("cannot import name '_C' from 'torchconv'")

    def find_spec(name, package=None):
        if name == "torchconv._C" and MODE == "missing":
            return None
        return real_find_spec(name, package)

    sys.meta_path.insert(0, Finder())
    importlib.util.find_spec = find_spec
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torchconv
    messages = [str(w.message) for w in caught if "torchconv:" in str(w.message)]
    print("WARNINGS", len(messages))
    for m in messages:
        print("WARNING", m)
    print("AVAILABLE", torchconv.backends.available("cpu"))
    print("REASON", torchconv.backends.unavailable_reason("cpp"))
    """
)


def _run(mode, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TORCHCONV_BUILD_CPP"}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, env=environment,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_extension_that_fails_to_load_warns_with_the_reason_and_the_fix():
    out = _run("broken")
    assert "WARNINGS 1" in out, out
    assert "the C++ extension torchconv._C failed to load (ImportError: " in out
    assert "undefined symbol" in out
    assert "reference backend" in out and "pip install --no-build-isolation -e ." in out
    assert "AVAILABLE ['reference']" in out
    assert "REASON the C++ extension torchconv._C failed to load" in out


def test_a_checkout_without_its_extension_warns():
    out = _run("missing")
    assert "WARNINGS 1" in out, out
    assert "the C++ extension torchconv._C is not built" in out
    assert "REASON the C++ extension torchconv._C is not built" in out


def test_a_pure_python_install_asked_for_is_quiet():
    out = _run("missing", TORCHCONV_BUILD_CPP="0")
    assert "WARNINGS 0" in out, out
    assert "AVAILABLE ['reference']" in out


def test_a_working_build_says_nothing():
    import torchconv

    if not torchconv.backends.cpp.is_available():
        pytest.skip("the extension is not built here")
    assert torchconv.backends.unavailable_reason("cpp") is None
    assert torchconv.backends.unavailable_reason("reference") is None
