"""The mean-field two-layer network as a model: particles, units, risk, and the lifted
finite-sum problem (what both the SGD simulator and the distribution-dependent SMF act on).

Source: Gess, Kassing, Konarovskyi, JMLR 25 (2024), Section 2.3. Neurons ``x_i = (a_i, w_i) in
R^p``, ``p = 1 + q``; unit ``Phi(x, z) = a act(w.z)``; output ``h_mu(z) = int Phi(x, z) mu(dx)``
for ``N`` particles ``mu = (1/N) sum_i delta_{x_i}``; per-sample risk
``R_theta(mu) = (y - h_mu(z))^2 / 2`` and its first variation ``V(x, mu, theta) = (h_mu(z) - y)
Phi(x, z)``. SGD in mean-field scaling is plain SGD on the lifted problem
``L(X, theta) = N R_theta(mu_X)`` (:func:`lifted_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import device_input
from sgdlab.sde.problems import FiniteSumProblem

Array = jax.Array


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"linear": lambda u: u, "tanh": jnp.tanh}

#: an activation: a name of :data:`ACTIVATIONS` or a JAX-traceable elementwise callable
Activation = str | Callable[[Array], Array]


def activation_fn(activation: Activation) -> Callable[[Array], Array]:
    """The function of a built-in name, or the user's callable itself."""
    return activation if callable(activation) else ACTIVATIONS[activation]


def check_activation(activation: Activation, key: str = "activation") -> Activation:
    """A built-in name or a callable (import strings ``"package.module:function"`` are resolved),
    checked to be JAX-traceable and elementwise; raises ``ValueError`` naming ``key`` otherwise."""
    from sgdlab.core.functions import check_traceable, resolve

    if isinstance(activation, str) and activation in ACTIVATIONS:
        return activation
    if isinstance(activation, str) and ":" not in activation:
        raise ValueError(f"{key}={activation!r}; allowed: {', '.join(ACTIVATIONS)}, a 'package.module:function' string or a callable")
    fn = resolve(activation, key=key, builtins=ACTIVATIONS)
    check_traceable(fn, (np.linspace(-1.0, 1.0, 3),), key=key)
    return fn


def unit(activation: Activation, x: Array, z: Array) -> Array:
    """``Phi(x, z) = a act(w.z)`` for one particle ``x = (a, w) (p,)`` and an input ``z (q,)``."""
    return x[0] * activation_fn(activation)(x[1:] @ z)


@dataclass(frozen=True)
class MeanFieldNetwork:
    """Data ``(features (n, q), targets (n,))`` of a mean-field two-layer network with unit
    ``Phi((a, w), z) = a act(w.z)``; ``batch_size`` samples per SGD step (with replacement)."""

    features: Array
    targets: Array
    activation: Activation = "linear"
    batch_size: int = 1

    @property
    def n_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def unit_dim(self) -> int:
        """``p = 1 + q``: a particle is ``(a, w)``."""
        return int(self.features.shape[1]) + 1

    def phi(self, x: Array, z: Array) -> Array:
        """``Phi(x, z) = a act(w.z)`` for one particle ``x (p,)`` and input ``z (q,)``."""
        return unit(self.activation, x, z)

    def output(self, particles: Array, z: Array) -> Array:
        """``h_mu(z) = (1/N) sum_i Phi(x_i, z)`` for ``particles (N, p)``."""
        return jnp.mean(jax.vmap(self.phi, in_axes=(0, None))(particles, z))


def make_network(features, targets, activation: Activation = "linear", batch_size: int = 1) -> MeanFieldNetwork:
    """A :class:`MeanFieldNetwork` from arrays (float64). ``activation``: a name of
    :data:`ACTIVATIONS`, a JAX-traceable elementwise callable or an import string."""
    activation = check_activation(activation)
    z = device_input(features, np.float64)
    y = device_input(targets, np.float64)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"need features (n, q) and targets (n,); got {z.shape} and {y.shape}")
    return MeanFieldNetwork(z, y, activation, int(batch_size))


def teacher_network(seed: int, n: int, q: int, activation: Activation = "linear", noise: float = 0.0, batch_size: int = 1) -> MeanFieldNetwork:
    """Inputs ``z ~ N(0, I_q)``, targets ``y = act(z.v) + noise N(0, 1)``, ``v ~ N(0, I_q / q)``
    (``numpy default_rng(seed)``)."""
    activation = check_activation(activation)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, q))
    v = rng.normal(size=q) / np.sqrt(q)
    if callable(activation):
        act = lambda u: np.asarray(activation(jnp.asarray(u)), dtype=float)  # noqa: E731
    else:  # the built-ins in NumPy, as they always were
        act = np.tanh if activation == "tanh" else (lambda u: u)
    y = act(z @ v) + noise * rng.normal(size=n)
    return make_network(z, y, activation, batch_size)


def init_particles(seed: int, N: int, p: int, scale: float = 1.0) -> np.ndarray:
    """``N`` particles ``(N, p)`` i.i.d. ``N(0, scale^2 I)`` (``numpy default_rng(seed)``)."""
    return scale * np.random.default_rng(seed).normal(size=(N, p))


def _sample(net: MeanFieldNetwork, j):
    return net.features[j], net.targets[j]


def potential_grads(net: MeanFieldNetwork, particles: Array, z: Array, y: Array) -> Array:
    """``grad_x V(x_i, mu, theta) = (h_mu(z) - y) grad_x Phi(x_i, z)``, shape ``(N, p)``."""
    r = net.output(particles, z) - y
    return r * jax.vmap(jax.grad(net.phi), in_axes=(0, None))(particles, z)


def sample_potential_grads(net: MeanFieldNetwork, particles: Array) -> Array:
    """``grad_x V(x_i, mu, theta_j)`` for every sample, ``(n, N, p)``."""
    return jax.vmap(potential_grads, in_axes=(None, None, 0, 0))(net, particles, net.features, net.targets)


def mean_potential_grad(net: MeanFieldNetwork, particles: Array) -> Array:
    """``grad Vbar(x_i, mu)``, ``(N, p)``."""
    return jnp.mean(sample_potential_grads(net, particles), axis=0)


class _LiftedLoss:
    """``L(X, (z, y)) = N (y - h_X(z))^2 / 2`` for flat ``X (N p,)``; value equality by config."""

    def __init__(self, activation: str, N: int, p: int):
        self.activation, self.N, self.p = activation, N, p

    def __call__(self, x, theta):
        particles = x.reshape(self.N, self.p)
        h = jnp.mean(jax.vmap(lambda xi: unit(self.activation, xi, theta["z"]))(particles))
        return 0.5 * self.N * (theta["y"] - h) ** 2

    def __hash__(self):
        return hash(("lifted", self.activation, self.N, self.p))

    def __eq__(self, other):
        return isinstance(other, _LiftedLoss) and (other.activation, other.N, other.p) == (self.activation, self.N, self.p)


def lifted_problem(net: MeanFieldNetwork, N: int) -> FiniteSumProblem:
    """The ``N``-particle system as a finite-sum problem in ``R^{N p}`` (module docstring)."""
    p = net.unit_dim
    samples = {"z": net.features, "y": net.targets}
    return FiniteSumProblem(_LiftedLoss(net.activation, int(N), p), samples, dim=int(N) * p, batch_size=net.batch_size, name=f"mean_field_N{N}")


def second_layer_overlap(particles: Array) -> Array:
    """``M = int a^2 mu(dx) = (1/N) sum_i a_i^2`` (the second-layer overlap)."""
    return jnp.mean(particles[:, 0] ** 2)


def risk(net: MeanFieldNetwork, particles: Array) -> Array:
    """``R(mu) = (1/n) sum_j (y_j - h_mu(z_j))^2 / 2``."""
    h = jax.vmap(lambda z: net.output(particles, z))(net.features)
    return 0.5 * jnp.mean((net.targets - h) ** 2)


MEAN_FIELD_OBSERVABLES = ("second_layer_overlap", "risk")


def mean_field_features(net: MeanFieldNetwork, N: int, p: int, x: Array) -> Array:
    """``(M, M^2, R, R^2)`` of the flat particles ``x (N p,)``: what the estimates average."""
    particles = x.reshape(N, p)
    m, r = second_layer_overlap(particles), risk(net, particles)
    return jnp.stack([m, m * m, r, r * r])


def chunk_estimates(kernel, key, n_paths: int, chunk: int) -> dict[str, tuple[float, float, float, float]]:
    """Run ``kernel(chunk_key, size) -> feature_sums`` of :func:`mean_field_features` over chunks
    (chunk ``c`` gets ``fold_in(key, c)``); ``{observable: (mean, se, variance, variance_se)}``
    (standard errors by the delta method; one path: no errors, no variance)."""
    size = max(1, min(chunk, n_paths))
    n_chunks = -(-n_paths // size)
    tot, outer = 0.0, 0.0
    for c in range(n_chunks):
        s, o = kernel(jax.random.fold_in(key, c), size)
        tot, outer = tot + np.asarray(s), outer + np.asarray(o)
    P = size * n_chunks
    mean = tot / P
    cov = (outer - P * np.outer(mean, mean)) / max(P - 1, 1) if P > 1 else np.zeros((4, 4))
    out = {}
    for k, name in enumerate(MEAN_FIELD_OBSERVABLES):
        m1, m2 = mean[2 * k], mean[2 * k + 1]
        c = cov[2 * k : 2 * k + 2, 2 * k : 2 * k + 2]
        se = float(np.sqrt(c[0, 0] / P)) if P > 1 else 0.0
        var = m2 - m1**2
        g = np.array([-2 * m1, 1.0])  # delta method for Var = m2 - m1^2
        var_se = float(np.sqrt(max(g @ c @ g, 0.0) / P)) if P > 1 else 0.0
        out[name] = (float(m1), se, float(var) if P > 1 else 0.0, var_se)
    return out
