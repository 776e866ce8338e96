"""Simulator measurements of the effective noise of SGD: replica pairs, linear response, margins.

Source: F. Mignacco, P. Urbani, "The effective noise of stochastic gradient descent",
J. Stat. Mech. (2022) 083405, arXiv:2112.10852; documentation ``docs/effective_noise.md``.

A simulator module: pure JAX on top of :mod:`sgdlab.dmft.simulation` (same data, init, random
streams and the one step :func:`~sgdlab.dmft.simulation.step_streams`); no theory here (the
study :mod:`sgdlab.dmft.noise` turns these measurements into temperatures and puts the DMFT beside).

- **Replicas** (:func:`replica_run`): ``n_replicas`` copies share the data and ``w(0)``
  (streams ``CENTROID, DATA, INIT`` of the seed key) and have independent batch masks and
  Langevin noise (:func:`~sgdlab.dmft.simulation.replica_keys`). Replica 0 uses the seed's own
  ``MASK``/``NOISE`` streams, so it *is* the plain simulation of that seed. Replicas are vmapped
  (data broadcast); vmap over seeds outside. Replica distance ``D(t) = (1/2d) |w1 - w2|^2``
  (mean over pairs if ``n_replicas > 2``); GD has no noise, so ``D = 0`` exactly.
- **Linear response** (:func:`response_run`): after ``k0`` steps, a field ``f = eps r_p``
  (Rademacher probes ``r_p``, ``p < n_probes``) is added inside the bracket of step ``k0`` (so
  ``w_{k0+1} += eta f``), with the same masks and noise (common random numbers). The response is
  taken in the limit ``eps -> 0`` exactly, by forward-mode differentiation (the tangent pushed
  by the linearised step; tested against ``jax.jvp``)::

      R(k0 + l, k0) = (1/d) mean_p r_p . dw_{k0+l} / d eps,      chi(l) = sum_{l'=1}^{l} R(k0+l', k0),
      dC(l) = C(k0+l, k0+l) - C(k0+l, k0),

  which equals the fixed-``k`` definition of :mod:`sgdlab.dmft.fdt` in the stationary state.
  ``n_windows`` consecutive windows (fresh probes each) are measured; the first and last give
  the signed stationarity drift curve ``[C(k_last+l, k_last) - C(k0+l, k0)] / C(k0, k0)``.
- **Margins** (:func:`margins`): ``kappa_mu = y_mu h_mu / sqrt(q) = y_mu w.x_mu / |w|`` for the
  two-cluster model (sign classifier); the largest margin satisfied by every training point is
  ``min_mu kappa_mu`` (the constraint-satisfaction view ``y_mu h_mu >= kappa |w| / sqrt(d)``).

Units: the field enters the *configured* update's bracket. For a normalised config the bracket is
``eta [lambda w + g / b - f]``; the temperature is then in the config's own field units (the
mobility of the normalised update is 1).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.dmft import losses
from sgdlab.dmft import problem as gm
from sgdlab.dmft.batch_mask import init_mask
from sgdlab.dmft.products import fields
from sgdlab.dmft.simulation import (
    STREAM_REPLICA,
    SimParams,
    SimSpec,
    SimState,
    Tangent,
    _problem,
    init,
    replica_keys,
    seed_keys,
    step_streams,
)

__all__ = [
    "ReplicaRun",
    "ResponseRun",
    "margins",
    "replica_init",
    "replica_run",
    "response_run",
    "seed_keys",
]


def replica_init(spec: SimSpec, params: SimParams, key: jax.Array, n_replicas: int):
    """``(data, states, mask_keys, noise_keys)`` of ``n_replicas`` replicas of the seed ``key``:
    one data set and ``w(0)``, each replica its own initial mask from its own mask stream."""
    data, st = init(spec, params, key)
    mask_keys, noise_keys = replica_keys(key, n_replicas)
    if spec.full_batch:
        s = jnp.broadcast_to(st.s, (n_replicas,) + st.s.shape)
    else:
        s = jax.vmap(lambda mk: init_mask(jax.random.fold_in(mk, 0), params.chain, spec.n))(mask_keys)
    rep = lambda a: jnp.broadcast_to(a, (n_replicas,) + a.shape)  # noqa: E731
    return data, SimState(rep(st.w), rep(st.h), s, rep(st.k), rep(st.w_prev), rep(st.h_prev)), mask_keys, noise_keys


class ReplicaRun(NamedTuple):
    """Replica observables of one seed at the saved times (``(n_saves+1,)`` each):
    ``D`` replica distance, ``q`` and ``m`` (mean over replicas), ``train_error`` (mean over
    replicas); ``margins (n,)`` of replica 0 at the end; ``t`` not included (``k * save_every * eta``)."""

    D: jax.Array
    q: jax.Array
    m: jax.Array
    train_error: jax.Array
    margins: jax.Array


def margins(y: jax.Array, h: jax.Array, q: jax.Array) -> jax.Array:
    """Normalised margins ``kappa_mu = y_mu h_mu / sqrt(q)`` (``= y_mu w.x_mu / |w|``), shape
    ``(n,)``; ``min`` of it is the largest ``kappa`` with ``y_mu h_mu >= kappa sqrt(q)`` for all mu."""
    return y * h / jnp.sqrt(q)


@partial(jax.jit, static_argnames=("spec", "n_replicas", "n_saves"))
def replica_run(spec: SimSpec, params: SimParams, key: jax.Array, n_replicas: int = 2, n_saves: int = 1) -> ReplicaRun:
    """``n_replicas`` replicas of one seed for ``n_saves * spec.save_every`` steps (nested
    ``lax.scan``); vmap over ``key`` (and ``params``) for seeds. Two-cluster model only for the
    margins (for three clusters they are returned but mean ``y h / sqrt(q)``, not a margin)."""
    data, state, mask_keys, noise_keys = replica_init(spec, params, key, n_replicas)
    d = spec.d
    iu = np.triu_indices(n_replicas, 1)
    problem = _problem(spec, params)

    def obs(st):
        w = st.w
        gram = w @ w.T / d
        sq = jnp.diag(gram)
        dist = 0.5 * (sq[:, None] + sq[None, :]) - gram  # (1/2d)|wa - wb|^2
        err = jax.vmap(lambda h: gm.training_observables(problem, data.train.y, h)[1])(st.h)
        return jnp.stack([jnp.mean(dist[iu]), jnp.mean(sq), jnp.mean(w @ data.train.v) / d, jnp.mean(err)])

    one = jax.vmap(lambda mk, nk, st: step_streams(spec, params, data, mk, nk, st))

    def block(st, _):
        st = jax.lax.fori_loop(0, spec.save_every, lambda i, s_: one(mask_keys, noise_keys, s_), st)
        return st, obs(st)

    final, out = jax.lax.scan(block, state, None, length=n_saves)
    out = jnp.concatenate([obs(state)[None], out], axis=0)
    q0 = jnp.dot(final.w[0], final.w[0]) / d
    return ReplicaRun(out[:, 0], out[:, 1], out[:, 2], out[:, 3], margins(data.train.y, final.h[0], q0))


class ResponseRun(NamedTuple):
    """Linear-response measurement of one seed over ``n_windows`` consecutive windows of lags
    ``l = 0..L``: ``dC``, ``chi`` ``(n_windows, L+1)`` (see the module docstring), the signed
    stationarity ``drift_curve (L,)`` (NaN with one window) and ``mean_sq_dloss`` (the training
    mean of ``loss'^2`` at ``k0``, for the weak-noise heuristic)."""

    dC: jax.Array
    chi: jax.Array
    drift_curve: jax.Array
    mean_sq_dloss: jax.Array


@partial(jax.jit, static_argnames=("spec", "k0", "max_lag", "n_probes", "n_windows"))
def response_run(
    spec: SimSpec, params: SimParams, key: jax.Array, k0: int, max_lag: int, n_probes: int = 4, n_windows: int = 2
) -> ResponseRun:
    """Equilibrate ``k0`` steps, then ``n_windows`` consecutive windows of ``max_lag`` steps: at
    the start ``k_w = k0 + w (L + 1)`` of window ``w`` fresh probes are injected and followed with
    the tangent for ``L`` lags (the plain trajectory is never perturbed; the response is exact,
    forward mode). Averaging the windows is the time-translation average of the stationary state
    (as ``n_ref`` for the DMFT); the drift compares the first and last windows' ``C(k_w + l, k_w)``:
    ``max_l |C_last - C_first| / C(k_0, k_0)``. Cost ``O((k0 + n_windows (P+1) L) n d)``."""
    if n_windows < 1:
        raise ValueError(f"n_windows={n_windows} must be >= 1")
    data, state, mask_keys, noise_keys = replica_init(spec, params, key, 1)
    state = jax.tree_util.tree_map(lambda a: a[0], state)
    mk, nk = mask_keys[0], noise_keys[0]
    d = spec.d
    plain = lambda st: step_streams(spec, params, data, mk, nk, st)  # noqa: E731
    state = jax.lax.fori_loop(0, k0, lambda i, st: plain(st), state)
    dloss = losses.derivative(gm.sample_loss(_problem(spec, params)))
    msq = jnp.mean(dloss(data.train.y, state.h) ** 2)
    q0 = jnp.dot(state.w, state.w) / d
    eta = jnp.asarray(params.rule.eta, state.w.dtype)
    probe_key = jax.random.fold_in(key, STREAM_REPLICA + 1)

    def window(st, w_index):
        w_ref = st.w
        probes = jax.random.rademacher(jax.random.fold_in(probe_key, w_index), (n_probes, d), st.w.dtype)
        st = plain(st)
        tw = eta * probes  # field inside the bracket of step k_w: w_{k_w+1} += eta f
        tangent = Tangent(tw, fields(data.train.x, tw) / np.sqrt(d).astype(tw.dtype))

        def lag_step(carry, _):
            s_, tg = carry
            out = jnp.stack([jnp.dot(s_.w, s_.w) / d, jnp.dot(s_.w, w_ref) / d, jnp.mean(jnp.sum(probes * tg.w, axis=1)) / d])
            s_, tg = step_streams(spec, params, data, mk, nk, s_, tg)
            return (s_, tg), out

        (st, _), win = jax.lax.scan(lag_step, (st, tangent), None, length=max_lag)
        q, c, r = win[:, 0], win[:, 1], win[:, 2]  # lags 1..L (the last step is taken plain)
        dC = jnp.concatenate([jnp.zeros(1, q.dtype), q - c])
        chi = jnp.concatenate([jnp.zeros(1, r.dtype), jnp.cumsum(r)])
        corr = jnp.concatenate([jnp.dot(w_ref, w_ref)[None] / d, c[:-1]])  # C(k_w + l, k_w), l = 0..L-1
        return st, (dC, chi, corr)

    # window w starts at step k_w = k0 + w (L + 1) (one plain step, then L tangent steps)
    _, (dC, chi, corr) = jax.lax.scan(window, state, jnp.arange(n_windows))
    dcurve = (corr[-1] - corr[0]) / q0 if n_windows > 1 else jnp.full(corr.shape[-1], jnp.nan, q0.dtype)
    return ResponseRun(dC, chi, dcurve, msq)


@partial(jax.jit, static_argnames=("spec", "k0", "max_lag", "n_probes", "n_windows"))
def response_runs(
    spec: SimSpec, params: SimParams, keys: jax.Array, k0: int, max_lag: int, n_probes: int = 4, n_windows: int = 2
) -> ResponseRun:
    """:func:`response_run` of each seed key ``keys (n_seeds,)``, vmapped in one program (a vmap
    of the jitted function outside a jit leaves an eager transpose of its output)."""
    return jax.vmap(lambda k: response_run(spec, params, k, k0, max_lag, n_probes, n_windows))(keys)
