"""Validation accepts => the run starts and either finishes (complete, or flagged beyond SGD's
stability limit, with finite values) or stops with a named error (hypothesis over the SDE config,
edgy values of every key, at a bounded cost per example)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.sde.config import load_config
from sgdlab.sde.experiment import run

BASE = {"study": {"models": ["gf", "smf"], "etas": [0.25, 0.125, 0.0625], "horizon": 1.0}, "solver": {"paths": 200, "chunk": 200}}
EDGY = {
    "problem.kind": st.sampled_from(["quadratic_1d", "least_squares", "logistic", "two_layer"]),
    "problem.a": st.sampled_from([[0.5, 1.0], [0.0, 0.0], [1e3, -1e3], [40.0, 60.0], [1e-300, 1e300]]),
    "problem.b": st.sampled_from([[0.0, 0.0], [1e6, -1e6], [1.0, 1.0, 1.0]]),
    "problem.n_samples": st.sampled_from([2, 7, 40]),
    "problem.dim": st.sampled_from([1, 3]),
    "problem.data_seed": st.sampled_from([0, 2**40]),
    "problem.label_noise": st.sampled_from([0.0, 1e3]),
    "problem.ridge": st.sampled_from([0.0, 1e-8, 100.0]),
    "problem.width": st.sampled_from([1, 3]),
    "problem.batch_size": st.sampled_from([1, 3, 10_000]),
    "problem.starts": st.sampled_from([[[0.0]], [[1e6]], [[1.0], [-1.0]], [[1e300]], [[1.0, 2.0, 3.0]]]),
    "study.models": st.sampled_from([["gf"], ["sme1", "sme2"], ["smf", "smf_independent"], ["smf_expected_gradient", "svag"]]),
    "study.observables": st.sampled_from([["mean"], ["variance", "loss"], ["inner", "cross_cov", "sq_distance"], ["second_moment"]]),
    "study.horizon": st.sampled_from([0.5, 1.0, 4.0]),
    "study.etas": st.sampled_from([[0.5, 0.25, 0.125], [1 / 16, 1 / 32, 1 / 64], [0.25, 0.125, 1 / 1024]]),
    "study.svag_l": st.sampled_from([1, 7]),
    "solver.method": st.sampled_from(["auto", "exact", "monte_carlo"]),
    "solver.paths": st.sampled_from([100, 257]),
    "solver.scheme": st.sampled_from(["weak2", "talay_tubaro", "euler"]),
    "solver.substeps": st.sampled_from([1, 3]),
    "solver.seed": st.sampled_from([0, 2**40]),
    "solver.antithetic": st.booleans(),
    "solver.chunk": st.sampled_from([100, 1000]),
}
#: the bound on SDE / SGD steps times paths of one example
MAX_WORK = 4_000_000


def put(tree, dotted, value):
    section, key = dotted.split(".")
    tree.setdefault(section, {})[key] = value


def work(cfg) -> float:
    steps = cfg.study.horizon / min(cfg.study.etas) * max(cfg.solver.substeps, cfg.study.svag_l if "svag" in cfg.study.models else 1)
    return steps * max(cfg.solver.paths, cfg.solver.chunk)


def check(tree):
    try:
        cfg = load_config(tree)
    except ConfigError as err:
        assert str(err).startswith("invalid config:\n  "), err
        return "refused"
    if work(cfg) > MAX_WORK:
        return "too long"
    try:
        ds = run(cfg)
    except NonFiniteError as err:
        msg = str(err)
        assert " at t=" in msg and ("seed" in msg), msg
        assert err.partial is not None and err.partial.attrs["status"].startswith("failed: ")
        return "non-finite"
    status = ds.attrs["status"]
    assert status == "complete" or status.startswith("flagged: SGD is beyond its stability limit"), status
    assert np.all(np.isfinite(ds.sgd.values)) and np.all(np.isfinite(ds.value.values))
    return status.split(":")[0]


def draw_tree(data):
    tree = copy.deepcopy(BASE)
    for key in data.draw(st.lists(st.sampled_from(sorted(EDGY)), min_size=1, max_size=4, unique=True), label="keys"):
        put(tree, key, data.draw(EDGY[key], label=key))
    return tree


@pytest.mark.slow
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_accepted_config_runs_or_stops_with_a_named_error(data):
    check(draw_tree(data))


#: the keys of the exact route on the 1-d quadratic (no compilation per example): the CI version
QUICK_KEYS = ("problem.a", "problem.b", "problem.batch_size", "problem.starts", "study.models", "study.horizon", "study.etas")


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_accepted_quadratic_runs_or_stops_with_a_named_error(data):
    tree = copy.deepcopy(BASE)
    for key in data.draw(st.lists(st.sampled_from(QUICK_KEYS), min_size=1, max_size=3, unique=True), label="keys"):
        put(tree, key, data.draw(EDGY[key], label=key))
    tree["study"]["models"] = [m for m in tree["study"]["models"] if m != "svag"] or ["gf"]  # SVAG is Monte Carlo for l > 1
    check(tree)


#: fixed cases for CI: an unstable quadratic (flagged), a divergence (named), an edgy valid one
QUICK = [
    ({"problem": {"a": [40.0, 60.0], "b": [1.0, 1.0]}}, "flagged"),
    ({"problem": {"a": [1e3, -1e3], "b": [0.0, 0.0]}, "study": {"horizon": 100.0}}, "non-finite"),
    ({"problem": {"a": [0.0, 0.0], "b": [1e6, -1e6], "starts": [[1e6]]}}, "complete"),
]


@pytest.mark.parametrize("tree, outcome", QUICK)
def test_quick_cases_run_or_stop_with_a_named_error(tree, outcome):
    full = copy.deepcopy(BASE)
    for section, table in tree.items():
        full.setdefault(section, {}).update(table)
    assert check(full) == outcome
