"""torchconv: hand-written conv2d, conv_transpose2d, max_pool2d and avg_pool2d for PyTorch.

Functional ops with ``torch.nn.functional``'s signatures, ``nn.Module``
twins of ``torch.nn``'s layers, and :func:`convert` to swap them into a
model. The arithmetic runs in ``torchconv::`` custom ops on the backend of
:mod:`torchconv.backends`. :mod:`torchconv.testing` compares a result with
torch's at the tolerances ``python -m torchconv.validate`` enforces.
"""

from . import backends, functional, nn, testing
from . import _flops  # noqa: F401  (registers the ops' FLOP formulas)
from . import _torchscript  # noqa: F401  (defines the ops TorchScript calls)
from ._onnx import onnx_translation_table  # (registers the ONNX translations when an exporter loads)
from .convert import convert
from .functional import avg_pool2d, conv2d, conv_transpose2d, max_pool2d
from .nn import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d

__version__ = "0.1.0"

__all__ = [
    "backends",
    "functional",
    "testing",
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "nn",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "AvgPool2d",
    "convert",
    "onnx_translation_table",
]
