"""A manifold run compiles its few programs and runs no eager JAX operation of its own.

Every eager operation (a ``jnp`` call outside a jitted program) is a program of its own, traced,
lowered and compiled (or loaded from the compilation cache) on first use: tens of them cost
seconds of a user's first result. The default run had 41 such operations beside its 7 programs
(and 5 scalar conversions that diffrax, equinox and lineax compile while Phi is traced: not the wing's).
"""

from __future__ import annotations

import logging
import re

import jax
import numpy as np

import sgdlab  # noqa: F401  (x64)
from sgdlab.manifold import experiment as me
from sgdlab.manifold import geometry

#: the jitted programs of a run: Phi and the Hessian (``<lambda>``), the losses at Phi(w0) and w0,
#: the classification norms, the keys, the limit (``run``: the flow; ``path``: the SDE), the
#: observables of the limit, the simulation (one per eta)
PROGRAMS = {"<lambda>", "losses", "norms", "_run_keys", "run", "path", "observe", "one_run"}

# shapes no other test uses (n, runs, saves), so that every program and eager op is traced here
CFG = {
    "model": {"name": "hyperbola", "n": 7, "init": [1.9, 0.7]},
    "noise": {"name": "label_noise", "sigma": 1.0},
    "simulation": {"etas": [0.1, 0.05], "runs": 5, "tau_max": 0.7, "tau_save": 0.1, "seed": 3},
    "limit": {"substeps": 2},
}


def _traced(caplog, cfg) -> list[str]:
    caplog.clear()
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):
        me.run(cfg)
    names = [re.match(r"Compiling jit\((\S+)\) with", r.getMessage()) for r in caplog.records]
    return [m.group(1) for m in names if m]


def test_a_run_traces_only_its_programs_and_nothing_twice(caplog):
    # diffrax / equinox / lineax compile a few scalar conversions of their own while Phi is traced
    # (not the wing's, and cached per process): a solve on another loss compiles them first
    phi = geometry.jitted_gradient_flow_limit(lambda w: 0.5 * (w[0] * w[1] * w[2] - 1.0) ** 2)
    assert np.all(np.isfinite(np.asarray(phi(np.array([1.5, 0.9, 0.8])))))
    first = _traced(caplog, CFG)
    assert {"<lambda>", "norms", "run", "observe", "one_run"} <= set(first), first  # the log is read
    assert set(first) <= PROGRAMS, sorted(set(first) - PROGRAMS)
    assert first.count("one_run") == 2, first  # one per eta (eta and sigma are constants of it)
    assert first.count("<lambda>") <= 2, first  # Phi and the Hessian, each traced once at most
    assert sorted(p for p in first if p not in ("one_run", "<lambda>")) == sorted(set(first) - {"one_run", "<lambda>"}), first
    # another seed and fast-phase tolerance: the same programs, nothing traced again
    cfg2 = {**CFG, "simulation": {**CFG["simulation"], "seed": 11}, "limit": {"substeps": 2, "phi_tol": 1e-11}}
    assert _traced(caplog, cfg2) == []
