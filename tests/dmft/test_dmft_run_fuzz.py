"""Validation accepts => the run starts and either finishes or stops with a named error
(hypothesis over the Gaussian-mixture config, at a bounded cost per example)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sgdlab
from sgdlab.core.errors import ConfigError, NonFiniteError

BASE = {"problem": {}, "algorithm": {"horizon": 1.0}, "simulation": {"d": 40, "seeds": 2},
        "theory": {"methods": ["dmft"], "samples": 600, "iterations": 4}}
EDGY = {
    "problem.clusters": st.sampled_from([2, 3]),
    "problem.alpha": st.sampled_from([0.05, 0.5, 2.0, 8.0]),
    "problem.delta": st.sampled_from([1e-6, 0.1, 0.5, 10.0]),
    "problem.loss": st.sampled_from(["square", "logistic", "squared_hinge"]),
    "problem.ridge": st.sampled_from([0.0, 1e-8, 0.1, 100.0]),
    "problem.m0": st.sampled_from([0.0, 0.3, -2.0, 1e3]),
    "problem.sigma0": st.sampled_from([0.0, 1e-6, 1.0, 1e3]),
    "algorithm.name": st.sampled_from(["gd", "sgd", "persistent_sgd", "sgf", "langevin"]),
    "algorithm.eta": st.sampled_from([1e-3, 0.05, 0.5, 3.0]),
    "algorithm.batch_fraction": st.sampled_from([0.01, 0.3, 1.0]),
    "algorithm.persistence_time": st.sampled_from([0.01, 1.0, 50.0]),
    "algorithm.normalisation": st.sampled_from(["unnormalised", "normalised"]),
    "simulation.dtype": st.sampled_from(["float32", "float64"]),
}


def put(tree, dotted, value):
    section, key = dotted.split(".")
    tree.setdefault(section, {})[key] = value


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_accepted_config_runs_or_stops_with_a_named_error(data):
    tree = copy.deepcopy(BASE)
    for key in data.draw(st.lists(st.sampled_from(sorted(EDGY)), min_size=1, max_size=4, unique=True), label="keys"):
        put(tree, key, data.draw(EDGY[key], label=key))
    try:
        cfg = sgdlab.load_config(tree)
    except ConfigError as err:
        assert "invalid config" in str(err)
        return
    if cfg.algorithm.n_steps > 4000:
        return  # a bounded cost per example
    try:
        ds = sgdlab.run(cfg)
    except NonFiniteError as err:
        assert " at t=" in str(err) and "seed" in str(err)
        assert err.partial is not None and err.partial.attrs["status"].startswith("failed")
        return
    status = ds.attrs["status"]
    assert status == "complete" or status.startswith("flagged: DMFT did not converge"), status
    sim = ds.sel({"method": "sim"})
    assert np.all(np.isfinite(sim.q.values)) and np.all(np.isfinite(sim.test_error.values))
