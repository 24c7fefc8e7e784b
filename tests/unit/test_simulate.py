from __future__ import annotations

import numpy as np
import pytest

from eddl.simulate import FederatedConfig, RoundResult, run_federated


def test_lsgd_on_digits_learns_and_reports_every_round() -> None:
    seen: list[RoundResult] = []
    result = run_federated(
        FederatedConfig(algo="lsgd", dataset="digits", clients=4, rounds=3), seen.append
    )
    assert [r.round for r in seen] == [1, 2, 3]
    assert result.accuracy == seen[-1].accuracy > 0.8
    assert result.samples == 3 * 1438
    assert result.aggregation["name"] == "fedavg"
    assert 0 < result.train_state_bytes < result.model_bytes


def test_runs_are_deterministic_for_a_seed() -> None:
    cfg = FederatedConfig(algo="tifed", dataset="digits", clients=3, rounds=2, seed=5)
    a, b = run_federated(cfg), run_federated(cfg)
    assert [r.accuracy for r in a.history] == [r.accuracy for r in b.history]


def test_tifed_single_layer_uses_integer_mean_over_layer_groups() -> None:
    result = run_federated(
        FederatedConfig(algo="tifed-single", dataset="digits", clients=4, rounds=4)
    )
    assert result.aggregation["name"] == "intmean"
    assert result.buffer == 50 and result.local_epochs == 5
    assert result.best_accuracy > 0.5


def test_dirichlet_partition_runs() -> None:
    result = run_federated(
        FederatedConfig(
            algo="sgd", dataset="digits", clients=3, rounds=1, partition="dirichlet:0.3"
        )
    )
    assert np.isfinite(result.accuracy)


@pytest.mark.parametrize(
    "kwargs",
    [{"algo": "adam"}, {"clients": 0}, {"rounds": 0}, {"local_epochs": 0}, {"buffer": 0}],
)
def test_bad_configs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FederatedConfig(**kwargs)  # type: ignore[arg-type]


def test_lsgd_q8_pretrains_float_then_fine_tunes_int8() -> None:
    result = run_federated(
        FederatedConfig(algo="lsgd-q8", dataset="digits", clients=4, rounds=2, pretrain_rounds=1)
    )
    assert result.pretrain is not None
    # Quantization keeps the float model's accuracy within a few points, and fine-tuning the
    # int8 model improves on it.
    assert abs(result.pretrain["quantized_accuracy"] - result.pretrain["float_accuracy"]) < 0.05
    assert result.accuracy > result.pretrain["quantized_accuracy"]
    assert result.model_bytes == sum((64 * 40 + 40, 40 * 32 + 32, 32 * 10 + 10))


def test_sliding_buffer_keeps_the_newest_samples_and_restarts_each_pass() -> None:
    from eddl.simulate import _round_slice

    shard = np.arange(1000) + 5000
    assert _round_slice(shard, 50, 10, 0).tolist() == list(range(5000, 5010))
    assert _round_slice(shard, 50, 10, 4).tolist() == list(range(5000, 5050))
    assert _round_slice(shard, 50, 10, 99).tolist() == list(range(5950, 6000))
    # Round 100 starts the second pass with an empty buffer.
    assert _round_slice(shard, 50, 10, 100).tolist() == list(range(5000, 5010))
    # A fresh buffer each round, and the whole shard without a buffer.
    assert _round_slice(shard, 50, None, 3).tolist() == list(range(5150, 5200))
    assert _round_slice(shard, None, None, 7) is shard


def test_single_layer_needs_a_client_per_layer() -> None:
    with pytest.raises(ValueError, match="one client per layer"):
        run_federated(FederatedConfig(algo="tifed-single", dataset="digits", clients=1, rounds=1))
