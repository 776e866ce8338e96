"""Distribution-dependent stochastic modified flow for mean-field two-layer networks.

Source: Gess, Kassing, Konarovskyi, JMLR 25 (2024), the distribution-dependent SMF (their
Section 2.3); ``docs/sde.md``, section "Mean-field two-layer networks".

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

from functools import partial

import jax
import jax.numpy as jnp

from sgdlab.sde.models import SDE, SMF, sde_for
from sgdlab.sde.observables import STREAM_SDE, feature_sums
from sgdlab.sde.network import (  # noqa: F401  (re-exported: the model of this flow)
    ACTIVATIONS,
    MEAN_FIELD_OBSERVABLES,
    MeanFieldNetwork,
    chunk_estimates,
    init_particles,
    lifted_problem,
    make_network,
    mean_field_features,
    mean_potential_grad,
    potential_grads,
    risk,
    sample_potential_grads,
    second_layer_overlap,
    teacher_network,
    unit,
)
from sgdlab.sde.problems import n_steps_of
from sgdlab.sde.solvers import simulate_features

Array = jax.Array

#: the continuous processes of the particles (SGD is simulated in :mod:`sgdlab.sde.sgd`)
SDE_PROCESSES = ("smf", "pde")


jax.tree_util.register_dataclass(MeanFieldNetwork, data_fields=["features", "targets"], meta_fields=["activation", "batch_size"])


# ------------------------------------------------------------------------------------------------
# Distribution-level quantities for the empirical measure of ``particles (N, p)``
# ------------------------------------------------------------------------------------------------


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


@partial(jax.jit, static_argnames=("N", "process", "scheme", "n_paths"))
def _mean_field_sde_chunk(net, particles0, eta, h, n_steps, key, *, N, process, scheme, n_paths):
    p = net.unit_dim
    obs = lambda xs: mean_field_features(net, N, p, xs[0])  # noqa: E731
    F = simulate_features(particle_sde(net, N, eta, process), particles0.reshape(1, -1), h, n_steps, key, n_paths, scheme, obs)
    return feature_sums(F)


def mean_field_sde_monte_carlo(
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
) -> dict[str, tuple[float, float, float, float]]:
    """``{observable: (mean, se, variance, variance_se)}`` at ``T`` for ``process``: ``smf``
    (``scheme``, step ``eta/substeps``) or ``pde`` (deterministic: one path, ``weak2`` =
    second-order Taylor ODE step ``eta/substeps``)."""
    if process not in SDE_PROCESSES:
        raise ValueError(f"process={process!r}; allowed: {', '.join(SDE_PROCESSES)}")
    particles0 = jnp.asarray(particles0, dtype=jnp.float64)
    N = int(particles0.shape[0])
    steps = n_steps_of(horizon, eta) * int(substeps)
    h = horizon / steps
    if process == "pde":
        n_paths, chunk, scheme = 1, 1, "weak2"
    base = jax.random.fold_in(jax.random.key(seed), STREAM_SDE)
    kernel = lambda k, size: _mean_field_sde_chunk(  # noqa: E731
        net, particles0, eta, h, steps, k, N=N, process=process, scheme=scheme, n_paths=size
    )
    return chunk_estimates(kernel, base, n_paths, chunk)
