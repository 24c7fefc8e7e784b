"""EncodedModels: the chunks of the last versions pulled, encoded once and sent again."""

from __future__ import annotations

import numpy as np

from eddl.net import Reassembler, encode_tensors
from eddl.net.chunks import EncodedModels


def _params(seed: int, n: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W0": rng.standard_normal((n, 4)).astype(np.float32), "b0": np.zeros(4, np.float32)}


def test_a_kept_encoding_is_the_encoding_and_is_reused() -> None:
    cache = EncodedModels()
    params = _params(1)
    first = cache.chunks("job", 3, params, 1024)
    assert first == list(encode_tensors(params, 1024))
    assert cache.chunks("job", 3, params, 1024) is first
    assert cache.chunks("job", 3, params, 4096) is not first  # another chunk size
    total = sum(a.nbytes for a in params.values())
    r = Reassembler(2, total, max_total_bytes=total)
    for chunk in first:
        r.add(chunk)
    out = r.finish()
    assert all(np.array_equal(out[k], params[k]) for k in params)


def test_entries_and_bytes_are_bounded_and_the_newest_stays() -> None:
    cache = EncodedModels(max_entries=2, max_bytes=10**9)
    kept = [cache.chunks("job", v, _params(v), 1024) for v in range(3)]
    assert cache.chunks("job", 2, _params(2), 1024) is kept[2]
    assert cache.chunks("job", 1, _params(1), 1024) is kept[1]
    assert cache.chunks("job", 0, _params(0), 1024) is not kept[0]  # evicted
    big = EncodedModels(max_entries=8, max_bytes=1)  # smaller than any model
    newest = big.chunks("job", 7, _params(7), 1024)
    assert big.chunks("job", 7, _params(7), 1024) is newest
    big.chunks("job", 8, _params(8), 1024)
    assert big.chunks("job", 7, _params(7), 1024) is not newest
