"""The causal time march of the discrete-time DMFT: the exact fixed point of the sampled
equations in one pass over time (see :mod:`sgdlab.dmft.solver`, section Solving).

Storage (``n = T + 2`` times: one phantom time so that step ``T`` can write its unused row
``T + 1``). The time axis is cut into segments (:class:`Segments`):

- the ``(n, N)`` arrays of the ``N`` trajectories (white noise ``z``, the orthonormalised probes
  ``E = G_L^{-1} eps``, the histories ``Lam`` and its tangent ``dLam``) as arrays ``(rows, N)``;
- the lower-triangular ``n x n`` matrices (Cholesky factor ``L`` of ``C``, the inverse ``G_L^{-1}``
  of the probes' Gram factor, ``R`` and the lower triangle of ``M``) as row segments
  ``(rows, hi_s)``, segment ``s`` holding rows ``[lo_s, hi_s)`` and columns ``[0, hi_s)``: the
  lower triangle and little more.

At step ``k`` every product over the history runs over the segments ``s <= k // rows`` only (a
``lax.cond`` per segment: separate arrays, so no copies), so the march reads ``~k`` rows of each
history and ``~k^2/2`` entries of each triangular matrix instead of all ``T``: about half the
memory traffic of products over the whole (masked) history, in one compiled scan body.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from sgdlab.dmft import problem as gm
from sgdlab.dmft.dynamics import Dynamics
from sgdlab.dmft.effective import _JITTER_FLOOR, Noise, _loss_derivatives
from sgdlab.dmft.weight_side import EFFECTIVE, KERNELS, WEIGHT_SIDE, Kernels, OrderParameters, per_step_vector

#: Named scope of the march's shared pass over ``Lam`` (the ``M`` row and the next memory).
LAM_PASS = "dmft_lam_pass"

#: Fewest times per segment: below, the per-segment overhead (a conditional per product and
#: step) outweighs the reads it skips (measured, ``docs/dmft.md``, Performance).
MIN_SEGMENT_ROWS = 256
#: Fewest times per segment of the ``T x T`` matrices (their products are smaller: fewer segments).
MIN_MATRIX_ROWS = 512


class Segments:
    """The time axis ``0 .. n-1`` cut into ``count`` segments of ``rows`` times (padded to ``size
    = count * rows``; :meth:`pair` chooses them).

    Segmented arrays are tuples of ``count`` arrays. ``upto`` (traced) is the last segment a
    product runs over; the segments after it are skipped, so they must not contribute (zero rows
    of a history, rows of a matrix not reached yet, or zero coefficients)."""

    def __init__(self, n: int, count: int, rows: int | None = None):
        self.count = max(1, int(count))
        self.rows = -(-n // self.count) if rows is None else int(rows)
        self.size = self.count * self.rows
        self.bounds = [(s * self.rows, (s + 1) * self.rows) for s in range(self.count)]

    @classmethod
    def pair(cls, n: int, chunks: int) -> tuple["Segments", "Segments"]:
        """``(histories, matrices)`` covering the same ``size >= n`` times: at most ``chunks``
        history segments of at least ``MIN_SEGMENT_ROWS`` times; matrix segments of whole history
        segments, at least ``MIN_MATRIX_ROWS`` times each (their per-step products are smaller)."""
        hist = cls(n, min(int(chunks), -(-n // MIN_SEGMENT_ROWS)))
        group = -(-hist.count // max(1, min(hist.count, -(-n // MIN_MATRIX_ROWS))))
        mat = cls(n, -(-n // (group * hist.rows)), group * hist.rows)
        return cls(mat.size, mat.size // hist.rows, hist.rows), mat

    def when(self, s: int, upto, fn, operand):
        """``fn(operand)`` if segment ``s <= upto`` else ``operand``. A conditional even for segment 0
        (always reached): its operations then carry the caller's named scope in the profile."""
        return lax.cond(s <= upto, fn, lambda a: a, operand)

    def split(self, a: jax.Array) -> tuple:
        """``(m, N)`` history as segments ``(rows, N)`` (rows ``>= m`` zero)."""
        a = jnp.pad(a, ((0, self.size - a.shape[0]), (0, 0)))
        return tuple(a[lo:hi] for lo, hi in self.bounds)

    def tri(self, a: jax.Array) -> tuple:
        """Lower-triangular ``(m, m)`` matrix as row segments ``(rows, hi_s)`` (padded with the identity)."""
        m = a.shape[0]
        a = jnp.pad(a, ((0, self.size - m), (0, self.size - m))) + jnp.diag((jnp.arange(self.size) >= m).astype(a.dtype))
        return tuple(a[lo:hi, :hi] for lo, hi in self.bounds)

    def dense(self, segs: tuple) -> jax.Array:
        """Row segments back as one ``(size, size)`` (or ``(size, N)``) array."""
        width = segs[-1].shape[1]
        return jnp.concatenate([jnp.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in segs], axis=0)

    def _seg(self, i):
        return i // self.rows

    def set_row(self, segs: tuple, i, row: jax.Array) -> tuple:
        """Write ``row`` (its first ``width`` entries) as row ``i`` (traced); in place."""
        out = []
        for s, (lo, _) in enumerate(self.bounds):
            r, width = jnp.clip(i - lo, 0, self.rows - 1), segs[s].shape[1]
            old = lax.dynamic_slice(segs[s], (r, 0), (1, width))
            new = jnp.where(self._seg(i) == s, row[None, :width].astype(segs[s].dtype), old)
            out.append(lax.dynamic_update_slice(segs[s], new, (r, 0)))
        return tuple(out)

    def vecmat(self, v: jax.Array, segs: tuple, upto) -> jax.Array:
        """``v @ A`` over the rows of the segments ``<= upto`` (``v`` zero beyond)."""
        acc = jnp.zeros((self.size,), segs[0].dtype)
        for s, (lo, hi) in enumerate(self.bounds):
            acc = self.when(s, upto, lambda a, s=s, lo=lo, hi=hi: a.at[:hi].add(v[lo:hi] @ segs[s]), acc)
        return acc

    def matvec(self, segs: tuple, u: jax.Array, upto) -> jax.Array:
        """``A @ u`` for the rows of the segments ``<= upto`` (zero beyond)."""
        zero = jnp.zeros((self.rows,), segs[0].dtype)
        return jnp.concatenate([self.when(s, upto, lambda _, s=s, hi=hi: segs[s] @ u[:hi], zero)
                                for s, (_, hi) in enumerate(self.bounds)])

    def sym_matvec(self, lower: tuple, diag: jax.Array, u: jax.Array, upto) -> jax.Array:
        """``A @ u`` for the symmetric ``A`` with lower triangle ``lower`` and diagonal ``diag``."""
        acc = jnp.zeros((self.size,), diag.dtype)
        for s, (lo, hi) in enumerate(self.bounds):
            def both(a, s=s, lo=lo, hi=hi):
                return a.at[lo:hi].add(lower[s] @ u[:hi]).at[:hi].add(u[lo:hi] @ lower[s])
            acc = self.when(s, upto, both, acc)
        return acc - diag * u

    def diagonal(self, segs: tuple) -> tuple:
        """The diagonal blocks ``(rows, rows)`` of a lower-triangular segmented matrix (copies)."""
        return tuple(x[:, lo:hi] for x, (lo, hi) in zip(segs, self.bounds))

    def set_diagonal_row(self, diag: tuple, i, row: jax.Array) -> tuple:
        """Write the diagonal-block part of row ``i`` (traced) of a lower-triangular matrix."""
        blocks = [row[lo:hi] for lo, hi in self.bounds]
        out = []
        for s, d in enumerate(diag):
            r = jnp.clip(i - self.bounds[s][0], 0, self.rows - 1)
            old = lax.dynamic_slice(d, (r, 0), (1, self.rows))
            out.append(lax.dynamic_update_slice(d, jnp.where(self._seg(i) == s, blocks[s][None], old), (r, 0)))
        return tuple(out)

    def solve(self, lower: tuple, diag: tuple, c: jax.Array, upto) -> jax.Array:
        """Forward substitution ``A x = c`` over the segments ``<= upto`` (``diag``: the diagonal
        blocks of ``A``; unit rows beyond the reached times keep ``x`` zero where ``c`` is)."""
        x = jnp.zeros((self.size,), lower[0].dtype)
        for s, (lo, hi) in enumerate(self.bounds):
            def fwd(x, s=s, lo=lo, hi=hi):
                rhs = c[lo:hi] - lower[s] @ x[:hi]  # x[lo:hi] is still zero: the off-diagonal blocks only
                # (D^T)^T x = rhs with D^T upper: the row-major block is LAPACK's column-major D^T, no copy
                xs = lax.linalg.triangular_solve(diag[s].T, rhs[:, None], left_side=True, lower=False, transpose_a=True)
                return x.at[lo:hi].set(xs[:, 0])
            x = self.when(s, upto, fwd, x)
        return x


def march(problem: gm.GaussianMixture, dynamics: Dynamics, noise: Noise, jitter: float = 1e-10, chunks: int = 8,
          momentum: bool = False):
    """Exact causal solve of the sampled equations (probe estimator) in one pass over time.

    At step ``k``: Cholesky row ``k`` of ``C``, fields ``h_k`` of all ``N`` trajectories, kernel
    row ``k`` (``mu_k``, ``Q[k, :k+1]``, ``M[k, :k+1]``), then the weight-side row ``k + 1``
    (``R``, ``P``, ``m`` and ``C[k+1, :k+2]``). Because the sampled map is causal, this is its
    fixed point. One ``lax.scan`` over time (one compiled body); the products over the past run
    over the segments reached so far (:class:`Segments`, at most ``chunks`` history segments).

    Cost per step ``k``: four passes over the ``~k`` past rows of the ``(T+2, N)`` arrays: the
    fields ``L_k z``, the probe correlations ``E dLam_off_k`` (``E = G_L^{-1} eps``, computed once:
    the regression ``G_k^{-1} b`` is then one product with ``G_L^{-T}``), and one pass over ``Lam``
    and ``dLam`` for the ``M`` row ``Lam Lam_k`` together with the next step's memory ``R_{k+1}
    Lam`` and tangent ``R_{k+1} dLam`` (``R_{k+1}`` is known once ``Q_k`` is, before ``M_k`` is
    needed: the two products share the read of each segment of ``Lam``). On the ``T x T`` side
    ``~3 k^2`` entries are read (the Cholesky row by forward substitution against the stored
    factor, ``y G_L^{-1}``, ``q_k R``, ``M r_{k+1}``, ``R (M r_{k+1})``). In all ``O(N T^2 + T^3)``
    time and ``O(N T + T^2)`` memory with no ``O(T^2)`` temporary per step.
    The ``N``-sized work runs in the dtype of ``noise.z`` (float32 for the solver's ``precision
    = "mixed"``), the ``T x T`` algebra in float64.

    Per-step ``eta_k`` (``dynamics.per_step``) and momentum (``momentum=True``, static: the
    recursions of :func:`_weight_side_general`, the fields and the Cholesky factor those of the
    lookahead point ``y_k``, rows computed from the rows ``k`` and ``k - 1`` of ``w``'s) are
    handled in the same pass; without them the arithmetic is the plain one.

    Returns ``(Kernels, OrderParameters, train_loss, train_error, cholesky_ok, innovation)`` with
    ``innovation = min_k L_kk^2 / C_kk`` (``C_kk`` floored at 1e-6), the smallest variance of a field
    given its past relative to its own: how close ``C`` comes to singular (converging GD reaches
    the jitter, ~1e-10), which bounds the error that the float32 rounding of ``C`` makes in the fields.
    """
    tp = dynamics.n_steps + 1
    hseg, tseg = Segments.pair(tp + 1, chunks)  # histories (N-sized), T x T matrices
    n1 = tseg.size  # >= T + 2: one phantom time so that step T can write its (unused) row T + 1
    N = noise.c.shape[0]
    nd, f64 = noise.z.dtype, jnp.float64  # the N-sized work, the T x T algebra
    eta, lam_r, temp = dynamics.eta, problem.ridge, dynamics.temperature
    alpha, delta = problem.alpha, problem.delta
    sqd = jnp.sqrt(delta)
    delta_n, sqd_n = jnp.asarray(delta, nd), jnp.asarray(sqd, nd)
    decay = 1.0 - eta * lam_r
    general = dynamics.per_step or momentum
    gamma = dynamics.gamma if momentum else 0.0
    if general:
        eta_vec = per_step_vector(dynamics.eta, tp)  # entry k: the step k -> k + 1
        langevin_w = jnp.pad(2.0 * temp / eta_vec, (0, n1 - tp))  # R diag(2T/eta) R^T
        beta = dynamics.beta
    else:
        langevin_w = 2.0 * temp / eta
    sigma0_sq = problem.sigma0**2
    loss, dloss, d2loss = _loss_derivatives(problem)
    c, y = noise.c.astype(nd), noise.y.astype(nd)
    idx = jnp.arange(n1)
    z_seg = hseg.split(noise.z)
    # Probe regression G_k^{-1} b with G = G_L G_L^T: y = G_L^{-1} b are the correlations with the
    # orthonormalised probes E = G_L^{-1} eps (leading blocks of a triangular inverse are the
    # inverses of the leading blocks), then G_k^{-1} b = (G_L^{-T})_k y: one product per step.
    g_inv = tseg.tri(solve_triangular(noise.gram_chol.astype(f64), jnp.eye(tp), lower=True))
    eps = jnp.pad(noise.eps, ((0, n1 - tp), (0, 0)))
    e_seg = hseg.split(jnp.concatenate([g.astype(nd) @ eps[:hi] for g, (_, hi) in zip(g_inv, tseg.bounds)]))
    eye = tseg.tri(jnp.zeros((0, 0), f64))  # unit rows: the unreached rows of L solve to zero
    zero_tri = tuple(jnp.zeros_like(x) for x in eye)
    zero_hist = tuple(jnp.zeros((hseg.rows, N), nd) for _ in range(hseg.count))
    vec0, zero_n = jnp.zeros((n1,), f64), jnp.zeros((N,), nd)
    c0 = vec0.at[0].set(problem.m0**2 + sigma0_sq)
    state = (
        (zero_hist, zero_hist),  # Lam, dLam
        (eye, tseg.diagonal(eye), zero_tri, zero_tri, vec0),  # L (Cholesky factor of C) and its diagonal blocks, R,
        # the lower triangle of M and its diagonal
        (jnp.zeros((n1, n1), f64), jnp.zeros((n1, n1), f64)),  # lower triangles of C and Q (outputs)
        (vec0, vec0.at[0].set(1.0), vec0.at[0].set(problem.m0)),  # mu, P, m
        (vec0, vec0, c0, c0),  # rows k and k - 1 of R and of C (w_{-1} = w_0)
        (zero_n, zero_n, zero_n),  # memory R_k Lam and tangent R_k dLam (lookahead rows), field of w_{k-1}
        jnp.asarray(jnp.inf, f64),  # smallest relative innovation variance L_kk^2 / C_kk so far
    )

    def ahead(x_k, x_prev, coef):
        """``(1 + coef) x_k - coef x_{k-1}`` (the lookahead of a row or a scalar)."""
        return (1.0 + coef) * x_k - coef * x_prev

    def fields(l_row, upto):
        """``L_k z`` over the past segments."""
        l_n = l_row.astype(nd)
        acc = zero_n
        for s, (lo, hi) in enumerate(hseg.bounds):
            acc = hseg.when(s, upto, lambda a, s=s, lo=lo, hi=hi: a + l_n[lo:hi] @ z_seg[s], acc)
        return acc

    def probe_dots(dlam_off, upto):
        """``E_j . dLam_off_k`` (orthonormalised probes) for the ``j`` of the past segments (float64)."""
        zero = jnp.zeros((hseg.rows,), nd)
        out = [hseg.when(s, upto, lambda _, s=s: e_seg[s] @ dlam_off, zero) for s in range(hseg.count)]
        return jnp.concatenate(out).astype(f64)

    def history_pass(lam_h, dlam_h, lam, r_next, upto):
        """One read of each past segment of ``Lam`` and ``dLam``: ``(Lam_j . Lam_k)_j`` (float64),
        ``R_{k+1} Lam`` and ``R_{k+1} dLam``."""
        r_n = r_next.astype(nd)
        acc, zero = (zero_n, zero_n), jnp.zeros((hseg.rows,), nd)
        dots = []
        for s, (lo, hi) in enumerate(hseg.bounds):
            def body(a, s=s, lo=lo, hi=hi):
                return lam_h[s] @ lam, a[1] + r_n[lo:hi] @ lam_h[s], a[2] + r_n[lo:hi] @ dlam_h[s]
            d, *acc = hseg.when(s, upto, body, (zero, *acc))
            dots.append(d)
        return jnp.concatenate(dots).astype(f64), *acc

    def step(carry, k):
        (lam_h, dlam_h), (L, L_diag, R, M_low, m_diag), (C_low, Q), (mu, P, m), (r_k, r_km, c_k, c_km), (mem, dmem, hw_prev), innov = carry
        km = jnp.maximum(k - 1, 0)
        up, hup = k // tseg.rows, k // hseg.rows  # the last matrix / history segment reached
        if momentum:  # the field process is that of y_k = w_k + gamma (w_k - w_{k-1})
            c_km = jnp.where((idx == k) & (k > 0), c_k[km], c_km)  # C[k-1, k] = C[k, k-1] (rows are kept up to the diagonal)
            u = ahead(c_k, c_km, gamma)
            cy_row = jnp.where(idx == 0, u[0], ahead(u, jnp.roll(u, 1), gamma))
            cy_row = jnp.where(idx <= k, cy_row, 0.0)
            m_k = ahead(m[k], m[km], gamma)
        else:
            cy_row, m_k = c_k, m[k]
        with jax.named_scope(EFFECTIVE):
            # Cholesky row k: L[k, :k] solves L[:k, :k] x = C[k, :k] (rows >= k of L are still unit rows).
            x = tseg.solve(L, L_diag, jnp.where(idx < k, cy_row, 0.0), up)
            ckk = cy_row[k]
            lkk = jnp.sqrt(ckk + jitter * jnp.maximum(ckk, _JITTER_FLOOR) - x @ x)  # NaN if not PD
            l_row = x.at[k].set(lkk)
            innov = jnp.minimum(innov, lkk**2 / jnp.maximum(ckk, _JITTER_FLOOR))  # NaN propagates
            L, L_diag = tseg.set_row(L, k, l_row), tseg.set_diagonal_row(L_diag, k, l_row)
            # Effective process at time k (dtype nd): h = c m_k + sqrt(D) L_k z - D R_k Lam.
            h = c * m_k.astype(nd) + sqd_n * fields(l_row, hup) - delta_n * mem
            s_k = noise.s[k].astype(nd)
            lam = (s_k * dloss(y, h)).astype(nd)
            a = (s_k * d2loss(y, h)).astype(nd)
            dlam_off = -delta_n * a * dmem
            lam_h = hseg.set_row(lam_h, k, lam)
            dlam_h = hseg.set_row(dlam_h, k, dlam_off + sqd_n * a * noise.eps[k].astype(nd))
        with jax.named_scope(KERNELS):  # rows k of mu and Q (probe regression)
            mu_k = (alpha / N) * (lam @ c).astype(f64)
            mu = mu.at[k].set(mu_k)
            yb = jnp.where(idx < k, probe_dots(dlam_off, hup) / N, 0.0)  # G_L^{-1} E_N[eps_{<k} dLam_off_k]
            q_row = (alpha * sqd * tseg.vecmat(yb, g_inv, up)).at[k].set(alpha * delta * jnp.mean(a, dtype=f64))
            Q = Q.at[k].set(q_row)
        with jax.named_scope(WEIGHT_SIDE):  # rows k + 1 of R, P, m
            if general:
                eta_k = eta_vec[k]
                # sum_l Q_kl (A X)_l = (Q_k A) X, with (Q_k A)_a = (1 + g) q_a - g q_{a+1} (a >= 1), q_0 - g q_1
                qa = ahead(q_row, jnp.roll(q_row, -1).at[-1].set(0.0), gamma) if momentum else q_row
                qa = qa.at[0].add(-gamma * q_row[0]) if momentum else qa

                def row(x_k, x_prev, memory):
                    heavy = ahead(x_k, x_prev, beta) if momentum else x_k
                    look = ahead(x_k, x_prev, gamma) if momentum else x_k
                    return heavy - eta_k * (lam_r * look + memory)

                r_new = row(r_k, r_km, tseg.vecmat(qa, R, up)) + eta_k * (idx == k)
                p_new = row(P[k], P[km], qa @ P)
                m_new = row(m[k], m[km], qa @ m) - eta_k * mu_k
            else:
                r_new = decay * r_k - eta * tseg.vecmat(q_row, R, up) + eta * (idx == k)
                p_new = decay * P[k] - eta * (q_row @ P)
                m_new = decay * m[k] - eta * (mu_k + q_row @ m)
            R = tseg.set_row(R, k + 1, r_new)
            P = P.at[k + 1].set(p_new)
            m = m.at[k + 1].set(m_new)
        with jax.named_scope(LAM_PASS):  # kernel row k of M and the memory of step k + 1, in one pass
            lam_dots, mem, dmem = history_pass(lam_h, dlam_h, lam, ahead(r_new, r_k, gamma) if momentum else r_new, hup)
        with jax.named_scope(KERNELS):
            m_row = (alpha * delta / N) * lam_dots  # zero beyond k (rows not written yet)
            M_low = tseg.set_row(M_low, k, m_row)
            m_diag = m_diag.at[k].set(m_row[k])
        with jax.named_scope(WEIGHT_SIDE):  # C[k+1, :] = m_{k+1} m + sigma0^2 P_{k+1} P + R (M + diag(2T/eta)) r_{k+1}
            u = tseg.sym_matvec(M_low, m_diag, r_new, up) + langevin_w * r_new
            c_new = m_new * m + sigma0_sq * p_new * P + tseg.matvec(R, u, (k + 1) // tseg.rows)
            C_low = C_low.at[k + 1].set(c_new)
        with jax.named_scope(EFFECTIVE):
            hw = ((h + gamma * jnp.where(k == 0, h, hw_prev)) / (1.0 + gamma)).astype(nd) if momentum else h
            stats = jnp.stack([jnp.mean(loss(y, hw), dtype=f64), jnp.mean(gm.misclassified(problem, y, hw), dtype=f64)])
        return ((lam_h, dlam_h), (L, L_diag, R, M_low, m_diag), (C_low, Q), (mu, P, m), (r_new, r_k, c_new, c_k),
                (mem, dmem, hw), innov), stats

    state, stats = lax.scan(step, state, jnp.arange(tp))
    _, (L, _, R, M_low, m_diag), (C_low, Q), (mu, P, m), _, _, innov = state
    M_low = tseg.dense(M_low)
    M = M_low + M_low.T - jnp.diag(m_diag)
    C_low = C_low.at[0, 0].set(c0[0])
    C = C_low + C_low.T - jnp.diag(jnp.diag(C_low))
    kernels = Kernels(mu[:tp], M[:tp, :tp], Q[:tp, :tp])
    order = OrderParameters(m[:tp], P[:tp], tseg.dense(R)[:tp, :tp], C[:tp, :tp])
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in L]))
    return kernels, order, stats[:, 0], stats[:, 1], ok, innov
