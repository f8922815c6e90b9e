"""Models for tests/test_model_zoo.py: torchvision's classification models
(built with ``weights=None``, nothing is downloaded) and small generative /
segmentation models written here (DCGAN generator and discriminator, U-Net).

torchvision on a CPU-only torch
-------------------------------
PyPI's torchvision 0.28.0 wheel is built against a CUDA torch: its compiled
ops (``torchvision/_C.so``) need ``libc10_cuda.so`` and do not load beside
torch 2.13.0+cpu. ``torchvision/extension.py`` swallows that, but then
``torchvision/__init__.py`` imports ``_meta_registrations``, which registers
fake kernels for ``torchvision::nms`` & co. and fails with
``RuntimeError: operator torchvision::nms does not exist`` - so plain
``import torchvision`` (and ``import torchvision.models``) raises.

The model definitions are pure Python and need none of those ops (only the
detection models call ``nms``/``roi_align``, at run time), so
:func:`torchvision_models` falls back to importing ``torchvision.models``
under a bare package module that skips ``torchvision/__init__.py``. Where
the real import works (a CPU build of torchvision, or a CUDA torch) it is
used as is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
import warnings

import pytest
import torch
from torch import nn

TORCHVISION_VERSION = "0.28.0"

_tv_models = None
# How torchvision was imported: "import" or "models-only (...)"; None until loaded.
TORCHVISION_IMPORT = None


def torchvision_models():
    """``torchvision.models``, or a pytest skip if torchvision is not installed."""
    global _tv_models, TORCHVISION_IMPORT
    if _tv_models is not None:
        return _tv_models
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        pytest.skip("torchvision is not installed (the test extra has torchvision==0.28.0)")
    try:
        with warnings.catch_warnings():
            # e.g. "Failed to load image Python extension" from torchvision.io
            warnings.simplefilter("ignore", UserWarning)
            models = importlib.import_module("torchvision.models")
        TORCHVISION_IMPORT = "import"
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        models = _import_models_only(spec)
        TORCHVISION_IMPORT = f"models-only (import torchvision failed: {error})"
    _tv_models = models
    return models


def _import_models_only(spec):
    """Imports ``torchvision.models`` without running ``torchvision/__init__.py``."""
    # The failed import removed 'torchvision' itself but keeps the submodules
    # it had imported (extension, _internally_replaced_utils, ...); they are
    # the same files and are reused.
    package = types.ModuleType("torchvision")
    package.__file__ = spec.origin
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "torchvision"
    package.__spec__ = spec
    try:
        package.__version__ = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        package.__version__ = "unknown"
    sys.modules["torchvision"] = package
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return importlib.import_module("torchvision.models")
    except Exception:
        del sys.modules["torchvision"]
        raise


def torchvision_model(name: str, **kwargs) -> nn.Module:
    """A torchvision classification model, random weights, 10 classes."""
    models = torchvision_models()
    kwargs.setdefault("num_classes", 10)
    if name == "googlenet":
        # init_weights=True: no FutureWarning about the default init changing;
        # aux_logits=False: the eval and train outputs are one tensor.
        kwargs.update(aux_logits=False, init_weights=True)
    return getattr(models, name)(weights=None, **kwargs)


# --------------------------------------------------------------------------- DCGAN


class DCGANGenerator(nn.Module):
    """Radford et al.'s DCGAN generator, scaled down: latent (N, nz, 1, 1) to
    an image (N, nc, 32, 32). ConvTranspose2d without bias, BatchNorm, ReLU,
    Tanh at the end.

    ``project=True``: the variant that starts with a Linear projection of a
    latent (N, nz) to 4x4 (as in Gulrajani et al.'s WGAN-GP code), so that the
    first ConvTranspose2d gets the output of torch's own layers (under
    autocast: bfloat16 into a float32 layer).
    """

    def __init__(self, nz: int = 16, ngf: int = 8, nc: int = 3, project: bool = False):
        super().__init__()
        self.nz = nz
        if project:
            first = [nn.Linear(nz, ngf * 4 * 4 * 4), nn.Unflatten(1, (ngf * 4, 4, 4))]  # 4x4
        else:
            first = [nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False)]  # 4x4
        self.main = nn.Sequential(
            *first,
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 32x32
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for (N, nc, 32, 32) images: strided Conv2d without
    bias, each followed by LeakyReLU(0.2, inplace=True) (the first one
    directly after the convolution), BatchNorm in between unless
    ``batch_norm=False`` (a WGAN-GP critic). Returns one logit per sample, (N,)."""

    def __init__(self, nc: int = 3, ndf: int = 8, batch_norm: bool = True):
        super().__init__()

        def norm(c):
            return nn.BatchNorm2d(c) if batch_norm else nn.Identity()

        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),  # 16x16
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 8x8
            norm(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # 4x4
            norm(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),  # 1x1
        )

    def forward(self, x):
        return self.main(x).flatten()


# --------------------------------------------------------------------------- U-Net


class DoubleConv(nn.Sequential):
    """(Conv2d 3x3 -> ReLU(inplace=True)) x 2, as in Ronneberger et al. (with padding)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A small U-Net: DoubleConv blocks, MaxPool2d(2) down, ConvTranspose2d(2,
    stride 2) up, skip connections concatenated on the channels, 1x1 conv head.
    (N, in_ch, H, W) -> (N, out_ch, H, W), H and W multiples of 2**depth."""

    def __init__(self, in_ch: int = 3, out_ch: int = 2, base: int = 8, depth: int = 2):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_ch, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up_convs = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_ch, 1)

    def forward(self, x):
        x = self.inc(x)
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        for up, conv in zip(self.ups, self.up_convs):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


# --------------------------------------------------------------------------- registry


class ZooModel:
    """A model to build (seeded: the same weights every time) and its input shape."""

    def __init__(self, name, build, input_shape):
        self.name = name
        self._build = build
        self.input_shape = input_shape

    def build(self) -> nn.Module:
        gen_state = torch.random.get_rng_state()
        torch.random.default_generator.manual_seed(1234)
        try:
            return self._build()
        finally:
            torch.random.set_rng_state(gen_state)

    def __repr__(self):
        return self.name


def _tv(name, **kwargs):
    return lambda: torchvision_model(name, **kwargs)


# Inputs: batch 2. squeezenet1_1 (no BatchNorm) takes 32x32, the smallest
# size its pools reduce to 1x1 without running out. The models with BatchNorm
# take 64x64: at 32x32 their last stages are 1x1, and a train-mode BatchNorm
# over 2 values per channel normalises them to exactly +-1 whatever they are,
# so the gradients through it are rounding noise (relative differences of
# 1e-6 between two float64 computations, or bitwise luck).
ZOO = {
    m.name: m
    for m in [
        ZooModel("dcgan_generator", DCGANGenerator, (2, 16, 1, 1)),
        ZooModel("dcgan_generator_linear", lambda: DCGANGenerator(project=True), (2, 16)),
        ZooModel("dcgan_discriminator", DCGANDiscriminator, (2, 3, 32, 32)),
        ZooModel("unet", UNet, (2, 3, 32, 32)),
        ZooModel("resnet18", _tv("resnet18"), (2, 3, 64, 64)),
        ZooModel("mobilenet_v2", _tv("mobilenet_v2"), (2, 3, 64, 64)),
        ZooModel("googlenet", _tv("googlenet"), (2, 3, 64, 64)),
        ZooModel("squeezenet1_1", _tv("squeezenet1_1"), (2, 3, 32, 32)),
        ZooModel("densenet121", _tv("densenet121"), (2, 3, 64, 64)),
    ]
}
