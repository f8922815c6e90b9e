"""docs/architecture.md's map of a call is the call: the Python frames it
lists for each path are the frames one call runs, and the C++ functions it
names exist where it says.

The frames are recorded with ``sys.setprofile``: every function of the
torchconv package a call enters, in the order of their first entry, and the
functions of the compiled module ``torchconv._C`` it calls. Comprehensions
and lambdas are left out (they are expressions, not stations of the route).
On a mismatch the message shows the block the page should hold.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import torchconv
from torchconv import backends

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"
PACKAGE = os.path.dirname(torchconv.__file__)
ARROW = " → "

needs_cpp = pytest.mark.skipif(not backends.cpp.is_available(), reason="the C++ extension is not built")


def _short_module(name: str) -> str:
    return name[len("torchconv.") :] if name.startswith("torchconv.") else name


def record_frames(call: Callable[[], object]) -> list[tuple[str, str]]:
    """(module, qualified name) of every torchconv function ``call`` enters, in first-entry order."""
    seen: list[tuple[str, str]] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            entry = (_short_module(frame.f_globals["__name__"]), frame.f_code.co_qualname)
        elif event == "c_call" and (getattr(arg, "__module__", None) or "").startswith("torchconv"):
            entry = (_short_module(arg.__module__), arg.__name__)
        else:
            return
        if not entry[1].endswith(("<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>", "<lambda>")) and entry not in seen:
            seen.append(entry)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


def as_block(frames: list[tuple[str, str]]) -> str:
    """The frames as the page writes them: a line per run of one module's frames."""
    lines: list[tuple[str, list[str]]] = []
    for module, name in frames:
        if lines and lines[-1][0] == module:
            lines[-1][1].append(name)
        else:
            lines.append((module, [name]))
    width = max((len(m) for m, _ in lines), default=0)
    return "\n".join(f"{m.ljust(width)}  {ARROW.join(names)}" for m, names in lines)


def page_blocks(kind: str) -> dict[str, str]:
    """The page's fenced blocks that follow a ``<!-- kind: name -->`` marker, by name."""
    text = PAGE.read_text()
    pattern = rf"<!-- {re.escape(kind)}: ([^>]+?) -->\s*```text\n(.*?)```"
    return {name: body.rstrip("\n") for name, body in re.findall(pattern, text, re.S)}


def page_frames(name: str) -> list[tuple[str, str]]:
    blocks = page_blocks("frames")
    assert name in blocks, f"{PAGE.name} has no '<!-- frames: {name} -->' block"
    frames = []
    for line in blocks[name].splitlines():
        module, _, names = line.strip().partition("  ")
        frames += [(module, n.strip()) for n in names.split(ARROW.strip())]
    return frames


def check_frames(name: str, recorded: list[tuple[str, str]]) -> None:
    assert recorded == page_frames(name), (
        f"the frames of '{name}' differ from {PAGE.name}'s; the call runs:\n\n{as_block(recorded)}\n"
    )


# --------------------------------------------------------------- the calls


def _layer_and_input():
    torch.manual_seed(0)
    return torchconv.Conv2d(3, 4, 3, padding=1), torch.randn(2, 3, 8, 8, requires_grad=True)


def _frames_of_paths(backend: str | None):
    """The frames of one training forward, its backward (input and weight
    requiring grad) and one inference call of a Conv2d layer, each after a
    warm-up call (caches filled)."""
    layer, x = _layer_and_input()
    with backends.use(backend) if backend else torch.enable_grad():
        layer(x).sum().backward()
        forward = record_frames(lambda: layer(x))
        y = layer(x).sum()
        backward = record_frames(y.backward)
        with torch.inference_mode():
            layer(x)
            inference = record_frames(lambda: layer(x))
    return forward, backward, inference


@needs_cpp
def test_compiled_path_frames_are_the_pages(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    if backends.available("cpu")[:1] != ["cpp"]:
        pytest.skip("the cpp backend is not the CPU default here")
    forward, backward, inference = _frames_of_paths(None)
    check_frames("compiled path, forward", forward)
    assert inference == forward, "an inference call takes the training call's frames"
    assert backward == [], f"the compiled path's backward runs no Python; it ran:\n{as_block(backward)}"


def test_python_path_frames_are_the_pages(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    forward, backward, inference = _frames_of_paths("reference")
    check_frames("Python path, forward", forward)
    check_frames("Python path, backward", backward)
    assert inference == forward, "an inference call takes the training call's frames"


# ------------------------------------------------------------ the C++ side


def _defines(source: str, name: str) -> bool:
    """Whether C++ ``source`` defines ``name``: a function (its parameter
    list followed by a body), a type, or ``Type::method`` inside ``Type``."""
    *scopes, last = name.split("::")
    if scopes:
        body = re.search(rf"\b(?:struct|class)\s+{re.escape(scopes[-1])}\b[^;{{]*\{{", source)
        if not body:
            return False
        source = source[body.end():]
    function = rf"^[ \t]*(?:[\w:<>,*&]+[ \t]+)+[*&]*{re.escape(last)}\s*\([^;{{}}]*\)[^;{{}}]*\{{"
    type_ = rf"\b(?:struct|class|enum class|enum)\s+{re.escape(last)}\b"
    return bool(re.search(function, source, re.M) or re.search(type_, source))


def _reaches(source: str, name: str, own: bool) -> bool:
    """Whether C++ ``source`` calls ``name`` (plain, qualified or templated)
    or registers it with the dispatcher (``m.impl("...", &name)``); in the
    file that defines it (``own``), a call beside its definitions."""
    last = re.escape(name.split("::")[-1])
    calls = len(re.findall(rf"(?<![\w.])(?:\w+::)*{last}\s*(?:<[^;{{}}()]*>)?\s*\(", source))
    if not own:
        return calls > 0
    registered = re.search(rf"m\.impl\(\"\w+\", &{last}\)", source)
    definitions = len(re.findall(rf"^[ \t]*(?:[\w:<>,*&]+[ \t]+)+[*&]*{last}\s*\(", source, re.M))
    return bool(registered) or calls > definitions


def _route(body: str) -> list[tuple[str, str, list[str]]]:
    route = []
    for line in body.splitlines():
        path, _, names = line.strip().partition("  ")
        route.append((path, (ROOT / path).read_text(), [n.strip() for n in names.split(",")]))
    return route


def test_cpp_routes_name_what_each_file_defines():
    routes = page_blocks("C++ route")
    assert routes, f"{PAGE.name} has no '<!-- C++ route: ... -->' block"
    missing = [f"{route}: {path}: {n}" for route, body in routes.items()
               for path, source, names in _route(body) for n in names if not _defines(source, n)]
    assert not missing, "the page names C++ functions their files do not define:\n" + "\n".join(missing)


def test_cpp_routes_are_routes():
    """Every station after a route's first is called (or registered) by the
    files above it on the route or its own file; a ``Type::method`` is
    called by torch's autograd, so only its type is looked for."""
    stray = []
    for route, body in page_blocks("C++ route").items():
        stations = _route(body)
        for k, (path, source, names) in enumerate(stations[1:], start=1):
            for n in names:
                if "::" in n and n.split("::")[0][:1].isupper():
                    continue
                if not (any(_reaches(src, n, False) for _, src, _ in stations[:k]) or _reaches(source, n, True)):
                    stray.append(f"{route}: {path}: {n}")
    assert not stray, "the page's routes name C++ functions nothing above them calls:\n" + "\n".join(stray)


@needs_cpp
@pytest.mark.parametrize("key", ["CPU", "Autograd"])
def test_compiled_ops_have_the_kernels_the_page_routes_through(key):
    for name in ("conv2d", "conv_transpose2d", "conv2d_weight", "max_pool2d", "avg_pool2d"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"torchconv_cpp::{name}", key), (name, key)


def test_call_diagram_names_cpp_identifiers_that_exist():
    """Every identifier on a line of the call diagram that points at a csrc/
    file occurs in csrc/ (or, in a line's Python column, in torchconv/): a
    renamed kernel must rename its box."""
    diagram = PAGE.read_text().split("## One call, top to bottom", 1)[1].split("```", 2)[1]
    suffixes = {".h", ".cpp", ".cu", ".cuh", ".py"}
    files = [*(ROOT / "csrc").rglob("*"), *(ROOT / "torchconv").rglob("*")]
    sources = "\n".join(p.read_text() for p in files if p.suffix in suffixes)
    missing = set()
    for line in diagram.splitlines():
        if "csrc/" not in line:
            continue
        code = re.sub(r"csrc/[\w/.]+", " ", line)
        for token in re.findall(r"\b[A-Za-z_]\w*(?:::\w+)*\b", code):
            if ("_" in token or "::" in token) and not token.startswith("torchconv") and token not in sources:
                missing.add(token)
    assert not missing, f"the call diagram names identifiers the sources do not have: {sorted(missing)}"
