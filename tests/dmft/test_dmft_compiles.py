"""A run compiles its few programs once and runs no eager JAX operation.

Every eager operation (a ``jnp`` call outside a jitted program) is a program of its own, traced,
lowered and compiled (or loaded from the compilation cache) on first use: tens of them cost
seconds of a user's first result. The default run had 35 such operations beside its 6 programs.
"""

from __future__ import annotations

import logging
import re

import jax

import sgdlab

#: the jitted programs of a simulation + DMFT run
PROGRAMS = {"key", "_seed_keys", "fold_in", "init_b", "observe_b", "advance_b", "_draw", "_march_solve", "_iteration", "_test_observables"}
#: and those of the noise study (replica pairs, linear response, the replica DMFT)
NOISE_PROGRAMS = PROGRAMS | {"replica_run", "response_runs"}


def _traced(caplog, cfg, run=sgdlab.run) -> list[str]:
    caplog.clear()
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):
        run(cfg)
    names = [re.match(r"Compiling jit\((\w+)\) with", r.getMessage()) for r in caplog.records]
    return [m.group(1) for m in names if m]


def test_a_run_traces_only_its_programs_and_nothing_twice(caplog):
    # shapes no other test uses (d, seeds, steps, samples), so that every program is traced here
    cfg = {"simulation": {"d": 123, "seeds": 3}, "algorithm": {"horizon": 3.7},
           "theory": {"methods": ["dmft"], "samples": 777, "solves": 2, "iterations": 3}}
    first = _traced(caplog, cfg)
    assert {"init_b", "advance_b", "_draw", "_iteration"} <= set(first), first  # the log is read
    assert set(first) <= PROGRAMS, sorted(set(first) - PROGRAMS)
    assert len(first) == len(set(first)), first  # each traced once (the solves share them)
    # other values, seeds and DMFT seed: the same programs, nothing traced again
    cfg2 = {**cfg, "simulation": {"d": 123, "seeds": [7, 8, 9]}, "problem": {"delta": 0.4, "ridge": 0.3},
            "algorithm": {"horizon": 3.7, "eta": 0.1, "batch_fraction": 0.5}, "theory": {**cfg["theory"], "seed": 5}}
    assert _traced(caplog, cfg2) == []


def test_the_noise_study_traces_only_its_programs(caplog):
    from sgdlab.dmft import noise

    cfg = {"problem": {"alpha": 2.0, "delta": 0.5, "loss": "logistic", "ridge": 0.5},
           "algorithm": {"name": "persistent_sgd", "eta": 0.05, "horizon": 1.35, "save_every": 3, "batch_fraction": 0.3,
                         "persistence_time": 0.5},
           "simulation": {"d": 71, "seeds": 2, "dtype": "float64"},
           "theory": {"samples": 333, "iterations": 2},
           "noise": {"max_lag": 0.25, "n_windows": 2, "n_probes": 2, "dmft_seeds": 2}}
    traced = _traced(caplog, cfg, noise.run)
    assert {"replica_run", "_draw", "_iteration"} <= set(traced), traced
    assert set(traced) <= NOISE_PROGRAMS, sorted(set(traced) - NOISE_PROGRAMS)
