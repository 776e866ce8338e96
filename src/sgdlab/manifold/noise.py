"""Noisy gradient descent by noise injection: the pure step and the runner.

Source: Shalova, Schlichting, Peletier, "Singular-limit analysis of gradient descent with noise
injection", arXiv 2404.12293 (2024), eq. (1.2) and section 5; documentation
``docs/manifold.md``. One step is::

    w_{k+1} = w_k - eta grad_w L_hat(w_k, zeta_k),     L_hat(w, 0) = L(w),

with ``zeta_k`` i.i.d., mean 0, covariance ``sigma^2 R``. Notation: ``eta`` is the step size (the
paper's alpha), ``zeta`` the injected noise, ``sigma`` its scale. The noise pieces (label noise,
Dropout, DropConnect, perturbed GD, SGLD, minibatch sampling, their :func:`chain`) are in
:mod:`sgdlab.manifold.injections` and re-exported here.

The anti-correlated perturbed GD of Orvieto et al. (ICML 2022),
``w_{k+1} = w_k - eta grad L(w_k) + xi_{k+1} - xi_k``, is :func:`anticorrelated_perturbed_gd`:
with ``z_k = w_k - xi_k`` it is exactly ``z_{k+1} = z_k - eta grad L(z_k + xi_k)``, i.e.
perturbed GD in the variable ``z`` (so its limit is the perturbed-GD limit, for ``z``; ``w`` differs
from ``z`` by the current ``xi``, of size ``sigma``).

Everything is pure: ``init``/``step`` functions of states (NamedTuples), ``lax.scan`` over steps,
``vmap`` over runs (:func:`make_runner`). Nothing here knows a particular model.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from sgdlab.core.keys import run_keys
from sgdlab.manifold import injections as _injections
from sgdlab.manifold.injections import *  # noqa: F401,F403  (re-exported: the noise pieces)
from sgdlab.manifold.injections import NoiseInjection, Sizes, no_perturbation, perturbed_loss

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# the algorithms: pure init / step
# ---------------------------------------------------------------------------------------------


class NoisyGDState(NamedTuple):
    """``w (p,)``: the iterate; ``xi (p,)``: the current anti-correlated perturbation (zeros for
    the other algorithms)."""

    w: Array
    xi: Array


class Algorithm(NamedTuple):
    """``init(w0) -> state`` and ``step(state, key) -> state`` (pure)."""

    init: Callable[[Array], NoisyGDState]
    step: Callable[[NoisyGDState, Array], NoisyGDState]


def noisy_gd(loss_hat: Callable[[Array, Array], Array], sample_zeta: Callable[[Array], Array], eta: float) -> Algorithm:
    """``w <- w - eta grad_w L_hat(w, zeta)``, ``zeta = sample_zeta(key)`` fresh each step.

    ``loss_hat(w (p,), zeta (m,)) -> scalar``; ``sample_zeta(key) -> (m,)``. The general scheme of
    Shalova et al. (2024), eq. (1.2).
    """
    grad = jax.grad(loss_hat)

    def init(w0):
        return NoisyGDState(jnp.asarray(w0), jnp.zeros_like(w0))

    def step(state, key):
        zeta = sample_zeta(key)
        return NoisyGDState(state.w - eta * grad(state.w, zeta), state.xi)

    return Algorithm(init, step)


def noise_injected_gd(apply: Callable, x: Array, y: Array, sizes: Sizes, injection: NoiseInjection, eta: float, dtype=jnp.float64) -> Algorithm:
    """:func:`noisy_gd` for a model ``apply(w, x, unit_scale)`` with data ``(x, y)`` and
    ``sizes = (n, units, p)`` under ``injection`` (any :func:`chain`)."""
    loss_hat = model_loss_hat(apply, x, y, sizes.n_units, injection)
    return noisy_gd(loss_hat, lambda key: injection.sample(key, sizes, dtype), eta)


def model_loss_hat(apply: Callable, x: Array, y: Array, n_units: int, injection: NoiseInjection) -> Callable[[Array, Array], Array]:
    """``L_hat(w, zeta)`` (see :func:`perturbed_loss`) for a model with ``n_units`` hidden units."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    n = int(y.shape[0])

    def loss_hat(w, zeta):
        sizes = Sizes(n, n_units, int(w.shape[0]))
        pert = injection.perturb(no_perturbation(sizes, w.dtype), zeta, sizes)
        return perturbed_loss(apply, x, y, w, pert)

    return loss_hat


def anticorrelated_perturbed_gd(loss: Callable[[Array], Array], sigma: float, eta: float) -> Algorithm:
    """Anti-PGD (Orvieto, Kersting, Proske, Bach, Lucchi, ICML 2022):
    ``w_{k+1} = w_k - eta grad L(w_k) + xi_{k+1} - xi_k``, ``xi_k ~ N(0, sigma^2 I)`` i.i.d.,
    ``xi_0 = 0``. ``z_k = w_k - xi_k`` follows perturbed GD ``z_{k+1} = z_k - eta grad L(z_k + xi_k)``
    exactly (so the limit of ``z`` is the perturbed-GD limit with the same ``sigma``)."""
    grad = jax.grad(loss)

    def init(w0):
        w0 = jnp.asarray(w0)
        return NoisyGDState(w0, jnp.zeros_like(w0))

    def step(state, key):
        xi_new = sigma * jax.random.normal(key, state.w.shape, state.w.dtype)
        return NoisyGDState(state.w - eta * grad(state.w) + xi_new - state.xi, xi_new)

    return Algorithm(init, step)


# ---------------------------------------------------------------------------------------------
# driver: scan over steps, vmap over runs
# ---------------------------------------------------------------------------------------------


def make_runner(algorithm: Algorithm, observe: Callable[[Array], dict], steps_per_save: int, n_saves: int):
    """A jitted ``run(w0 (p,), keys (R,)) -> (final states, observations)``.

    Each run ``r`` starts at ``w0`` and draws its step keys by splitting ``keys[r]``; the
    observations ``observe(w)`` (a dict of scalars) are taken at steps ``j * steps_per_save``,
    ``j = 0..n_saves``: every value has shape ``(R, n_saves + 1)``. Pure ``lax.scan`` (saves) of
    ``lax.scan`` (steps), ``vmap`` over runs.
    """

    def one_run(w0, key):
        state = algorithm.init(w0)

        def inner(carry, _):
            st, k = carry
            k, sub = jax.random.split(k)
            return (algorithm.step(st, sub), k), None

        def outer(carry, _):
            carry, _ = jax.lax.scan(inner, carry, None, length=steps_per_save)
            return carry, observe(carry[0].w)

        obs0 = observe(state.w)
        (state, _), obs = jax.lax.scan(outer, (state, key), None, length=n_saves)
        obs = {k: jnp.concatenate([obs0[k][None], v]) for k, v in obs.items()}
        return state, obs

    return jax.jit(jax.vmap(one_run, in_axes=(None, 0)))


__all__: Sequence[str] = [
    *_injections.__all__,
    "Algorithm",
    "NoisyGDState",
    "anticorrelated_perturbed_gd",
    "make_runner",
    "model_loss_hat",
    "noise_injected_gd",
    "noisy_gd",
    "run_keys",
]
