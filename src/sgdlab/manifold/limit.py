"""Slow limits of noisy gradient descent on the zero-loss manifold: a generic, autodiff solver.

Sources: Shalova, Schlichting, Peletier, "Singular-limit analysis of gradient descent with noise
injection", arXiv 2404.12293 (2024) (the non-degenerate and degenerate limit theorems: the two
time scales, ``Reg`` and ``D``; their examples); Li, Wang, Arora, "What happens after SGD reaches
zero loss?", ICLR 2022 (section 4: derivatives of ``Phi`` and the limiting diffusion via
Katzenberger's theorem; section 5: label noise); Katzenberger, Ann. Probab. 19 (1991). Documentation:
``docs/manifold.md``.

Setting. ``w_{k+1} = w_k - eta grad_w L_hat(w_k, zeta_k)``, ``L_hat(w, 0) = L(w)``, ``zeta_k`` of
mean 0 and covariance ``sigma^2 R`` (``R`` the correlation, the identity unless stated); ``eta`` is
the step size (the paper's alpha), ``zeta`` the injected noise. Gamma =
``{L = 0}`` (a manifold of critical points; the Hessian ``H`` has full rank on the normal space).
Every function here takes the loss ``L(w)`` and the injected loss ``L_hat(w, zeta)`` as plain JAX
functions of flat arrays ``w (p,)``, ``zeta (m,)``; it never imports the simulators of :mod:`sgdlab.manifold.noise`.

- ``Reg(w) = (1/2) tr(R d^2_zeta L_hat(w, 0))`` (the Laplacian in ``zeta`` for ``R = I``) and
  ``D(w) = d_w d_zeta L_hat(w, 0)`` of shape ``(p, m)``; ``Sigma = D R D^T``.
- ``Phi(w)`` = the end point of gradient flow ``dw/dt = -grad L`` from ``w``
  (:func:`gradient_flow_limit`); on Gamma ``dPhi = P_T``, the orthogonal projection on
  ``ker H`` (:func:`tangent_space`).
- Non-degenerate noise (``P_T grad Reg != 0``): time ``tau = eta sigma^2 k`` and the flow
  ``dW/dtau = -P_T grad Reg(W)`` on Gamma.
- Degenerate noise (``P_T grad Reg = 0`` on Gamma): time ``tau = eta^2 sigma^2 k`` and the SDE
  ``dW = dPhi D R^{1/2} dB + (1/2) d^2Phi[Sigma] dtau`` on Gamma, with (Li-Wang-Arora section 4,
  rederived in :func:`phi_second_derivative`) ::

      d^2Phi[Sigma] = -H^+ T[Sigma_TT] - 2 P_T T[H^+ Sigma_NT] - P_T T[Lyap^{-1}(Sigma_NN)],

  ``T[X] = grad_w <Hessian L(w), X>`` (third derivatives by autodiff), ``Sigma_AB = P_A Sigma P_B``,
  ``Lyap^{-1}(S)`` the solution ``X`` of ``H X + X H = S`` on the normal space. Label noise gives
  ``dW/dtau = -(1/(4n)) grad_Gamma tr H``; SGLD Brownian motion on Gamma with drift
  ``-(1/4) grad_Gamma log pdet H``.
- Trivial noise: ``P_T grad Reg = 0``, ``P_T D = 0`` and ``P_T d^2Phi[Sigma] = 0`` (minibatch SGD:
  every per-sample gradient vanishes on Gamma, so ``D = 0``): nothing moves on either scale.

Numerics (the stated tolerances):

- ``Phi`` integrates gradient flow with diffrax ``Kvaerno5`` (an L-stable, stiffly accurate ESDIRK
  method of order 5) under a PID controller with ``rtol = atol = phi_tol`` (default ``1e-12``)
  until ``|grad L| < phi_tol``; the end point is then within about ``phi_tol / lambda_min`` of
  Gamma (``lambda_min`` the smallest normal eigenvalue of ``H``).
- Rank: the eigenvalues of ``H`` at a point of Gamma below ``rank_rtol * lambda_max``
  (default ``rank_rtol = 1e-8``) count as zero; the rank is decided once at ``Phi(w0)`` and kept
  (Gamma is a manifold, the rank is constant along it); :func:`hessian_rank` refuses a spectrum
  with an eigenvalue within a factor 100 of the threshold (no clear gap). On Gamma the tangent
  eigenvalues are round-off (about ``1e-15 lambda_max``, or ``phi_tol`` times the third
  derivative when the point comes from Phi), so the default needs a normal condition number
  below ``1e6``. Eigenpairs inside the solvers come from the Jacobi method of
  :mod:`sgdlab.manifold.spectral` (no LAPACK: XLA's batched CPU ``eigh`` deadlocks inside the
  ``vmap``-ed SDE loop); they equal LAPACK's to rounding.
- Integration on Gamma: RK4 (ODE) or Euler-Maruyama (SDE) in the ambient space, every stage
  evaluated at the retraction of its point and every step followed by the retraction
  (:func:`project_to_manifold`: Newton iterations ``w <- w - H_r^+ grad L(w)`` with the rank-``r``
  pseudo-inverse, to ``|grad L| < retraction_tol``). Projection keeps the order of the base method.
  The drift is projected on the tangent space; the normal part of ``(1/2) d^2Phi[Sigma]``, the
  curvature term ``-(1/2) H^+ T[Sigma_TT]``, is exactly what the retraction of the tangent noise
  supplies (any retraction with ``dR = P_T`` has ``d^2R[t, t] = II(t, t)`` on tangent vectors).
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
LossHatFn = Callable[[Array, Array], Array]

#: Gradient-flow tolerance for ``Phi``: controller rtol/atol and the stopping ``|grad L|``.
PHI_TOL = 1e-12
#: Eigenvalues of ``H`` below ``RANK_RTOL * lambda_max`` are zero (tangent directions).
RANK_RTOL = 1e-8
#: Newton retraction stops at ``|grad L| < RETRACTION_TOL`` (or after ``RETRACTION_MAXITER``).
RETRACTION_TOL = 1e-13
RETRACTION_MAXITER = 8
#: Classification: a norm below ``CLASSIFY_ATOL`` counts as zero.
CLASSIFY_ATOL = 1e-8

NON_DEGENERATE, DEGENERATE, TRIVIAL = "non_degenerate", "degenerate", "trivial"
TIME_SCALES = {
    NON_DEGENERATE: "tau = eta sigma^2 k",
    DEGENERATE: "tau = eta^2 sigma^2 k",
    TRIVIAL: "none: no motion on tau = eta sigma^2 k nor on tau = eta^2 sigma^2 k",
}


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
    return lambda v: phi(v, jnp.asarray(tol, jnp.float64))


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
    lam = np.linalg.eigvalsh(np.asarray(_jitted_hessian(loss)(jnp.asarray(w, jnp.float64))))
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


# ---------------------------------------------------------------------------------------------
# noise coefficients
# ---------------------------------------------------------------------------------------------


def _corr(correlation, m):
    return jnp.eye(m) if correlation is None else jnp.asarray(correlation, jnp.float64)


def regulariser(loss_hat: LossHatFn, zeta_dim: int, correlation=None) -> LossFn:
    """``Reg(w) = (1/2) tr(R d^2_zeta L_hat(w, 0))``: a scalar function of ``w (p,)``
    (Shalova et al. 2024, the regulariser of the non-degenerate limit; ``R = I`` by default)."""
    r = _corr(correlation, zeta_dim)

    def reg(w):
        h_zeta = jax.hessian(loss_hat, argnums=1)(w, jnp.zeros(zeta_dim, w.dtype))
        return 0.5 * jnp.sum(r * h_zeta)

    return reg


def noise_coefficient(loss_hat: LossHatFn, zeta_dim: int) -> Callable[[Array], Array]:
    """``D(w) = d_w d_zeta L_hat(w, 0)``, shape ``(p, m)``: the gradient noise is ``-eta D zeta``."""

    def d(w):
        g_zeta = lambda v: jax.grad(loss_hat, argnums=1)(v, jnp.zeros(zeta_dim, v.dtype))  # noqa: E731
        return jax.jacfwd(g_zeta)(w).T

    return d


def noise_covariance(loss_hat: LossHatFn, zeta_dim: int, correlation=None) -> Callable[[Array], Array]:
    """``Sigma(w) = D R D^T``, shape ``(p, p)`` (the gradient-noise covariance per ``sigma^2``)."""
    d, r = noise_coefficient(loss_hat, zeta_dim), _corr(correlation, zeta_dim)
    return lambda w: d(w) @ r @ d(w).T


def _sqrt_psd(r):
    lam, vec = jnp.linalg.eigh(0.5 * (r + r.T))
    return (vec * jnp.sqrt(jnp.clip(lam, 0.0))) @ vec.T


# ---------------------------------------------------------------------------------------------
# second derivative of Phi
# ---------------------------------------------------------------------------------------------


def third_derivative(loss: LossFn, w: Array, x: Array) -> Array:
    """``T[X] = grad_w <Hessian L(w), X>``: ``sum_ab d_c d_a d_b L X_ab`` (third derivatives by
    autodiff), shape ``(p,)``; only the symmetric part of ``X (p, p)`` matters."""
    return jax.grad(lambda v: jnp.sum(jax.hessian(loss)(v) * x))(w)


def lyapunov_normal(ts: TangentSpace, s: Array) -> Array:
    """The solution ``X`` of ``H X + X H = P_N S P_N`` supported on the normal space:
    ``X = V (V^T S V / (lambda_i + lambda_j)) V^T`` with ``V, lambda`` the normal eigenpairs."""
    v, lam = ts.normal_basis, ts.normal_eigenvalues
    a = v.T @ s @ v
    return v @ (a / (lam[:, None] + lam[None, :])) @ v.T


def phi_second_derivative(loss: LossFn, w: Array, sigma: Array, rank: int) -> Array:
    """``d^2Phi(w)[Sigma] = sum_ab Sigma_ab d_a d_b Phi(w)`` at ``w`` on Gamma, shape ``(p,)``.

    Derivation (the formula of Li, Wang, Arora 2022, section 4; derived here from scratch). Differentiating
    ``dPhi(x) grad L(x) = 0`` twice at a point of Gamma gives
    ``d^2Phi[H u, v] + d^2Phi[H v, u] = -P_T T[u, v]``; Phi = id on Gamma gives
    ``d^2Phi[t, t'] = II(t, t') = -H^+ T[t, t']`` for tangent ``t, t'``. Hence, with normal
    eigenpairs ``(e_i, lambda_i)``: ``d^2Phi[n, t] = -P_T T[H^+ n, t]`` and
    ``d^2Phi[e_i, e_j] = -P_T T[e_i, e_j] / (lambda_i + lambda_j)``, and summing against Sigma::

        d^2Phi[Sigma] = -H^+ T[Sigma_TT] - 2 P_T T[H^+ Sigma_NT] - P_T T[Lyap^{-1}(Sigma_NN)].

    ``sigma (p, p)`` symmetric; ``rank`` (static) the codimension of Gamma.
    """
    ts = tangent_space(loss, w, rank)
    s = 0.5 * (sigma + sigma.T)
    s_tt = ts.tangent @ s @ ts.tangent
    s_nt = ts.normal @ s @ ts.tangent
    normal_part = -ts.pinv @ third_derivative(loss, w, s_tt)
    tangent_part = -ts.tangent @ third_derivative(loss, w, 2.0 * ts.pinv @ s_nt + lyapunov_normal(ts, s))
    return normal_part + tangent_part


def phi_second_derivative_fd(loss: LossFn, w: Array, sigma: Array, h: float, tol: float = PHI_TOL) -> np.ndarray:
    """Finite-difference ``d^2Phi(w)[Sigma]``: ``Sigma = sum_k s_k u_k u_k^T`` (eigen-decomposition)
    and ``sum_k s_k (Phi(w + h u_k) - 2 Phi(w) + Phi(w - h u_k)) / h^2`` with Phi from
    :func:`gradient_flow_limit` at tolerance ``tol``. Error ``O(h^2) + O(tol / h^2)``."""
    s = np.asarray(sigma, dtype=np.float64)
    lam, vec = np.linalg.eigh(0.5 * (s + s.T))
    keep = np.abs(lam) > 1e-14 * max(1.0, np.max(np.abs(lam)))
    lam, vec = lam[keep], vec[:, keep]
    w = jnp.asarray(w, jnp.float64)
    pts = jnp.concatenate([w[None], w[None] + h * vec.T, w[None] - h * vec.T])
    phis = np.asarray(jax.vmap(_jitted_phi(loss), in_axes=(0, None))(pts, jnp.asarray(tol, jnp.float64)))
    k = len(lam)
    second = (phis[1 : k + 1] - 2 * phis[0] + phis[k + 1 :]) / h**2
    return (lam[:, None] * second).sum(0)


# ---------------------------------------------------------------------------------------------
# the limits
# ---------------------------------------------------------------------------------------------


def _corr_key(correlation):
    """A hashable key of a correlation matrix (``None`` for the identity)."""
    if correlation is None:
        return None
    r = np.asarray(correlation, dtype=np.float64)
    if r.shape[0] and np.array_equal(r, np.eye(r.shape[0])):
        return None
    return (r.shape, r.tobytes())


def _corr_from_key(key, m):
    return jnp.eye(m) if key is None else jnp.asarray(np.frombuffer(key[1], dtype=np.float64).reshape(key[0]))


@functools.lru_cache(maxsize=128)
def _non_degenerate_drift(loss, loss_hat, zeta_dim, rank, corr_key):
    grad_reg = jax.grad(regulariser(loss_hat, zeta_dim, _corr_from_key(corr_key, zeta_dim)))
    return jax.jit(lambda w: -tangent_space(loss, w, rank).tangent @ grad_reg(w))


def non_degenerate_drift(loss: LossFn, loss_hat: LossHatFn, zeta_dim: int, rank: int, correlation=None) -> Callable[[Array], Array]:
    """``W -> -P_T grad Reg(W)``, shape ``(p,)``: the flow of the non-degenerate limit on
    ``tau = eta sigma^2 k`` (Shalova et al. 2024, non-degenerate theorem). Jitted; cached per
    ``(loss, loss_hat, zeta_dim, rank, correlation)`` (pass the same function objects to reuse it)."""
    return _non_degenerate_drift(loss, loss_hat, zeta_dim, rank, _corr_key(correlation))


@functools.lru_cache(maxsize=128)
def _degenerate_coefficients(loss, loss_hat, zeta_dim, rank, corr_key):
    d = noise_coefficient(loss_hat, zeta_dim)
    r = _corr_from_key(corr_key, zeta_dim)
    r_half = _sqrt_psd(r)

    def drift(w):
        dw = d(w)
        return 0.5 * phi_second_derivative(loss, w, dw @ r @ dw.T, rank)

    def diffusion(w):
        return tangent_space(loss, w, rank).tangent @ d(w) @ r_half

    return jax.jit(drift), jax.jit(diffusion)


def degenerate_coefficients(loss: LossFn, loss_hat: LossHatFn, zeta_dim: int, rank: int, correlation=None):
    """``(drift, diffusion)`` of the degenerate limit on ``tau = eta^2 sigma^2 k``:
    ``drift(W) = (1/2) d^2Phi(W)[D R D^T]`` (shape ``(p,)``, normal part included) and
    ``diffusion(W) = P_T D R^{1/2}`` (shape ``(p, m)``), so ``dW = diffusion dB + drift dtau``
    (Katzenberger's theorem as used by Li-Wang-Arora, section 4, and by Shalova et al.'s
    degenerate theorem). Jitted; cached
    like :func:`non_degenerate_drift`."""
    return _degenerate_coefficients(loss, loss_hat, zeta_dim, rank, _corr_key(correlation))


class NoiseClass(NamedTuple):
    """Classification of a noise at a point ``W`` of Gamma.

    ``kind``: ``"non_degenerate"`` (``|P_T grad Reg| > atol``), ``"degenerate"`` (else, if
    ``|P_T D| > atol`` or ``|P_T d^2Phi[Sigma]| > atol``) or ``"trivial"``; ``time_scale``: the
    rescaled time that applies (:data:`TIME_SCALES`); ``stochastic``: whether the degenerate limit
    has noise (``|P_T D| > atol``); the three norms; ``rank``: the codimension of Gamma at ``W``.
    """

    kind: str
    time_scale: str
    stochastic: bool
    tangent_reg_gradient: float
    tangent_noise: float
    tangent_ito_drift: float
    rank: int


@functools.lru_cache(maxsize=128)
def _classification_norms(loss, loss_hat, zeta_dim, rank, corr_key):
    drift, diffusion = _degenerate_coefficients(loss, loss_hat, zeta_dim, rank, corr_key)
    reg_drift = _non_degenerate_drift(loss, loss_hat, zeta_dim, rank, corr_key)

    def norms(v):
        pt = tangent_space(loss, v, rank).tangent
        return jnp.stack([jnp.linalg.norm(reg_drift(v)), jnp.linalg.norm(diffusion(v)), jnp.linalg.norm(pt @ drift(v))])

    return jax.jit(norms)


def classify_noise(loss: LossFn, loss_hat: LossHatFn, zeta_dim: int, w: Array, correlation=None, rank: int | None = None, atol: float = CLASSIFY_ATOL, rank_rtol: float = RANK_RTOL) -> NoiseClass:
    """Classify a noise at ``w`` (a point of Gamma, e.g. ``Phi(w0)``) and say which time scale applies.

    The classification is local: ``P_T grad Reg`` may vanish at isolated points (the fixed points of
    a non-degenerate flow) where the point itself then reads "degenerate". Host function.
    """
    w = jnp.asarray(w, jnp.float64)
    rank = hessian_rank(loss, w, rank_rtol) if rank is None else rank
    g, noise, ito = (float(x) for x in _classification_norms(loss, loss_hat, zeta_dim, rank, _corr_key(correlation))(w))
    if g > atol:
        kind = NON_DEGENERATE
    elif noise > atol or ito > atol:
        kind = DEGENERATE
    else:
        kind = TRIVIAL
    return NoiseClass(kind, TIME_SCALES[kind], bool(noise > atol), g, noise, ito, rank)


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
    return run(jnp.asarray(w0, jnp.float64), jnp.asarray(tau_save, jnp.float64), jnp.asarray(substeps, jnp.int32))


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
    return run(jnp.asarray(w0, jnp.float64), jnp.asarray(tau_save, jnp.float64), jnp.asarray(substeps, jnp.int32), keys)


class LimitSolution(NamedTuple):
    """The slow limit from ``w0``: ``tau (T,)``; ``w (paths, T, p)`` (one path unless the limit is a
    stochastic SDE); ``phi0 (p,)`` = ``Phi(w0)``; ``noise`` the :class:`NoiseClass` at ``phi0``."""

    tau: np.ndarray
    w: np.ndarray
    phi0: np.ndarray
    noise: NoiseClass


def solve_limit(
    loss: LossFn,
    loss_hat: LossHatFn,
    zeta_dim: int,
    w0: Array,
    tau_save: float,
    n_saves: int,
    substeps: int = 10,
    correlation=None,
    kind: str | None = None,
    keys: Array | None = None,
    phi_tol: float = PHI_TOL,
    rank_rtol: float = RANK_RTOL,
    classify_atol: float = CLASSIFY_ATOL,
) -> LimitSolution:
    """The fast phase ``w0 -> Phi(w0)`` then the slow limit on Gamma in its rescaled time.

    ``kind`` (``None``: classify at ``Phi(w0)``) picks the scale: non-degenerate -> the flow
    ``-P_T grad Reg`` in ``tau = eta sigma^2 k``; degenerate -> the SDE (or ODE when ``P_T D = 0``)
    in ``tau = eta^2 sigma^2 k``, one path per key of ``keys (R,)`` when stochastic; trivial ->
    constant ``Phi(w0)``. Host function (jit inside).
    """
    phi0 = jitted_gradient_flow_limit(loss, phi_tol)(jnp.asarray(w0, jnp.float64))
    rank = hessian_rank(loss, phi0, rank_rtol)
    noise = classify_noise(loss, loss_hat, zeta_dim, phi0, correlation, rank, classify_atol)
    kind = noise.kind if kind is None else kind
    if kind != noise.kind:
        noise = noise._replace(kind=kind, time_scale=TIME_SCALES[kind])
    tau = np.arange(n_saves + 1) * tau_save
    if kind == NON_DEGENERATE:
        drift = non_degenerate_drift(loss, loss_hat, zeta_dim, rank, correlation)
        ws = integrate_flow(loss, drift, phi0, rank, tau_save, n_saves, substeps)[None]
    elif kind == DEGENERATE:
        drift, diffusion = degenerate_coefficients(loss, loss_hat, zeta_dim, rank, correlation)
        if noise.stochastic:
            if keys is None:
                raise ValueError("the degenerate limit is an SDE here: pass keys (one per path)")
            ws = integrate_sde(loss, drift, diffusion, phi0, rank, tau_save, n_saves, substeps, keys)
        else:
            ws = integrate_flow(loss, drift, phi0, rank, tau_save, n_saves, substeps)[None]
    elif kind == TRIVIAL:
        ws = jnp.broadcast_to(phi0, (1, n_saves + 1, phi0.shape[0]))
    else:
        raise ValueError(f"kind={kind!r}; allowed: {NON_DEGENERATE}, {DEGENERATE}, {TRIVIAL}")
    return LimitSolution(tau, np.asarray(ws), np.asarray(phi0), noise)
