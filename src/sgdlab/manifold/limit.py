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

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import device_input, host_input
from sgdlab.manifold.geometry import (  # noqa: F401  (re-exported: the geometry of the limit)
    PHI_TOL,
    RANK_RTOL,
    RETRACTION_MAXITER,
    RETRACTION_TOL,
    TangentSpace,
    _jitted_hessian,
    _jitted_phi,
    gradient_flow_limit,
    hessian,
    hessian_rank,
    jitted_gradient_flow_limit,
    project_to_manifold,
    tangent_space,
)
from sgdlab.manifold.integrators import (  # noqa: F401  (re-exported: the integrators of the limit)
    _flow_integrator,
    _sde_integrator,
    integrate_flow,
    integrate_sde,
    rk4_step_on_manifold,
)

Array = jax.Array
LossFn = Callable[[Array], Array]
LossHatFn = Callable[[Array, Array], Array]

#: Classification: a norm below ``CLASSIFY_ATOL`` counts as zero.
CLASSIFY_ATOL = 1e-8

NON_DEGENERATE, DEGENERATE, TRIVIAL = "non_degenerate", "degenerate", "trivial"
TIME_SCALES = {
    NON_DEGENERATE: "tau = eta sigma^2 k",
    DEGENERATE: "tau = eta^2 sigma^2 k",
    TRIVIAL: "none: no motion on tau = eta sigma^2 k nor on tau = eta^2 sigma^2 k",
}


# ---------------------------------------------------------------------------------------------
# noise coefficients
# ---------------------------------------------------------------------------------------------


def _corr(correlation, m):
    return device_input(np.eye(m)) if correlation is None else jnp.asarray(correlation, jnp.float64)


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


_jitted_sqrt_psd = jax.jit(_sqrt_psd)


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
    """The correlation matrix of :func:`_corr_key` on the device (no eager program)."""
    return device_input(np.eye(m) if key is None else np.frombuffer(key[1], dtype=np.float64).reshape(key[0]))


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
    r_half = r if corr_key is None else _jitted_sqrt_psd(r)  # sqrt(I) = I exactly (eigh of I is exact)

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
    w = host_input(w, np.float64)
    rank = hessian_rank(loss, w, rank_rtol) if rank is None else rank
    g, noise, ito = (float(x) for x in np.asarray(_classification_norms(loss, loss_hat, zeta_dim, rank, _corr_key(correlation))(w)))
    if g > atol:
        kind = NON_DEGENERATE
    elif noise > atol or ito > atol:
        kind = DEGENERATE
    else:
        kind = TRIVIAL
    return NoiseClass(kind, TIME_SCALES[kind], bool(noise > atol), g, noise, ito, rank)



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
    phi0 = jitted_gradient_flow_limit(loss, phi_tol)(host_input(w0, np.float64))
    rank = hessian_rank(loss, phi0, rank_rtol)
    noise = classify_noise(loss, loss_hat, zeta_dim, phi0, correlation, rank, classify_atol)
    kind = noise.kind if kind is None else kind
    if kind != noise.kind:
        noise = noise._replace(kind=kind, time_scale=TIME_SCALES[kind])
    tau = np.arange(n_saves + 1) * tau_save
    if kind == NON_DEGENERATE:
        drift = non_degenerate_drift(loss, loss_hat, zeta_dim, rank, correlation)
        ws = np.asarray(integrate_flow(loss, drift, phi0, rank, tau_save, n_saves, substeps))[None]
    elif kind == DEGENERATE:
        drift, diffusion = degenerate_coefficients(loss, loss_hat, zeta_dim, rank, correlation)
        if noise.stochastic:
            if keys is None:
                raise ValueError("the degenerate limit is an SDE here: pass keys (one per path)")
            ws = integrate_sde(loss, drift, diffusion, phi0, rank, tau_save, n_saves, substeps, keys)
        else:
            ws = np.asarray(integrate_flow(loss, drift, phi0, rank, tau_save, n_saves, substeps))[None]
    elif kind == TRIVIAL:
        ws = np.array(np.broadcast_to(np.asarray(phi0), (1, n_saves + 1, phi0.shape[0])))
    else:
        raise ValueError(f"kind={kind!r}; allowed: {NON_DEGENERATE}, {DEGENERATE}, {TRIVIAL}")
    return LimitSolution(tau, np.asarray(ws), np.asarray(phi0), noise)
