"""Integrators on the zero-loss manifold: RK4 (the limit flows) and Euler-Maruyama (the limit
SDEs), every stage and step followed by the retraction onto Gamma (see :mod:`sgdlab.manifold.limit`,
"Numerics"). Compiled once per ``(loss, drift[, diffusion], rank, n_saves)``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import host_input
from sgdlab.manifold.geometry import project_to_manifold, tangent_space

Array = jax.Array
LossFn = Callable[[Array], Array]


_RK4_NODES = (0.0, 0.5, 0.5, 1.0)
_RK4_WEIGHTS = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)


def rk4_step_on_manifold(b: Callable[[Array], Array], retract: Callable[[Array], Array], w: Array, dt) -> Array:
    """One classical RK4 step for ``dw/dt = b(w)`` whose stages are evaluated at retracted points
    (``k_i = b(R(w + dt c_i k_{i-1}))``), followed by the retraction ``R``. The stages run in a
    ``fori_loop`` so ``b`` is traced (and compiled) once."""
    nodes, weights = jnp.asarray(_RK4_NODES), jnp.asarray(_RK4_WEIGHTS)

    def stage(i, carry):
        k_prev, acc = carry
        k = b(retract(w + dt * nodes[i] * k_prev))
        return k, acc + weights[i] * k

    zero = jnp.zeros_like(w)
    _, acc = jax.lax.fori_loop(0, 4, stage, (zero, zero))
    return retract(w + dt * acc)


@functools.lru_cache(maxsize=128)
def _flow_integrator(loss, drift, rank, n_saves):
    retract = lambda v: project_to_manifold(loss, v, rank)  # noqa: E731
    b = lambda v: tangent_space(loss, v, rank).tangent @ drift(v)  # noqa: E731

    def run(w0, tau_save, substeps):
        dt = tau_save / substeps

        def save(w, _):
            w = jax.lax.fori_loop(0, substeps, lambda i, v: rk4_step_on_manifold(b, retract, v, dt), w)
            return w, w

        _, ws = jax.lax.scan(save, w0, None, length=n_saves)
        return jnp.concatenate([w0[None], ws])

    return jax.jit(run)


def integrate_flow(loss: LossFn, drift: Callable[[Array], Array], w0: Array, rank: int, tau_save: float, n_saves: int, substeps: int) -> Array:
    """Integrate ``dW/dtau = P_T drift(W)`` on Gamma from ``w0`` (on Gamma): RK4 with projection
    (:func:`rk4_step_on_manifold`), step ``tau_save / substeps``. Returns ``W`` at
    ``tau = j tau_save``, ``j = 0..n_saves``: shape ``(n_saves + 1, p)``. Compiled once per
    ``(loss, drift, rank, n_saves)``; ``tau_save`` and ``substeps`` are traced."""
    run = _flow_integrator(loss, drift, rank, int(n_saves))
    return run(host_input(w0, np.float64), np.float64(tau_save), np.int32(substeps))


@functools.lru_cache(maxsize=128)
def _sde_integrator(loss, drift, diffusion, rank, n_saves):
    retract = lambda v: project_to_manifold(loss, v, rank)  # noqa: E731

    def path(w0, tau_save, substeps, key):
        dt = tau_save / substeps

        def em(i, carry):
            w, k = carry
            k, sub = jax.random.split(k)
            bw = diffusion(w)
            xi = jax.random.normal(sub, (bw.shape[1],), w.dtype)
            w = retract(w + dt * (tangent_space(loss, w, rank).tangent @ drift(w)) + jnp.sqrt(dt) * (bw @ xi))
            return w, k

        def save(carry, _):
            carry = jax.lax.fori_loop(0, substeps, em, carry)
            return carry, carry[0]

        _, ws = jax.lax.scan(save, (w0, key), None, length=n_saves)
        return jnp.concatenate([w0[None], ws])

    return jax.jit(jax.vmap(path, in_axes=(None, None, None, 0)))


def integrate_sde(loss: LossFn, drift, diffusion, w0: Array, rank: int, tau_save: float, n_saves: int, substeps: int, keys: Array) -> Array:
    """Euler-Maruyama with projection for ``dW = diffusion(W) dB + P_T drift(W) dtau`` on Gamma:
    ``W <- R(W + P_T drift dt + diffusion sqrt(dt) xi)``, ``xi ~ N(0, I_m)``; ``R`` the retraction,
    whose second-order term supplies the normal (curvature) part of the Ito drift. Weak order 1.
    One path per key of ``keys (R,)``: returns ``(R, n_saves + 1, p)``."""
    run = _sde_integrator(loss, drift, diffusion, rank, int(n_saves))
    return run(host_input(w0, np.float64), np.float64(tau_save), np.int32(substeps), keys)
