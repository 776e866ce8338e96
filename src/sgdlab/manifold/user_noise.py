"""Noise models of one's own for ``sgdlab manifold``: a factory ``noise(sigma) -> NoiseInjection``.

A noise model is a :class:`~sgdlab.manifold.injections.NoiseInjection`: where the noise ``zeta`` enters
the square loss (``perturb``), how one draw is made (``sample``), its dimension (``zeta_size``) and
its correlation ``R`` with ``Cov zeta = sigma^2 R`` (Shalova, Schlichting, Peletier 2024, eq. (1.2):
``w_{k+1} = w_k - eta grad_w L_hat(w_k, zeta_k)``). The built-in noises are such factories
(:func:`~sgdlab.manifold.injections.label_noise`, :func:`~sgdlab.manifold.injections.dropout`, ...); the key
``noise.name`` accepts, besides their names,

- from Python, a callable ``factory(sigma: float) -> NoiseInjection``;
- from TOML or ``--set``, an import string ``"package.module:factory"`` (imported, never evaluated).

The simulation and the eta -> 0 limit both read the injection only (the limit through
``L_hat(w, zeta)`` and ``R``, by automatic differentiation), so a user noise gets the same
classification (trivial / non-degenerate / degenerate), time scale and limit as a built-in one.

What a factory must satisfy, checked once per factory and model size by :func:`check_user_noise`
(each failure one line naming the key): it returns a ``NoiseInjection`` whose ``sigma`` is the
``sigma`` it was given (the rescaled time ``eta sigma^2 k`` is built from it); ``zeta_size`` is a
positive integer; ``sample`` and ``perturb`` trace under JAX with the shapes of the model (a
``(m,)`` draw; a :class:`~sgdlab.manifold.injections.Perturbation` with the model's field shapes);
``R`` is a finite, symmetric, positive semi-definite ``(m, m)`` matrix; and the draws have mean 0
and covariance ``sigma^2 R`` -- tested on :data:`CHECK_DRAWS` draws along :data:`CHECK_PROJECTIONS`
random directions ``u``: ``|mean(u.zeta)|`` and ``|mean((u.zeta)^2) - sigma^2 u^T R u|`` must stay
within :data:`CHECK_Z` standard errors of their own Monte-Carlo estimates.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.functions import FunctionError, resolve, spec_of
from sgdlab.manifold.injections import NOISE_NAMES, NoiseInjection, Perturbation, Sizes, no_perturbation

NoiseFactory = Callable[[float], NoiseInjection]

#: draws of the moment check (fewer when ``zeta`` is long: at most ``CHECK_BUDGET`` numbers in all)
CHECK_DRAWS = 4000
CHECK_BUDGET = 4_000_000
#: random directions of the moment check and its threshold in standard errors (a correct noise
#: fails with probability ~1e-8 per check; a wrong variance by 10% fails at 4000 draws)
CHECK_PROJECTIONS = 8
CHECK_Z = 6.0
#: the largest noise dimension accepted (the limit holds ``(m, m)`` matrices)
MAX_ZETA = 1_000_000


def resolve_noise(value: str | NoiseFactory, key: str = "noise.name") -> str | NoiseFactory:
    """A built-in name unchanged, or the user factory of a callable or an import string.

    The factory is checked against a model by :func:`check_user_noise` (the config does that with
    the configured model's sizes). Raises :class:`~sgdlab.core.functions.FunctionError` naming ``key``.
    """
    if isinstance(value, str) and value in NOISE_NAMES:
        return value
    if isinstance(value, str) and ":" not in value:
        raise FunctionError(f"{key} = {value!r}; allowed: {', '.join(NOISE_NAMES)}, a 'package.module:factory' string or a callable")
    return resolve(value, key=key, builtins={})


def user_injection(factory: NoiseFactory, sigma: float, key: str = "noise.name") -> NoiseInjection:
    """``factory(sigma)``, checked to be a :class:`NoiseInjection` with that ``sigma``."""
    name = spec_of(factory)
    try:
        injection = factory(float(sigma))
    except Exception as exc:  # the user's code: any failure becomes one line naming the key
        raise FunctionError(f"{key} = {name!r}: calling it with sigma = {sigma:g} failed ({type(exc).__name__}: {_first_line(exc)})") from exc
    if not isinstance(injection, NoiseInjection):
        raise FunctionError(f"{key} = {name!r} must return a sgdlab.manifold.injections.NoiseInjection (got {type(injection).__name__})")
    if not (np.isfinite(injection.sigma) and abs(injection.sigma - sigma) <= 1e-12 * abs(sigma)):
        raise FunctionError(f"{key} = {name!r}: the returned NoiseInjection has sigma = {injection.sigma!r}, not the sigma = {sigma:g} "
                            "it was given (the rescaled time eta sigma^2 k is built from it)")
    return injection


@lru_cache(maxsize=64)
def check_user_noise(factory: NoiseFactory, sizes: Sizes, key: str = "noise.name") -> int:
    """Check a user noise factory on a model of ``sizes = (n, u, p)``; returns ``m = zeta_size``.

    See the module docstring for what is checked. Cached: a factory that passed for a model size
    is not checked again (every point of a sweep validates its config).
    """
    name = spec_of(factory)
    injection = user_injection(factory, 1.0, key)
    try:
        m = injection.zeta_size(sizes)
    except Exception as exc:
        raise FunctionError(f"{key} = {name!r}: zeta_size{tuple(sizes)} failed ({type(exc).__name__}: {_first_line(exc)})") from exc
    if not (isinstance(m, (int, np.integer)) and 1 <= int(m) <= MAX_ZETA):
        raise FunctionError(f"{key} = {name!r}: zeta_size{tuple(sizes)} = {m!r}; allowed: an integer in [1, {MAX_ZETA}]")
    m = int(m)
    reference = no_perturbation(sizes, jnp.float64)
    try:
        shape = jax.eval_shape(lambda k: injection.sample(k, sizes, jnp.float64), jax.random.key(0))
        out = jax.eval_shape(lambda z: injection.perturb(reference, z, sizes), jax.ShapeDtypeStruct((m,), jnp.float64))
    except Exception as exc:
        raise FunctionError(f"{key} = {name!r}: sample or perturb does not trace under JAX ({type(exc).__name__}: {_first_line(exc)})") from exc
    if shape.shape != (m,):
        raise FunctionError(f"{key} = {name!r}: sample returns shape {shape.shape}; expected ({m},) (zeta_size)")
    if not isinstance(out, Perturbation) or any(o.shape != r.shape for o, r in zip(out, reference)):
        got = tuple(getattr(o, "shape", None) for o in out) if isinstance(out, tuple) else type(out).__name__
        raise FunctionError(f"{key} = {name!r}: perturb must return a Perturbation with the model's shapes "
                            f"{tuple(r.shape for r in reference)} (n = {sizes.n_samples}, u = {sizes.n_units}, p = {sizes.n_params}); got {got}")
    corr = _correlation(injection, sizes, m, name, key)
    _check_moments(injection, sizes, m, corr, name, key)
    return m


def _correlation(injection: NoiseInjection, sizes: Sizes, m: int, name: str, key: str) -> np.ndarray:
    try:
        corr = np.asarray(injection.correlation(sizes), dtype=float)
    except Exception as exc:
        raise FunctionError(f"{key} = {name!r}: correlation{tuple(sizes)} failed ({type(exc).__name__}: {_first_line(exc)})") from exc
    if corr.shape != (m, m) or not np.isfinite(corr).all():
        raise FunctionError(f"{key} = {name!r}: correlation must be a finite ({m}, {m}) matrix; got shape {corr.shape}")
    scale = max(1.0, float(np.abs(corr).max()))
    if not np.allclose(corr, corr.T, atol=1e-12 * scale):
        raise FunctionError(f"{key} = {name!r}: correlation is not symmetric")
    lowest = float(np.linalg.eigvalsh(corr).min()) if m <= 4000 else 0.0
    if lowest < -1e-10 * scale:
        raise FunctionError(f"{key} = {name!r}: correlation is not positive semi-definite (eigenvalue {lowest:.3g})")
    return corr


def _check_moments(injection: NoiseInjection, sizes: Sizes, m: int, corr: np.ndarray, name: str, key: str) -> None:
    """Mean 0 and ``Cov zeta = sigma^2 R`` (``sigma = 1`` here) along random directions."""
    draws = int(max(200, min(CHECK_DRAWS, CHECK_BUDGET // m)))
    keys = jax.random.split(jax.random.key(20240418), draws)
    zeta = np.asarray(jax.jit(jax.vmap(lambda k: injection.sample(k, sizes, jnp.float64)))(keys))
    if not np.isfinite(zeta).all():
        raise FunctionError(f"{key} = {name!r}: sample returned non-finite values")
    u = np.random.default_rng(0).standard_normal((m, CHECK_PROJECTIONS))
    u /= np.linalg.norm(u, axis=0)
    proj = zeta @ u  # (draws, projections)
    target = np.einsum("ip,ij,jp->p", u, corr, u)
    mean_z = np.abs(proj.mean(0)) / np.sqrt(np.maximum(proj.var(0, ddof=1), 1e-300) / draws)
    sq = proj**2
    var_z = np.abs(sq.mean(0) - target) / np.sqrt(np.maximum(sq.var(0, ddof=1), 1e-300) / draws)
    exact = np.abs(sq.mean(0) - target) <= 1e-12 * np.maximum(target, 1.0)  # deterministic draws (e.g. +-1 along u)
    if (mean_z > CHECK_Z).any():
        raise FunctionError(f"{key} = {name!r}: sample does not have mean 0 ({mean_z.max():.1f} standard errors off along a random "
                            f"direction, {draws} draws)")
    if ((var_z > CHECK_Z) & ~exact).any():
        j = int(np.argmax(np.where(exact, 0.0, var_z)))
        raise FunctionError(f"{key} = {name!r}: the covariance of sample is not sigma^2 correlation: along a random direction "
                            f"the variance is {sq.mean(0)[j]:.4g} against u^T R u = {target[j]:.4g} at sigma = 1 "
                            f"({var_z[j]:.1f} standard errors, {draws} draws)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
