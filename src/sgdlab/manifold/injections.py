"""Noise injections: composable pieces that say where one step's noise enters a model's loss.

Source: Shalova, Schlichting, Peletier, "Singular-limit analysis of gradient descent with noise
injection", arXiv 2404.12293 (2024), eq. (1.2) and section 5; documentation
``docs/manifold.md``. The step that uses them is in :mod:`sgdlab.manifold.noise`::

    w_{k+1} = w_k - eta grad_w L_hat(w_k, zeta_k),     L_hat(w, 0) = L(w),

with ``zeta_k`` i.i.d., mean 0, covariance ``sigma^2 R`` (``R`` the *correlation*, the identity for
every noise here except minibatch sampling without replacement).

A noise injection does not see the model: it maps its ``zeta`` into a :class:`Perturbation`, a
record of *where* noise enters the model's square loss, and :func:`perturbed_loss` evaluates::

    L_hat(w; pi) = (1/2n) sum_i s_i (f_i(w * m + delta; u) - y_i - eps_i)^2 - <t, w>

    label noise      eps = zeta                                  (zeta in R^n)
    Dropout          u = 1 + zeta, inverted mask: 1 + zeta = mask / q, sigma^2 = (1 - q) / q   (R^units)
    DropConnect      m = 1 + zeta (same mask law), i.e. L(w (1 + zeta))                        (R^p)
    perturbed GD     delta = zeta, i.e. L(w + zeta)                                            (R^p)
    SGLD             t = zeta, i.e. L(w) - <zeta, w>: w <- w - eta grad L + eta zeta           (R^p)
    minibatch SGD    s = 1 + zeta = (n/b) 1{i in batch}, b of n without replacement          (R^n)

Pieces compose with :func:`chain` (their ``zeta`` are concatenated; each fills its own field);
:func:`make_injection` builds one by name (or from a user's factory,
:mod:`sgdlab.manifold.user_noise`). The correlation ``R`` is what the slow limit
(:mod:`sgdlab.manifold.limit`) reads; nothing here knows a particular model.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


NOISE_NAMES = (
    "label_noise",
    "dropout",
    "dropconnect",
    "perturbed_gd",
    "anticorrelated_perturbed_gd",
    "sgld",
    "minibatch_sgd",
)


class Sizes(NamedTuple):
    """Numbers of samples ``n``, hidden units ``u`` and parameters ``p`` of a model."""

    n_samples: int
    n_units: int
    n_params: int


class Perturbation(NamedTuple):
    """Where one step's noise enters the square loss (see the module docstring).

    Shapes: ``label_shift (n,)``, ``unit_scale (u,)``, ``weight_scale (p,)``, ``weight_shift (p,)``,
    ``tilt (p,)``, ``sample_weight (n,)``. :func:`no_perturbation` is the identity (``L_hat = L``).
    """

    label_shift: Array
    unit_scale: Array
    weight_scale: Array
    weight_shift: Array
    tilt: Array
    sample_weight: Array


def no_perturbation(sizes: Sizes, dtype=jnp.float64) -> Perturbation:
    """The identity perturbation: zeros for shifts and tilt, ones for scales and weights."""
    n, u, p = sizes
    return Perturbation(jnp.zeros(n, dtype), jnp.ones(u, dtype), jnp.ones(p, dtype), jnp.zeros(p, dtype), jnp.zeros(p, dtype), jnp.ones(n, dtype))


def perturbed_loss(apply: Callable, x: Array, y: Array, w: Array, pert: Perturbation) -> Array:
    """``L_hat(w; pi) = (1/2n) sum_i s_i (f_i(w*m + delta; u) - y_i - eps_i)^2 - <t, w>`` (scalar).

    ``apply(w, x, unit_scale) -> (n,)`` is the model; ``x (n, d_in)``, ``y (n,)``, ``w (p,)``.
    """
    f = apply(w * pert.weight_scale + pert.weight_shift, x, pert.unit_scale)
    r = f - y - pert.label_shift
    return 0.5 * jnp.mean(pert.sample_weight * r**2) - jnp.dot(pert.tilt, w)


class NoiseInjection(NamedTuple):
    """One composable noise piece.

    - ``sigma``: the noise scale (``Cov zeta = sigma^2 R``);
    - ``zeta_size(sizes) -> m``: the dimension of ``zeta``;
    - ``sample(key, sizes, dtype) -> zeta (m,)``: one draw, mean 0;
    - ``perturb(pert, zeta, sizes) -> pert``: write ``zeta`` into the perturbation record;
    - ``correlation(sizes) -> R (m, m)``: ``Cov(zeta) / sigma^2`` (NumPy).
    """

    name: str
    sigma: float
    zeta_size: Callable[[Sizes], int]
    sample: Callable[[Array, Sizes, object], Array]
    perturb: Callable[[Perturbation, Array, Sizes], Perturbation]
    correlation: Callable[[Sizes], np.ndarray]


def _identity_corr(size_fn):
    return lambda sizes: np.eye(size_fn(sizes))


_ADDITIVE_LAWS, _MULTIPLICATIVE_LAWS = ("gaussian", "rademacher"), ("bernoulli", "gaussian")


def _check_law(distribution, multiplicative: bool) -> None:
    """The ValueError of :func:`_additive` / :func:`_multiplicative` for an unknown law, without a draw."""
    allowed = _MULTIPLICATIVE_LAWS if multiplicative else _ADDITIVE_LAWS
    if distribution not in allowed:
        what = "a multiplicative" if multiplicative else "an additive"
        raise ValueError(f"distribution={distribution!r} for {what} noise; allowed: {', '.join(allowed)}")


def _additive(key, m, sigma, distribution, dtype):
    _check_law(distribution, multiplicative=False)
    if distribution == "gaussian":
        return sigma * jax.random.normal(key, (m,), dtype)
    return sigma * jax.random.rademacher(key, (m,), dtype)


def _multiplicative(key, m, sigma, distribution, dtype):
    """``zeta`` with ``1 + zeta`` an inverted Bernoulli(q) mask ``mask / q`` (``q = 1/(1+sigma^2)``,
    so ``Var zeta = (1-q)/q = sigma^2``) or Gaussian ``sigma N(0, 1)``."""
    _check_law(distribution, multiplicative=True)
    if distribution == "bernoulli":
        q = 1.0 / (1.0 + sigma**2)
        mask = jax.random.bernoulli(key, q, (m,)).astype(dtype)
        return mask / q - 1.0
    return sigma * jax.random.normal(key, (m,), dtype)


def keep_probability(sigma: float) -> float:
    """Keep probability ``q = 1 / (1 + sigma^2)`` of an inverted Bernoulli mask with ``Var zeta = sigma^2``."""
    return 1.0 / (1.0 + sigma**2)


def _piece(name: str, sigma: float, distribution: str, multiplicative: bool, size, field: str) -> NoiseInjection:
    """A noise piece with identity correlation whose ``zeta`` (``size(sizes)`` entries, law
    ``distribution``) enters the :class:`Perturbation` field ``field``: added to it, or, when
    ``multiplicative``, multiplying it by ``1 + zeta``."""
    _check_law(distribution, multiplicative)
    draw = _multiplicative if multiplicative else _additive

    def perturb(pert, zeta, s):
        old = getattr(pert, field)
        return pert._replace(**{field: old * (1.0 + zeta) if multiplicative else old + zeta})

    return NoiseInjection(name, float(sigma), size, lambda key, s, dtype: draw(key, size(s), sigma, distribution, dtype), perturb,
                          _identity_corr(size))


def label_noise(sigma: float, distribution: str = "gaussian") -> NoiseInjection:
    """Label noise ``y_i -> y_i + zeta_i`` (``zeta`` in ``R^n``); Gaussian or Rademacher ``+-sigma``."""
    return _piece("label_noise", sigma, distribution, False, lambda s: s.n_samples, "label_shift")


def dropout(sigma: float, distribution: str = "bernoulli") -> NoiseInjection:
    """Dropout on hidden units: unit ``j`` is multiplied by ``1 + zeta_j`` (inverted mask
    ``mask_j / q``, ``q = 1/(1+sigma^2)``; or Gaussian Dropout)."""
    return _piece("dropout", sigma, distribution, True, lambda s: s.n_units, "unit_scale")


def dropconnect(sigma: float, distribution: str = "bernoulli") -> NoiseInjection:
    """DropConnect: every weight multiplied by ``1 + zeta_k``, i.e. ``L(w (1 + zeta))``."""
    return _piece("dropconnect", sigma, distribution, True, lambda s: s.n_params, "weight_scale")


def weight_perturbation(sigma: float, distribution: str = "gaussian") -> NoiseInjection:
    """Perturbed GD: the gradient is taken at ``w + zeta``, i.e. ``L(w + zeta)``."""
    return _piece("perturbed_gd", sigma, distribution, False, lambda s: s.n_params, "weight_shift")


def langevin_tilt(sigma: float) -> NoiseInjection:
    """SGLD: ``L(w) - <zeta, w>``, so a step is ``w - eta grad L(w) + eta zeta`` (Gaussian)."""
    return _piece("sgld", sigma, "gaussian", False, lambda s: s.n_params, "tilt")


def minibatch_sigma(batch_size: int, n_samples: int) -> float:
    """``sigma = sqrt(n/b - 1)``: the standard deviation of ``zeta_i = (n/b) 1{i in batch} - 1``."""
    return float(np.sqrt(n_samples / batch_size - 1.0))


def minibatch(batch_size: int, n_samples: int) -> NoiseInjection:
    """Minibatch SGD: ``(1/n) sum_i (1 + zeta_i) loss_i``, ``1 + zeta_i = (n/b) 1{i in batch}``, a
    batch of ``b`` distinct samples drawn uniformly. ``sigma^2 = n/b - 1``; the correlation of
    ``zeta_i, zeta_j`` (``i != j``) is ``-1/(n-1)`` (sampling without replacement)."""
    if not 1 <= batch_size <= n_samples:
        raise ValueError(f"batch_size must be in [1, n={n_samples}] (got {batch_size})")
    b, n = int(batch_size), int(n_samples)

    def sample(key, s, dtype):
        if s.n_samples != n:
            raise ValueError(f"minibatch built for n={n} samples, model has {s.n_samples}")
        ranks = jnp.argsort(jax.random.permutation(key, n))
        return jnp.where(ranks < b, n / b, 0.0).astype(dtype) - 1.0

    def correlation(s):
        if n == 1:
            return np.eye(1)
        return (1.0 + 1.0 / (n - 1)) * np.eye(n) - np.ones((n, n)) / (n - 1)

    return NoiseInjection(
        "minibatch_sgd",
        minibatch_sigma(b, n),
        lambda s: s.n_samples,
        sample,
        lambda pert, zeta, s: pert._replace(sample_weight=pert.sample_weight * (1.0 + zeta)),
        correlation,
    )


def chain(*injections: NoiseInjection) -> NoiseInjection:
    """Several noises at once: ``zeta`` is the concatenation of the pieces' ``zeta``.

    The chain's ``sigma`` is the first piece's (the reference scale); its correlation is
    block-diagonal with blocks ``(sigma_i / sigma)^2 R_i``, so ``Cov zeta = sigma^2 R`` still holds.
    """
    if not injections:
        raise ValueError("chain needs at least one noise injection")
    ref = injections[0].sigma
    if ref <= 0:
        raise ValueError("the first piece of a chain sets the reference sigma and must have sigma > 0")

    def sizes_of(s):
        return [inj.zeta_size(s) for inj in injections]

    def sample(key, s, dtype):
        keys = jax.random.split(key, len(injections))
        return jnp.concatenate([inj.sample(k, s, dtype) for inj, k in zip(injections, keys)])

    def perturb(pert, zeta, s):
        start = 0
        for inj, m in zip(injections, sizes_of(s)):
            pert = inj.perturb(pert, zeta[start : start + m], s)
            start += m
        return pert

    def correlation(s):
        blocks = [(inj.sigma / ref) ** 2 * inj.correlation(s) for inj in injections]
        total = sum(b.shape[0] for b in blocks)
        out = np.zeros((total, total))
        start = 0
        for b in blocks:
            out[start : start + b.shape[0], start : start + b.shape[0]] = b
            start += b.shape[0]
        return out

    return NoiseInjection("+".join(i.name for i in injections), ref, lambda s: sum(sizes_of(s)), sample, perturb, correlation)


def make_injection(name: str | Callable[[float], NoiseInjection], sigma: float = 0.0, *, distribution: str | None = None,
                   batch_size: int | None = None, n_samples: int | None = None) -> NoiseInjection:
    """The injection ``name`` (one of :data:`NOISE_NAMES` except the anti-correlated one, which is
    an algorithm; asking for it returns :func:`weight_perturbation`, its ``z``-variable form), or
    ``name(sigma)`` for a user factory (see :mod:`sgdlab.manifold.user_noise`)."""
    if callable(name):
        from sgdlab.manifold.user_noise import user_injection

        return user_injection(name, sigma)
    if name == "label_noise":
        return label_noise(sigma, distribution or "gaussian")
    if name == "dropout":
        return dropout(sigma, distribution or "bernoulli")
    if name == "dropconnect":
        return dropconnect(sigma, distribution or "bernoulli")
    if name in ("perturbed_gd", "anticorrelated_perturbed_gd"):
        return weight_perturbation(sigma, distribution or "gaussian")
    if name == "sgld":
        return langevin_tilt(sigma)
    if name == "minibatch_sgd":
        if batch_size is None or n_samples is None:
            raise ValueError("minibatch_sgd needs batch_size and n_samples")
        return minibatch(batch_size, n_samples)
    raise ValueError(f"unknown noise {name!r}; available: {', '.join(NOISE_NAMES)}")


__all__: Sequence[str] = [
    "NOISE_NAMES",
    "NoiseInjection",
    "Perturbation",
    "Sizes",
    "chain",
    "dropconnect",
    "dropout",
    "keep_probability",
    "label_noise",
    "langevin_tilt",
    "make_injection",
    "minibatch",
    "minibatch_sigma",
    "no_perturbation",
    "perturbed_loss",
    "weight_perturbation",
]
