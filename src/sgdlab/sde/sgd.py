"""The simulator: SGD (and SVAG, its discrete relative) on finite-sum problems, by Monte Carlo.

This is the process the continuous models of :mod:`sgdlab.sde.models` are compared with. One SGD
step draws ``B`` indices uniformly with replacement, ``X <- X - eta mean_{j in batch} grad f_j(X)``;
every copy of a run (one per starting point) is fed the same batches, so multi-point statistics
are those of the random flow ``x -> X^x``. Runs are ``vmap``-ed, steps a ``lax.fori_loop`` with a
traced trip count (every ``eta`` shares one compilation), paths chunked; estimates and standard
errors as for the SDEs (:func:`sgdlab.sde.observables.collect_estimates`).

SGD's *exact* moments on linear-gradient problems are theory and live in
:mod:`sgdlab.sde.moments`; the exact law of SGD on a small mean-field network by enumerating
every batch sequence (:func:`mean_field_sgd_enumeration`) is here, beside its Monte Carlo.

Only the study modules (:mod:`~sgdlab.sde.weak_error`, :mod:`~sgdlab.sde.experiment`) put this
module beside the theory; no model, moment, solver or observable module imports it.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.sde.network import MEAN_FIELD_OBSERVABLES, MeanFieldNetwork, chunk_estimates, lifted_problem, mean_field_features
from sgdlab.sde.models import SVAG
from sgdlab.sde.observables import (
    STREAM_SGD,
    STREAM_SVAG,
    Estimate,
    Observable,
    all_features,
    collect_estimates,
    feature_sums,
    prepare_starts,
)
from sgdlab.sde.problems import FiniteSumProblem, n_steps_of

Array = jax.Array


def sgd_final_states(problem: FiniteSumProblem, eta, x0s: Array, n_steps, key: Array, n_paths: int) -> Array:
    """``X_N (n_paths, K, d)``: SGD from the starts ``x0s (K, d)``, every copy of a run fed the same
    batches (``B`` indices uniform with replacement per step). Pure; jit it."""
    n, B = problem.n_samples, problem.batch_size
    X0 = jnp.broadcast_to(x0s, (n_paths,) + x0s.shape)
    copies_grad = jax.vmap(problem.batch_grad, in_axes=(0, None))

    def body(k, X):
        idx = jax.random.randint(jax.random.fold_in(key, k), (n_paths, B), 0, n)
        return X - eta * jax.vmap(copies_grad)(X, idx)

    return jax.lax.fori_loop(0, n_steps, body, X0)


def svag_final_states(problem: FiniteSumProblem, svag: SVAG, eta, x0s: Array, n_steps, key: Array, n_paths: int) -> Array:
    """``X (n_paths, K, d)`` after ``l n_steps`` SVAG steps of ``eta/l`` (two independent batches per step)."""
    n, B = problem.n_samples, problem.batch_size
    r1, r2 = svag.weights
    X0 = jnp.broadcast_to(x0s, (n_paths,) + x0s.shape)
    copies_grad = jax.vmap(problem.batch_grad, in_axes=(0, None))

    def body(k, X):
        idx = jax.random.randint(jax.random.fold_in(key, k), (2, n_paths, B), 0, n)
        g = r1 * jax.vmap(copies_grad)(X, idx[0]) + r2 * jax.vmap(copies_grad)(X, idx[1])
        return X - (eta / svag.l) * g

    return jax.lax.fori_loop(0, svag.l * n_steps, body, X0)


@partial(jax.jit, static_argnames=("observables", "n_paths"))
def _sgd_chunk(problem, eta, x0s, n_steps, key, *, observables, n_paths):
    X = sgd_final_states(problem, eta, x0s, n_steps, key, n_paths)
    return feature_sums(jax.vmap(lambda xs: all_features(observables, xs, problem))(X))


@partial(jax.jit, static_argnames=("svag", "observables", "n_paths"))
def _svag_chunk(problem, eta, x0s, n_steps, key, *, svag, observables, n_paths):
    X = svag_final_states(problem, svag, eta, x0s, n_steps, key, n_paths)
    return feature_sums(jax.vmap(lambda xs: all_features(observables, xs, problem))(X))


def sgd_monte_carlo(
    problem: FiniteSumProblem,
    eta: float,
    horizon: float,
    x0s,
    observables: Sequence[Observable],
    n_paths: int,
    seed: int = 0,
    chunk: int = 20_000,
) -> dict[str, Estimate]:
    """Monte Carlo estimates of ``observables`` of SGD after ``T/eta`` steps from ``x0s (K, d)``."""
    return _estimates(problem, STREAM_SGD, partial(_sgd_chunk, problem, eta), horizon, eta, x0s, observables, n_paths, seed, chunk)


def svag_monte_carlo(
    problem: FiniteSumProblem,
    svag: SVAG,
    eta: float,
    horizon: float,
    x0s,
    observables: Sequence[Observable],
    n_paths: int,
    seed: int = 0,
    chunk: int = 20_000,
) -> dict[str, Estimate]:
    """Monte Carlo estimates of ``observables`` of SVAG (``l T/eta`` steps of ``eta/l``)."""
    chunk_fn = partial(_svag_chunk, problem, eta, svag=svag)
    return _estimates(problem, STREAM_SVAG, chunk_fn, horizon, eta, x0s, observables, n_paths, seed, chunk)


def _estimates(problem, stream, chunk_fn, horizon, eta, x0s, observables, n_paths, seed, chunk) -> dict[str, Estimate]:
    """``chunk_fn(x0s, n_steps, key, observables=, n_paths=)`` over chunks of paths from the random
    stream ``stream`` of ``seed``, collected into estimates (shared by SGD and SVAG)."""
    x0s, observables = prepare_starts(problem, x0s, observables)
    N = n_steps_of(horizon, eta)
    key = jax.random.fold_in(jax.random.key(seed), stream)
    kernel = lambda k, size: chunk_fn(x0s, N, k, observables=observables, n_paths=size)  # noqa: E731
    return collect_estimates(kernel, key, n_paths, chunk, observables, *x0s.shape, problem)


# ------------------------------------------------------------------------------------------------
# SGD on a mean-field two-layer network (SGD on the lifted particle problem)
# ------------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("N", "n_paths"))
def _mean_field_sgd_chunk(net, particles0, eta, n_steps, key, *, N, n_paths):
    p = net.unit_dim
    X = sgd_final_states(lifted_problem(net, N), eta, particles0.reshape(1, -1), n_steps, key, n_paths)
    return feature_sums(jax.vmap(lambda xs: mean_field_features(net, N, p, xs[0]))(X))


@partial(jax.jit, static_argnames=("N",))
def _enumeration_chunk(net, particles0, eta, sequences, *, N):
    lifted = lifted_problem(net, N)
    p = net.unit_dim

    def one(seq):  # seq (steps, B): the batches of one run
        x = jax.lax.fori_loop(0, seq.shape[0], lambda k, x: x - eta * lifted.batch_grad(x, seq[k]), particles0.ravel())
        return mean_field_features(net, N, p, x)

    F = jax.vmap(one)(sequences)
    return jnp.sum(F, axis=0)


def mean_field_sgd_enumeration(net: MeanFieldNetwork, particles0, eta: float, horizon: float, chunk: int = 65_536) -> dict[str, tuple[float, float]]:
    """Exact ``{observable: (mean, variance)}`` of SGD at ``T`` by enumerating all ``n^(B T/eta)``
    equally likely batch sequences (small ``n`` and few steps only)."""
    particles0 = jnp.asarray(particles0, dtype=jnp.float64)
    N, n, B = int(particles0.shape[0]), net.n_samples, net.batch_size
    steps = n_steps_of(horizon, eta)
    total = n ** (B * steps)
    digits = B * steps
    acc = np.zeros(4)
    for start in range(0, total, chunk):
        codes = np.arange(start, min(total, start + chunk), dtype=np.int64)
        seq = (codes[:, None] // n ** np.arange(digits)[None]) % n  # base-n digits
        acc += np.asarray(_enumeration_chunk(net, particles0, eta, jnp.asarray(seq.reshape(-1, steps, B), dtype=jnp.int32), N=N))
    mean = acc / total
    return {name: (float(mean[2 * k]), float(mean[2 * k + 1] - mean[2 * k] ** 2)) for k, name in enumerate(MEAN_FIELD_OBSERVABLES)}


def mean_field_sgd_monte_carlo(
    net: MeanFieldNetwork, particles0, eta: float, horizon: float, n_paths: int, seed: int = 0, chunk: int = 20_000
) -> dict[str, tuple[float, float, float, float]]:
    """``{observable: (mean, se, variance, variance_se)}`` of SGD after ``T/eta`` steps from the
    particles ``(N, p)`` (Monte Carlo; :func:`mean_field_sgd_enumeration` is exact)."""
    particles0 = jnp.asarray(particles0, dtype=jnp.float64)
    N = int(particles0.shape[0])
    steps = n_steps_of(horizon, eta)
    base = jax.random.fold_in(jax.random.key(seed), STREAM_SGD)
    kernel = lambda k, size: _mean_field_sgd_chunk(net, particles0, eta, steps, k, N=N, n_paths=size)  # noqa: E731
    return chunk_estimates(kernel, base, n_paths, chunk)
