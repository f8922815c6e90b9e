"""A script of the repository that is not a package module (benchmarks/,
scripts/, docs/figures.py, setup.py) loaded as a module, for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: str | Path, name: str | None = None) -> ModuleType:
    """Runs the script at ``path`` as module ``name`` (its file name's stem
    by default), registered in ``sys.modules``: dataclasses and pickling
    look a class's module up there."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
