"""The simulator's two products with the data matrix, by row blocks.

Per step the simulator reads its data matrix ``X (n, d)`` twice: ``X w`` (the fields) and
``r^T X`` (the data gradient). XLA's CPU product of one whole matrix with a vector runs several
times below memory bandwidth; written as a vmapped batch of row blocks it runs near it
(docs/benchmarks.md, simulator throughput: one seed at ``d = 2000``, float32, 2-3x the whole
product). The blocks are a function of ``n`` alone (:func:`row_blocks`) and the partial sums
of the gradient are added in block order. Under a ``vmap`` (several runs batched into one
product) XLA may still change the summation order with the batch width; run one entry at a
time (``batched(spec, "map")`` of :mod:`sgdlab.dmft.simulation`) for results that depend on the
run alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

#: Candidate numbers of row blocks of the data matrix in :func:`fields` / :func:`data_gradient`.
ROW_BLOCKS = (16, 8, 4, 2)


def row_blocks(n: int) -> int:
    """Row blocks of an ``(n, d)`` data matrix: the largest of :data:`ROW_BLOCKS` dividing ``n``
    (1 when ``n`` is odd)."""
    return next((k for k in ROW_BLOCKS if n % k == 0), 1)


def fields(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w.T``: ``x (n, d)`` with ``w (d,)`` -> ``(n,)``, or ``w (P, d)`` -> ``(P, n)``.

    As a vmapped batch of :func:`row_blocks` row blocks (each output entry stays one row's dot
    product over ``d``)."""
    n, d = x.shape
    k = row_blocks(n)
    wt = w.T  # (d,) or (d, P)
    out = x @ wt if k == 1 else jax.vmap(lambda xk: xk @ wt)(x.reshape(k, n // k, d)).reshape(n, *w.shape[:-1])
    return out.T  # (n,) or (P, n)


def data_gradient(x: jax.Array, r: jax.Array) -> jax.Array:
    """``r @ x``: ``r (n,)`` -> ``(d,)``, or ``r (P, n)`` -> ``(P, d)``.

    By :func:`row_blocks` row blocks (vmapped, as :func:`fields`), whose partial sums are added
    in block order (a fixed order: the result depends on ``n`` and the data only)."""
    n, d = x.shape
    k = row_blocks(n)
    if k == 1:
        return r @ x
    rb = r.reshape(*r.shape[:-1], k, n // k)
    parts = jax.vmap(lambda xk, rk: rk @ xk, in_axes=(0, -2))(x.reshape(k, n // k, d), rb)  # (k, [P,] d)
    return functools.reduce(lambda a, b: a + b, [parts[i] for i in range(k)])
