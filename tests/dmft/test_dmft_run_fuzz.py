"""Validation accepts => the run starts and either finishes or stops with a named error
(hypothesis over the Gaussian-mixture configs of ``sgdlab run`` and ``sgdlab noise``, at a
bounded cost per example)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sgdlab
from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.dmft import noise as en

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


def draw_tree(data, base: dict, edgy: dict) -> dict:
    """``base`` with one to four of the ``edgy`` keys set to a drawn value."""
    tree = copy.deepcopy(base)
    for key in data.draw(st.lists(st.sampled_from(sorted(edgy)), min_size=1, max_size=4, unique=True), label="keys"):
        put(tree, key, data.draw(edgy[key], label=key))
    return tree


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_accepted_config_runs_or_stops_with_a_named_error(data):
    tree = draw_tree(data, BASE, EDGY)
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


NOISE_BASE = {
    "problem": {"alpha": 2.0, "delta": 0.5, "loss": "logistic", "ridge": 0.5},
    "algorithm": {"name": "persistent_sgd", "eta": 0.05, "horizon": 1.5, "save_every": 3,
                  "batch_fraction": 0.3, "persistence_time": 0.5},
    "simulation": {"d": 60, "seeds": 2, "dtype": "float64"},
    "theory": {"samples": 400, "iterations": 2},
    "noise": {"max_lag": 0.25, "n_windows": 2, "n_probes": 2, "dmft_seeds": 0},
}
NOISE_EDGY = {
    "problem.alpha": st.sampled_from([0.05, 0.5, 2.0, 8.0]),
    "problem.delta": st.sampled_from([1e-6, 0.5, 10.0]),
    "problem.loss": st.sampled_from(["square", "logistic", "squared_hinge"]),
    "problem.ridge": st.sampled_from([0.0, 1e-8, 0.5, 100.0]),
    "problem.m0": st.sampled_from([0.0, 0.3, 1e3]),
    "problem.sigma0": st.sampled_from([0.0, 1e-6, 1.0, 1e3]),
    "algorithm.name": st.sampled_from(["gd", "sgd", "persistent_sgd", "sgf", "langevin"]),
    "algorithm.eta": st.sampled_from([1e-3, 0.05, 0.5, 3.0]),
    "algorithm.batch_fraction": st.sampled_from([0.01, 0.3, 1.0]),
    "algorithm.persistence_time": st.sampled_from([0.01, 1.0, 50.0]),
    "algorithm.temperature": st.sampled_from([0.0, 1e-3, 1.0]),
    "noise.n_replicas": st.sampled_from([2, 3]),
    "noise.max_lag": st.sampled_from([0.01, 0.25, 1.5, 10.0]),
    "noise.n_windows": st.sampled_from([1, 2, 50]),
    "noise.short_lags": st.sampled_from([1, 3, 40]),
    "noise.equilibration": st.sampled_from([0.1, 1.0, 100.0]),
    "noise.units": st.sampled_from(["field", "loss"]),
    "noise.dmft_seeds": st.sampled_from([0, 2]),
    "noise.tail": st.sampled_from([0.01, 0.25, 1.0]),
}


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_accepted_noise_config_runs_or_stops_with_a_named_error(data):
    tree = draw_tree(data, NOISE_BASE, NOISE_EDGY)
    try:
        cfg = en.load_noise_config(tree)
    except ConfigError as err:
        assert "invalid config" in str(err), str(err)
        return
    if cfg.algorithm.n_steps > 2000:
        return  # a bounded cost per example
    try:
        ds = en.run(cfg)
    except NonFiniteError as err:
        assert " at t=" in str(err) and "seed" in str(err), str(err)
        return
    status = ds.attrs["status"]
    assert status == "complete" or status.startswith("flagged"), status
    assert np.all(np.isfinite(ds.D.values)) and np.all(np.isfinite(ds.q.values))
