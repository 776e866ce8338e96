"""Distribution-dependent stochastic modified flow for mean-field two-layer networks.

Source: Gess, Kassing, Konarovskyi, JMLR 25 (2024), the distribution-dependent SMF (their
Section 2.3); spec 03, section "Distribution-dependent SMF".

Network: neurons ``x_i = (a_i, w_i) in R^p``, ``p = 1 + q``; unit ``Phi(x, z) = a act(w.z)``;
output ``h_mu(z) = int Phi(x, z) mu(dx)``, for ``N`` particles ``mu = (1/N) sum_i delta_{x_i}``.
Per-sample risk ``R_theta(mu) = (y - h_mu(z))^2 / 2`` for ``theta = (z, y)``; its first variation
``V(x, mu, theta) = (h_mu(z) - y) Phi(x, z)``, ``Vbar = E_theta V`` (uniform over ``n`` samples).

- SGD, mean-field scaling (per-neuron step ``eta``, all neurons see the same sample):
  ``x_i <- x_i - eta grad_x V(x_i, mu, theta_k)``. This is plain SGD on the *lifted* problem
  ``L(X, theta) = N R_theta(mu_X)``, ``X = (x_1, ..., x_N)`` (:func:`lifted_problem`), since
  ``grad_{x_i} N R_theta(mu_X) = grad_x V(x_i, mu_X, theta)``.
- Mean-field PDE ``d_t mu = div(mu grad Vbar)``: for particles the gradient flow
  ``dx_i = -grad Vbar(x_i, mu) dt`` (order-1 baseline; :func:`particle_gradient_flow`).
- Distribution-dependent SMF: ``dx_i = -grad_x[Vbar(x_i, mu) + eta/4 U(x_i, mu)] dt
  + sqrt(eta) int (grad Vbar - grad V(x_i, mu, theta)) W(dtheta, dt)``, ``U = delta Q / delta mu``,
  ``Q(mu) = int |grad Vbar(x', mu)|^2 mu(dx')``. For the squared loss
  ``delta Vbar(x', mu)/delta mu (x) = E_theta[Phi(x, z) Phi(x', z)]``, hence

  ``grad U(x, mu) = 2 Hess_x Vbar(x, mu) grad Vbar(x, mu) + 2 E_theta[s_mu(z) grad_x Phi(x, z)]``,
  ``s_mu(z) = int grad Vbar(x', mu).grad_x Phi(x', z) mu(dx')``

  (:func:`modified_drift_correction`). ``W`` is cylindrical on the data law: for ``n`` samples,
  ``sqrt(eta/(nB)) sum_j (...)(theta_j) dbeta_j`` with ``n`` Brownian motions *common to all
  particles* -- the common noise that does not average out as ``N`` grows. For ``N`` particles
  this is exactly the finite-dimensional SMF of the lifted problem (``|grad_X L_bar|^2 = N Q``),
  which the tests check against these explicit formulas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sgdlab.sde.problems import FiniteSumProblem
from sgdlab.sde.models import SDE, SMF, sde_for
from sgdlab.sde.moments import n_steps_of
from sgdlab.sde.solvers import STREAM_SDE, STREAM_SGD, sgd_final_states, simulate_features
from sgdlab.sde.weak_error import fit_slope

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"linear": lambda u: u, "tanh": jnp.tanh}
PROCESSES = ("sgd", "smf", "pde")


def unit(activation: str, x: Array, z: Array) -> Array:
    """``Phi(x, z) = a act(w.z)`` for one particle ``x = (a, w) (p,)`` and an input ``z (q,)``."""
    return x[0] * ACTIVATIONS[activation](x[1:] @ z)


@dataclass(frozen=True)
class MeanFieldNetwork:
    """Data ``(features (n, q), targets (n,))`` of a mean-field two-layer network with unit
    ``Phi((a, w), z) = a act(w.z)``; ``batch_size`` samples per SGD step (with replacement)."""

    features: Array
    targets: Array
    activation: str = "linear"
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


jax.tree_util.register_dataclass(MeanFieldNetwork, data_fields=["features", "targets"], meta_fields=["activation", "batch_size"])


def make_network(features, targets, activation: str = "linear", batch_size: int = 1) -> MeanFieldNetwork:
    """A :class:`MeanFieldNetwork` from arrays (float64)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    z = jnp.asarray(features, dtype=jnp.float64)
    y = jnp.asarray(targets, dtype=jnp.float64)
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise ValueError(f"need features (n, q) and targets (n,); got {z.shape} and {y.shape}")
    return MeanFieldNetwork(z, y, activation, int(batch_size))


def teacher_network(seed: int, n: int, q: int, activation: str = "linear", noise: float = 0.0, batch_size: int = 1) -> MeanFieldNetwork:
    """Inputs ``z ~ N(0, I_q)``, targets ``y = act(z.v) + noise N(0, 1)``, ``v ~ N(0, I_q / q)``
    (``numpy default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, q))
    v = rng.normal(size=q) / np.sqrt(q)
    act = np.tanh if activation == "tanh" else (lambda u: u)
    y = act(z @ v) + noise * rng.normal(size=n)
    return make_network(z, y, activation, batch_size)


def init_particles(seed: int, N: int, p: int, scale: float = 1.0) -> np.ndarray:
    """``N`` particles ``(N, p)`` i.i.d. ``N(0, scale^2 I)`` (``numpy default_rng(seed)``)."""
    return scale * np.random.default_rng(seed).normal(size=(N, p))


# ------------------------------------------------------------------------------------------------
# Distribution-level quantities for the empirical measure of ``particles (N, p)``
# ------------------------------------------------------------------------------------------------
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


def gradient_energy(net: MeanFieldNetwork, particles: Array) -> Array:
    """``Q(mu) = int |grad Vbar(x, mu)|^2 mu(dx)`` (scalar)."""
    return jnp.mean(jnp.sum(mean_potential_grad(net, particles) ** 2, axis=1))


def modified_drift_correction(net: MeanFieldNetwork, particles: Array) -> Array:
    """``grad_x U(x_i, mu)``, ``U = delta Q / delta mu`` (module docstring), ``(N, p)``.

    ``2 Hess_x Vbar(x_i, mu) grad Vbar(x_i, mu)`` (``mu`` frozen) ``+ 2 E_theta[s_mu(z) grad Phi(x_i, z)]``.
    """
    g = mean_potential_grad(net, particles)

    def vbar_grad_one(x):  # grad_x Vbar(x, mu) with mu frozen at the particles
        def one(z, y):
            return (net.output(particles, z) - y) * jax.grad(net.phi)(x, z)

        return jnp.mean(jax.vmap(one)(net.features, net.targets), axis=0)

    hess_term = jax.vmap(lambda x, v: jax.jvp(vbar_grad_one, (x,), (v,))[1])(particles, g)
    dphi = jax.vmap(lambda z: jax.vmap(jax.grad(net.phi), in_axes=(0, None))(particles, z))(net.features)  # (n, N, p)
    s = jnp.mean(jnp.sum(dphi * g[None], axis=2), axis=1)  # (n,)
    return 2 * hess_term + 2 * jnp.mean(s[:, None, None] * dphi, axis=0)


def smf_drift(net: MeanFieldNetwork, particles: Array, eta) -> Array:
    """``-grad_x[Vbar + eta/4 U](x_i, mu)``, ``(N, p)``."""
    return -(mean_potential_grad(net, particles) + 0.25 * eta * modified_drift_correction(net, particles))


def smf_noise(net: MeanFieldNetwork, particles: Array, eta, w: Array) -> Array:
    """``sqrt(eta/(nB)) sum_j (grad Vbar - grad V(., mu, theta_j))(x_i) w_j`` for common ``w (n,)``, ``(N, p)``."""
    G = sample_potential_grads(net, particles)
    c = jnp.sqrt(eta / (net.n_samples * net.batch_size))
    return c * jnp.einsum("j,jip->ip", w, jnp.mean(G, axis=0)[None] - G)


# ------------------------------------------------------------------------------------------------
# The particle system as a finite-dimensional problem
# ------------------------------------------------------------------------------------------------
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


def particle_sde(net: MeanFieldNetwork, N: int, eta, process: str = "smf") -> SDE:
    """The ``N``-particle distribution-dependent SMF (``process="smf"``) or the particle gradient
    flow of the mean-field PDE (``"pde"``) as an :class:`SDE` on flat ``X (N p,)``; drift and
    noise from the explicit distribution-level formulas, the Ito correction from the lifted problem."""
    p = net.unit_dim
    if process == "pde":
        drift = lambda x: -mean_potential_grad(net, x.reshape(N, p)).ravel()  # noqa: E731
        return SDE(drift, lambda x, w: jnp.zeros_like(x), lambda x: jnp.zeros_like(x), 1)
    if process != "smf":
        raise ValueError(f"process={process!r}; allowed: smf, pde")
    lifted = sde_for(lifted_problem(net, N), SMF, eta)
    return SDE(
        lambda x: smf_drift(net, x.reshape(N, p), eta).ravel(),
        lambda x, w: smf_noise(net, x.reshape(N, p), eta, w).ravel(),
        lifted.ito_correction,
        net.n_samples,
    )


def second_layer_overlap(particles: Array) -> Array:
    """``M = int a^2 mu(dx) = (1/N) sum_i a_i^2`` (the second-layer overlap)."""
    return jnp.mean(particles[:, 0] ** 2)


def risk(net: MeanFieldNetwork, particles: Array) -> Array:
    """``R(mu) = (1/n) sum_j (y_j - h_mu(z_j))^2 / 2``."""
    h = jax.vmap(lambda z: net.output(particles, z))(net.features)
    return 0.5 * jnp.mean((net.targets - h) ** 2)


MEAN_FIELD_OBSERVABLES = ("second_layer_overlap", "risk")


def _observe(net, N, p, x):
    particles = x.reshape(N, p)
    m, r = second_layer_overlap(particles), risk(net, particles)
    return jnp.stack([m, m * m, r, r * r])


@partial(jax.jit, static_argnames=("N", "process", "scheme", "n_paths"))
def _mf_chunk(net, particles0, eta, h, n_steps, key, *, N, process, scheme, n_paths):
    p = net.unit_dim
    x0 = particles0.reshape(1, -1)
    obs = lambda xs: _observe(net, N, p, xs[0])  # noqa: E731
    if process == "sgd":
        X = sgd_final_states(lifted_problem(net, N), eta, x0, n_steps, key, n_paths)
        F = jax.vmap(obs)(X)
    else:
        F = simulate_features(particle_sde(net, N, eta, process), x0, h, n_steps, key, n_paths, scheme, obs)
    return jnp.sum(F, axis=0), F.T @ F


@partial(jax.jit, static_argnames=("N",))
def _enumeration_chunk(net, particles0, eta, sequences, *, N):
    lifted = lifted_problem(net, N)
    p = net.unit_dim

    def one(seq):  # seq (steps, B): the batches of one run
        x = jax.lax.fori_loop(0, seq.shape[0], lambda k, x: x - eta * lifted.batch_grad(x, seq[k]), particles0.ravel())
        return _observe(net, N, p, x)

    F = jax.vmap(one)(sequences)
    return jnp.sum(F, axis=0)


def sgd_enumeration(net: MeanFieldNetwork, particles0, eta: float, horizon: float, chunk: int = 65_536) -> dict[str, tuple[float, float]]:
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


def mean_field_monte_carlo(
    net: MeanFieldNetwork,
    particles0,
    eta: float,
    horizon: float,
    process: str,
    n_paths: int,
    scheme: str = "weak2",
    substeps: int = 2,
    seed: int = 0,
    chunk: int = 20_000,
    exact_sgd_limit: int = 2**20,
) -> dict[str, tuple[float, float, float, float]]:
    """``{observable: (mean, se, variance, variance_se)}`` at ``T`` for ``process``:
    ``sgd`` (``T/eta`` steps; exact by :func:`sgd_enumeration`, ``se = 0``, when there are at
    most ``exact_sgd_limit`` batch sequences), ``smf`` (scheme, step ``eta/substeps``) or ``pde``
    (deterministic: one path, ``weak2`` = second-order Taylor ODE step ``eta/substeps``)."""
    if process not in PROCESSES:
        raise ValueError(f"process={process!r}; allowed: {', '.join(PROCESSES)}")
    particles0 = jnp.asarray(particles0, dtype=jnp.float64)
    N = int(particles0.shape[0])
    steps = n_steps_of(horizon, eta)
    if process == "sgd" and net.n_samples ** (net.batch_size * steps) <= exact_sgd_limit:
        exact = sgd_enumeration(net, particles0, eta, horizon)
        return {k: (m, 0.0, v, 0.0) for k, (m, v) in exact.items()}
    if process != "sgd":
        steps *= int(substeps)
    h = horizon / steps
    if process == "pde":
        n_paths, chunk, scheme = 1, 1, "weak2"
    size = max(1, min(chunk, n_paths))
    n_chunks = -(-n_paths // size)
    base = jax.random.fold_in(jax.random.key(seed), STREAM_SGD if process == "sgd" else STREAM_SDE)
    tot, outer = 0.0, 0.0
    for c in range(n_chunks):
        s, o = _mf_chunk(net, particles0, eta, h, steps, jax.random.fold_in(base, c), N=N, process=process, scheme=scheme, n_paths=size)
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


def mean_field_study(
    net: MeanFieldNetwork,
    Ns: Sequence[int],
    etas: Sequence[float],
    horizon: float,
    n_paths: int = 20_000,
    scheme: str = "weak2",
    substeps: int = 2,
    seed: int = 0,
    init_scale: float = 1.0,
    chunk: int = 20_000,
    exact_sgd_limit: int = 2**20,
) -> xr.Dataset:
    """SGD, the distribution-dependent SMF and the mean-field PDE for every ``(N, eta)``.

    The particles of width ``N`` start at :func:`init_particles` ``(seed, N, p, init_scale)``, the
    same for every process and ``eta``: all randomness is the sampling noise (SGD) or the common
    Brownian motions (SMF). Returns a Dataset with dims ``(process, N, eta)`` and, per observable
    in :data:`MEAN_FIELD_OBSERVABLES`, the mean, its standard error, the variance (of the common
    noise, not averaged out by ``N``) and its error; ``error`` ``(process, N, eta)`` of the mean
    against SGD, with ``slope``/``slope_low``/``slope_high`` ``(process, N)`` of the
    ``second_layer_overlap`` error versus ``eta``.
    """
    Ns, etas = [int(n) for n in Ns], [float(e) for e in etas]
    shape = (len(PROCESSES), len(Ns), len(etas))
    data = {f"{o}{s}": np.zeros(shape) for o in MEAN_FIELD_OBSERVABLES for s in ("", "_se", "_var", "_var_se")}
    p = net.unit_dim
    for iN, N in enumerate(Ns):
        x0 = init_particles(seed, N, p, init_scale)
        for ie, eta in enumerate(etas):
            for ip, proc in enumerate(PROCESSES):
                res = mean_field_monte_carlo(net, x0, eta, horizon, proc, n_paths, scheme, substeps, seed, chunk, exact_sgd_limit)
                for o in MEAN_FIELD_OBSERVABLES:
                    for s, v in zip(("", "_se", "_var", "_var_se"), res[o]):
                        data[f"{o}{s}"][ip, iN, ie] = v
    dims = ("process", "N", "eta")
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords={"process": list(PROCESSES), "N": Ns, "eta": etas})
    key = "second_layer_overlap"
    err = ds[key] - ds[key].sel(process="sgd")
    err_se = np.sqrt(ds[f"{key}_se"] ** 2 + ds[f"{key}_se"].sel(process="sgd") ** 2)
    ds["error"] = err
    ds["error_se"] = err_se
    slope = np.full(shape[:2], np.nan)
    lo, hi = slope.copy(), slope.copy()
    if len(etas) >= 2:
        for ip, proc in enumerate(PROCESSES):
            if proc == "sgd":
                continue
            for iN in range(len(Ns)):
                slope[ip, iN], lo[ip, iN], hi[ip, iN] = fit_slope(etas, err.values[ip, iN], err_se.values[ip, iN])
    ds["slope"] = (("process", "N"), slope)
    ds["slope_low"] = (("process", "N"), lo)
    ds["slope_high"] = (("process", "N"), hi)
    ds.attrs.update(horizon=float(horizon), n_paths=int(n_paths), scheme=scheme, substeps=int(substeps), seed=int(seed),
                    activation=net.activation, init_scale=float(init_scale), observables=json.dumps(MEAN_FIELD_OBSERVABLES))
    return ds
