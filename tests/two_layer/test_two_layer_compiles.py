"""A timescales run compiles its few programs once and runs no eager JAX operation.

Every eager operation (a ``jnp`` call outside a jitted program) is a program of its own, traced,
lowered and compiled (or loaded from the compilation cache) on first use: tens of them cost
seconds of a user's first result. The default run had 28 such compilations beside its programs.
"""

from __future__ import annotations

import logging
import re

import diffrax
import jax

from sgdlab.two_layer import run

#: the jitted programs of a timescales run: the keys, the initial overlaps of the flow (one per
#: ``(m, d, seeds)``: ``d`` is static, it sets the shape of the drawn vectors when ``d <= m + 1000``),
#: the vmapped flow, online SGD (vmapped) and the reduced dynamics (``ode_kernel``)
PROGRAMS = {"key", "fold_in", "random_starts", "flow_kernel", "online_sgd_seeds", "ode_kernel"}


def _traced(caplog, cfg) -> list[str]:
    caplog.clear()
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):
        run(cfg)
    names = [re.match(r"Compiling jit\((\w+)\) with", r.getMessage()) for r in caplog.records]
    return [m.group(1) for m in names if m]


def _diffrax_constants():
    """diffrax evaluates ``is_okay(result)`` on constants while its solve is traced (equinox's
    ``ensure_compile_time_eval``): two eager programs (``convert_element_type``, ``bitwise_or``)
    once per process, outside sgdlab. Evaluated here first, so that the test sees only sgdlab's."""
    ok = diffrax.RESULTS.successful
    with jax.ensure_compile_time_eval():
        (ok == ok) | (ok == ok)


def test_a_run_traces_only_its_programs_and_nothing_twice(caplog):
    _diffrax_constants()
    # shapes no other test uses (n_times, m, d, seeds, batch), so that every program is traced here;
    # the d scan has one small d (drawn vectors) and the flow's d (reused)
    cfg = {"seed": 3,
           "dynamics": {"eps": 0.05, "t_max": 0.2, "n_times": 23},
           "flow": {"m": 5, "d": 1234, "seeds": 3, "solver": "tsit5"},
           "sgd": {"m": 6, "d": 57, "seeds": 3, "eta": 1e-3, "batch": 3},
           "reduced": {"m": 7, "solver": "tsit5"},
           "scan": {"eps": [0.02, 0.03, 0.05], "t_max": 0.1, "d": [29, 1234]}}
    first = _traced(caplog, cfg)
    assert {"flow_kernel", "online_sgd_seeds", "ode_kernel"} <= set(first), first  # the log is read
    assert set(first) <= PROGRAMS, sorted(set(first) - PROGRAMS)
    # each once, random_starts once per d (the scalar `key` / `fold_in` may already be compiled by
    # another test in this process, so their absence is allowed)
    assert first.count("random_starts") == 2, first
    assert all(first.count(p) == 1 for p in set(first) - {"random_starts"}), first
    # other seed, eps, times, step and scan eps: nothing traced again (not the problem: online SGD
    # takes it as a static argument, nor d or m: static or shapes)
    cfg2 = {**cfg, "seed": 11, "dynamics": {"eps": 0.04, "t_max": 0.3, "n_times": 23, "a_scale": 0.8},
            "sgd": {**cfg["sgd"], "eta": 5e-4}, "scan": {**cfg["scan"], "eps": [0.01, 0.02, 0.04], "t_max": 0.15}}
    assert _traced(caplog, cfg2) == []
