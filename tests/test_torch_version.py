"""The supported torch releases: checked at import, with a message that says what to do."""

import pytest
import torch

from torchconv import _torch_version


@pytest.mark.parametrize("version, parsed", [("2.13.0+cpu", (2, 13)), ("2.11.0", (2, 11)), ("3.0.0a0+git123", (3, 0))])
def test_parse(version, parsed):
    assert _torch_version.parse(version) == parsed


def test_an_older_torch_is_refused_with_the_fix():
    with pytest.raises(ImportError, match=r"torchconv needs torch >= 2\.11 .* but torch 2\.10\.1 is installed\. "
                                          r"Install a newer one, e\.g\. `pip install 'torch>=2\.11'`"):
        _torch_version.check("2.10.1")


@pytest.mark.parametrize("version", ["2.11.0", "2.13.0+cpu", "2.15.0", torch.__version__])
def test_supported_versions_pass(version):
    _torch_version.check(version)


def test_setup_requires_the_same_minimum():
    import re
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "TORCH_MINIMUM" in setup and re.search(r'install_requires=\[f"torch>=', setup)
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"torch>=%d.%d"' % _torch_version.MINIMUM in pyproject
