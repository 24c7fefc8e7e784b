"""Datasets shipped inside the package, and MNIST read from a user's folder.

Every dataset is exposed the same way: ``x`` as ``uint8`` pixels in 0..255 of shape
``(n, features)`` (the representation TIFeD consumes directly as ``x - 128``; float algorithms
divide by 255) and ``y`` as ``int64`` labels.

* ``digits``: UCI optical-recognition digits, 1,797 images 8×8. Pixels are 0..16 in the source
  and are rescaled to 0..255 with ``(v * 255 + 8) // 16`` (round half up).
* ``mnist-10k``: the official MNIST test set (10,000 images 28×28, md5-verified).
* ``mnist``: the full 60k/10k MNIST, read from a folder the user gives (``path=``), with the
  standard IDX file names, gzip-compressed or not.

Train/test split of the shipped sets (fixed, RNG-free so it never changes across numpy
versions): sort the samples by label with a stable sort; every 5th sample of that order
(positions 4, 9, 14, ...) is test, the rest train. This is a stratified 80/20 split that takes
samples evenly from the whole file: mnist-10k gives 8,000 / 2,000, digits 1,438 / 359.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from eddl.data.idx import file_md5, read_idx

__all__ = [
    "DATASETS",
    "MNIST_MD5",
    "Dataset",
    "DatasetError",
    "load_dataset",
    "split_indices",
]

DATASETS: tuple[str, ...] = ("digits", "mnist-10k", "mnist")

MNIST_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


class DatasetError(ValueError):
    """A dataset is unknown, missing, or does not verify."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int]

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def __post_init__(self) -> None:
        for part in ("x_train", "x_test"):
            arr = getattr(self, part)
            if arr.dtype != np.uint8 or arr.ndim != 2:
                raise DatasetError(f"{self.name}: {part} must be uint8 (n, features)")
        for part in ("y_train", "y_test"):
            arr = getattr(self, part)
            if arr.dtype != np.int64 or arr.ndim != 1:
                raise DatasetError(f"{self.name}: {part} must be int64 (n,)")
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise DatasetError(f"{self.name}: x and y lengths differ")
        # Shared (cached) instances must never be changed by a caller.
        for part in ("x_train", "y_train", "x_test", "y_test"):
            getattr(self, part).setflags(write=False)


def split_indices(labels: np.ndarray, test_every: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split described in the module docstring: (train, test) indexes."""
    order = np.argsort(labels, kind="stable")
    is_test = (np.arange(len(order)) % test_every) == test_every - 1
    return np.sort(order[~is_test]), np.sort(order[is_test])


def _shipped(name: str) -> Path:
    return Path(str(resources.files("eddl.data") / "files" / name))


def _from_split(name: str, x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> Dataset:
    train, test = split_indices(y)
    return Dataset(name, x[train], y[train], x[test], y[test], 10, shape)


@functools.cache
def _load_digits() -> Dataset:
    with gzip.open(_shipped("digits.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65):
        raise DatasetError(f"digits: unexpected table shape {table.shape}")
    raw, y = table[:, :64], table[:, 64]
    if raw.min() < 0 or raw.max() > 16:
        raise DatasetError("digits: pixel values outside 0..16")
    x = ((raw * 255 + 8) // 16).astype(np.uint8)
    return _from_split("digits", x, y.astype(np.int64), (8, 8))


@functools.cache
def _load_mnist_10k(verify: bool) -> Dataset:
    images, labels = (_shipped(n) for n in MNIST_MD5)
    if verify:
        for path in (images, labels):
            got = file_md5(path)
            if got != MNIST_MD5[path.name]:
                raise DatasetError(f"{path.name}: md5 {got} != {MNIST_MD5[path.name]}")
    x, y = _images_labels(images, labels)
    return _from_split("mnist-10k", x, y, (28, 28))


def _images_labels(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    img = read_idx(images)
    lab = read_idx(labels)
    if img.ndim != 3 or lab.ndim != 1 or img.shape[0] != lab.shape[0]:
        raise DatasetError(f"{images.name}/{labels.name}: shapes {img.shape} and {lab.shape}")
    if img.dtype != np.uint8 or lab.dtype != np.uint8 or lab.max(initial=0) > 9:
        raise DatasetError(f"{labels.name}: labels must be uint8 digits 0..9")
    return img.reshape(img.shape[0], -1), lab.astype(np.int64)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    raise DatasetError(f"mnist: {stem}[.gz] not found in {folder}")


def _load_mnist_full(path: Path) -> Dataset:
    if not path.is_dir():
        raise DatasetError(f"mnist: {path} is not a folder holding the IDX files")
    x_tr, y_tr = _images_labels(
        _find(path, "train-images-idx3-ubyte"), _find(path, "train-labels-idx1-ubyte")
    )
    x_te, y_te = _images_labels(
        _find(path, "t10k-images-idx3-ubyte"), _find(path, "t10k-labels-idx1-ubyte")
    )
    return Dataset("mnist", x_tr, y_tr, x_te, y_te, 10, (28, 28))


def load_dataset(name: str, path: str | Path | None = None, *, verify: bool = True) -> Dataset:
    """Load a dataset by name (see ``DATASETS``); ``path`` is needed for full ``mnist`` only.

    Shipped datasets are read once per process and cached; their arrays are read-only.
    """
    if name == "digits":
        return _load_digits()
    if name == "mnist-10k":
        return _load_mnist_10k(verify)
    if name == "mnist":
        if path is None:
            raise DatasetError("mnist: give the folder holding the 60k IDX files (path=...)")
        return _load_mnist_full(Path(path))
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
