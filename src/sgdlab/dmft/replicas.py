"""Two-replica DMFT: the distance between two SGD replicas with the same data and start.

Sources
-------
- F. Mignacco, P. Urbani, "The effective noise of stochastic gradient descent", J. Stat. Mech.
  (2022) 083405, arXiv:2112.10852 (two replicas with the same data and initial condition and
  independent batch noise; their distance as a measure of the effective noise);
- E. Agoritsas, G. Biroli, P. Urbani, F. Zamponi, "Out-of-equilibrium dynamical mean-field
  equations for the perceptron model", J. Phys. A 51 (2018) 085002 (DMFT for several coupled
  replicas: the replica-off-diagonal correlation and the replica-diagonal response);
- :mod:`sgdlab.dmft.solver` (the replica-symmetric solution and its conventions, reused here);
- the documentation page ``docs/effective_noise.md``.

Setting
-------
Two replicas ``a = 1, 2`` run the same (unnormalised) update of :mod:`sgdlab.dmft.solver` on the
same data ``(x_mu, y_mu)`` from the same ``w(0)``, with *independent* mask chains ``s^a_mu(k)``
(independent ``s^a(0)`` too) and independent Langevin noises. The replica distance is::

    D_k = |w^1_k - w^2_k|^2 / (2 d) = C_kk - C12_kk,      C12_kj = w^1_k . w^2_j / d  (d -> infinity).

Equations (grid ``k = 0..T``, shapes as in :mod:`sgdlab.dmft.solver`)
-------------------------------------------------------------------
Each replica alone obeys the replica-symmetric (RS) DMFT, so ``m, P, R, C, Q, mu`` are those of
``solve_dmft``. Couplings between the replicas run only through the shared data: the response is
replica-diagonal (``R^{12} = 0``: replica 2 does not feel a field on replica 1, so the memory
kernel is replica-diagonal too) and the weight-side noises ``xi^a`` (whose covariance is the noise
kernel) are correlated, ``<xi^a_k xi^b_j> = M^{ab}_{kj}`` with ``M^{aa} = M``,
``M^{12} = alpha Delta E[Lam^1_k Lam^2_j]`` (symmetrised). Hence, with the Langevin noises
independent and the shared start::

    C12 = m m^T + sigma0^2 P P^T + R M12 R^T,
    V  := C - C12 = R Mdiff R^T + (2 T / eta) R R^T,       Mdiff := M - M12,
    D_k = V_kk.

Joint effective sample (the two replicas share ``c, y`` and are driven by correlated fields)::

    g^a  ~ N(0, C) each, <g^1 g^2^T> = C12,
    h^a_k = c m_k + sqrt(Delta) g^a_k - Delta sum_{j<k} R_kj Lam^a_j,
    Lam^a_k = s^a_k loss'(y, h^a_k),    s^1, s^2 independent mask chains.

The fields are built from the independent sum and difference (both covariances are PSD, which
``C12`` alone need not be)::

    g^{1,2} = (A z  +/-  B)/sqrt(2),    A A^T = C + C12 = 2 C - V,
    B = R (F zeta + sqrt(2 T / eta) zeta'),   F F^T = Mdiff,   z, zeta, zeta' ~ N(0, I),

so that ``Var(B) = V``, ``Var(g^a) = C`` and ``Cov(g^1, g^2) = C - V = C12``. The noise-kernel
difference is estimated directly from the joint sample as a PSD matrix::

    Mdiff_hat = (alpha Delta / 2) E_N[(Lam^1 - Lam^2)(Lam^1 - Lam^2)^T]

(``= M - M12`` with ``M`` the average of the two replicas' ``alpha Delta E[Lam^a Lam^a^T]``); it
is far less noisy than the difference of the separately estimated ``M`` and ``M12`` when the
replicas are close, and it is exactly zero for GD (identical masks, no Langevin noise: the two
effective processes coincide bitwise), hence ``D = 0`` exactly there.

Solving: the map ``Mdiff -> Mdiff_hat`` with common random numbers (clusters, both mask chains,
``z, zeta, zeta'`` drawn once) is causal: ``V`` rows ``<= k`` need ``Mdiff`` rows ``< k`` (``R``
strictly lower triangular, ``F`` a Cholesky factor), the fields at ``k`` need ``V`` rows ``<= k``
(``A`` a Cholesky factor; if that fails on a rank-deficient ``2C - V``, e.g. ``C_00 = 0`` with
rounding, an eigenvalue-clipped square root is used instead, which is not causal but keeps the
covariances). The iteration ``Mdiff <- damping Mdiff + (1 - damping) Mdiff_hat`` from
``Mdiff = 0`` therefore reaches the sampled fixed point exactly after at most ``T + 1`` undamped
iterations, in practice geometrically much sooner. The RS solution is an input (not re-solved), so
the Monte-Carlo errors of ``C, R`` and of the replica sample add; independent seeds of both give
the error bar (:func:`replica_distance_seeds`).

Units: ``D`` is in weight units (``w.w / d``), identical in the normalised and unnormalised
conventions; the time grid is the solve's ``t = k eta`` (pass the config's ``eta`` as
``time_step`` for a normalised config, as :func:`sgdlab.dmft.solver.dmft_dataset`).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.keys import fold_in, root_key
from sgdlab.dmft import problem as gm
from sgdlab.dmft import solver as _dmft
from sgdlab.dmft.solver import DMFTConvergenceWarning, DMFTError, DMFTResult, Noise

__all__ = ["ReplicaNoise", "ReplicaResult", "draw_replica_noise", "replica_distance", "replica_distance_seeds", "replica_sample"]

# Random streams of a replica solve: fold_in(fold_in(key(seed), _STREAM_BASE), STREAM).
_STREAM_BASE = 1000
_ST_CLUSTERS, _ST_MASK1, _ST_MASK2, _ST_Z, _ST_ZETA, _ST_LANGEVIN = range(6)


class ReplicaNoise(NamedTuple):
    """Common random numbers of a replica solve (``N`` pairs, ``T+1`` times): clusters ``c (N,)``,
    labels ``y (N,)``, masks ``s1, s2 (T+1, N)``, white noises ``z, zeta, zeta_l (T+1, N)``."""

    c: jax.Array
    y: jax.Array
    s1: jax.Array
    s2: jax.Array
    z: jax.Array
    zeta: jax.Array
    zeta_l: jax.Array


class ReplicaResult(NamedTuple):
    """Two-replica solution (float64 numpy): ``t (T+1,)``, ``D (T+1,)`` replica distance,
    ``C12 (T+1, T+1)`` inter-replica correlation, ``Mdiff (T+1, T+1)`` (``M - M12``),
    ``train_error (2, T+1)`` per replica (sample averages), ``residuals``, ``converged``,
    ``iterations``."""

    t: np.ndarray
    D: np.ndarray
    C12: np.ndarray
    Mdiff: np.ndarray
    train_error: np.ndarray
    residuals: np.ndarray
    converged: bool
    iterations: int


def draw_replica_noise(problem: gm.GaussianMixture, dynamics: _dmft.Dynamics, key: jax.Array, samples: int) -> ReplicaNoise:
    """The common random numbers of a replica solve (see :class:`ReplicaNoise`)."""
    tp = dynamics.n_steps + 1
    k = lambda s: jax.random.fold_in(key, s)  # noqa: E731
    c = gm.sample_clusters(k(_ST_CLUSTERS), problem, (samples,), jnp.float64)
    s1 = _dmft._mask_chain_path(k(_ST_MASK1), dynamics, tp, samples)
    s2 = _dmft._mask_chain_path(k(_ST_MASK2), dynamics, tp, samples)
    z, zeta, zl = (jax.random.normal(k(s), (tp, samples), jnp.float64) for s in (_ST_Z, _ST_ZETA, _ST_LANGEVIN))
    return ReplicaNoise(c, gm.labels(problem, c), s1, s2, z, zeta, zl)


def _psd_factor(X: jax.Array, jitter: float) -> jax.Array:
    """A lower factor ``F`` with ``F F^T ~ X`` for a PSD ``X``: Cholesky with relative jitter
    ``jitter * max diag`` (causal); exactly zero for ``X = 0``; eigenvalue-clipped square root if
    the Cholesky factorisation fails."""
    scale = jnp.max(jnp.diag(X))
    n = X.shape[0]
    chol = jnp.linalg.cholesky(X + jnp.eye(n) * jitter * jnp.maximum(scale, 1e-300))
    lam, U = jnp.linalg.eigh(0.5 * (X + X.T))
    eig = U * jnp.sqrt(jnp.clip(lam, 0.0))[None, :]
    F = jnp.where(jnp.all(jnp.isfinite(chol)), chol, eig)
    return jnp.where(scale > 0, F, 0.0)


def replica_sample(problem, dynamics, m, C, R, Mdiff, noise: ReplicaNoise, jitter: float = 1e-10, block: int = 16):
    """One pass of the joint two-replica effective process for a given ``Mdiff``.

    Returns ``(Mdiff_hat (T+1, T+1), V (T+1, T+1), train_error (2, T+1), ok)``; ``O(N T^2)``.
    """
    n = noise.c.shape[0]
    tp = C.shape[0]
    Vm = R @ Mdiff @ R.T + (2.0 * dynamics.temperature / dynamics.eta) * (R @ R.T)
    Vm = 0.5 * (Vm + Vm.T)
    S = 2.0 * C - Vm
    A = _dmft.regularised_cholesky(S, jitter)
    lam_s, U_s = jnp.linalg.eigh(0.5 * (S + S.T))  # fallback (e.g. C_00 = 0 with rounding): clipped square root
    A = jnp.where(jnp.all(jnp.isfinite(A)), A, U_s * jnp.sqrt(jnp.clip(lam_s, 0.0))[None, :])
    F = _psd_factor(Mdiff, jitter)
    B = R @ (F @ noise.zeta + jnp.sqrt(2.0 * dynamics.temperature / dynamics.eta) * noise.zeta_l)
    common = A @ noise.z
    empty = jnp.zeros((tp, 0))
    lams, errs = [], []
    for sgn, s in ((1.0, noise.s1), (-1.0, noise.s2)):  # two replicas (static), not a time loop
        g = (common + sgn * B) / jnp.sqrt(2.0)
        nz = Noise(noise.c, noise.y, s, noise.z, empty, jnp.eye(tp))
        lam, _, stats = _dmft.effective_scan(problem, nz, m, g, R, block)
        lams.append(lam)
        errs.append(stats[:, 1])
    diff = lams[0] - lams[1]
    Mhat = (problem.alpha * problem.delta / (2.0 * n)) * (diff @ diff.T)
    Mhat = 0.5 * (Mhat + Mhat.T)
    return Mhat, Vm, jnp.stack(errs), jnp.all(jnp.isfinite(A))


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "block"))
def _iteration(Mdiff, m, C, R, noise, params, damping, jitter, *, skeleton, n_steps, block):
    problem, dynamics = _dmft._join(skeleton, n_steps, params)
    Mhat, V, err, ok = replica_sample(problem, dynamics, m, C, R, Mdiff, noise, jitter, block)
    res = jnp.max(jnp.abs(Mhat - Mdiff)) / jnp.maximum(jnp.max(jnp.abs(Mhat)), 1e-12)
    return damping * Mdiff + (1.0 - damping) * Mhat, V, err, ok, res


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "samples"))
def _draw(key, params, *, skeleton, n_steps, samples):
    problem, dynamics = _dmft._join(skeleton, n_steps, params)
    return draw_replica_noise(problem, dynamics, key, samples)


def replica_distance(
    rs: DMFTResult,
    samples: int | None = None,
    seed: int = 0,
    damping: float = 0.0,
    iterations: int | None = None,
    tolerance: float = 1e-8,
    jitter: float = 1e-10,
    block: int = 16,
    time_step: float | None = None,
) -> ReplicaResult:
    """Solve the two-replica DMFT on top of a replica-symmetric solution ``rs`` of ``solve_dmft``.

    ``samples`` pairs of effective trajectories (default ``rs.options.samples``), Monte-Carlo
    ``seed`` (independent of the RS solve's streams), fixed-point iteration on ``Mdiff`` (module
    docstring) from zero until the relative sup-norm change is below ``tolerance`` (the map is
    causal: at most ``T + 1`` undamped iterations reach the sampled fixed point exactly; default
    ``iterations = min(T + 1, 60)``). ``time_step`` sets ``t = k time_step`` (default the solve's
    ``eta``). Warns :class:`DMFTConvergenceWarning` if not converged; raises :class:`DMFTError` if
    ``2C - V`` is not positive definite or the sample is non-finite.
    """
    problem, dynamics = rs.problem, rs.dynamics
    tp = dynamics.n_steps + 1
    samples = int(rs.options.samples if samples is None else samples)
    iterations = int(min(tp, 60) if iterations is None else iterations)
    if samples < 2:
        raise ValueError(f"samples={samples} must be >= 2")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed={seed} must be an integer in [0, 2^32)")
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"damping={damping} must lie in [0, 1)")
    skeleton, n_steps, params = _dmft._split(problem, dynamics)
    key = fold_in(root_key(int(seed)), _STREAM_BASE)
    noise = _draw(key, params, skeleton=skeleton, n_steps=n_steps, samples=samples)
    m, C, R = (jnp.asarray(x, jnp.float64) for x in (rs.m, rs.C, rs.R))
    Mdiff = np.zeros((tp, tp))
    residuals, converged = [], False
    V = err = None
    for it in range(iterations):  # fixed-point iterations, not time steps
        new, V, err, ok, res = _iteration(
            Mdiff, m, C, R, noise, params, damping, jitter, skeleton=skeleton, n_steps=n_steps, block=block
        )
        res = float(res)
        if not bool(ok) or not math.isfinite(res):
            raise DMFTError(f"replica DMFT iteration {it}: 2C - V not positive definite or non-finite sample")
        residuals.append(res)
        if res < tolerance or not np.any(np.asarray(new)):
            converged = True
            break
        Mdiff = new
    if not converged:
        warnings.warn(f"replica DMFT did not converge: residual {residuals[-1]:.3g} > {tolerance:g}", DMFTConvergenceWarning, stacklevel=2)
    V = np.asarray(V)
    dt = dynamics.eta if time_step is None else float(time_step)
    return ReplicaResult(
        t=np.arange(tp) * dt,
        D=np.diag(V).copy(),
        C12=np.asarray(C) - V,
        Mdiff=np.asarray(Mdiff),
        train_error=np.asarray(err),
        residuals=np.asarray(residuals),
        converged=converged,
        iterations=len(residuals),
    )


def replica_distance_seeds(problem, dynamics, options, seeds, samples: int | None = None, time_step: float | None = None, **kw):
    """``D`` from independent RS + replica solves (Monte-Carlo seeds ``seeds``):
    ``(t (T+1,), D (n_seeds, T+1), results)``; the spread over seeds is the error bar."""
    from sgdlab.dmft.solver import solve_dmft

    out = []
    for s in seeds:
        rs = solve_dmft(problem, dynamics, options._replace(seed=int(s)))
        out.append(replica_distance(rs, samples=samples, seed=int(s), time_step=time_step, **kw))
    return out[0].t, np.array([r.D for r in out]), out
