"""Datasets shipped with EDDL and the partitioners that spread them across clients.

* ``datasets``  ``load_dataset("digits" | "mnist-10k" | "mnist", path=...)`` -> ``Dataset``
  (uint8 pixels 0..255, int64 labels, a fixed stratified train/test split).
* ``idx``       the IDX reader of MNIST files (gzip or raw), with md5 helper.
* ``partition`` IID and Dirichlet(α) non-IID splits across N clients, seeded.
* ``files/``    the shipped data and its licence note (LICENSES.md).
"""

from eddl.data.datasets import DATASETS, Dataset, DatasetError, load_dataset, split_indices
from eddl.data.idx import IdxError, read_idx
from eddl.data.partition import (
    PartitionError,
    parse_partition,
    partition,
    partition_dirichlet,
    partition_iid,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "IdxError",
    "PartitionError",
    "load_dataset",
    "parse_partition",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "read_idx",
    "split_indices",
]
