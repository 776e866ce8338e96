"""A symmetric eigensolver in plain JAX operations (no LAPACK): the cyclic Jacobi method.

Why. XLA's CPU ``eigh`` is a LAPACK custom call; batched (under ``vmap``) it splits the batch over
the XLA CPU thread pool and waits for the pieces. Called from inside a ``vmap``-ed loop that
already occupies every pool thread (the SGLD limit with ``10^4`` paths) each thread waits for
work that no free thread can run: a deadlock, with no CPU use and no progress. The limit solver
(:mod:`sgdlab.manifold.limit`) therefore diagonalises its Hessians here, with element-wise
operations and gathers only, which XLA runs inside the loop like any other arithmetic.

Method (Golub & Van Loan, *Matrix Computations*, 4th ed., section 8.5, Jacobi methods: the
2-by-2 symmetric Schur decomposition ``symSchur2`` and the parallel ordering). A sweep runs ``m - 1``
rounds (``m = p`` rounded up to even; an odd ``p`` gets a decoupled zero row and column); each
round rotates ``m / 2`` disjoint pairs ``(i, j)`` of a round-robin tournament at once,

    tau = (a_jj - a_ii) / (2 a_ij),  t = sign(tau) / (|tau| + sqrt(1 + tau^2)),
    c = 1 / sqrt(1 + t^2),  s = t c,  A <- J^T A J,  V <- V J,

``J`` the rotation with ``J_ii = J_jj = c``, ``J_ij = s``, ``J_ji = -s``, which zeroes ``a_ij``
(set to exactly 0). Sweeps repeat until the off-diagonal Frobenius norm is at most
``tol = 4 p eps`` times the Frobenius norm (quadratic convergence: about 4 to 8 sweeps; at most
``MAX_SWEEPS``), so the eigenvalues carry the backward error of LAPACK's, ``O(p eps |A|)``, and
the invariant subspaces the usual ``O(p eps |A| / gap)``. ``p = 2`` takes one rotation. Cost per
sweep: ``O(p^3)`` flops in ``m - 1`` steps of ``O(p^2)`` work, fine for the small Hessians of the
limit solver (``p`` up to a few dozen); a stopped sweep count keeps NaN input from looping.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

#: an upper bound on the sweeps (quadratic convergence needs about 4 to 8)
MAX_SWEEPS = 30


def _tournament(m: int) -> np.ndarray:
    """``partner (m - 1, m)``: in round ``k`` index ``i`` is paired with ``partner[k, i]`` (a
    round-robin tournament on ``m`` players, ``m`` even: every pair meets exactly once a sweep)."""
    rounds = np.zeros((m - 1, m), dtype=np.int32)
    players = list(range(m))
    for k in range(m - 1):
        for a in range(m // 2):
            i, j = players[a], players[m - 1 - a]
            rounds[k, i], rounds[k, j] = j, i
        players = [players[0], players[-1], *players[1:-1]]  # rotate all but the first
    return rounds


def _rotations(a: Array, partner: Array) -> tuple[Array, Array]:
    """Per index ``i``: the coefficients ``(own, other)`` with which row (and column) ``i`` of the
    rotated matrix combines rows ``i`` and ``partner[i]``: ``(c, -s)`` for the first of a pair,
    ``(c, s)`` for the second (``symSchur2``; the identity where ``a_ij = 0``)."""
    idx = jnp.arange(a.shape[0])
    first = idx < partner
    i, j = jnp.where(first, idx, partner), jnp.where(first, partner, idx)
    a_ii, a_jj, a_ij = a[i, i], a[j, j], a[i, j]
    zero = a_ij == 0
    tau = (a_jj - a_ii) / (2 * jnp.where(zero, 1.0, a_ij))
    sign = jnp.where(tau >= 0, 1.0, -1.0)
    t = jnp.where(zero, 0.0, sign / (jnp.abs(tau) + jnp.hypot(1.0, tau)))
    c = 1 / jnp.sqrt(1 + t * t)
    s = t * c
    return c, jnp.where(first, -s, s)


def _round(a: Array, v: Array, partner: Array) -> tuple[Array, Array]:
    own, other = _rotations(a, partner)
    a = own[:, None] * a + other[:, None] * a[partner, :]  # J^T A
    a = a * own[None, :] + a[:, partner] * other[None, :]  # (J^T A) J
    a = a.at[jnp.arange(a.shape[0]), partner].set(0.0)  # the rotated pairs: exactly 0
    return a, v * own[None, :] + v[:, partner] * other[None, :]


def _off_norm(a: Array) -> Array:
    off = jnp.where(jnp.eye(a.shape[0], dtype=bool), 0.0, a)
    return jnp.sqrt(jnp.sum(off * off))


def jacobi_eigh(a: Array) -> tuple[Array, Array]:
    """``(eigenvalues (p,) ascending, eigenvectors (p, p) as columns)`` of the symmetric part of
    ``a (p, p)``, like ``jnp.linalg.eigh`` but without LAPACK (safe inside ``vmap`` on CPU).
    Jittable and vmappable; each vector is determined up to its sign (and up to a rotation
    inside a repeated eigenvalue's space), as with LAPACK."""
    a = 0.5 * (a + a.T)
    p = a.shape[0]
    if p == 1:
        return a[0], jnp.ones((1, 1), a.dtype)
    m = p + p % 2
    if m != p:  # odd: a decoupled zero row and column, which no rotation touches
        a = jnp.zeros((m, m), a.dtype).at[:p, :p].set(a)
    rounds = jnp.asarray(_tournament(m))
    tol = 4.0 * p * jnp.finfo(a.dtype).eps * jnp.sqrt(jnp.sum(a * a))

    def sweep(state):
        a, v, k = state
        a, v = jax.lax.fori_loop(0, m - 1, lambda r, av: _round(*av, rounds[r]), (a, v))
        return a, v, k + 1

    def more(state):
        a, _, k = state
        return (_off_norm(a) > tol) & (k < MAX_SWEEPS)

    a, v, _ = jax.lax.while_loop(more, sweep, (a, jnp.eye(m, dtype=a.dtype), 0))
    lam, v = jnp.diagonal(a)[:p], v[:p, :p]
    order = jnp.argsort(lam)
    return lam[order], v[:, order]
