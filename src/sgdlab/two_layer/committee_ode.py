"""Saad-Solla / Goldt et al. ODEs for online SGD in soft committee machines with ``g = erf(x/sqrt 2)``.

Saad & Solla, Phys. Rev. E 52, 4225 (1995) (SS95); Goldt, Advani, Saxe, Krzakala & Zdeborova,
NeurIPS 2019 (G19; second layer trained, output noise). A classical, independent anchor for the
BMZ time-scale machinery: a student ``sum_i v_i g(w_i.x / sqrt N)`` (``K`` units) learns a
teacher ``sum_n v*_n g(w*_n.x / sqrt N) + sigma_noise zeta`` (``M`` units) by online SGD with
learning rate ``eta/N`` (first layer) and ``eta_v/N`` (second layer). In the time ``alpha =
steps / N`` (one sample per step: the number of samples seen per input dimension, ``n / d``) the order parameters ``Q = w.w/N`` (K, K), ``R = w.w*/N`` (K, M), ``T`` (M, M,
fixed) and ``v`` obey (G19 eqs. (8)-(10); SS95 eqs. (9)-(10) for ``v = v* = 1``)::

    dR_in/dalpha = eta v_i sum_p c_p I3(i, n, p)
    dQ_ik/dalpha = eta v_i sum_p c_p I3(i, k, p) + eta v_k sum_p c_p I3(k, i, p)
                 + eta^2 v_i v_k [sum_pq c_p c_q I4(i, k, p, q) + sigma_noise^2 J2(i, k)]
    dv_i/dalpha  = eta_v sum_p c_p I2(i, p)
    eps_g = (1/2) sum_pq c_p c_q I2(p, q)

over all ``K + M`` local fields ``z = (lambda, nu)`` with covariance ``C = [[Q, R], [R^T, T]]``
and ``c = (-v, v*)`` (teacher minus student). Closed forms for erf (SS95 appendix, G19 App. A):
``I2 = (2/pi) asin(C_ab / sqrt((1+C_aa)(1+C_bb)))``, ``I3``, ``I4``, ``J2`` below.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import device_input
from sgdlab.core.runtime_checks import nan_checks


def erf_I2(C: jax.Array) -> jax.Array:
    """``I2[a, b] = E g(z_a) g(z_b)`` for ``z ~ N(0, C)``; ``C`` ``(n, n)`` -> ``(n, n)``."""
    d = 1.0 + jnp.diag(C)
    return (2 / jnp.pi) * jnp.arcsin(C / jnp.sqrt(d[:, None] * d[None, :]))


def erf_I3(C: jax.Array) -> jax.Array:
    """``I3[a, b, c] = E g'(z_a) z_b g(z_c)``; ``(n, n, n)``. SS95 eq. (A3)::

        (2/pi) (C_bc (1 + C_aa) - C_ab C_ac) / ((1 + C_aa) sqrt((1+C_aa)(1+C_cc) - C_ac^2))."""
    d = 1.0 + jnp.diag(C)
    caa = d[:, None, None]
    lam3 = caa * d[None, None, :] - C[:, None, :] ** 2
    num = C[None, :, :] * caa - C[:, :, None] * C[:, None, :]
    return (2 / jnp.pi) * num / (caa * jnp.sqrt(lam3))


def erf_I4(C: jax.Array) -> jax.Array:
    """``I4[a, b, c, d] = E g'(z_a) g'(z_b) g(z_c) g(z_d)``; ``(n, n, n, n)``. SS95 eq. (A4)::

        (4 / (pi^2 sqrt(L4))) asin(L0 / sqrt(L1 L2)),  L4 = (1+C_aa)(1+C_bb) - C_ab^2,
        L0 = L4 C_cd - C_bc C_bd (1+C_aa) - C_ac C_ad (1+C_bb) + C_ab C_ac C_bd + C_ab C_ad C_bc,
        L1 = L4 (1+C_cc) - C_bc^2 (1+C_aa) - C_ac^2 (1+C_bb) + 2 C_ab C_ac C_bc,  L2 likewise with d."""
    n = C.shape[0]
    d = 1.0 + jnp.diag(C)
    ix = jnp.arange(n)
    a, b, c, e = jnp.meshgrid(ix, ix, ix, ix, indexing="ij")
    Caa, Cbb, Ccc, Cdd = d[a], d[b], d[c], d[e]
    Cab, Cac, Cad, Cbc, Cbd, Ccd = C[a, b], C[a, c], C[a, e], C[b, c], C[b, e], C[c, e]
    L4 = Caa * Cbb - Cab**2
    L0 = L4 * Ccd - Cbc * Cbd * Caa - Cac * Cad * Cbb + Cab * Cac * Cbd + Cab * Cad * Cbc
    L1 = L4 * Ccc - Cbc**2 * Caa - Cac**2 * Cbb + 2 * Cab * Cac * Cbc
    L2 = L4 * Cdd - Cbd**2 * Caa - Cad**2 * Cbb + 2 * Cab * Cad * Cbd
    return 4 / (jnp.pi**2 * jnp.sqrt(L4)) * jnp.arcsin(L0 / jnp.sqrt(L1 * L2))


def erf_J2(C: jax.Array) -> jax.Array:
    """``J2[a, b] = E g'(z_a) g'(z_b) = (2/pi) ((1+C_aa)(1+C_bb) - C_ab^2)^{-1/2}``; ``(n, n)``."""
    d = 1.0 + jnp.diag(C)
    return (2 / jnp.pi) / jnp.sqrt(d[:, None] * d[None, :] - C**2)


class CommitteeState(NamedTuple):
    """``Q`` ``(K, K)``, ``R`` ``(K, M)``, ``v`` ``(K,)``."""

    Q: jax.Array
    R: jax.Array
    v: jax.Array


class CommitteeParams(NamedTuple):
    """Teacher ``T`` ``(M, M)``, ``v_star`` ``(M,)``; rates ``eta``, ``eta_v`` (0: second layer
    fixed); output noise std ``noise``."""

    T: jax.Array
    v_star: jax.Array
    eta: float
    eta_v: float = 0.0
    noise: float = 0.0


def _cov(state: CommitteeState, T) -> jax.Array:
    return jnp.block([[state.Q, state.R], [state.R.T, T]])


def generalisation_error(state: CommitteeState, params: CommitteeParams) -> jax.Array:
    """``eps_g = (1/2) sum_pq c_p c_q I2(p, q)`` (without the output noise)."""
    c = jnp.concatenate([-state.v, params.v_star])
    return 0.5 * c @ erf_I2(_cov(state, params.T)) @ c


def committee_vector_field(state: CommitteeState, params: CommitteeParams, second_order: bool = True) -> CommitteeState:
    """``d(Q, R, v)/dalpha`` (module docstring); ``second_order=False`` drops the ``eta^2`` terms
    (the ``eta -> 0`` limit in the time ``eta alpha``)."""
    K = state.Q.shape[0]
    C = _cov(state, params.T)
    c = jnp.concatenate([-state.v, params.v_star])
    I3c = erf_I3(C) @ c  # [a, b] = sum_p I3(a, b, p) c_p
    dR = params.eta * state.v[:, None] * I3c[:K, K:]
    first = params.eta * state.v[:, None] * I3c[:K, :K]
    dQ = first + first.T
    if second_order:
        I4cc = jnp.einsum("abpq,p,q->ab", erf_I4(C)[:K, :K], c, c)
        dQ = dQ + params.eta**2 * jnp.outer(state.v, state.v) * (I4cc + params.noise**2 * erf_J2(C)[:K, :K])
    dv = params.eta_v * (erf_I2(C)[:K] @ c)
    return CommitteeState(dQ, dR, dv)


#: save points per compiled solve: ``alphas`` of any length are solved in chunks of this many
#: (the last padded with copies of its final time), so one compiled program serves every grid
SAVE_CHUNK = 256
#: the adaptive solver's step budget per chunk
MAX_STEPS = 1_000_000


@partial(jax.jit, static_argnames=("second_order", "max_steps"))
def _committee_chunk(state0: CommitteeState, params: CommitteeParams, t0, alphas, second_order: bool, rtol, atol,
                     max_steps: int = MAX_STEPS):
    """One Dopri5 solve from ``(t0, state0)`` saved at ``alphas`` ``(SAVE_CHUNK,)``:
    ``(states, eps_g, success)``. Its failure is returned, not raised inside the program (a raise
    is a host callback, and JAX caches no program with one): :func:`solve_committee` raises it."""
    term = diffrax.ODETerm(lambda t, y, args: committee_vector_field(y, params, second_order))
    with nan_checks():  # diffrax's checks of the save times without a host callback
        sol = diffrax.diffeqsolve(
            term, diffrax.Dopri5(), t0=t0, t1=alphas[-1], dt0=None, y0=state0,
            saveat=diffrax.SaveAt(ts=alphas), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps, throw=False,
        )
    eg = jax.vmap(lambda Q, R, v: generalisation_error(CommitteeState(Q, R, v), params))(*sol.ys)
    return sol.ys, eg, sol.result == diffrax.RESULTS.successful


def _float64(tree):
    return jax.tree.map(lambda x: device_input(x, np.float64), tree)


def solve_committee(state0: CommitteeState, params: CommitteeParams, alphas, second_order: bool = True, rtol=1e-9, atol=1e-11,
                    max_steps: int = MAX_STEPS):
    """Integrate the committee ODEs (``Dopri5``, adaptive) and save ``(state, eps_g)`` at
    ``alphas`` ``(n,)`` (increasing, ``alphas[0] >= 0``; concrete values, not traced):
    ``CommitteeState`` with a leading ``(n,)`` axis and ``eps_g`` ``(n,)``.

    Compiled once per ``second_order`` for any ``n`` and any ``params`` of the same shapes: the
    grid is solved in chunks of :data:`SAVE_CHUNK` save points (each chunk starts from the state
    saved at the end of the previous one), the last chunk padded with copies of its final time.
    A chunk that does not finish within ``max_steps`` adaptive steps raises ``RuntimeError``
    naming the ``alpha`` it did not reach."""
    if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
        raise ValueError(f"max_steps={max_steps!r} must be an integer >= 1")
    alphas = np.asarray(alphas, np.float64)
    n = alphas.shape[0]
    if alphas.ndim != 1 or n == 0 or alphas[0] < 0 or np.any(np.diff(alphas) < 0):
        raise ValueError(f"alphas must be a non-empty increasing 1-d grid from alpha >= 0 (got shape {alphas.shape})")
    state, params = _float64(state0), _float64(params)
    t0, rtol, atol = (np.float64(x) for x in (0.0, rtol, atol))  # NumPy scalars: no eager programs
    states, egs = [], []
    for start in range(0, n, SAVE_CHUNK):
        chunk = alphas[start:start + SAVE_CHUNK]
        padded = np.concatenate([chunk, np.full(SAVE_CHUNK - len(chunk), chunk[-1])])
        ys, eg, ok = _committee_chunk(state, params, t0, padded, second_order, rtol, atol, max_steps)
        if not bool(ok):
            raise RuntimeError(
                f"committee ODE: the adaptive Dopri5 solve stopped before alpha = {chunk[-1]:g} (out of its "
                f"max_steps = {max_steps} steps, or the step size collapsed); check eta and the initial state, or loosen rtol / atol"
            )
        states.append(jax.tree.map(lambda x: x[: len(chunk)], ys))
        egs.append(eg[: len(chunk)])
        state, t0 = jax.tree.map(lambda x: x[len(chunk) - 1], ys), np.float64(chunk[-1])
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *states), jnp.concatenate(egs)


def symmetric_plateau(K: int) -> dict[str, float]:
    """The ``eta -> 0`` symmetric fixed point of SS95 for ``K = M``, ``T = I``, ``v = v* = 1``:
    ``Q_ii = Q_ik = 1/(2K-1)``, ``R_in = 1/sqrt(K (2K-1))``, ``eps_g = K/6 - (K^2/pi) asin(1/(2K))``."""
    return {
        "Q": 1.0 / (2 * K - 1),
        "R": 1.0 / np.sqrt(K * (2 * K - 1)),
        "eps_g": K / 6 - K**2 / np.pi * np.arcsin(1 / (2 * K)),
    }
