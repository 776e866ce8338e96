"""The zero-loss manifold Gamma = {L = 0} of a loss: the gradient-flow end point ``Phi``, the
Hessian's null space (the tangent space), and the retraction onto Gamma.

Conventions and tolerances: :mod:`sgdlab.manifold.limit` (module docstring, "Numerics"), whose
solvers these are the geometric part of; documentation ``docs/manifold.md``. Every function takes
the loss ``L(w)`` as a plain JAX function of a flat ``w (p,)``.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.manifold.spectral import jacobi_eigh

Array = jax.Array
LossFn = Callable[[Array], Array]

#: Gradient-flow tolerance for ``Phi``: controller rtol/atol and the stopping ``|grad L|``.
PHI_TOL = 1e-12
#: Eigenvalues of ``H`` below ``RANK_RTOL * lambda_max`` are zero (tangent directions).
RANK_RTOL = 1e-8
#: Newton retraction stops at ``|grad L| < RETRACTION_TOL`` (or after ``RETRACTION_MAXITER``).
RETRACTION_TOL = 1e-13
RETRACTION_MAXITER = 8


# ---------------------------------------------------------------------------------------------
# Phi, the Hessian's null space, the retraction
# ---------------------------------------------------------------------------------------------


def gradient_flow_limit(loss: LossFn, w0: Array, tol: float = PHI_TOL, max_steps: int = 200_000, dt0: float = 1e-2) -> Array:
    """``Phi(w0)``: the end point of ``dw/dt = -grad L(w)``, shape ``(p,)``.

    diffrax ``Kvaerno5`` with ``PIDController(rtol=tol, atol=tol)``, run to ``t = inf`` and stopped
    by the event ``|grad L(w)| < tol`` (2-norm). Jittable and vmappable. If the solve fails (``max_steps``
    reached first, or a step that cannot be taken) the result is NaN: diffrax runs with
    ``throw=False``, so the caller names the failure instead of a runtime error from inside XLA.
    """
    term = diffrax.ODETerm(lambda t, w, args: -jax.grad(loss)(w))
    event = diffrax.Event(diffrax.steady_state_event(rtol=0.0, atol=tol, norm=lambda v: jnp.sqrt(jnp.sum(v**2))))
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Kvaerno5(),
        0.0,
        jnp.inf,
        dt0,
        jnp.asarray(w0, jnp.float64),
        stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
        event=event,
        max_steps=max_steps,
        throw=False,
    )
    return jnp.where(diffrax.is_okay(sol.result), sol.ys[-1], jnp.nan)


@functools.lru_cache(maxsize=64)
def _jitted_phi(loss: LossFn):
    return jax.jit(lambda v, tol: gradient_flow_limit(loss, v, tol))


def jitted_gradient_flow_limit(loss: LossFn, tol: float = PHI_TOL) -> Callable[[Array], Array]:
    """``w0 -> Phi(w0)`` (jitted, vmappable), compiled once per ``loss`` whatever ``tol`` (Kvaerno5
    is slow to compile; ``loss`` must be hashable, as functions and bound methods are)."""
    phi = _jitted_phi(loss)
    return lambda v: phi(v, np.float64(tol))  # a NumPy scalar: no eager conversion program


@functools.lru_cache(maxsize=64)
def _jitted_hessian(loss: LossFn):
    return jax.jit(lambda v: hessian(loss, v))


def hessian(loss: LossFn, w: Array) -> Array:
    """``Hessian L(w)``, shape ``(p, p)``, symmetrised."""
    h = jax.hessian(loss)(w)
    return 0.5 * (h + h.T)


def hessian_rank(loss: LossFn, w: Array, rank_rtol: float = RANK_RTOL) -> int:
    """Rank of ``H`` at a point ``w`` of Gamma: the number of eigenvalues ``> rank_rtol * lambda_max``.

    Host function (returns a Python int). Raises ``ValueError`` when the spectrum has no clear gap
    there: an eigenvalue within a factor 100 of the threshold (the point is then too far from
    Gamma, or the normal Hessian too ill-conditioned, for the threshold to decide).
    """
    lam = np.linalg.eigvalsh(np.asarray(_jitted_hessian(loss)(np.asarray(w, np.float64))))
    top = max(float(np.max(np.abs(lam))), np.finfo(float).tiny)
    thresh = rank_rtol * top
    ambiguous = (np.abs(lam) > thresh / 100) & (np.abs(lam) < thresh * 100)
    if ambiguous.any():
        raise ValueError(
            f"Hessian spectrum has no gap at rank_rtol={rank_rtol}: eigenvalues {lam[ambiguous]} lie within a factor 100 of "
            f"{thresh:.3g}; is the point on Gamma (use Phi) and is the normal Hessian well conditioned?"
        )
    return int(np.sum(lam > thresh))


class TangentSpace(NamedTuple):
    """Spectral data of ``H`` at a point, for a fixed rank ``r`` (the codimension of Gamma).

    ``tangent (p, p)``: ``P_T``, projection on the span of the ``p - r`` smallest eigenvectors
    (``ker H`` on Gamma); ``normal (p, p)``: ``P_N = I - P_T``; ``normal_basis (p, r)`` and
    ``normal_eigenvalues (r,)``: the top-``r`` eigenpairs; ``pinv (p, p)``: ``H_r^+``.
    """

    tangent: Array
    normal: Array
    normal_basis: Array
    normal_eigenvalues: Array
    pinv: Array


def tangent_space(loss: LossFn, w: Array, rank: int) -> TangentSpace:
    """:class:`TangentSpace` of ``H(w)`` with the ``rank`` largest eigenvalues normal (jittable,
    ``rank`` static). Off Gamma this is a smooth extension (the top-``rank`` eigenspace).

    The eigenpairs come from :func:`sgdlab.manifold.spectral.jacobi_eigh` (Jacobi rotations in
    plain JAX), not LAPACK: XLA's batched CPU ``eigh`` deadlocks inside the ``vmap``-ed SDE loop
    of :func:`integrate_sde` once the paths fill its thread pool (10^4 SGLD paths hung)."""
    lam, vec = jacobi_eigh(hessian(loss, w))
    p = w.shape[0]
    v = vec[:, p - rank :]
    lr = lam[p - rank :]
    normal = v @ v.T
    return TangentSpace(jnp.eye(p) - normal, normal, v, lr, (v / lr) @ v.T)


def project_to_manifold(loss: LossFn, w: Array, rank: int, tol: float = RETRACTION_TOL, max_iter: int = RETRACTION_MAXITER) -> Array:
    """Retraction on Gamma: Newton ``w <- w - H_r^+(w) grad L(w)`` until ``|grad L| < tol`` (at most
    ``max_iter`` iterations). Near Gamma it converges quadratically to a point whose displacement
    is normal to first order (for a square loss it is Gauss-Newton ``w - J^+ r``)."""
    grad = jax.grad(loss)

    def cond(c):
        w, it = c
        return (jnp.linalg.norm(grad(w)) >= tol) & (it < max_iter)

    def body(c):
        w, it = c
        return w - tangent_space(loss, w, rank).pinv @ grad(w), it + 1

    return jax.lax.while_loop(cond, body, (w, 0))[0]
