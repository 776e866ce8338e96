"""Validation accepts => the run starts and either finishes with finite values or stops with a
named error: a NonFiniteError naming the quantity, the time and the seed, or a ConfigError naming
a key (hypothesis over the manifold config: whole model and noise tables, edgy values of the
simulation and limit keys, at a bounded cost per example: at most 20000 steps per eta)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.manifold import experiment as me
from sgdlab.manifold.config import load_config

BASE = {"simulation": {"etas": [0.05, 0.025], "runs": 3, "tau_max": 0.2, "tau_save": 0.1, "max_steps": 20_000}, "limit": {"substeps": 2}}
MODELS = [
    {"name": "hyperbola"},
    {"name": "hyperbola", "n": 3},
    {"name": "hyperbola", "init": [0.0, 0.0]},
    {"name": "hyperbola", "init": [1e3, 1e-3]},
    {"name": "two_unit"},
    {"name": "two_unit", "init": [1.2, 0.5, 0.3, 0.9]},
    {"name": "diagonal", "d": 4, "n": 2},
    {"name": "diagonal", "d": 3, "n": 2, "init_scale": 30.0, "data_seed": 2**40},
    {"name": "tanh", "width": 2, "input_dim": 3, "n": 2},
]
NOISES = [
    {"name": "label_noise", "sigma": 1.0},
    {"name": "label_noise", "sigma": 100.0, "distribution": "rademacher"},
    {"name": "dropout", "sigma": 0.2},
    {"name": "dropconnect", "sigma": 0.3, "distribution": "gaussian"},
    {"name": "perturbed_gd", "sigma": 0.2, "sigma_scaling": "sqrt_eta"},
    {"name": "anticorrelated_perturbed_gd", "sigma": 0.2},
    {"name": "sgld", "sigma": 1.0},
    {"name": "sgld", "sigma": 1e-6},
    {"name": "minibatch_sgd", "batch_size": 1},
]
EDGY = {
    "simulation.etas": st.sampled_from([[0.05, 0.025], [1.0, 0.5], [1e-3]]),
    "simulation.runs": st.sampled_from([2, 5]),
    "simulation.tau_save": st.sampled_from([0.1, 0.05, 0.2]),
    "simulation.seed": st.sampled_from([0, 2**40]),
    "simulation.max_steps": st.sampled_from([1, 20_000]),
    "limit.kind": st.sampled_from(["auto", "non_degenerate", "degenerate", "trivial"]),
    "limit.substeps": st.sampled_from([1, 3]),
    "limit.phi_tol": st.sampled_from([1e-12, 1e-7]),
    "limit.rank_rtol": st.sampled_from([1e-12, 1e-3]),
}
#: a ConfigError raised by the run (after validation) names a dotted key or the memory estimate
NAMED = re.compile(r"^invalid config:\n  ([a-z_]+(\.[a-z_]+)?|config): ")


def check(tree):
    try:
        cfg = load_config(tree)
    except ConfigError as err:
        assert str(err).startswith("invalid config:\n  "), err
        return "refused"
    try:
        ds = me.run(cfg)
    except NonFiniteError as err:
        msg = str(err)
        assert " at t=" in msg and "seed" in msg, msg
        if err.partial is not None:
            assert err.partial.attrs["status"].startswith("failed: ")
        return "non-finite"
    except ConfigError as err:
        assert NAMED.match(str(err)), err
        return "refused by the run"
    assert ds.attrs["status"] == "complete"
    for name in ds.data_vars:
        assert np.all(np.isfinite(ds[name].values)), name
    return "complete"


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_accepted_config_runs_or_stops_with_a_named_error(data):
    tree = copy.deepcopy(BASE)
    tree["model"] = copy.deepcopy(data.draw(st.sampled_from(MODELS), label="model"))
    tree["noise"] = copy.deepcopy(data.draw(st.sampled_from(NOISES), label="noise"))
    for key in data.draw(st.lists(st.sampled_from(sorted(EDGY)), max_size=3, unique=True), label="keys"):
        section, name = key.split(".")
        tree[section][name] = data.draw(EDGY[key], label=key)
    check(tree)
