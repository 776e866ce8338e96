"""Monte Carlo of the continuous models on any finite-sum problem: the SDEs by fixed-step schemes,
driven by a ``lax.fori_loop`` over steps and ``vmap`` over paths. (SGD and SVAG, the discrete
processes the models are compared with, are simulated in :mod:`sgdlab.sde.sgd`.)

Schemes for ``dX = a(X) dt + sigma(X) dW`` (Ito, ``W`` of dimension ``m``), step ``h``:

- ``euler``: Euler--Maruyama, ``X + a h + sigma dW``; weak order 1 in ``h``.
- ``weak2``: the simplified weak Ito--Taylor scheme of order 2 (Kloeden & Platen 1992, eq. 14.2.7),

  ``X + a h + sigma dW + h^2/2 L0 a + h/2 (L0 sigma dW + Da[sigma dW]) + 1/2 sum_{j,k} D sigma_k[sigma_j] (dW_j dW_k + V_jk)``,

  with every derivative a forward-mode ``jvp`` so the cost per step is a few drift / noise
  evaluations, *independent of* ``m``:

  * ``sum_{j,k} D sigma_k[sigma_j] dW_j dW_k = D sigma[sigma dW] dW`` (one jvp);
  * ``V_jj = -h``: ``-h sum_j D sigma_j[sigma_j]`` is the model's ``ito_correction``;
  * ``V_jk = -V_kj`` (``j != k``) only needs mean 0, variance ``h^2``, no correlations and
    independence from ``dW`` for weak order 2; we use ``V = h (xi et^T - et xi^T)/sqrt 2`` with
    ``xi, et ~ N(0, I_m)``, so ``sum D sigma_k[sigma_j] V_jk = h/sqrt2 (D sigma[sigma xi] et - D sigma[sigma et] xi)``
    (two jvps instead of ``m^2`` signs);
  * the second-order parts of ``L0`` (``1/2 sum_j D^2 a[sigma_j, sigma_j]`` and the same for
    ``sigma``) are replaced by their unbiased one-sample estimates along ``u = sigma zeta``,
    ``zeta ~ N(0, I_m)`` independent of ``dW``; they enter at order ``h^2`` in the mean (exact in
    expectation) and ``h^3`` in the second moment, so the weak order stays 2.
- ``talay_tubaro``: Talay--Tubaro extrapolation ``2 E[phi(X^{h/2})] - E[phi(X^h)]`` of Euler, the
  coarse path driven by the sums of the fine increments (one Brownian path, so the difference has
  small variance); weak order 2.

The number of steps is a traced loop bound, so every learning rate shares one compilation.
Random streams: chunk ``c`` of a run uses ``fold_in(fold_in(key(seed), stream), c)``, step ``k``
``fold_in(chunk_key, k)``; identical arguments give identical numbers.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.sde.models import SDE, SDEModel, sde_for
from sgdlab.sde.observables import (
    STREAM_SDE,
    Estimate,
    Observable,
    all_features,
    collect_estimates,
    feature_sums,
    prepare_starts,
)
from sgdlab.sde.problems import FiniteSumProblem, n_steps_of

Array = jax.Array

SCHEMES = ("euler", "weak2", "talay_tubaro")
SCHEME_ORDERS = {"euler": 1, "weak2": 2, "talay_tubaro": 2}

class JointSDE(NamedTuple):
    """``K`` copies ``X (K, d)`` of an :class:`SDE` with shared or independent noise ``W noise_shape``."""

    drift: Callable[[Array], Array]
    noise: Callable[[Array, Array], Array]
    ito_correction: Callable[[Array], Array]
    noise_shape: tuple[int, ...]


def joint_sde(sde: SDE, K: int) -> JointSDE:
    """The system of ``K`` copies: shared coupling feeds every copy the same ``W (m,)``,
    independent coupling copy ``k`` its own ``W[k]`` (``W (K, m)``)."""
    drift = jax.vmap(sde.drift)
    ito = jax.vmap(sde.ito_correction)
    if sde.coupling == "shared":
        return JointSDE(drift, jax.vmap(sde.noise, in_axes=(0, None)), ito, (sde.noise_dim,))
    return JointSDE(drift, jax.vmap(sde.noise), ito, (K, sde.noise_dim))


def euler_step(js: JointSDE, X: Array, h, dW: Array) -> Array:
    """Euler--Maruyama: ``X + a(X) h + sigma(X) dW``."""
    return X + h * js.drift(X) + js.noise(X, dW)


def weak2_step(js: JointSDE, X: Array, h, dW: Array, zeta: Array, xi: Array, et: Array) -> Array:
    """One step of the simplified weak order-2 Taylor scheme (module docstring).

    ``dW ~ N(0, h I)``; ``zeta, xi, et ~ N(0, I)`` independent, all of ``noise_shape``.
    """
    drift, S = js.drift, js.noise
    a = drift(X)
    s = S(X, dW)
    u = S(X, zeta)

    def jvp(f, v):
        return jax.jvp(f, (X,), (v,))[1]

    def second(f, v):  # D^2 f(X)[v, v]
        return jax.jvp(lambda Y: jax.jvp(f, (Y,), (v,))[1], (X,), (v,))[1]

    noise_dW = lambda Y: S(Y, dW)  # noqa: E731
    L0a = jvp(drift, a) + 0.5 * second(drift, u)
    L0sigma_dW = jvp(noise_dW, a) + 0.5 * second(noise_dW, u)
    La_dW = jvp(drift, s)
    double = jvp(noise_dW, s) - h * js.ito_correction(X)
    levy = (h / math.sqrt(2.0)) * (jax.jvp(lambda Y: S(Y, et), (X,), (S(X, xi),))[1] - jax.jvp(lambda Y: S(Y, xi), (X,), (S(X, et),))[1])
    return X + h * a + s + 0.5 * h * h * L0a + 0.5 * h * (L0sigma_dW + La_dW) + 0.5 * (double + levy)


def simulate_features(
    sde: SDE,
    x0s: Array,
    h,
    n_steps,
    key: Array,
    n_paths: int,
    scheme: str,
    features: Callable[[Array], Array],
    antithetic: bool = False,
) -> Array:
    """Features ``(n_paths, k)`` of ``n_paths`` solutions of ``K`` copies from ``x0s (K, d)`` after
    ``n_steps`` steps of size ``h`` (Talay--Tubaro: coarse steps ``h``, fine ``h/2``). Pure; jit it.

    ``antithetic``: paths come in pairs driven by opposite Gaussian inputs (every scheme's law is
    invariant under negating all of them); the rows returned are the pair averages,
    ``(n_paths // 2, k)``, which are i.i.d. -- for smooth functionals of small noise this removes
    the leading (odd) part of the Monte Carlo variance.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; allowed: {', '.join(SCHEMES)}")
    if antithetic:
        if n_paths % 2:
            raise ValueError(f"antithetic sampling needs an even number of paths; got {n_paths}")
        half = n_paths // 2
        # draw for half the paths, negate for the other half: normal(key) -> concat(z, -z)
        F = _simulate(sde, x0s, h, n_steps, key, half, scheme, features, antithetic=True)
        return 0.5 * (F[:half] + F[half:])
    return _simulate(sde, x0s, h, n_steps, key, n_paths, scheme, features, antithetic=False)


def _simulate(sde, x0s, h, n_steps, key, n_draw, scheme, features, antithetic):
    x0s = jnp.asarray(x0s)
    js = joint_sde(sde, x0s.shape[0])
    n_paths = 2 * n_draw if antithetic else n_draw
    X0 = jnp.broadcast_to(x0s, (n_paths,) + x0s.shape)
    dtype = x0s.dtype
    sqrt_h = jnp.sqrt(h)

    def normal(k):
        z = jax.random.normal(k, (n_draw,) + js.noise_shape, dtype)
        return jnp.concatenate([z, -z]) if antithetic else z

    if scheme == "euler":

        def body(k, X):
            dW = sqrt_h * normal(jax.random.fold_in(key, k))
            return jax.vmap(lambda x, w: euler_step(js, x, h, w))(X, dW)

        return jax.vmap(features)(jax.lax.fori_loop(0, n_steps, body, X0))

    if scheme == "weak2":

        def body(k, X):
            k1, k2, k3, k4 = jax.random.split(jax.random.fold_in(key, k), 4)
            dW = sqrt_h * normal(k1)
            zeta, xi, et = (normal(kk) for kk in (k2, k3, k4))
            return jax.vmap(lambda x, w, z, a, b: weak2_step(js, x, h, w, z, a, b))(X, dW, zeta, xi, et)

        return jax.vmap(features)(jax.lax.fori_loop(0, n_steps, body, X0))

    half = h / 2
    sqrt_half = jnp.sqrt(half)

    def body_tt(k, state):
        Xf, Xc = state
        k1, k2 = jax.random.split(jax.random.fold_in(key, k))
        dW1 = sqrt_half * normal(k1)
        dW2 = sqrt_half * normal(k2)
        step = jax.vmap(lambda x, w, hh: euler_step(js, x, hh, w), in_axes=(0, 0, None))
        Xf = step(step(Xf, dW1, half), dW2, half)
        Xc = step(Xc, dW1 + dW2, h)
        return Xf, Xc

    Xf, Xc = jax.lax.fori_loop(0, n_steps, body_tt, (X0, X0))
    return 2 * jax.vmap(features)(Xf) - jax.vmap(features)(Xc)


# ------------------------------------------------------------------------------------------------
# the jitted chunk kernel on finite-sum problems (one compilation per model/scheme/observables/shape)
# ------------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("model", "scheme", "observables", "n_paths", "antithetic"))
def _sde_chunk(problem, eta, x0s, h, n_steps, key, *, model, scheme, observables, n_paths, antithetic=False):
    sde = sde_for(problem, model, eta)
    F = simulate_features(sde, x0s, h, n_steps, key, n_paths, scheme, lambda xs: all_features(observables, xs, problem), antithetic)
    return feature_sums(F)


def sde_monte_carlo(
    problem: FiniteSumProblem,
    model: SDEModel,
    eta: float,
    horizon: float,
    x0s,
    observables: Sequence[Observable],
    n_paths: int,
    scheme: str = "weak2",
    substeps: int = 1,
    seed: int = 0,
    chunk: int = 20_000,
    antithetic: bool = False,
) -> dict[str, Estimate]:
    """Monte Carlo estimates of ``observables`` of ``model`` at time ``T``, by ``scheme`` with step
    ``h = eta / substeps`` (``substeps T/eta`` steps), from ``x0s (K, d)``; ``antithetic`` pairs
    (:func:`simulate_features`)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; allowed: {', '.join(SCHEMES)}")
    x0s, observables = prepare_starts(problem, x0s, observables)
    N = n_steps_of(horizon, eta) * int(substeps)
    h = horizon / N
    key = jax.random.fold_in(jax.random.key(seed), STREAM_SDE)
    kernel = lambda k, size: _sde_chunk(  # noqa: E731
        problem, eta, x0s, h, N, k, model=model, scheme=scheme, observables=observables, n_paths=size, antithetic=antithetic
    )
    return collect_estimates(kernel, key, n_paths, chunk, observables, *x0s.shape, problem, per_row=2 if antithetic else 1)


def simulate_sde(
    sde: SDE,
    x0s,
    horizon: float,
    n_steps: int,
    n_paths: int,
    seed: int = 0,
    scheme: str = "weak2",
    features: Callable[[Array], Array] | None = None,
    antithetic: bool = False,
) -> np.ndarray:
    """Per-path features (default: the final states, flattened) of a generic :class:`SDE`,
    ``(n_paths, k)``; ``n_steps`` steps of ``horizon / n_steps``. For tests and exploration:
    compiles once per call."""
    x0s = jnp.atleast_2d(jnp.asarray(x0s, dtype=jnp.float64))
    feats = features if features is not None else (lambda xs: xs.ravel())
    fn = jax.jit(
        lambda key: simulate_features(sde, x0s, horizon / n_steps, n_steps, key, n_paths, scheme, feats, antithetic)
    )
    return np.asarray(fn(jax.random.fold_in(jax.random.key(seed), STREAM_SDE)))
