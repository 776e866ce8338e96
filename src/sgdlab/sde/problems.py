"""Finite-sum problems for SGD: a per-sample loss ``f(x, theta)`` as a JAX function, ``n`` samples
and a batch size ``B``.

Conventions (documentation page ``docs/sde.md``, section "Problems"):

- parameters ``x`` have shape ``(d,)``; one sample ``theta`` is a pytree (one slice of
  ``samples``, whose leaves have a leading axis of length ``n``);
- the data law is uniform on the ``n`` samples, ``F(x) = (1/n) sum_i f(x, theta_i)``;
- one SGD step draws ``B`` sample indices uniformly *with replacement* and uses the mean of their
  gradients, so the gradient noise covariance is ``Sigma(x) / B`` with
  ``Sigma(x) = Cov_theta(grad f(x, theta))``.

A :class:`FiniteSumProblem` is a pytree (the samples are its data, the loss function, the batch
size, the dimension and the name are static), so it can be passed to ``jit``-ed functions as an
ordinary argument. It knows nothing of algorithms: the SGD recursion and its continuous limits live
in :mod:`sgdlab.sde`.

Linear-gradient problems (``grad f(x, theta) = A_theta x - b_theta``, i.e. quadratic losses) are
the ones whose SGD and SDE moments close; :func:`linear_gradient` extracts ``(A, b, c)`` from any
problem by automatic differentiation and checks that the gradient is indeed affine.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import device_input

Array = jax.Array


@dataclass(frozen=True)
class FiniteSumProblem:
    """``F(x) = (1/n) sum_i f(x, theta_i)``, ``f(x, theta) = loss(x, theta) + ridge |x|^2 / 2``,
    with SGD batches of ``batch_size`` samples.

    Attributes:
        loss: ``loss(x, theta) -> scalar``, ``x (d,)``, ``theta`` one sample (a pytree slice).
        samples: pytree whose leaves have the leading axis ``n`` (the data set).
        dim: the parameter dimension ``d``.
        batch_size: ``B``, samples per SGD step, drawn with replacement.
        name: a label.
        ridge: ``lambda``, an L2 term shared by every sample (kept out of the per-sample ``vmap``,
            so that its gradient is not materialised once per sample; it adds no gradient noise).
    """

    loss: Callable[[Array, Any], Array]
    samples: Any
    dim: int
    batch_size: int = 1
    name: str = "finite_sum"
    ridge: Any = 0.0

    @property
    def n_samples(self) -> int:
        """The number of samples ``n``."""
        return int(jax.tree_util.tree_leaves(self.samples)[0].shape[0])

    def with_batch_size(self, batch_size: int) -> "FiniteSumProblem":
        """The same problem with another batch size ``B``."""
        return dataclasses.replace(self, batch_size=int(batch_size))

    def sample(self, i) -> Any:
        """Sample ``i`` (a pytree slice of ``samples``)."""
        return jax.tree_util.tree_map(lambda leaf: leaf[i], self.samples)

    # --- losses -------------------------------------------------------------------------------
    def _penalty(self, x: Array) -> Array:
        return 0.5 * self.ridge * jnp.sum(x * x)

    def sample_losses(self, x: Array) -> Array:
        """``(f(x, theta_i))_i``, shape ``(n,)``."""
        return jax.vmap(self.loss, in_axes=(None, 0))(x, self.samples) + self._penalty(x)

    def full_loss(self, x: Array) -> Array:
        """``F(x)``, the mean loss over the samples (scalar)."""
        return jnp.mean(jax.vmap(self.loss, in_axes=(None, 0))(x, self.samples)) + self._penalty(x)

    # --- gradients ----------------------------------------------------------------------------
    def sample_grads(self, x: Array) -> Array:
        """``(grad f(x, theta_i))_i``, shape ``(n, d)``."""
        return jax.vmap(jax.grad(self.loss), in_axes=(None, 0))(x, self.samples) + self.ridge * x

    def full_grad(self, x: Array) -> Array:
        """``grad F(x)``, shape ``(d,)``."""
        return jax.grad(self.full_loss)(x)

    def weighted_grad(self, x: Array, w: Array) -> Array:
        """``sum_i w_i grad f(x, theta_i)`` for weights ``w (n,)``, in one reverse pass, shape ``(d,)``."""
        data = jax.grad(lambda y: jnp.dot(w, jax.vmap(self.loss, in_axes=(None, 0))(y, self.samples)))(x)
        return data + jnp.sum(w) * self.ridge * x

    def batch_grad(self, x: Array, idx: Array) -> Array:
        """The SGD gradient ``(1/B) sum_{j in idx} grad f(x, theta_j)`` for indices ``idx (B,)``."""
        batch = jax.tree_util.tree_map(lambda leaf: leaf[idx], self.samples)
        return jax.grad(lambda y: jnp.mean(jax.vmap(self.loss, in_axes=(None, 0))(y, batch)))(x) + self.ridge * x

    def gradient_covariance(self, x: Array) -> Array:
        """``Sigma(x) = Cov_theta(grad f(x, theta))`` (one sample, not divided by ``B``), ``(d, d)``."""
        g = self.sample_grads(x)
        c = g - jnp.mean(g, axis=0)
        return c.T @ c / g.shape[0]


jax.tree_util.register_dataclass(
    FiniteSumProblem, data_fields=["samples", "ridge"], meta_fields=["loss", "dim", "batch_size", "name"]
)


# ------------------------------------------------------------------------------------------------
# Linear-gradient problems
# ------------------------------------------------------------------------------------------------
class LinearGradient(NamedTuple):
    """Per-sample quadratic ``f_i(x) = x.A_i x / 2 - b_i.x + c_i``, so ``grad f_i = A_i x - b_i``.

    Shapes: ``A (n, d, d)`` (symmetric), ``b (n, d)``, ``c (n,)``; float64 numpy arrays.
    """

    A: np.ndarray
    b: np.ndarray
    c: np.ndarray


class NotLinearGradientError(ValueError):
    """The problem's per-sample gradients are not affine in ``x`` (no closed moment equations)."""


def linear_gradient(problem: FiniteSumProblem, check: bool = True, rtol: float = 1e-9) -> LinearGradient:
    """``(A_i, b_i, c_i)`` of a linear-gradient problem, by automatic differentiation at ``x = 0``.

    With ``check`` the affine form is verified at three random points (relative tolerance
    ``rtol``); a mismatch raises :class:`NotLinearGradientError`.
    """
    d = problem.dim
    zero = np.zeros(d, dtype=np.float64)  # NumPy inputs: no eager JAX operation before the program
    hess, grads, losses = _taylor_at(problem, zero)
    A = np.asarray(hess, dtype=np.float64)
    b = -np.asarray(grads, dtype=np.float64)
    c = np.asarray(losses, dtype=np.float64)
    A = 0.5 * (A + np.swapaxes(A, 1, 2))
    if check:
        rng = np.random.default_rng(12345)
        for _ in range(3):
            x = rng.normal(size=d) * 1.7
            got = np.asarray(_taylor_at(problem, x)[1], dtype=np.float64)
            want = A @ x - b
            scale = max(1.0, float(np.max(np.abs(want))))
            if not np.allclose(got, want, rtol=0.0, atol=rtol * scale * 10):
                raise NotLinearGradientError(
                    f"problem {problem.name!r}: per-sample gradients are not affine in x "
                    f"(max deviation {np.max(np.abs(got - want)):.3g}); exact moments need a quadratic loss"
                )
    return LinearGradient(A, b, c)


@jax.jit
def _taylor_at(problem: FiniteSumProblem, x: Array):
    """Per-sample Hessians ``(n, d, d)``, gradients ``(n, d)`` and losses ``(n,)`` at ``x``."""
    hess = jax.vmap(jax.hessian(problem.loss), in_axes=(None, 0))(x, problem.samples)
    hess = hess + problem.ridge * jnp.eye(x.shape[0], dtype=x.dtype)
    return hess, problem.sample_grads(x), problem.sample_losses(x)


#: per-sample Hessians up to this many floats (``K n d^2``) are formed and diagonalised exactly
DENSE_CURVATURE_FLOATS = 2**24


def max_sample_curvature(problem: FiniteSumProblem, x0s, iterations: int = 300) -> float:
    """``max_{i, k} |lambda|_max(Hess f_i(x0s[k]))``: the largest per-sample curvature at the
    starting points ``x0s (K, d)``.

    Exact (NumPy ``eigvalsh`` of the per-sample Hessians, on the host) when ``K n d^2`` is at most
    :data:`DENSE_CURVATURE_FLOATS`; otherwise ``iterations`` power iterations on Hessian-vector
    products (one ``jvp`` of the gradient per sample and iteration, samples in batches of 256),
    a lower bound that is exact for the rank-one Hessians of least squares and logistic regression.

    One SGD step on sample ``i`` near ``x`` multiplies deviations by ``I - eta Hess f_i(x)``: for
    ``eta`` above ``2 / lambda`` it expands them, and SGD is then not in the small-``eta`` regime
    that the continuous models expand around.
    """
    x0s = np.atleast_2d(np.asarray(x0s, dtype=np.float64))
    K, d = x0s.shape
    if K * problem.n_samples * d * d <= DENSE_CURVATURE_FLOATS:
        hess = np.concatenate([np.asarray(_taylor_at(problem, x)[0], dtype=np.float64) for x in x0s])
        with np.errstate(invalid="ignore"):
            return float(np.max(np.abs(np.linalg.eigvalsh(hess)))) if np.all(np.isfinite(hess)) else float("nan")
    return float(_max_curvature(problem, x0s, int(iterations)))


@functools.partial(jax.jit, static_argnames=("iterations",))
def _max_curvature(problem: FiniteSumProblem, x0s: Array, iterations: int) -> Array:
    grad = jax.grad(problem.loss)

    def one(x, theta):
        hvp = lambda v: jax.jvp(lambda y: grad(y, theta), (x,), (v,))[1] + problem.ridge * v  # noqa: E731

        def power(_, v):
            w = hvp(v)
            return w / jnp.maximum(jnp.linalg.norm(w), 1e-300)

        v0 = jnp.ones_like(x) / jnp.sqrt(x.shape[0]) + 1e-3 * jnp.arange(x.shape[0]) / x.shape[0]
        v = jax.lax.fori_loop(0, iterations, power, v0 / jnp.linalg.norm(v0))
        return jnp.abs(jnp.dot(v, hvp(v)))

    per_start = jax.vmap(lambda x: jax.lax.map(lambda th: one(x, th), problem.samples, batch_size=256))(x0s)
    return jnp.max(per_start)


def has_linear_gradient(problem: FiniteSumProblem) -> bool:
    """Whether :func:`linear_gradient` succeeds (the per-sample gradients are affine)."""
    try:
        linear_gradient(problem)
    except NotLinearGradientError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# Ready-made problems
# ------------------------------------------------------------------------------------------------
def _quadratic_loss(x, theta):
    return 0.5 * x @ theta["A"] @ x - theta["b"] @ x + theta["c"]


def quadratic(A, b, c=None, batch_size: int = 1, name: str = "quadratic") -> FiniteSumProblem:
    """``f(x, theta_i) = x.A_i x / 2 - b_i.x + c_i``; ``A (n, d, d)`` (symmetrised), ``b (n, d)``, ``c (n,)``."""
    A = np.asarray(A, dtype=np.float64)
    A = 0.5 * (A + np.swapaxes(A, 1, 2))
    b = np.asarray(b, dtype=np.float64)
    c = np.zeros(A.shape[0]) if c is None else np.asarray(c, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or b.shape != A.shape[:2] or c.shape != A.shape[:1]:
        raise ValueError(f"quadratic: need A (n, d, d), b (n, d), c (n,); got {A.shape}, {b.shape}, {c.shape}")
    samples = {"A": device_input(A), "b": device_input(b), "c": device_input(c)}
    return FiniteSumProblem(_quadratic_loss, samples, dim=A.shape[1], batch_size=batch_size, name=name)


def quadratic_1d(a, b=None, batch_size: int = 1, name: str = "quadratic_1d") -> FiniteSumProblem:
    """1-d ``f(x, theta_i) = a_i x^2 / 2 - b_i x``: multiplicative noise from the spread of ``a``,
    additive noise from the spread of ``b`` (``b = None``: zeros)."""
    a = np.atleast_1d(np.asarray(a, dtype=np.float64))
    b = np.zeros_like(a) if b is None else np.atleast_1d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"quadratic_1d: a and b must have the same length; got {a.shape} and {b.shape}")
    return quadratic(a[:, None, None], b[:, None], batch_size=batch_size, name=name)


def _least_squares_loss(x, theta):
    return 0.5 * (theta["z"] @ x - theta["y"]) ** 2


def least_squares(features, targets, ridge: float = 0.0, batch_size: int = 1, name: str = "least_squares") -> FiniteSumProblem:
    """``f(x, (z_i, y_i)) = (z_i.x - y_i)^2 / 2 + ridge |x|^2 / 2``; ``features (n, d)``, ``targets (n,)``."""
    z = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"least_squares: need features (n, d) and targets (n,); got {z.shape} and {y.shape}")
    samples = {"z": device_input(z), "y": device_input(y)}
    return FiniteSumProblem(_least_squares_loss, samples, dim=z.shape[1], batch_size=batch_size, name=name, ridge=float(ridge))


def random_least_squares(seed: int, n: int, d: int, noise: float = 0.5, ridge: float = 0.0, batch_size: int = 1) -> FiniteSumProblem:
    """Least squares on Gaussian features ``z ~ N(0, I_d / d)`` (so ``|z| ~ 1`` and per-sample
    curvatures are O(1)), targets ``z.x* + noise N(0,1)``, ``x* ~ N(0, I_d)`` (numpy
    ``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) / np.sqrt(d)
    x_star = rng.normal(size=d)
    y = z @ x_star + noise * rng.normal(size=n)
    return least_squares(z, y, ridge=ridge, batch_size=batch_size, name=f"least_squares_n{n}_d{d}")


def _logistic_loss(x, theta):
    return jax.nn.softplus(-theta["y"] * (theta["z"] @ x))


def logistic_regression(features, labels, ridge: float = 0.0, batch_size: int = 1, name: str = "logistic") -> FiniteSumProblem:
    """``f(x, (z_i, y_i)) = log(1 + exp(-y_i z_i.x)) + ridge |x|^2 / 2``, labels ``y_i = +-1``."""
    z = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"logistic_regression: need features (n, d) and labels (n,); got {z.shape} and {y.shape}")
    if not np.all(np.abs(y) == 1):
        raise ValueError("logistic_regression: labels must be +1 or -1")
    samples = {"z": device_input(z), "y": device_input(y)}
    return FiniteSumProblem(_logistic_loss, samples, dim=z.shape[1], batch_size=batch_size, name=name, ridge=float(ridge))


def random_logistic(seed: int, n: int, d: int, ridge: float = 0.1, batch_size: int = 1) -> FiniteSumProblem:
    """Logistic regression, features ``N(0, I_d / d)``, labels ``sign(z.x* + 0.5 N(0,1))``,
    ``x* ~ N(0, I_d)`` (``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) / np.sqrt(d)
    x_star = rng.normal(size=d)
    y = np.where(z @ x_star + 0.5 * rng.normal(size=n) >= 0, 1.0, -1.0)
    return logistic_regression(z, y, ridge=ridge, batch_size=batch_size, name=f"logistic_n{n}_d{d}")


def network_unflatten(x: Array, width: int, p: int) -> tuple[Array, Array]:
    """Split the flat parameters of :func:`two_layer_network` into ``W (width, p)`` and ``a (width,)``."""
    return x[: width * p].reshape(width, p), x[width * p :]


def two_layer_network(features, targets, width: int, batch_size: int = 1, name: str = "two_layer_tanh") -> FiniteSumProblem:
    """A small tanh network, ``f(x, (z, y)) = (y - a.tanh(W z) / width)^2 / 2``; ``x = (vec W, a)``
    has ``d = width (p + 1)`` entries (:func:`network_unflatten`)."""
    z = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"two_layer_network: need features (n, p) and targets (n,); got {z.shape} and {y.shape}")
    width, p = int(width), z.shape[1]

    def loss(x, theta):
        W, a = network_unflatten(x, width, p)
        return 0.5 * (theta["y"] - a @ jnp.tanh(W @ theta["z"]) / width) ** 2

    samples = {"z": device_input(z), "y": device_input(y)}
    return FiniteSumProblem(_NamedLoss(loss, ("two_layer_tanh", width, p)), samples, dim=width * (p + 1), batch_size=batch_size, name=name)


def random_two_layer_network(seed: int, n: int, p: int, width: int, batch_size: int = 1) -> FiniteSumProblem:
    """:func:`two_layer_network` on ``z ~ N(0, I_p)``, ``y = tanh(z.v)``, ``v ~ N(0, I_p / p)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, p))
    y = np.tanh(z @ (rng.normal(size=p) / np.sqrt(p)))
    return two_layer_network(z, y, width, batch_size=batch_size, name=f"two_layer_n{n}_p{p}_w{width}")


class _NamedLoss:
    """A loss closure with value-based equality (so equal problems share jit caches)."""

    def __init__(self, fn: Callable, key: tuple):
        self.fn, self.key = fn, key

    def __call__(self, x, theta):
        return self.fn(x, theta)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _NamedLoss) and other.key == self.key


def n_steps_of(horizon: float, eta: float) -> int:
    """``N = T / eta``, which must be an integer (relative tolerance 1e-9)."""
    N = round(horizon / eta)
    if N < 1 or abs(N * eta - horizon) > 1e-9 * horizon:
        raise ValueError(f"horizon/eta = {horizon}/{eta} = {horizon / eta} must be a positive integer")
    return int(N)
