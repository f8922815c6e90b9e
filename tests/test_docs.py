"""docs/: the matrices docs/figures.py draws, and what the pages cite.

* The figures' matrix functions, on every backend: the matrix of conv2d is
  the transpose of the matrix of conv_transpose2d with the same weight (and
  equal to torch's), im2col's column matrix is ``F.unfold``'s, and the
  pooling backward passes are the transposes of their forward maps.
* ``python docs/figures.py`` draws every figure (Agg backend, into a
  temporary directory).
* Every relative link in README.md, benchmarks/README.md and docs/*.md
  points to an existing file (and heading, for ``#anchor`` links); every
  repository path they name exists; every ``torchconv`` name they cite
  resolves; the file map of docs/architecture.md lists existing files.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import re

import pytest
import torch
import torch.nn.functional as F

import torchconv
from conftest import device_of_test
from script_module import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "README.md")] + sorted(
    glob.glob(os.path.join(DOCS, "*.md"))
)

figures = load_script(os.path.join(DOCS, "figures.py"), "torchconv_doc_figures")

DT = figures.DTYPE


# ------------------------------------------------------------------ matrices

# (weight shape, input size (C, H, W), stride, padding, dilation, groups)
CONV_CASES = [
    ((1, 1, 3, 3), (1, 5, 5), (2, 2), (1, 1), (1, 1), 1),  # the figure's
    ((3, 2, 3, 3), (2, 6, 5), (1, 1), (1, 1), (1, 1), 1),  # several channels
    ((4, 1, 3, 2), (2, 7, 6), (2, 1), (1, 0), (2, 1), 2),  # groups, dilation, unequal axes
    ((2, 2, 2, 2), (2, 5, 5), (2, 2), (0, 0), (1, 1), 1),  # a stride that drops a row: output_padding 1
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"w{c[0]}-x{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}")
def test_conv_transpose2d_matrix_is_conv2d_matrix_transposed(backend, case):
    shape, input_size, stride, padding, dilation, groups = case
    weight = torch.randn(shape, dtype=DT)
    a, b = figures.conv_matrices(weight, input_size, stride, padding, dilation, groups)
    assert torch.equal(b, a.T)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(a, figures.operator_matrix(lambda x: F.conv2d(x, weight, **conv), input_size))


def test_figure_conv_matrix_holds_the_taps(backend):
    a, b = figures.conv_matrices(figures.CONV_WEIGHT.to(device_of_test()), **figures.CONV)
    assert a.shape == (9, 25) and torch.equal(b, a.T)
    # Output (0, 0) of a stride-2, padding-1 3x3 window sees input pixels
    # (0, 0), (0, 1), (1, 0), (1, 1) through taps 5, 6, 8, 9.
    assert a[0].nonzero().flatten().tolist() == [0, 1, 5, 6]
    assert a[0, [0, 1, 5, 6]].tolist() == [5.0, 6.0, 8.0, 9.0]


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation",
    [((3, 3), (1, 1), (1, 1), (1, 1)), ((2, 3), (2, 1), (0, 1), (1, 2))],
)
def test_column_matrix_is_unfold(backend, kernel, stride, padding, dilation):
    image = torch.randn(2, 5, 6, dtype=DT)
    columns = figures.column_matrix(image, kernel, stride, padding, dilation)
    expected = F.unfold(image.unsqueeze(0), kernel, dilation=dilation, padding=padding, stride=stride)[0]
    assert torch.equal(columns, expected)


AVG_CASES = [
    figures.AVG,
    dict(input_size=(2, 6, 6), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True,
         count_include_pad=True, divisor_override=None),
    dict(input_size=(1, 5, 4), kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), ceil_mode=True,
         count_include_pad=False, divisor_override=5),
]


@pytest.mark.parametrize("case", AVG_CASES, ids=["figure", "ceil_mode", "divisor_override"])
def test_avg_pool2d_backward_matrix_is_forward_transposed(backend, case):
    a, b = figures.avg_pool_matrices(**case)
    torch.testing.assert_close(b, a.T, rtol=0, atol=0)
    pool = {k: v for k, v in case.items() if k != "input_size"}
    torch.testing.assert_close(a, figures.operator_matrix(lambda x: F.avg_pool2d(x, **pool), case["input_size"]))


@pytest.mark.parametrize(
    "input_size, window",
    [
        ((1, 4, 4), figures.MAX),
        ((2, 5, 6), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), ceil_mode=True)),
    ],
    ids=["figure", "dilated"],
)
def test_max_pool2d_backward_matrix_is_selection_transposed(backend, input_size, window):
    x = figures.MAX_INPUT.to(device_of_test()) if input_size == (1, 4, 4) else torch.randn(1, *input_size, dtype=DT)
    p, b = figures.max_pool_matrices(x, **window)
    assert torch.equal(b, p.T)
    values, indices = F.max_pool2d(x, **window, return_indices=True)
    assert torch.equal(p @ x.flatten(), values.flatten())
    assert torch.equal(torchconv.max_pool2d(x, **window, return_indices=True)[1], indices)


def test_figures_are_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    paths = figures.main(["--out", str(tmp_path)])
    assert sorted(os.path.basename(p) for p in paths) == sorted(figures.FIGURES)
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def test_every_figure_is_committed_and_shown():
    shown = "".join(_read(page) for page in PAGES)
    for name in figures.FIGURES:
        assert os.path.isfile(os.path.join(DOCS, "figures", name)), f"docs/figures/{name}: run python docs/figures.py"
        assert f"figures/{name}" in shown, f"no page shows figures/{name}"


# --------------------------------------------------------------------- pages


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def _anchors(path: str) -> set[str]:
    """GitHub's anchors of the headings of a markdown file."""
    anchors, seen = set(), {}
    for line in _prose(_read(path)).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(text: str) -> list[str]:
    prose = _prose(text)
    return re.findall(r"\]\(([^)\s]+)\)", prose) + re.findall(r'<img[^>]*\ssrc="([^"]+)"', prose)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_point_to_existing_files(page):
    assert os.path.isfile(page), f"{os.path.relpath(page, ROOT)} is missing"
    broken = []
    for link in _links(_read(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:, ...
            continue
        target, _, anchor = link.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
        if not os.path.exists(path):
            broken.append(f"{link}: no file {os.path.relpath(path, ROOT)}")
        elif anchor and path.endswith(".md") and anchor not in _anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {os.path.relpath(path, ROOT)}")
    assert not broken, f"{os.path.relpath(page, ROOT)}: " + "; ".join(broken)


_TOP = ("torchconv", "csrc", "tests", "benchmarks", "scripts", "examples", "docs")
_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*\w)" % "|".join(_TOP))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_named_paths_exist(page):
    missing = sorted({p for p in _PATH.findall(_read(page)) if not os.path.exists(os.path.join(ROOT, p))})
    assert not missing, f"{os.path.relpath(page, ROOT)} names paths that do not exist: {missing}"


_MODULES = {
    name: f"torchconv.{name}"
    for name in (
        "functional", "convert", "testing", "validate", "backends", "_args", "_library", "_autograd",
        "_vmap", "_flops", "_onnx", "_torchscript", "_precision", "_memory_format",
        "_dtypes", "_output_size", "_torch_kernels", "_eager",
    )
}
_MODULES.update(reference="torchconv.backends.reference", cpp="torchconv.backends.cpp", cuda="torchconv.backends.cuda")


def _resolves(name: str) -> bool:
    if name.startswith("torchconv._C") and not torchconv.backends.cpp.is_available():
        return True  # the compiled extension, absent from a pure-Python install
    parts = name.split(".")
    if parts[0] == "torchconv":
        parts = parts[1:]
        module = importlib.import_module("torchconv")
        if parts and parts[0] in _MODULES:
            module = importlib.import_module(_MODULES[parts[0]])
            parts = parts[1:]
    else:
        module = importlib.import_module(_MODULES[parts[0]])
        parts = parts[1:]
    obj = module
    for part in parts:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_cited_python_names_resolve(page):
    """Backticked names such as ``_autograd.Conv2dFunction``, ``reference._col2im``
    or ``torchconv.backends.use(name)`` exist."""
    names = set()
    for token in re.findall(r"`([^`\n]+)`", _read(page)):
        name = token.split("(")[0].strip()
        if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", name) or re.search(r"\.(py|h|cpp|cu|cuh|md|png|pt)$", name):
            continue
        head = name.split(".")[0]
        if head == "torchconv" or head in _MODULES:
            names.add(name)
    unresolved = sorted(n for n in names if not _resolves(n))
    assert not unresolved, f"{os.path.relpath(page, ROOT)} cites names that do not exist: {unresolved}"


def test_architecture_file_map_lists_existing_files():
    text = _read(os.path.join(DOCS, "architecture.md"))
    block = re.search(r"## File map\s+```\n(.*?)```", text, re.DOTALL)
    assert block, "docs/architecture.md has no file map"
    stack: list[str] = []
    missing = []
    for line in block.group(1).splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        del stack[depth:]
        path = os.path.join(ROOT, *stack, name.rstrip("/"))
        if not os.path.exists(path):
            missing.append(os.path.relpath(path, ROOT))
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
    assert not missing, f"docs/architecture.md's file map lists missing files: {missing}"


# torch's names that the pages cite and the sources do not use.
_TORCH_NAMES = {"AutocastCPU", "AutocastCUDA", "allow_bf16_reduced_precision_reduction", "prepare_fx", "convert_fx"}


@functools.lru_cache(maxsize=None)
def _source_words() -> frozenset[str]:
    words: set[str] = set()
    patterns = ["setup.py", "torchconv/**/*.py", "csrc/**/*.*", "tests/**/*.py", "examples/*.py", "benchmarks/**/*.*",
                "scripts/*", "docs/*.py"]
    for pattern in patterns:
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            if os.path.isfile(path) and not path.endswith((".so", ".png")):
                with open(path, encoding="utf-8", errors="replace") as f:
                    words.update(re.findall(r"\w+", f.read()))
    return frozenset(words)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_cited_identifiers_occur_in_the_sources(page):
    """Every backticked identifier (a Python or C++ function, class or
    variable: ``Conv2dFunction``, ``conv2d_kernel``, ``gemm<T>``, ``Window``)
    occurs in the sources, so a renamed one cannot stay in the docs."""
    words = _source_words() | _TORCH_NAMES
    cited = set()
    for token in re.findall(r"`([^`\n]+)`", _read(page)):
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:<\w+>|\(\))?", token.strip())
        if match:
            cited.add(match.group(1))
    missing = sorted(cited - words)
    assert not missing, f"{os.path.relpath(page, ROOT)} cites identifiers found in no source file: {missing}"


# Pages whose python blocks are whole programs a reader can paste and run
# (docs/export.md's is a fragment beside its prose: it names a model it does
# not build and writes files).
RUNNABLE_PAGES = [os.path.join(ROOT, "README.md"), os.path.join(DOCS, "tolerances.md")]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_python_examples_run(page, tmp_path, monkeypatch):
    """The page's python blocks, run in order in one namespace, as a reader would."""
    blocks = re.findall(r"^```python\n(.*?)^```", _read(page), flags=re.MULTILINE | re.DOTALL)
    assert blocks, f"{os.path.relpath(page, ROOT)} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)
