from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from eddl.data import DatasetError, load_dataset, split_indices
from eddl.data.datasets import MNIST_MD5, _shipped
from eddl.data.idx import file_md5


def test_shipped_mnist_files_match_official_md5() -> None:
    for name, md5 in MNIST_MD5.items():
        assert file_md5(_shipped(name)) == md5


def test_mnist_10k_shapes_split_and_label_counts() -> None:
    d = load_dataset("mnist-10k")
    assert d.x_train.shape == (8000, 784) and d.x_test.shape == (2000, 784)
    assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int64
    assert d.num_features == 784 and d.image_shape == (28, 28) and d.num_classes == 10
    # Official MNIST test-set class counts.
    total = np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=10)
    assert total.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # Stratified: each class is 20% +- one sample of the test part.
    test = np.bincount(d.y_test, minlength=10)
    assert np.all(np.abs(test - total / 5) <= 1)


def test_digits_shapes_split_and_pixel_scaling() -> None:
    d = load_dataset("digits")
    assert d.x_train.shape == (1438, 64) and d.x_test.shape == (359, 64)
    assert d.image_shape == (8, 8)
    assert d.x_train.max() == 255 and d.x_train.min() == 0
    # 0..16 rescaled with round half up: only the 17 values (v*255+8)//16 appear.
    allowed = {(v * 255 + 8) // 16 for v in range(17)}
    assert set(np.unique(d.x_train).tolist()) <= allowed
    total = np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=10)
    assert total.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert np.all(np.abs(np.bincount(d.y_test, minlength=10) - total / 5) <= 1)


def test_split_is_fixed_disjoint_and_complete() -> None:
    labels = np.array([3, 1, 1, 0, 2, 2, 3, 0, 1, 2, 0, 3, 1], dtype=np.int64)
    train, test = split_indices(labels)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    assert len(test) == len(labels) // 5
    again = split_indices(labels)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


def test_shipped_arrays_are_read_only() -> None:
    d = load_dataset("digits")
    with pytest.raises(ValueError):
        d.x_train[0, 0] = 1


def test_unknown_dataset_and_missing_mnist_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar")
    with pytest.raises(DatasetError, match="folder"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("mnist", path=tmp_path)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_full_mnist_reads_user_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    d = load_dataset("mnist", path=tmp_path)
    assert d.x_train.shape == (12, 784) and d.x_test.shape == (5, 784)


def test_full_mnist_refuses_label_count_mismatch(tmp_path: Path) -> None:
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(3))
    with pytest.raises(DatasetError, match="shapes"):
        load_dataset("mnist", path=tmp_path)
