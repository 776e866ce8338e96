"""Exact first and second moments for linear-gradient problems: no Monte Carlo.

Small dense float64 linear algebra (NumPy matrix powers, SciPy's Pade ``expm``): ``D^2 x D^2``
matrices with ``D = 1 + K d``, i.e. a few hundred rows for the problems this route is for.

Problem: ``grad f_i(x) = A_i x - b_i`` (:class:`~sgdlab.sde.problems.LinearGradient`).
State of ``K`` copies, augmented by a constant: ``z = (1, x^1, ..., x^K)``, ``D = 1 + K d``;
everything is read off ``P = E[z z^T] (D, D)``: ``P[0, block k]`` is ``E x^k`` and
``P[block k, block l]`` is ``E x^k (x^l)^T``. Vectorisation is row-major, so
``vec(M P M^T) = (M kron M) vec(P)``.

- **SGD** (``docs/sde.md``, "Problems"): one step is ``z <- M_theta z`` with
  ``M_theta = [[1, 0], [eta b_theta, I - eta A_theta]]`` on every copy (the same sample for all
  copies); with a batch of ``B`` drawn with replacement ``M`` is the mean of ``B`` i.i.d. ``M_theta``,
  so ``E[M kron M] = E[M_th kron M_th]/B + (1 - 1/B) Mbar kron Mbar`` and after ``N = T/eta`` steps
  ``vec P_N = E[M kron M]^N vec P_0`` (a matrix power: an exact finite recursion).
- **SVAG**: step ``eta/l``, ``M = r1 M_th + r2 M_th'`` (two independent batches),
  ``E[M kron M] = (r1^2 + r2^2) E_B[M kron M] + 2 r1 r2 Mbar kron Mbar``, ``l N`` steps.
- **SDEs** with affine drift and diffusion, ``dz = G z dt + sum_j H_j z dbeta_j`` (Ito):
  ``dP/dt = G P + P G^T + sum_j H_j P H_j^T``, so
  ``vec P(T) = expm(T (G kron I + I kron G + sum_j H_j kron H_j)) vec P(0)`` (one matrix exponential).
  GF, SME/SMF drifts are affine for linear gradients: ``-(I + eta/2 Abar)(Abar x - bbar)`` for the
  modified drift, ``-(Abar x - bbar) - eta/2 ((1 - 1/B) Abar (Abar x - bbar) + (1/B) mean_i A_i (A_i x - b_i))``
  for the ``E|g_B|^2`` drift. The SMF diffusion columns ``c ((Abar - A_i) x - (bbar - b_i))``,
  ``c = sqrt(eta/(nB))``, are affine. SME's ``Sigma^{1/2}`` is not, but its *one-point* law (and
  that of independent copies) only depends on ``sigma sigma^T = eta Sigma / B``, which the SMF
  columns reproduce, so those moments are exact too. SME with *shared* noise on several copies
  closes only for ``d = 1`` with purely multiplicative noise (``b_i = 0``): then
  ``Sigma^{1/2}(x) = std(a) |x| = std(a) sign(x_0) x`` (a solution never changes sign); other
  cases raise :class:`NoClosedMomentsError` (use Monte Carlo).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from sgdlab.sde.problems import LinearGradient, n_steps_of  # noqa: F401  (re-exported)
from sgdlab.sde.models import SDEModel, SVAG


class NoClosedMomentsError(ValueError):
    """The model has no closed (finite) moment equations on this problem; use Monte Carlo."""


def augmented_initial_moment(x0s: np.ndarray) -> np.ndarray:
    """``P_0 = z0 z0^T`` for deterministic starts ``x0s (K, d)``, ``z0 = (1, x0s.ravel())``."""
    z0 = np.concatenate([[1.0], np.asarray(x0s, dtype=np.float64).ravel()])
    return np.outer(z0, z0)


def _blocks(K: int, d: int):
    return [slice(1 + k * d, 1 + (k + 1) * d) for k in range(K)]


def sgd_step_matrices(lin: LinearGradient, step: float, K: int) -> np.ndarray:
    """``M_i (n, D, D)``: ``z <- M_i z`` is one SGD step of size ``step`` on sample ``i``, all copies."""
    n, d = lin.b.shape
    D = 1 + K * d
    M = np.zeros((n, D, D))
    M[:, 0, 0] = 1.0
    eye = np.eye(d)
    for blk in _blocks(K, d):
        M[:, blk, blk] = eye - step * lin.A
        M[:, blk, 0] = step * lin.b
    return M


def _batch_transfer(M: np.ndarray, batch_size: int) -> np.ndarray:
    """``E[M kron M]`` for ``M`` the mean of ``B`` i.i.d. uniform draws of ``M_i``."""
    second = np.mean(np.einsum("nij,nkl->nikjl", M, M), axis=0)
    D = M.shape[1]
    second = second.reshape(D * D, D * D)
    Mbar = M.mean(axis=0)
    return second / batch_size + (1 - 1 / batch_size) * np.kron(Mbar, Mbar)


def _power_apply(T: np.ndarray, steps: int, vec: np.ndarray) -> np.ndarray:
    """``T^steps vec`` by repeated squaring (``log2(steps)`` products), float64."""
    return np.linalg.matrix_power(np.asarray(T, dtype=np.float64), int(steps)) @ np.asarray(vec, dtype=np.float64)


def sgd_moments(lin: LinearGradient, eta: float, horizon: float, x0s, batch_size: int = 1) -> np.ndarray:
    """``P = E[z z^T]`` of SGD after ``T/eta`` steps (exact recursion), ``(D, D)``."""
    x0s = np.atleast_2d(np.asarray(x0s, dtype=np.float64))
    K = x0s.shape[0]
    Tm = _batch_transfer(sgd_step_matrices(lin, eta, K), batch_size)
    P0 = augmented_initial_moment(x0s)
    D = P0.shape[0]
    return _power_apply(Tm, n_steps_of(horizon, eta), P0.ravel()).reshape(D, D)


def svag_moments(lin: LinearGradient, svag: SVAG, eta: float, horizon: float, x0s, batch_size: int = 1) -> np.ndarray:
    """``P = E[z z^T]`` of SVAG (``l T/eta`` steps of ``eta/l``), exact, ``(D, D)``."""
    x0s = np.atleast_2d(np.asarray(x0s, dtype=np.float64))
    K = x0s.shape[0]
    r1, r2 = svag.weights
    M = sgd_step_matrices(lin, eta / svag.l, K)
    Mbar = M.mean(axis=0)
    Tm = (r1**2 + r2**2) * _batch_transfer(M, batch_size) + 2 * r1 * r2 * np.kron(Mbar, Mbar)
    P0 = augmented_initial_moment(x0s)
    D = P0.shape[0]
    return _power_apply(Tm, svag.l * n_steps_of(horizon, eta), P0.ravel()).reshape(D, D)


def sde_generator_matrices(lin: LinearGradient, model: SDEModel, eta: float, x0s, batch_size: int = 1):
    """``(G (D, D), H (J, D, D))`` with ``dz = G z dt + sum_j H_j z dbeta_j`` for ``K`` copies.

    Raises :class:`NoClosedMomentsError` for SME with shared noise on several copies, except
    ``d = 1`` with ``b_i = 0`` and nonzero starts.
    """
    x0s = np.atleast_2d(np.asarray(x0s, dtype=np.float64))
    K, d = x0s.shape
    n = lin.b.shape[0]
    B = batch_size
    D = 1 + K * d
    blocks = _blocks(K, d)
    Abar, bbar = lin.A.mean(axis=0), lin.b.mean(axis=0)
    eye = np.eye(d)
    # drift x' = -(Lin x - off)
    if model.drift == "gradient":
        lin_part, off = Abar, bbar
    elif model.drift == "modified":
        lin_part, off = (eye + eta / 2 * Abar) @ Abar, (eye + eta / 2 * Abar) @ bbar
    elif model.drift == "modified_expected":
        A2 = np.einsum("nij,njk->ik", lin.A, lin.A) / n
        Ab = np.einsum("nij,nj->i", lin.A, lin.b) / n
        lin_part = Abar + eta / 2 * ((1 - 1 / B) * Abar @ Abar + A2 / B)
        off = bbar + eta / 2 * ((1 - 1 / B) * Abar @ bbar + Ab / B)
    else:  # pragma: no cover - validated by SDEModel
        raise ValueError(model.drift)
    G = np.zeros((D, D))
    for blk in blocks:
        G[blk, blk] = -lin_part
        G[blk, 0] = off
    if model.noise == "none":
        return G, np.zeros((0, D, D))

    c = math.sqrt(eta / (n * B))
    colA = c * (Abar[None] - lin.A)  # (n, d, d)
    colb = -c * (bbar[None] - lin.b)  # (n, d): column j is colA_j x + colb_j
    shared_sme = model.noise == "sqrt_covariance" and model.coupling == "shared" and K > 1
    if shared_sme:
        if d != 1 or np.any(lin.b != 0) or np.any(x0s == 0):
            raise NoClosedMomentsError(
                f"{model.name} with shared noise on {K} copies: Sigma^(1/2) is not affine, the moment "
                "equations do not close (exact only for d = 1, b_i = 0, nonzero starts); use Monte Carlo"
            )
        std_a = math.sqrt(np.mean((lin.A[:, 0, 0] - Abar[0, 0]) ** 2))
        H = np.zeros((1, D, D))
        for k, blk in enumerate(blocks):
            H[0, blk, blk] = math.sqrt(eta / B) * std_a * np.sign(x0s[k, 0])
        return G, H
    if model.coupling == "shared":
        H = np.zeros((n, D, D))
        for blk in blocks:
            H[:, blk, blk] = colA
            H[:, blk, 0] = colb
        return G, H
    H = np.zeros((K * n, D, D))
    for k, blk in enumerate(blocks):
        H[k * n : (k + 1) * n, blk, blk] = colA
        H[k * n : (k + 1) * n, blk, 0] = colb
    return G, H


def sde_moments(lin: LinearGradient, model: SDEModel, eta: float, horizon: float, x0s, batch_size: int = 1) -> np.ndarray:
    """``P(T) = E[z z^T]`` of ``model`` (one matrix exponential), ``(D, D)``."""
    G, H = sde_generator_matrices(lin, model, eta, x0s, batch_size)
    D = G.shape[0]
    eye = np.eye(D)
    L = np.kron(G, eye) + np.kron(eye, G) + np.einsum("jab,jcd->acbd", H, H).reshape(D * D, D * D)
    P0 = augmented_initial_moment(np.atleast_2d(x0s))
    out = scipy.linalg.expm(horizon * L) @ P0.ravel()
    return np.asarray(out, dtype=np.float64).reshape(D, D)


def moments_of(process, lin: LinearGradient, eta: float, horizon: float, x0s, batch_size: int = 1) -> np.ndarray:
    """``P`` for ``process``: ``"sgd"``, an :class:`SDEModel` or an :class:`SVAG`."""
    if isinstance(process, str) and process == "sgd":
        return sgd_moments(lin, eta, horizon, x0s, batch_size)
    if isinstance(process, SVAG):
        return svag_moments(lin, process, eta, horizon, x0s, batch_size)
    if isinstance(process, SDEModel):
        return sde_moments(lin, process, eta, horizon, x0s, batch_size)
    raise ValueError(f"unknown process {process!r}")


def expectation_from_moments(W: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``E[z.W_k z] = sum(W_k * P)`` for ``W (k, D, D)``: the exact feature means, ``(k,)``."""
    return np.einsum("kij,ij->k", W, P)
