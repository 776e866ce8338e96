"""Random keys made by compiled programs, shared by every wing.

Called eagerly, ``jax.random.key`` and ``jax.random.fold_in`` are each several small programs
that JAX traces, lowers and compiles (or loads from the compilation cache) at their first use:
tens of milliseconds apiece of a user's first result. Jitted once here, each is one program for
every seed and every folded value; the keys are the same bits as the eager calls' (tested).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

#: ``key(seed)``: ``jax.random.key`` in one program (any integer seed the eager call accepts)
root_key = jax.jit(jax.random.key)
#: ``fold_in(key, data)``: ``jax.random.fold_in`` in one program
fold_in = jax.jit(jax.random.fold_in)


@jax.jit
def _seed_keys(seeds):
    # a program of its own name: ``jit(vmap(key))`` would be logged as ``key`` beside ``root_key``
    return jax.vmap(jax.random.key)(seeds)


def seed_keys(seeds) -> jax.Array:
    """Typed keys ``(n_seeds,)`` of integer seeds in ``[0, 2^32)``: the key of seed ``s`` is
    ``jax.random.key(s)``."""
    return _seed_keys(np.asarray(list(seeds), dtype=np.uint32))


def run_keys(seed: int, n_runs: int, salt: int = 0) -> jax.Array:
    """``n_runs`` independent keys ``fold_in(fold_in(key(seed), salt), r)``, ``r = 0..n_runs-1``:
    the runs of one seed (one jitted program, compiled once per ``n_runs``; ``seed`` and ``salt``
    are traced, as ``key`` and ``fold_in`` take them)."""
    return _run_keys(np.int64(seed), int(n_runs), np.int64(salt))


@functools.partial(jax.jit, static_argnums=1)
def _run_keys(seed, n_runs, salt):
    base = jax.random.fold_in(jax.random.key(seed), salt)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(n_runs))
