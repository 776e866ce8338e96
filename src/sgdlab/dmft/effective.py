"""Effective process of the discrete-time DMFT: the common random numbers of a solve, the
Monte-Carlo sample of the effective single-sample process and its kernel estimates.

See :mod:`sgdlab.dmft.solver` (sections Equations and Memory-kernel estimator).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from sgdlab.dmft import losses
from sgdlab.dmft import problem as gm
from sgdlab.dmft.dynamics import Dynamics
from sgdlab.dmft.weight_side import EFFECTIVE, KERNELS, Kernels, OrderParameters, lookahead

# Random streams of one solve: fold_in(key(seed), STREAM).
_STREAM_CLUSTERS, _STREAM_MASK, _STREAM_FIELD, _STREAM_PROBE = range(4)
# Floor of the diagonal entries the relative jitter is taken of (C is O(1) in this model).
_JITTER_FLOOR = 1e-6


class Noise(NamedTuple):
    """The common random numbers of one solve (``N`` trajectories, ``T+1`` times): clusters
    ``c (N,)``, labels ``y (N,)``, masks ``s (T+1, N)`` (0./1.), white noise ``z (T+1, N)``
    (``g0 = L z``), Rademacher probes ``eps (T+1, N)`` (``(T+1, 0)`` without the probe) and the
    lower Cholesky factor ``gram_chol (T+1, T+1)`` of their Gram matrix ``eps eps^T / N``
    (identity without the probe).

    The ``N``-sized arrays share one dtype, the dtype of all ``N``-sized work of the solve
    (float64, or float32 for the solver's ``precision = "mixed"``); ``gram_chol`` is float64."""

    c: jax.Array
    y: jax.Array
    s: jax.Array
    z: jax.Array
    eps: jax.Array
    gram_chol: jax.Array


def regularised_cholesky(C: jax.Array, jitter: float) -> jax.Array:
    """Lower Cholesky factor of ``C + diag(jitter * max(C_kk, 1e-6))``; NaN if not positive definite.

    The jitter of time ``k`` depends on ``C_kk`` only, so the factor stays causal (row ``k`` depends
    on ``C[:k+1, :k+1]``), which the time march relies on.
    """
    d = jnp.diag(C)
    return jnp.linalg.cholesky(C + jnp.diag(jitter * jnp.maximum(d, _JITTER_FLOOR)))


def _mask_chain_path(key: jax.Array, dynamics: Dynamics, n_times: int, n: int) -> jax.Array:
    """Mask chain ``s (n_times, n)`` as float: ``s_0 ~ Bernoulli(b)``, then the two-state chain."""
    u = jax.random.uniform(key, (n_times, n), jnp.float64)
    s0 = u[0] < dynamics.b
    if dynamics.per_step:  # transition k -> k + 1 with (p_on[k], p_off[k])
        probs = [jnp.broadcast_to(jnp.asarray(p), (dynamics.n_steps,))[: n_times - 1] for p in (dynamics.p_on, dynamics.p_off)]

        def step_k(s, xs):
            uk, on, off = xs
            s_new = jnp.where(s, uk >= off, uk < on)
            return s_new, s_new

        _, rest = jax.lax.scan(step_k, s0, (u[1:], *probs))
        return jnp.concatenate([s0[None], rest], axis=0).astype(jnp.float64)

    def step(s, uk):
        s_new = jnp.where(s, uk >= dynamics.p_off, uk < dynamics.p_on)
        return s_new, s_new

    _, rest = jax.lax.scan(step, s0, u[1:])
    return jnp.concatenate([s0[None], rest], axis=0).astype(jnp.float64)


def draw_noise(problem: gm.GaussianMixture, dynamics: Dynamics, key: jax.Array, samples: int, probe: bool = True,
               dtype=jnp.float64) -> Noise:
    """The common random numbers of a solve (see :class:`Noise`); ``O(N T)`` draws plus the
    ``O(N T^2)`` probe Gram matrix and its ``O(T^3)`` Cholesky factor.

    The numbers are drawn in float64 and stored in ``dtype``: a float32 solve sees the float64
    solve's numbers rounded (masks, clusters and probes exactly), so the two differ by rounding
    only. The Gram matrix of the +-1 probes is computed in ``dtype`` when that is exact (integer
    sums below ``2^24`` in float32)."""
    tp = dynamics.n_steps + 1
    c = gm.sample_clusters(jax.random.fold_in(key, _STREAM_CLUSTERS), problem, (samples,), jnp.float64).astype(dtype)
    s = _mask_chain_path(jax.random.fold_in(key, _STREAM_MASK), dynamics, tp, samples).astype(dtype)
    z = jax.random.normal(jax.random.fold_in(key, _STREAM_FIELD), (tp, samples), jnp.float64).astype(dtype)
    if probe:
        eps = jax.random.rademacher(jax.random.fold_in(key, _STREAM_PROBE), (tp, samples), jnp.float64).astype(dtype)
        exact = jnp.finfo(dtype).nmant >= 52 or samples < 2 ** (jnp.finfo(dtype).nmant + 1)
        gram = (eps @ eps.T if exact else eps.astype(jnp.float64) @ eps.T.astype(jnp.float64)).astype(jnp.float64)
        gram_chol = jnp.linalg.cholesky(gram / samples)
    else:
        eps = jnp.zeros((tp, 0), dtype)
        gram_chol = jnp.eye(tp)
    return Noise(c, gm.labels(problem, c), s, z, eps, gram_chol)


def probe_regression(b: jax.Array, gram_chol: jax.Array) -> jax.Array:
    """Least-squares coefficients of the tangents on the probes, row by row (causal).

    ``b[k, j] = E_N[dLam_off_k eps_j]`` and ``G = E_N[eps eps^T] = gram_chol gram_chol^T``; row
    ``k`` of the result solves ``G[:k, :k] x = b[k, :k]`` (zero for ``j >= k``). Two triangular
    solves with all rows as right-hand sides (the leading block of a Cholesky factor is the factor
    of the leading block); ``O(T^3)``.
    """
    tp = b.shape[0]
    causal = jnp.arange(tp)[:, None] < jnp.arange(tp)[None, :]  # [j, k]: j < k
    y = solve_triangular(gram_chol, jnp.where(causal, b.T, 0.0), lower=True)
    x = solve_triangular(gram_chol.T, jnp.where(causal, y, 0.0), lower=False)
    return x.T


def _loss_derivatives(problem: gm.GaussianMixture):
    loss = gm.sample_loss(problem)
    return loss, losses.derivative(loss, 1), losses.derivative(loss, 2)


def effective_scan(
    problem: gm.GaussianMixture, noise: Noise, m: jax.Array, g0: jax.Array, R: jax.Array, block: int = 16,
    gamma=None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Run the effective process for given ``m (T+1,)``, fields ``g0 (T+1, N)`` and ``R``.

    Returns ``Lam (T+1, N)``, the off-diagonal tangent ``dLam_off (T+1, N)`` (``(T+1, 0)``
    without probes: ``noise.eps`` empty) and per-time averages ``stats (T+1, 3)`` = (loss,
    misclassified, ``a``; float64). Time is cut in blocks of ``block`` steps: the memory of all
    earlier blocks is one matrix product per block, the rest a ``lax.scan`` step by step.
    ``O(N T^2)``. The ``N``-sized work runs in the dtype of ``noise.z`` (``R`` is rounded to it).

    With Nesterov momentum (``gamma`` given), ``m, g0, R`` are those of the lookahead point
    ``y_k`` (:func:`lookahead`) and the loss and error are taken at ``w_k``, whose field follows
    from ``h^y_k = (1 + gamma) h^w_k - gamma h^w_{k-1}`` (``h^w_0 = h^y_0``).
    """
    tp, n = g0.shape
    nd, f64 = noise.z.dtype, jnp.float64
    delta = jnp.asarray(problem.delta, nd)
    sqd = jnp.sqrt(delta)
    loss, dloss, d2loss = _loss_derivatives(problem)
    with_tangent = noise.eps.shape[1] > 0
    c, y = noise.c, noise.y

    nb = -(-tp // block)
    tpad = nb * block
    pad = tpad - tp  # padded times have s = 0 and R = 0: inert
    Rp = jnp.pad(R.astype(nd), ((0, pad), (0, pad)))
    base = jnp.pad(m.astype(nd)[:, None] * c[None, :] + sqd * g0.astype(nd), ((0, pad), (0, 0)))  # c m_k + sqrt(D) g0_k
    s_p = jnp.pad(noise.s, ((0, pad), (0, 0)))
    eps_p = jnp.pad(noise.eps, ((0, pad), (0, 0)))
    width = 2 * n if with_tangent else n

    def time_step(carry, xs):
        hist_blk, i, hw_prev = carry  # (block, width): [Lam | dLam] of the current block so far
        mem_past, base_k, s_k, eps_k, r_in = xs
        mem = mem_past + r_in @ hist_blk  # sum_{j<k} R_kj [Lam_j | dLam_j]
        h = base_k - delta * mem[:n]
        lam = (s_k * dloss(y, h)).astype(nd)
        a = (s_k * d2loss(y, h)).astype(nd)
        if with_tangent:
            dlam_off = -delta * a * mem[n:]  # the tangent minus its exact diagonal part sqrt(D) a_k eps_k
            row = jnp.concatenate([lam, dlam_off + sqd * a * eps_k])
        else:
            dlam_off = jnp.zeros((0,), h.dtype)
            row = lam
        hist_blk = jax.lax.dynamic_update_slice(hist_blk, row[None], (i, 0))
        hw = h if gamma is None else ((h + gamma * hw_prev) / (1.0 + gamma)).astype(nd)
        stats = jnp.stack([jnp.mean(loss(y, hw), dtype=f64), jnp.mean(gm.misclassified(problem, y, hw), dtype=f64),
                           jnp.mean(a, dtype=f64)])
        return (hist_blk, i + 1, hw), (stats, dlam_off)

    def block_step(carry, ib):
        hist, hw_prev = carry
        start = ib * block
        r_rows = jax.lax.dynamic_slice(Rp, (start, 0), (block, tpad))
        r_past = jnp.where(jnp.arange(tpad)[None, :] < start, r_rows, 0.0)
        mem_past = r_past @ hist  # (block, width): one matrix product for all earlier blocks
        xs = (
            mem_past,
            jax.lax.dynamic_slice(base, (start, 0), (block, n)),
            jax.lax.dynamic_slice(s_p, (start, 0), (block, n)),
            jax.lax.dynamic_slice(eps_p, (start, 0), (block, eps_p.shape[1])),
            jax.lax.dynamic_slice(Rp, (start, start), (block, block)),
        )
        (hist_blk, _, hw_prev), (stats, dlam_off) = jax.lax.scan(time_step, (jnp.zeros((block, width), nd), 0, hw_prev), xs)
        hist = jax.lax.dynamic_update_slice(hist, hist_blk, (start, 0))
        return (hist, hw_prev), (stats, dlam_off)

    (hist, _), (stats, dlam_off) = jax.lax.scan(block_step, (jnp.zeros((tpad, width), nd), base[0]), jnp.arange(nb))
    stats = stats.reshape(tpad, 3)[:tp]
    dlam_off = dlam_off.reshape(tpad, -1)[:tp]
    return hist[:tp, :n], dlam_off, stats


def estimate_kernels(
    problem: gm.GaussianMixture, noise: Noise, lam: jax.Array, dlam_off: jax.Array, mean_a: jax.Array,
    chol: jax.Array, response: str = "probe",
) -> Kernels:
    """Kernel estimates from one sample: ``M``, ``mu`` and ``Q`` (probe or Stein); ``O(N T^2)``.
    The products over the ``N`` trajectories run in the dtype of ``lam``, the rest in float64."""
    n = lam.shape[1]
    f64 = jnp.float64
    alpha, delta = problem.alpha, problem.delta
    sqd = jnp.sqrt(delta)
    M = (alpha * delta / n) * (lam @ lam.T).astype(f64)
    M = 0.5 * (M + M.T)
    mu = (alpha / n) * (lam @ noise.c).astype(f64)
    if response == "probe":
        b = probe_regression((dlam_off @ noise.eps.T).astype(f64) / n, noise.gram_chol)
        Q = jnp.tril(alpha * sqd * b, k=-1) + jnp.diag(alpha * delta * mean_a)
    else:
        ez = (alpha * sqd / n) * (lam @ noise.z.T).astype(f64)  # alpha sqrt(D) E[Lam z^T] = Q L
        Q = jnp.tril(solve_triangular(chol.T, ez.T, lower=False).T)
    return Kernels(mu, M, Q)


class Sample(NamedTuple):
    """One pass of the effective process: kernel estimates, ``train_loss``/``train_error``
    ``(T+1,)`` (averages over the sample) and whether the Cholesky factorisation succeeded."""

    kernels: Kernels
    train_loss: jax.Array
    train_error: jax.Array
    cholesky_ok: jax.Array


def effective_process(
    problem: gm.GaussianMixture, order: OrderParameters, noise: Noise, response: str = "probe",
    jitter: float = 1e-10, block: int = 16, gamma=None,
) -> Sample:
    """Sample the effective process given ``(m, C, R)`` and the common random numbers, and
    estimate the kernels: ``K_hat`` of the fixed-point map. ``O(N T^2)`` time, ``O(N T)`` memory.
    With Nesterov momentum (``gamma``), the fields are those of the lookahead point."""
    with jax.named_scope(EFFECTIVE):
        if gamma is not None:
            order = lookahead(order, gamma)
        chol = regularised_cholesky(order.C, jitter)
        g0 = chol.astype(noise.z.dtype) @ noise.z  # (T+1, N), covariance C
        probe_noise = noise if response == "probe" else noise._replace(eps=jnp.zeros((noise.z.shape[0], 0), noise.z.dtype))
        lam, dlam_off, stats = effective_scan(problem, probe_noise, order.m, g0, order.R, block, gamma)
    with jax.named_scope(KERNELS):
        kernels = estimate_kernels(problem, noise, lam, dlam_off, stats[:, 2], chol, response)
    return Sample(kernels, stats[:, 0], stats[:, 1], jnp.all(jnp.isfinite(chol)))
