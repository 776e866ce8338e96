"""Direct simulation of GD / SGD / persistent SGD / SGF / Langevin on the Gaussian mixture.

The numerical core, pure JAX (jax-md style ``init``/``advance`` pair built by
:func:`make_simulator`):

- ``init(key) -> (Dataset, SimState)``: draws one seed's centroid, data, initial weights and
  batch mask from ``fold_in(key, i)`` streams;
- ``advance(data, key, state, n_blocks) -> (state, obs)``: ``n_blocks`` blocks of
  ``save_every`` steps each, by nested ``lax.scan``; returns the order parameters at the *end* of
  each block. Only scalars per saved time are kept, never the weights history.

Both are meant to be ``jit(vmap(...))``-ed over seeds by the caller (see
:func:`simulate`), which chunks the time loop so that a progress bar can be shown and a
non-finite value stops the run at the first chunk where it appears.

Cost per step: two passes over the data matrix (``h = X w / sqrt(d)`` and
``X^T (s * loss') / sqrt(d)``); the pre-activations ``h`` of the current weights are carried in the
state, so saving the training loss/error costs no extra pass.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import losses
from sgdlab.algorithms.batch_mask import MaskChain, init_mask, mask_chain, step_mask
from sgdlab.algorithms.update import UpdateRule, apply_update, update_rule
from sgdlab.problems import gaussian_mixture as gm

# Independent random streams of one seed: fold_in(key(seed), STREAM).
STREAM_CENTROID, STREAM_DATA, STREAM_INIT, STREAM_MASK, STREAM_NOISE, STREAM_TEST = range(6)

OBSERVABLES = ("m", "q", "train_loss", "train_error", "test_loss", "test_error", "batch_occupancy")
SAMPLED_OBSERVABLES = ("test_loss_sampled", "test_error_sampled")


class SimState(NamedTuple):
    """State of one run: weights ``w (d,)``, pre-activations ``h = X w / sqrt(d)`` ``(n,)``,
    batch mask ``s (n,)`` (bool) and the step counter ``k``."""

    w: jax.Array
    h: jax.Array
    s: jax.Array
    k: jax.Array


class SimData(NamedTuple):
    """Fixed data of one run: the training set and an optional sampled test set
    (``x_test (n_test, d)``, ``y_test (n_test,)``, empty when not asked for)."""

    train: gm.Dataset
    x_test: jax.Array
    y_test: jax.Array


class Simulator(NamedTuple):
    """``init(key) -> (SimData, SimState)``, ``advance(data, key, state, n_blocks) -> (state, obs)``
    and ``observe(data, state) -> dict`` of scalars; all pure and unbatched (one seed)."""

    init: Callable
    advance: Callable
    observe: Callable
    chain: MaskChain
    rule: UpdateRule


def make_simulator(
    problem: gm.GaussianMixture,
    algorithm: str,
    d: int,
    eta: float,
    b: float = 1.0,
    tau: float | None = None,
    temperature: float = 0.0,
    normalisation: str = "unnormalised",
    save_every: int = 1,
    dtype=jnp.float32,
    test_samples: int = 0,
) -> Simulator:
    """Build the pure simulator of one seed for the given problem and algorithm.

    ``algorithm`` is one of ``gd, sgd, persistent_sgd, sgf, langevin`` (Langevin uses the
    persistent chain with ``(b, tau)`` and adds ``sqrt(2 T eta) N(0, I)`` per step).
    """
    chain = mask_chain("persistent_sgd" if algorithm == "langevin" else algorithm, eta, b, tau)
    rule = update_rule(eta, problem.ridge, b, normalisation, temperature if algorithm == "langevin" else 0.0)
    n = problem.n_samples(d)
    sqrt_d = float(np.sqrt(d))
    loss = gm.sample_loss(problem)
    dloss = losses.derivative(loss)

    def init(key):
        v = gm.sample_centroid(jax.random.fold_in(key, STREAM_CENTROID), d, dtype)
        train = gm.sample_dataset(jax.random.fold_in(key, STREAM_DATA), problem, v, n)
        if test_samples > 0:
            test = gm.sample_dataset(jax.random.fold_in(key, STREAM_TEST), problem, v, test_samples)
            x_test, y_test = test.x, test.y
        else:
            x_test, y_test = jnp.zeros((0, d), dtype), jnp.zeros((0,), dtype)
        w = gm.initial_weights(jax.random.fold_in(key, STREAM_INIT), problem, v)
        s = init_mask(jax.random.fold_in(jax.random.fold_in(key, STREAM_MASK), 0), chain, n)
        h = train.x @ w / sqrt_d
        return SimData(train, x_test, y_test), SimState(w, h, s, jnp.zeros((), jnp.int32))

    def step(data: SimData, key, state: SimState, _=None):
        x, y = data.train.x, data.train.y
        g = x.T @ jnp.where(state.s, dloss(y, state.h), 0.0) / sqrt_d
        w = apply_update(rule, state.w, g, jax.random.fold_in(jax.random.fold_in(key, STREAM_NOISE), state.k))
        s = step_mask(jax.random.fold_in(jax.random.fold_in(key, STREAM_MASK), state.k + 1), chain, state.s)
        return SimState(w, x @ w / sqrt_d, s, state.k + 1), None

    def observe(data: SimData, state: SimState) -> dict:
        w, h = state.w, state.h
        m = jnp.dot(w, data.train.v) / d
        q = jnp.dot(w, w) / d
        train_loss, train_error = gm.training_observables(problem, data.train.y, h)
        obs = dict(
            m=m,
            q=q,
            train_loss=train_loss,
            train_error=train_error,
            test_loss=gm.test_loss(problem, m, q),
            test_error=gm.test_error(problem, m, q),
            batch_occupancy=jnp.mean(state.s.astype(w.dtype)),
        )
        if test_samples > 0:
            obs["test_loss_sampled"], obs["test_error_sampled"] = gm.training_observables(
                problem, data.y_test, data.x_test @ w / sqrt_d
            )
        return obs

    def advance(data: SimData, key, state: SimState, n_blocks: int):
        def block(state, _):
            state, _ = jax.lax.scan(lambda st, x: step(data, key, st, x), state, None, length=save_every)
            return state, observe(data, state)

        return jax.lax.scan(block, state, None, length=n_blocks)

    return Simulator(init, advance, observe, chain, rule)


def observable_names(test_samples: int = 0) -> tuple[str, ...]:
    """Names of the saved observables (with the sampled-test ones when asked for)."""
    return OBSERVABLES + (SAMPLED_OBSERVABLES if test_samples > 0 else ())
