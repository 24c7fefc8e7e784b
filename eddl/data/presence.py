"""Synthetic presence detection in rooms: one room (a device) per task, made from a seed.

This is a documented generator, not recorded data. Each room draws its own physics and sensor
set-up, so rooms are related tasks that differ, which is what meta-learning needs:

* occupancy is a two-state Markov chain per minute (``P(enter) ~ U[0.02, 0.10]``,
  ``P(leave) ~ U[0.02, 0.10]``);
* CO₂ (ppm) relaxes toward the room's base ``~ U[380, 480]`` at rate ``~ U[0.05, 0.15]`` per
  minute and rises by ``~ U[5, 25]`` ppm per occupied minute, plus N(0, 5²) sensor noise;
* the PIR sensor fires with probability ``~ U[0.3, 0.9]`` per occupied minute and
  ``~ U[0, 0.05]`` per empty one (false triggers);
* light (lux) is daylight ``~ U[0, 150]`` times a slow daily cycle, plus a lamp of
  ``~ U[150, 400]`` lux switched on with probability ``~ U[0.5, 1]`` while occupied, N(0, 10²);
* sound (dB) is ``~ U[30, 40]`` plus ``~ U[5, 15]`` while occupied, N(0, 2²).

A sample is a window of the last 8 minutes of the four sensors (32 features, scaled by fixed
constants to roughly [0, 1]: CO₂ above 350 ppm / 600, PIR as 0/1, lux / 600, dB / 80); its
label is 1 when the room is occupied in the window's last minute.
"""

from __future__ import annotations

import numpy as np

from eddl.data.datasets import DatasetError
from eddl.data.metatasks import DeviceTask, TaskSet

__all__ = ["WINDOW", "presence_tasks", "room_trace"]

WINDOW = 8
_SCALE = np.array([600.0, 1.0, 600.0, 80.0], dtype=np.float32)
_OFFSET = np.array([350.0, 0.0, 0.0, 0.0], dtype=np.float32)


def room_trace(rng: np.random.Generator, minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(minutes, 4)`` float32 sensor readings and ``(minutes,)`` occupancy of one room."""
    p_enter, p_leave = rng.uniform(0.02, 0.10, size=2)
    co2_base, co2_decay, co2_rise = (
        rng.uniform(380, 480),
        rng.uniform(0.05, 0.15),
        rng.uniform(5, 25),
    )
    pir_hit, pir_false = rng.uniform(0.3, 0.9), rng.uniform(0.0, 0.05)
    daylight, lamp, lamp_p = rng.uniform(0, 150), rng.uniform(150, 400), rng.uniform(0.5, 1.0)
    sound_base, sound_occ = rng.uniform(30, 40), rng.uniform(5, 15)
    occ = np.zeros(minutes, dtype=np.int64)
    state, co2, lamp_on = int(rng.random() < 0.5), co2_base, False
    out = np.zeros((minutes, 4), dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    for t in range(minutes):
        if rng.random() < (p_leave if state else p_enter):
            state = 1 - state
            lamp_on = bool(state) and rng.random() < lamp_p
        occ[t] = state
        co2 += co2_decay * (co2_base - co2) + co2_rise * state
        pir = rng.random() < (pir_hit if state else pir_false)
        day = 0.5 * (1 + np.sin(2 * np.pi * t / 1440 + phase))
        lux = daylight * day + lamp * lamp_on
        out[t] = (
            co2 + rng.normal(0, 5),
            float(pir),
            max(0.0, lux + rng.normal(0, 10)),
            sound_base + sound_occ * state + rng.normal(0, 2),
        )
    return out, occ


def _windows(trace: np.ndarray, occ: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, ...]:
    scaled = (trace - _OFFSET) / _SCALE
    x = np.stack([scaled[s : s + WINDOW].ravel() for s in starts]).astype(np.float32)
    y = np.array([occ[s + WINDOW - 1] for s in starts], dtype=np.int64)
    return x, y


def _balanced(
    occ: np.ndarray, lo: int, hi: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` window starts in ``[lo, hi - WINDOW)``, half of them ending occupied where
    the trace allows (so that every room has shots of both classes)."""
    starts = np.arange(lo, hi - WINDOW)
    last = occ[starts + WINDOW - 1]
    busy, empty = starts[last == 1], starts[last == 0]
    n_busy = min(len(busy), max(count // 2, count - len(empty)))
    picked = np.concatenate(
        [rng.choice(busy, n_busy, replace=False), rng.choice(empty, count - n_busy, replace=False)]
    )
    return np.sort(picked)


def presence_tasks(
    train: int, held_out: int, *, seed: int, samples: int = 20, test: int = 40
) -> TaskSet:
    """Room devices: ``samples`` training windows and ``test`` test windows each, disjoint
    in time (training windows from the first half of the trace, test from the second), each
    half of them ending in an occupied minute where the room's trace allows."""
    for name, value in (("train", train), ("held_out", held_out), ("samples", samples)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
            raise DatasetError(f"{name} must be an int in 1..100000, got {value!r}")
    if isinstance(test, bool) or not isinstance(test, int) or not 1 <= test <= 100_000:
        raise DatasetError(f"test must be an int in 1..100000, got {test!r}")
    tasks = []
    half = 8 * (samples + test) + 2 * WINDOW
    for tid in range(train + held_out):
        rng = np.random.default_rng([seed, 0x9E5, tid])
        trace, occ = room_trace(rng, 2 * half)
        tr = _balanced(occ, 0, half, samples, rng)
        te = _balanced(occ, half, 2 * half, test, rng)
        x_tr, y_tr = _windows(trace, occ, tr)
        x_te, y_te = _windows(trace, occ, te)
        tasks.append(DeviceTask(tid, x_tr, y_tr, x_te, y_te, f"room {tid}"))
    return TaskSet("presence", tuple(tasks[:train]), tuple(tasks[train:]), 4 * WINDOW, 2, True)
