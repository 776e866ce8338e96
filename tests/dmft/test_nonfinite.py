"""A diverging run stops at the first non-finite value with the right quantity, time and seed,
however its seeds are batched, and keeps every seed's values up to that time."""

import numpy as np
import pytest

import sgdlab
from sgdlab import NonFiniteError

BASE = {"algorithm": {"name": "gd", "eta": 1.0, "horizon": 100.0, "save_every": 1},
        "problem": {"ridge": 0.0, "loss": "square"}, "simulation": {"d": 40, "seeds": [0, 1, 2, 3], "dtype": "float32"}}


def failure(cfg):
    with pytest.raises(NonFiniteError) as info:
        sgdlab.run(cfg)
    return str(info.value), info.value.partial


def test_the_reported_seed_and_time_do_not_depend_on_the_batching():
    alone = {}
    for seed in BASE["simulation"]["seeds"]:
        msg, _ = failure({**BASE, "simulation": {**BASE["simulation"], "seeds": [seed]}})
        alone[seed] = float(msg.split("at t=")[1].split(" ")[0])
    first = min(alone, key=lambda s: (alone[s], s))
    assert len(set(alone.values())) > 1, "the seeds must fail at different times for this test to mean something"
    for batch in (None, 1, 3):
        cfg = {**BASE, "simulation": {**BASE["simulation"], "seed_batch": batch}}
        msg, partial = failure(cfg)
        assert f"at t={alone[first]:g} " in msg and f"for seed {first};" in msg, (batch, msg, alone)
        assert partial.sizes["seed"] == 4 and np.all(np.isfinite(partial.m.values))  # no seed NaN-filled
        assert float(partial.t[-1]) < alone[first]
