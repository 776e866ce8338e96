"""Random keys made by compiled programs, shared by every wing.

Called eagerly, ``jax.random.key`` and ``jax.random.fold_in`` are each several small programs
that JAX traces, lowers and compiles (or loads from the compilation cache) at their first use:
tens of milliseconds apiece of a user's first result. Jitted once here, each is one program for
every seed and every folded value; the keys are the same bits as the eager calls' (tested).
"""

from __future__ import annotations

import jax
import numpy as np

#: ``key(seed)``: ``jax.random.key`` in one program (any integer seed the eager call accepts)
root_key = jax.jit(jax.random.key)
#: ``fold_in(key, data)``: ``jax.random.fold_in`` in one program
fold_in = jax.jit(jax.random.fold_in)
_seed_keys = jax.jit(jax.vmap(jax.random.key))


def seed_keys(seeds) -> jax.Array:
    """Typed keys ``(n_seeds,)`` of integer seeds in ``[0, 2^32)``: the key of seed ``s`` is
    ``jax.random.key(s)``."""
    return _seed_keys(np.asarray(list(seeds), dtype=np.uint32))
