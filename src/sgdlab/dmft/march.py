"""The causal time march of the discrete-time DMFT: the exact fixed point of the sampled
equations in one pass over time (see :mod:`sgdlab.dmft.solver`, section Solving).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from sgdlab.dmft import problem as gm
from sgdlab.dmft.dynamics import Dynamics
from sgdlab.dmft.effective import _JITTER_FLOOR, Noise, _loss_derivatives
from sgdlab.dmft.weight_side import Kernels, OrderParameters, per_step_vector


def march(problem: gm.GaussianMixture, dynamics: Dynamics, noise: Noise, jitter: float = 1e-10, chunks: int = 4,
          momentum: bool = False):
    """Exact causal solve of the sampled equations (probe estimator) in one pass over time.

    At step ``k``: Cholesky row ``k`` of ``C``, fields ``h_k`` of all ``N``
    trajectories, kernel row ``k`` (``M[k, :k+1]``, ``mu_k``, ``Q[k, :k+1]``), then the
    weight-side row ``k + 1`` (``R``, ``P``, ``m`` and ``C[k+1, :k+2]``). Because the sampled map
    is causal, this is its fixed point. Cost ``O(N T^2 + T^3)``: five matrix-vector products over
    the past of the ``(T+1, N)`` histories per step (fields, memory, tangent memory, ``M`` row,
    probe correlations) and ``O(T^2)`` triangular solves (Cholesky row, probe regression) and
    weight-side updates. Time is cut into ``chunks`` scans whose histories only span the times
    reached so far, so the products read ``~ (1 + 1/chunks) N T^2 / 2`` entries in all instead of
    ``N T^2``. ``O(N T)`` memory.

    Per-step ``eta_k`` (``dynamics.per_step``) and momentum (``momentum=True``, static: the
    recursions of :func:`_weight_side_general`, the fields and the Cholesky factor those of the
    lookahead point ``y_k``, rows computed from the rows ``k`` and ``k - 1`` of ``w``'s) are
    handled in the same pass; without them the arithmetic is the plain one, unchanged.

    Returns ``(Kernels, OrderParameters, train_loss, train_error, cholesky_ok)``.
    """
    tp = dynamics.n_steps + 1
    n1 = tp + 1  # one phantom time so that step T can write its (unused) row T+1
    N = noise.c.shape[0]
    eta, lam_r, temp = dynamics.eta, problem.ridge, dynamics.temperature
    alpha, delta = problem.alpha, problem.delta
    sqd = jnp.sqrt(delta)
    decay = 1.0 - eta * lam_r
    per_step = dynamics.per_step
    general = per_step or momentum
    if general:
        eta_vec = per_step_vector(dynamics.eta, n1)  # entry k: the step k -> k + 1
        langevin_w = jnp.concatenate([2.0 * temp / eta_vec[:tp], jnp.zeros((1,))])  # R diag(2T/eta) R^T
        beta, gamma = dynamics.beta, dynamics.gamma
    sigma0_sq = problem.sigma0**2
    loss, dloss, d2loss = _loss_derivatives(problem)
    c, y = noise.c, noise.y
    idx = jnp.arange(n1)
    zeros2 = jnp.zeros((n1, n1))
    small = (
        zeros2, zeros2, zeros2, jnp.zeros((n1,)),  # L (Cholesky), M, Q, mu
        zeros2, jnp.zeros((n1,)).at[0].set(1.0), jnp.zeros((n1,)).at[0].set(problem.m0),  # R, P, m
        zeros2.at[0, 0].set(problem.m0**2 + sigma0_sq),  # C
        jnp.zeros((N,)),  # field of w_{k-1} (Nesterov: the loss is taken at w, the gradient at y)
    )

    def ahead(x_k, x_prev, coef):
        """``(1 + coef) x_k - coef x_{k-1}`` (the lookahead of a row or a scalar)."""
        return (1.0 + coef) * x_k - coef * x_prev

    def make_step(hi):
        """Step of a chunk whose times k satisfy k < hi (histories cut to their first hi rows)."""
        z_hi, eps_hi = noise.z[:hi], noise.eps[:hi]
        g_chol = jnp.pad(noise.gram_chol, ((0, 1), (0, 1))).at[tp, tp].set(1.0)

        def step(carry, k):
            (lam_h, dlam_h), (L, M, Q, mu, R, P, m, C, hw_prev) = carry
            km = jnp.maximum(k - 1, 0)  # w_{-1} = w_0
            if momentum:  # the field process is that of y_k = w_k + gamma (w_k - w_{k-1})
                u = ahead(C[k], C[km], gamma)
                cy_row = jnp.where(idx == 0, u[0], ahead(u, jnp.roll(u, 1), gamma))
                cy_row = jnp.where(idx <= k, cy_row, 0.0)
                r_k, m_k = ahead(R[k], R[km], gamma), ahead(m[k], m[km], gamma)
            else:
                cy_row, r_k, m_k = C[k], R[k], m[k]
            # Cholesky row k: L[k, :k] solves L[:k, :k] x = C[k, :k]; unit diagonal on rows >= k.
            c_past = jnp.where(idx < k, cy_row, 0.0)
            x = solve_triangular(L + jnp.diag((idx >= k).astype(L.dtype)), c_past, lower=True)
            ckk = cy_row[k]
            lkk = jnp.sqrt(ckk + jitter * jnp.maximum(ckk, _JITTER_FLOOR) - x @ x)  # NaN if not PD
            l_row = x.at[k].set(lkk)
            L = L.at[k].set(l_row)
            # Effective process at time k.
            g0 = l_row[:hi] @ z_hi
            h = c * m_k + sqd * g0 - delta * (r_k[:hi] @ lam_h)
            s_k = noise.s[k]
            lam = s_k * dloss(y, h)
            a = s_k * d2loss(y, h)
            dlam_off = -delta * a * (r_k[:hi] @ dlam_h)
            lam_h = lam_h.at[k].set(lam)
            dlam_h = dlam_h.at[k].set(dlam_off + sqd * a * noise.eps[k])
            # Kernel row k.
            m_row = jnp.zeros((n1,)).at[:hi].set((alpha * delta / N) * (lam_h @ lam))
            M = M.at[k].set(m_row).at[:, k].set(m_row)
            mu_k = (alpha / N) * (lam @ c)
            mu = mu.at[k].set(mu_k)
            b = jnp.where(idx < k, jnp.zeros((n1,)).at[:hi].set((eps_hi @ dlam_off) / N), 0.0)
            yb = jnp.where(idx < k, solve_triangular(g_chol, b, lower=True), 0.0)  # probe regression
            b = solve_triangular(g_chol.T, yb, lower=False)
            q_row = (alpha * sqd * b).at[k].set(alpha * delta * jnp.mean(a))
            Q = Q.at[k].set(q_row)
            # Weight-side row k + 1.
            if general:
                eta_k = eta_vec[k]
                # sum_l Q_kl (A X)_l = (Q_k A) X, with (Q_k A)_a = (1 + g) q_a - g q_{a+1} (a >= 1), q_0 - g q_1
                qa = ahead(q_row, jnp.roll(q_row, -1).at[-1].set(0.0), gamma) if momentum else q_row
                qa = qa.at[0].add(-gamma * q_row[0]) if momentum else qa

                def row(x_k, x_prev, memory):
                    heavy = ahead(x_k, x_prev, beta) if momentum else x_k
                    look = ahead(x_k, x_prev, gamma) if momentum else x_k
                    return heavy - eta_k * (lam_r * look + memory)

                r_new = row(R[k], R[km], qa @ R) + eta_k * (idx == k)
                p_new = row(P[k], P[km], qa @ P)
                m_new = row(m[k], m[km], qa @ m) - eta_k * mu_k
                R = R.at[k + 1].set(r_new)
                P = P.at[k + 1].set(p_new)
                m = m.at[k + 1].set(m_new)
                c_new = m_new * m + sigma0_sq * p_new * P + R @ (M @ r_new) + R @ (langevin_w * r_new)
            else:
                r_new = decay * r_k - eta * (q_row @ R) + eta * (idx == k)
                R = R.at[k + 1].set(r_new)
                p_new = decay * P[k] - eta * (q_row @ P)
                m_new = decay * m[k] - eta * (mu_k + q_row @ m)
                P = P.at[k + 1].set(p_new)
                m = m.at[k + 1].set(m_new)
                c_new = m_new * m + sigma0_sq * p_new * P + R @ (M @ r_new) + (2.0 * temp / eta) * (R @ r_new)
            C = C.at[k + 1].set(c_new).at[:, k + 1].set(c_new)
            hw = (h + gamma * jnp.where(k == 0, h, hw_prev)) / (1.0 + gamma) if momentum else h
            stats = jnp.stack([jnp.mean(loss(y, hw)), jnp.mean(gm.misclassified(problem, y, hw))])
            return ((lam_h, dlam_h), (L, M, Q, mu, R, P, m, C, hw)), stats

        return step

    n_chunks = max(1, min(int(chunks), tp))
    bounds = np.linspace(0, tp, n_chunks + 1).round().astype(int)
    hist = (jnp.zeros((0, N)), jnp.zeros((0, N)))
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        hist = tuple(jnp.pad(h_, ((0, int(hi) - h_.shape[0]), (0, 0))) for h_ in hist)
        (hist, small), stats = jax.lax.scan(make_step(int(hi)), (hist, small), jnp.arange(int(lo), int(hi)))
        out.append(stats)
    stats = jnp.concatenate(out, axis=0)
    L, M, Q, mu, R, P, m, C, _ = small
    kernels = Kernels(mu[:tp], M[:tp, :tp], Q[:tp, :tp])
    order = OrderParameters(m[:tp], P[:tp], R[:tp, :tp], C[:tp, :tp])
    return kernels, order, stats[:, 0], stats[:, 1], jnp.all(jnp.isfinite(L))
