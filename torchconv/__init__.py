"""torchconv: hand-written conv2d, conv_transpose2d, max_pool2d and avg_pool2d for PyTorch.

Functional ops with ``torch.nn.functional``'s signatures, ``nn.Module``
twins of ``torch.nn``'s layers, and :func:`convert` to swap them into a
model. The arithmetic runs in ``torchconv::`` custom ops on the backend of
:mod:`torchconv.backends`. :mod:`torchconv.testing` compares a result with
torch's at the tolerances ``python -m torchconv.validate`` enforces.
"""

from . import _torch_version

_torch_version.check()  # before anything that needs a recent torch

from . import backends, functional, nn, testing  # noqa: E402
from . import _vmap  # noqa: E402,F401  (attaches the batching rules to torchconv._autograd's Functions)
from . import _flops  # noqa: E402,F401  (registers the ops' FLOP formulas)
from . import _torchscript  # noqa: E402,F401  (defines the ops TorchScript calls)
from ._onnx import onnx_translation_table  # noqa: E402 (registers the ONNX translations when an exporter loads)
from .convert import convert  # noqa: E402
from .functional import avg_pool2d, conv2d, conv_transpose2d, max_pool2d  # noqa: E402
from .nn import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d  # noqa: E402

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
