"""Discrete-time dynamical mean-field theory (DMFT) of GD / SGD / persistent SGD / Langevin on the
Gaussian mixture, solved with a Monte-Carlo sample of the effective process.

Sources
-------
- F. Mignacco, F. Krzakala, P. Urbani, L. Zdeborova, "Dynamical mean-field theory for stochastic
  gradient descent in Gaussian mixture classification", NeurIPS 2020, arXiv:2006.06098
  (the effective process and its kernels, in continuous time);
- C. Gerbelot, E. Troiani, F. Mignacco, F. Krzakala, L. Zdeborova, "Rigorous dynamical mean field
  theory for stochastic gradient descent methods", arXiv:2210.06591 (the discrete-time equations
  used here, exact for the discrete algorithm as ``d -> infinity`` at fixed ``alpha = n/d``);
- H. Eissfeller, M. Opper, "New method for studying the dynamics of disordered spin systems
  without finite-size effects", Phys. Rev. Lett. 68, 2094 (1992) (solving the self-consistency by
  iterating a Monte-Carlo sample of the effective process);
- sgdlab spec ``01_gaussian_mixture_dmft.md`` (section DMFT) and ``docs/dmft.md`` (derivation,
  estimator, accuracy).

Dynamics (always the *unnormalised* update; the caller maps the normalised convention by
``eta' = eta/b, lambda' = b lambda, tau' = tau/b, T' = b T``)::

    w_{k+1} = w_k - eta [ lambda w_k + sum_mu s_mu(k) loss'(y_mu, h_mu(k)) x_mu / sqrt(d) ]
              + sqrt(2 T eta) xi_k,        k = 0 .. n_steps - 1,  time t = k eta,

with the batch mask ``s_mu(k)`` a two-state chain ``s(0) ~ Bernoulli(b)``, ``P(0 -> 1) = p_on``,
``P(1 -> 0) = p_off`` (GD: ``p_on = 1, p_off = 0, b = 1``; i.i.d. minibatches: ``p_on = b,
p_off = 1 - b``; persistent SGD: ``p_on = eta/tau, p_off = (1 - b) eta/(b tau)``); ``s(k)`` gates
the step from ``w_k`` to ``w_{k+1}``.

Equations (grid ``k = 0 .. T`` with ``T = n_steps``; vectors ``(T+1,)``, matrices ``(T+1, T+1)``
with the first index the later time)
------------------------------------------------------------------------------------------------
Effective sample (one of ``N`` Monte-Carlo trajectories)::

    c ~ clusters,  y = labels(c),  s = mask chain,  g0 ~ N(0, C),
    h_k   = c m_k + sqrt(Delta) g0_k - Delta sum_{j<k} R_{kj} Lam_j,
    Lam_k = s_k loss'(y, h_k),   a_k = s_k loss''(y, h_k).

Kernels::

    M_{kj} = alpha Delta E[Lam_k Lam_j]                   (noise kernel, ``M_C`` of the spec)
    mu_k   = alpha E[c Lam_k]                             (drift along the centroid)
    Q_{kj} = alpha sqrt(Delta) E[d Lam_k / d g0_j]        (memory kernel, lower triangular)
           = alpha Delta E[a_k chi_{kj}],  chi = (I + Delta R diag(a))^{-1},   Q_kk = alpha Delta E[a_k].

Weight side (``R_{j+1, j} = eta``, ``R`` strictly lower triangular)::

    R_{k+1,j} = (1 - eta lambda) R_{kj} - eta sum_{l=j..k} Q_{kl} R_{lj} + eta delta_{kj}
    P_{k+1}   = (1 - eta lambda) P_k   - eta sum_{l<=k}  Q_{kl} P_l,           P_0 = 1
    m_{k+1}   = (1 - eta lambda) m_k   - eta (mu_k + sum_{l<=k} Q_{kl} m_l),    m_0 = m0
    C         = m m^T + sigma0^2 P P^T + R M R^T + (2 T / eta) R R^T.

``R_{kj}`` is the response of ``w_k`` to a field ``f_j`` added *inside* the bracket of step ``j``
(``w_{j+1} = w_j - eta [... - f_j]``), hence ``R_{j+1,j} = eta``; ``C`` is the full correlation
``w_k . w_j / d`` including ``m m^T``.

Memory-kernel estimator
-----------------------
``SolverOptions.response``:

- ``"probe"`` (default): forward-mode differentiation of the effective process along one random
  Rademacher direction ``eps`` per trajectory (``g0 -> g0 + eps``), carried through the memory term
  in the same time scan (one tangent: ``O(N T^2)``). The tangent is ``dLam = J eps`` with
  ``J = dLam/dg0`` lower triangular and ``J_kk = sqrt(Delta) a_k`` known. Row ``k`` of ``Q`` is the
  least-squares regression, over the ``N`` trajectories, of the off-diagonal tangent
  ``dLam_k - J_kk eps_k = sum_{j<k} J_kj eps_j`` on the probes ``eps_{<k}``::

      Q_{k, <k} = alpha sqrt(Delta) G_{<k}^{-1} E_N[eps_{<k} (dLam_k - J_kk eps_k)],   G = E_N[eps eps^T],
      Q_kk = alpha Delta E_N[a_k],   Q_kj = 0 for j > k (causality, exact).

  Plain Hutchinson (``G -> I``) is unbiased too, but each entry then picks up the cross-talk
  ``sum_{j' != j} J_kj' eps_j' eps_j``, whose noise does not decay with the lag and accumulates in
  ``sum_l Q_kl m_l`` over long horizons (a converged GD solution drifts by ~0.5% by t = 30 at ``N = 6000``).
  The regression removes it: what remains is the trajectory-to-trajectory spread of ``J`` (none
  for GD with the square loss, where ``J`` is the same for every trajectory and the estimate is
  exact), plus a bias ``O(T/N)``. ``G`` is factorised once per solve (common random numbers);
  each row costs two ``O(T^2)`` triangular solves with leading blocks of that factor.
- ``"stein"``: the Novikov/Stein identity ``Q = alpha sqrt(Delta) E[Lam g0^T] C^{-1}``, evaluated as
  ``alpha sqrt(Delta) E[Lam z^T] L^{-1}`` with ``g0 = L z``, then masked to its causal part. Its
  noise is amplified by ``L^{-1}``, i.e. by the conditioning of ``C``, which is poor for small
  ``eta`` or near a fixed point, and it is undefined for the rank-deficient ``C`` of the zero
  start. Kept as an independent cross-check (``docs/dmft.md`` has measurements).

Solving
-------
Every solve uses *common random numbers*: the clusters, masks, white noise ``z`` (``g0 = L z``,
``L L^T`` the Cholesky factorisation of ``C`` with a relative jitter) and probes are drawn once
from ``SolverOptions.seed``. The sampled equations are then a deterministic, *causal* map
``K -> K_hat(K)`` on the kernels ``K = (mu, M, Q)``: rows ``<= k`` of ``K_hat`` depend on rows
``< k`` of ``K`` only. Two ways to its fixed point, which agree to rounding:

- ``start = "march"`` (default): one causal time march, ``O(N T^2)``: at step ``k`` the Cholesky
  row ``k`` of ``C``, the fields ``h_k`` of all trajectories, kernel row ``k``, then the weight-side
  row ``k + 1``. This *is* the fixed point of the sampled map, reached with no iteration error and
  no risk of transient divergence. It is followed by the fixed-point iteration below, whose first
  residual (~1e-12) certifies it.
- ``start = "zero"``: the damped Eissfeller-Opper iteration from zero kernels (the free ridge
  dynamics). Each iteration (one jitted call, ``O(N T^2)`` with the past memory done as matrix
  products per time block) is ``K <- damping K + (1 - damping) K_hat(K)``. Plain iteration can
  overshoot on long horizons (large transient kernels); damping ``0.3`` converges geometrically
  (15-25 iterations to ``1e-6`` on the test cases), while the three-cluster warm start diverges
  below ``damping ~ 0.8`` and is left to the march.

The residual of an iteration is ``max_X |X_hat - X|_inf / max(|X_hat|_inf, 1e-12)`` over
``X in (mu, M, Q)``; the solver stops when it is below ``tolerance``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from sgdlab.dmft import losses
from sgdlab.dmft import problem as gm

__all__ = [
    "DMFTConvergenceWarning",
    "DMFTError",
    "DMFTResult",
    "Dynamics",
    "Kernels",
    "Noise",
    "OrderParameters",
    "Sample",
    "SolverOptions",
    "dmft_dataset",
    "draw_noise",
    "effective_process",
    "effective_scan",
    "estimate_kernels",
    "march",
    "probe_regression",
    "regularised_cholesky",
    "solve_dmft",
    "weight_side",
    "zero_kernels",
]

RESPONSES = ("probe", "stein")
STARTS = ("march", "zero")

# Random streams of one solve: fold_in(key(seed), STREAM).
_STREAM_CLUSTERS, _STREAM_MASK, _STREAM_FIELD, _STREAM_PROBE = range(4)
# Floor of the diagonal entries the relative jitter is taken of (C is O(1) in this model).
_JITTER_FLOOR = 1e-6


class DMFTConvergenceWarning(RuntimeWarning):
    """The fixed-point iteration stopped at ``iterations`` without reaching ``tolerance``."""


class DMFTError(FloatingPointError):
    """The solve broke down: ``C`` not positive definite even with jitter, or a non-finite kernel."""


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


class Dynamics(NamedTuple):
    """Parameters of the (unnormalised) dynamics; hashable, a static argument of the jitted core.

    - ``eta``: step (time ``t = k eta``); ``n_steps``: number of steps ``T`` (grid ``k = 0..T``);
    - ``p_on``, ``p_off``, ``b``: mask chain ``s(0) ~ Bernoulli(b)``, ``P(0->1) = p_on``,
      ``P(1->0) = p_off`` (stationary iff ``b = p_on / (p_on + p_off)``); GD is ``(1, 0, 1)``;
    - ``temperature``: Langevin temperature ``T`` (noise ``sqrt(2 T eta) N(0, I)`` per step);
    - ``beta``, ``gamma``: momentum (heavy ball ``gamma = 0``, Nesterov ``gamma = beta``; see
      the module docstring, section Momentum).

    ``eta``, ``p_on`` and ``p_off`` may also be arrays ``(n_steps,)``: entry ``k`` is the step
    ``k -> k + 1`` (schedules, :mod:`sgdlab.dmft.steps`); ``b`` is then the fraction of ``s(0)``.
    The ridge is ``problem.ridge``.
    """

    eta: float
    n_steps: int
    p_on: float = 1.0
    p_off: float = 0.0
    b: float = 1.0
    temperature: float = 0.0
    beta: float = 0.0
    gamma: float = 0.0

    @property
    def per_step(self) -> bool:
        """Whether ``eta``, ``p_on``, ``p_off`` are per-step arrays ``(n_steps,)`` (schedules)."""
        return np.ndim(self.eta) > 0 or np.ndim(self.p_on) > 0

    @property
    def momentum(self) -> bool:
        """Whether the update has memory (``beta`` or ``gamma`` nonzero)."""
        return bool(np.any(np.asarray(self.beta) != 0) or np.any(np.asarray(self.gamma) != 0))

    @classmethod
    def from_chain(cls, chain: Any, eta: float, n_steps: int, temperature: float = 0.0) -> "Dynamics":
        """From any object with attributes ``p_on, p_off, b`` (e.g. ``algorithms.MaskChain``)."""
        return cls(float(eta), int(n_steps), float(chain.p_on), float(chain.p_off), float(chain.b), float(temperature))

    def validate(self) -> "Dynamics":
        """Return a copy with plain Python numbers, or raise ``ValueError`` naming the field."""
        if isinstance(self.n_steps, bool) or not (isinstance(self.n_steps, (int, np.integer)) and self.n_steps >= 1):
            raise ValueError(f"n_steps={self.n_steps!r} must be an integer >= 1")

        def num(name):
            val = getattr(self, name)
            if np.ndim(val) == 0:
                return float(val)
            arr = np.asarray(val, np.float64)
            if arr.shape != (self.n_steps,):
                raise ValueError(f"{name} has shape {arr.shape}; a per-step array must have shape ({self.n_steps},)")
            return arr

        eta, p_on, p_off = num("eta"), num("p_on"), num("p_off")
        if not (np.all(np.isfinite(eta)) and np.all(np.asarray(eta) > 0)):
            raise ValueError(f"eta={self.eta} must be > 0")
        for name, val in (("p_on", p_on), ("p_off", p_off)):
            if not np.all((np.asarray(val) >= 0.0) & (np.asarray(val) <= 1.0)):
                raise ValueError(f"{name}={val} must lie in [0, 1]")
        if not 0.0 < self.b <= 1.0:
            raise ValueError(f"b={self.b} must lie in (0, 1]")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not (0.0 <= self.beta < 1.0 and 0.0 <= self.gamma < 1.0):
            raise ValueError(f"beta={self.beta}, gamma={self.gamma} must lie in [0, 1)")
        return Dynamics(eta, int(self.n_steps), p_on, p_off, float(self.b), float(self.temperature), float(self.beta), float(self.gamma))


class SolverOptions(NamedTuple):
    """Options of the Monte-Carlo solver (see the module docstring for the method).

    - ``samples`` ``N``: effective trajectories. The Monte-Carlo error of the solution is
      ``~ N^-1/2`` (about 1% relative on ``C`` at ``N = 3e4`` for persistent SGD, 0.1% for GD with
      the square loss; ``docs/dmft.md``).
    - ``damping``: ``K <- damping * K + (1 - damping) * K_hat``, in ``[0, 1)``.
    - ``iterations``: maximum number of fixed-point iterations (after the start).
    - ``tolerance``: stop when the relative sup-norm change of the kernels is below it. The default
      ``1e-4`` is 1/50 of the Monte-Carlo error at ``N = 3e4`` (``~ N^-1/2 = 6e-3``), so the
      iteration error is negligible; the march start reaches ``~1e-12`` at once.
    - ``seed``: the random stream (fixed across iterations: common random numbers).
    - ``response``: ``"probe"`` (forward-mode tangent along a random direction) or ``"stein"``.
    - ``start``: ``"march"`` (exact causal time march, then iterate) or ``"zero"`` (iterate from
      zero kernels).
    - ``jitter``: ``C_kk -> C_kk + jitter * max(C_kk, 1e-6)`` before the Cholesky factorisation.
    - ``block``: time-block size of the iteration's scan (past memory by matrix products, within a
      block step by step). Performance only; every block size gives the same numbers to rounding.
    - ``chunks``: number of scans the time march is cut into (histories cut to the past of each
      chunk: fewer memory reads, one more compiled scan body each). Performance only.
    - ``replica``: index of an independent solve with the same ``seed`` (its random stream is
      ``fold_in(key(seed), replica)``; replica 0 is ``key(seed)`` itself). Independent replicas
      give the Monte-Carlo standard error of the solution (:mod:`sgdlab.dmft.experiment`).
    """

    samples: int = 30000
    damping: float = 0.3
    iterations: int = 50
    tolerance: float = 1e-4
    seed: int = 0
    response: str = "probe"
    start: str = "march"
    jitter: float = 1e-10
    block: int = 16
    chunks: int = 4
    replica: int = 0

    def validate(self) -> "SolverOptions":
        """Return a copy with plain Python values, or raise ``ValueError`` naming the option."""

        def is_int(x):
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        def is_real(x):
            return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)

        if not (is_int(self.samples) and self.samples >= 2):
            raise ValueError(f"samples={self.samples!r} must be an integer >= 2")
        if not (is_real(self.damping) and 0.0 <= self.damping < 1.0):
            raise ValueError(f"damping={self.damping!r} must lie in [0, 1) (new = damping*old + (1-damping)*estimate)")
        if not (is_int(self.iterations) and self.iterations >= 1):
            raise ValueError(f"iterations={self.iterations!r} must be an integer >= 1")
        if not (is_real(self.tolerance) and self.tolerance > 0):
            raise ValueError(f"tolerance={self.tolerance!r} must be a finite number > 0")
        if not (is_int(self.seed) and 0 <= self.seed < 2**32):
            raise ValueError(f"seed={self.seed!r} must be an integer in [0, 2^32)")
        if self.response not in RESPONSES:
            raise ValueError(f"response={self.response!r}; allowed: {', '.join(RESPONSES)}")
        if self.start not in STARTS:
            raise ValueError(f"start={self.start!r}; allowed: {', '.join(STARTS)}")
        if not (is_real(self.jitter) and 0.0 <= self.jitter < 1e-2):
            raise ValueError(f"jitter={self.jitter!r} must lie in [0, 1e-2)")
        if not (is_int(self.block) and self.block >= 1):
            raise ValueError(f"block={self.block!r} must be an integer >= 1")
        if not (is_int(self.chunks) and self.chunks >= 1):
            raise ValueError(f"chunks={self.chunks!r} must be an integer >= 1")
        if not (is_int(self.replica) and 0 <= self.replica < 2**31):
            raise ValueError(f"replica={self.replica!r} must be an integer in [0, 2^31)")
        return SolverOptions(
            int(self.samples), float(self.damping), int(self.iterations), float(self.tolerance), int(self.seed),
            str(self.response), str(self.start), float(self.jitter), int(self.block), int(self.chunks), int(self.replica),
        )


def _validate_problem(problem: gm.GaussianMixture) -> None:
    if not isinstance(problem, gm.GaussianMixture):
        raise TypeError(f"problem must be a GaussianMixture, got {type(problem).__name__}")
    checks = (
        ("alpha", problem.alpha > 0, "> 0"),
        ("delta", problem.delta > 0, "> 0"),
        ("ridge", problem.ridge >= 0, ">= 0"),
        ("sigma0", problem.sigma0 >= 0, ">= 0"),
        ("rho", 0 < problem.rho < 1, "in (0, 1)"),
    )
    for name, ok, rng in checks:
        if not ok:
            raise ValueError(f"problem.{name}={getattr(problem, name)} must be {rng}")
    if problem.clusters not in (2, 3):
        raise ValueError(f"problem.clusters={problem.clusters} must be 2 or 3")


# --------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------


class Kernels(NamedTuple):
    """DMFT kernels on the grid ``k = 0..T``: ``mu (T+1,)``, ``M (T+1, T+1)`` (noise, symmetric
    PSD; ``M_C`` of the spec), ``Q (T+1, T+1)`` (memory, lower triangular incl. the diagonal).
    Row/column ``T`` never enters the weight side (no step leaves the last time)."""

    mu: jax.Array
    M: jax.Array
    Q: jax.Array


class OrderParameters(NamedTuple):
    """Weight-side solution: ``m (T+1,)``, ``P (T+1,)`` (propagator of the random part of
    ``w(0)``), ``R (T+1, T+1)`` (strictly lower triangular, ``R[j+1, j] = eta``), ``C (T+1, T+1)``
    (``w_k . w_j / d``, including ``m m^T``)."""

    m: jax.Array
    P: jax.Array
    R: jax.Array
    C: jax.Array


class Noise(NamedTuple):
    """The common random numbers of one solve (``N`` trajectories, ``T+1`` times): clusters
    ``c (N,)``, labels ``y (N,)``, masks ``s (T+1, N)`` (0./1.), white noise ``z (T+1, N)``
    (``g0 = L z``), Rademacher probes ``eps (T+1, N)`` (``(T+1, 0)`` without the probe) and the
    lower Cholesky factor ``gram_chol (T+1, T+1)`` of their Gram matrix ``eps eps^T / N``
    (identity without the probe)."""

    c: jax.Array
    y: jax.Array
    s: jax.Array
    z: jax.Array
    eps: jax.Array
    gram_chol: jax.Array


def zero_kernels(n_steps: int) -> Kernels:
    """All-zero kernels (the free ridge dynamics): the ``start = "zero"`` point of the iteration."""
    tp = n_steps + 1
    return Kernels(jnp.zeros((tp,)), jnp.zeros((tp, tp)), jnp.zeros((tp, tp)))


def weight_side(problem: gm.GaussianMixture, dynamics: Dynamics, kernels: Kernels, momentum: bool = False) -> OrderParameters:
    """Solve the weight-side recursions for ``(m, P, R)`` and assemble ``C``; pure, ``O(T^3)``.

    The recursions ``Y_{k+1} = (1 - eta lambda) Y_k - eta sum_{l<=k} Q_kl Y_l + B_{k+1}`` for the
    columns of ``Y = [R | P | m]`` form the unit-lower-triangular system
    ``(I - S((1 - eta lambda) I - eta Q)) Y = B`` with the down-shift ``S`` (``(S X)_{k+1} = X_k``)
    and ``B = [eta S | e_0 | m0 e_0 - eta S mu]``: one triangular solve. With per-step ``eta_k``
    or momentum (``momentum=True``, static) the general form of :func:`_weight_side_general`.
    """
    if dynamics.per_step or momentum:
        return _weight_side_general(problem, dynamics, kernels)
    eta, lam = dynamics.eta, problem.ridge
    tp = kernels.mu.shape[0]
    eye = jnp.eye(tp)
    shift = jnp.eye(tp, k=-1)
    lower = eye - shift @ ((1.0 - eta * lam) * eye - eta * kernels.Q)
    e0 = eye[:, :1]
    rhs = jnp.concatenate([eta * shift, e0, problem.m0 * e0 - eta * (shift @ kernels.mu)[:, None]], axis=1)
    y = solve_triangular(lower, rhs, lower=True, unit_diagonal=True)
    R, P, m = y[:, :tp], y[:, tp], y[:, tp + 1]
    C = jnp.outer(m, m) + problem.sigma0**2 * jnp.outer(P, P) + R @ kernels.M @ R.T
    C = C + (2.0 * dynamics.temperature / eta) * (R @ R.T)  # Langevin (zero at T = 0)
    C = 0.5 * (C + C.T)
    return OrderParameters(m, P, R, C)


def lookahead_matrix(c, tp: int) -> jax.Array:
    """``A (tp, tp)`` with ``(A X)_k = (1 + c) X_k - c X_{k-1}`` and ``X_{-1} = X_0`` (row 0 is ``X_0``)."""
    a = (1.0 + c) * jnp.eye(tp) - c * jnp.eye(tp, k=-1)
    return a.at[0, 0].set(1.0)


def per_step_vector(x, tp: int) -> jax.Array:
    """A scalar or per-step array ``(tp - 1,)`` as ``(tp,)`` (the last, unused entry repeated)."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        return jnp.full((tp,), x)
    return jnp.concatenate([x, x[-1:]])


def _weight_side_general(problem: gm.GaussianMixture, dynamics: Dynamics, kernels: Kernels) -> OrderParameters:
    """Weight side with per-step ``eta_k`` and momentum (see the module docstring, Momentum)::

        X_{k+1} = X_k + beta (X_k - X_{k-1}) - eta_k [lambda (A X)_k + sum_{l<=k} Q_kl (A X)_l] + B_{k+1},

    ``A`` = :func:`lookahead_matrix` of ``gamma``, ``X_{-1} = X_0``: the unit-lower-triangular
    system ``(I - S (H - diag(eta) (lambda I + Q) A)) X = B`` with ``H`` the lookahead matrix of
    ``beta``; the Langevin term of ``C`` is ``R diag(2 T / eta) R^T``.
    """
    lam = problem.ridge
    tp = kernels.mu.shape[0]
    eta = per_step_vector(dynamics.eta, tp)
    eye = jnp.eye(tp)
    shift = jnp.eye(tp, k=-1)
    a = lookahead_matrix(dynamics.gamma, tp)
    z = lookahead_matrix(dynamics.beta, tp) - eta[:, None] * ((lam * eye + kernels.Q) @ a)
    lower = eye - shift @ z
    e0 = eye[:, :1]
    rhs = jnp.concatenate([shift * eta[None, :], e0, problem.m0 * e0 - (shift @ (eta * kernels.mu))[:, None]], axis=1)
    y = solve_triangular(lower, rhs, lower=True, unit_diagonal=True)
    R, P, m = y[:, :tp], y[:, tp], y[:, tp + 1]
    C = jnp.outer(m, m) + problem.sigma0**2 * jnp.outer(P, P) + R @ kernels.M @ R.T
    C = C + (R * (2.0 * dynamics.temperature / eta)[None, :]) @ R.T
    C = 0.5 * (C + C.T)
    return OrderParameters(m, P, R, C)


def lookahead(order: OrderParameters, gamma) -> OrderParameters:
    """The order parameters of the point ``y_k = w_k + gamma (w_k - w_{k-1})`` where the gradient
    is taken: ``(A m, A P, A R, A C A^T)`` (Nesterov; ``gamma = 0`` is ``w`` itself)."""
    a = lookahead_matrix(gamma, order.m.shape[0])
    return OrderParameters(a @ order.m, a @ order.P, a @ order.R, a @ order.C @ a.T)


def regularised_cholesky(C: jax.Array, jitter: float) -> jax.Array:
    """Lower Cholesky factor of ``C + diag(jitter * max(C_kk, 1e-6))``; NaN if not positive definite.

    The jitter of time ``k`` depends on ``C_kk`` only, so the factor stays causal (row ``k`` depends
    on ``C[:k+1, :k+1]``), which the time march relies on.
    """
    d = jnp.diag(C)
    return jnp.linalg.cholesky(C + jnp.diag(jitter * jnp.maximum(d, _JITTER_FLOOR)))


def _mask_chain_path(key: jax.Array, dynamics: Dynamics, n_times: int, n: int) -> jax.Array:
    """Mask chain ``s (n_times, n)`` as float: ``s_0 ~ Bernoulli(b)``, then the two-state chain."""
    u = jax.random.uniform(key, (n_times, n), jnp.float64)
    s0 = u[0] < dynamics.b
    if dynamics.per_step:  # transition k -> k + 1 with (p_on[k], p_off[k])
        probs = [jnp.broadcast_to(jnp.asarray(p), (dynamics.n_steps,))[: n_times - 1] for p in (dynamics.p_on, dynamics.p_off)]

        def step_k(s, xs):
            uk, on, off = xs
            s_new = jnp.where(s, uk >= off, uk < on)
            return s_new, s_new

        _, rest = jax.lax.scan(step_k, s0, (u[1:], *probs))
        return jnp.concatenate([s0[None], rest], axis=0).astype(jnp.float64)

    def step(s, uk):
        s_new = jnp.where(s, uk >= dynamics.p_off, uk < dynamics.p_on)
        return s_new, s_new

    _, rest = jax.lax.scan(step, s0, u[1:])
    return jnp.concatenate([s0[None], rest], axis=0).astype(jnp.float64)


def draw_noise(problem: gm.GaussianMixture, dynamics: Dynamics, key: jax.Array, samples: int, probe: bool = True) -> Noise:
    """The common random numbers of a solve (see :class:`Noise`); ``O(N T)`` draws plus the
    ``O(N T^2)`` probe Gram matrix and its ``O(T^3)`` Cholesky factor."""
    tp = dynamics.n_steps + 1
    c = gm.sample_clusters(jax.random.fold_in(key, _STREAM_CLUSTERS), problem, (samples,), jnp.float64)
    s = _mask_chain_path(jax.random.fold_in(key, _STREAM_MASK), dynamics, tp, samples)
    z = jax.random.normal(jax.random.fold_in(key, _STREAM_FIELD), (tp, samples), jnp.float64)
    if probe:
        eps = jax.random.rademacher(jax.random.fold_in(key, _STREAM_PROBE), (tp, samples), jnp.float64)
        gram_chol = jnp.linalg.cholesky((eps @ eps.T) / samples)
    else:
        eps = jnp.zeros((tp, 0), jnp.float64)
        gram_chol = jnp.eye(tp)
    return Noise(c, gm.labels(problem, c), s, z, eps, gram_chol)


def probe_regression(b: jax.Array, gram_chol: jax.Array) -> jax.Array:
    """Least-squares coefficients of the tangents on the probes, row by row (causal).

    ``b[k, j] = E_N[dLam_off_k eps_j]`` and ``G = E_N[eps eps^T] = gram_chol gram_chol^T``; row
    ``k`` of the result solves ``G[:k, :k] x = b[k, :k]`` (zero for ``j >= k``). Two triangular
    solves with all rows as right-hand sides (the leading block of a Cholesky factor is the factor
    of the leading block); ``O(T^3)``.
    """
    tp = b.shape[0]
    causal = jnp.arange(tp)[:, None] < jnp.arange(tp)[None, :]  # [j, k]: j < k
    y = solve_triangular(gram_chol, jnp.where(causal, b.T, 0.0), lower=True)
    x = solve_triangular(gram_chol.T, jnp.where(causal, y, 0.0), lower=False)
    return x.T


def _loss_derivatives(problem: gm.GaussianMixture):
    loss = gm.sample_loss(problem)
    return loss, losses.derivative(loss, 1), losses.derivative(loss, 2)


def effective_scan(
    problem: gm.GaussianMixture, noise: Noise, m: jax.Array, g0: jax.Array, R: jax.Array, block: int = 16,
    gamma=None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Run the effective process for given ``m (T+1,)``, fields ``g0 (T+1, N)`` and ``R``.

    Returns ``Lam (T+1, N)``, the off-diagonal tangent ``dLam_off (T+1, N)`` (``(T+1, 0)``
    without probes: ``noise.eps`` empty) and per-time averages ``stats (T+1, 3)`` = (loss,
    misclassified, ``a``). Time is cut in blocks of ``block`` steps: the memory of all earlier
    blocks is one matrix product per block, the rest a ``lax.scan`` step by step. ``O(N T^2)``.

    With Nesterov momentum (``gamma`` given), ``m, g0, R`` are those of the lookahead point
    ``y_k`` (:func:`lookahead`) and the loss and error are taken at ``w_k``, whose field follows
    from ``h^y_k = (1 + gamma) h^w_k - gamma h^w_{k-1}`` (``h^w_0 = h^y_0``).
    """
    tp, n = g0.shape
    delta = problem.delta
    sqd = jnp.sqrt(delta)
    loss, dloss, d2loss = _loss_derivatives(problem)
    with_tangent = noise.eps.shape[1] > 0
    c, y = noise.c, noise.y

    nb = -(-tp // block)
    tpad = nb * block
    pad = tpad - tp  # padded times have s = 0 and R = 0: inert
    Rp = jnp.pad(R, ((0, pad), (0, pad)))
    base = jnp.pad(m[:, None] * c[None, :] + sqd * g0, ((0, pad), (0, 0)))  # c m_k + sqrt(D) g0_k
    s_p = jnp.pad(noise.s, ((0, pad), (0, 0)))
    eps_p = jnp.pad(noise.eps, ((0, pad), (0, 0)))
    width = 2 * n if with_tangent else n

    def time_step(carry, xs):
        hist_blk, i, hw_prev = carry  # (block, width): [Lam | dLam] of the current block so far
        mem_past, base_k, s_k, eps_k, r_in = xs
        mem = mem_past + r_in @ hist_blk  # sum_{j<k} R_kj [Lam_j | dLam_j]
        h = base_k - delta * mem[:n]
        lam = s_k * dloss(y, h)
        a = s_k * d2loss(y, h)
        if with_tangent:
            dlam_off = -delta * a * mem[n:]  # the tangent minus its exact diagonal part sqrt(D) a_k eps_k
            row = jnp.concatenate([lam, dlam_off + sqd * a * eps_k])
        else:
            dlam_off = jnp.zeros((0,), h.dtype)
            row = lam
        hist_blk = jax.lax.dynamic_update_slice(hist_blk, row[None], (i, 0))
        hw = h if gamma is None else (h + gamma * hw_prev) / (1.0 + gamma)
        stats = jnp.stack([jnp.mean(loss(y, hw)), jnp.mean(gm.misclassified(problem, y, hw)), jnp.mean(a)])
        return (hist_blk, i + 1, hw), (stats, dlam_off)

    def block_step(carry, ib):
        hist, hw_prev = carry
        start = ib * block
        r_rows = jax.lax.dynamic_slice(Rp, (start, 0), (block, tpad))
        r_past = jnp.where(jnp.arange(tpad)[None, :] < start, r_rows, 0.0)
        mem_past = r_past @ hist  # (block, width): one matrix product for all earlier blocks
        xs = (
            mem_past,
            jax.lax.dynamic_slice(base, (start, 0), (block, n)),
            jax.lax.dynamic_slice(s_p, (start, 0), (block, n)),
            jax.lax.dynamic_slice(eps_p, (start, 0), (block, eps_p.shape[1])),
            jax.lax.dynamic_slice(Rp, (start, start), (block, block)),
        )
        (hist_blk, _, hw_prev), (stats, dlam_off) = jax.lax.scan(time_step, (jnp.zeros((block, width)), 0, hw_prev), xs)
        hist = jax.lax.dynamic_update_slice(hist, hist_blk, (start, 0))
        return (hist, hw_prev), (stats, dlam_off)

    (hist, _), (stats, dlam_off) = jax.lax.scan(block_step, (jnp.zeros((tpad, width)), base[0]), jnp.arange(nb))
    stats = stats.reshape(tpad, 3)[:tp]
    dlam_off = dlam_off.reshape(tpad, -1)[:tp]
    return hist[:tp, :n], dlam_off, stats


def estimate_kernels(
    problem: gm.GaussianMixture, noise: Noise, lam: jax.Array, dlam_off: jax.Array, mean_a: jax.Array,
    chol: jax.Array, response: str = "probe",
) -> Kernels:
    """Kernel estimates from one sample: ``M``, ``mu`` and ``Q`` (probe or Stein); ``O(N T^2)``."""
    n = lam.shape[1]
    alpha, delta = problem.alpha, problem.delta
    sqd = jnp.sqrt(delta)
    M = (alpha * delta / n) * (lam @ lam.T)
    M = 0.5 * (M + M.T)
    mu = (alpha / n) * (lam @ noise.c)
    if response == "probe":
        b = probe_regression((dlam_off @ noise.eps.T) / n, noise.gram_chol)
        Q = jnp.tril(alpha * sqd * b, k=-1) + jnp.diag(alpha * delta * mean_a)
    else:
        ez = (alpha * sqd / n) * (lam @ noise.z.T)  # alpha sqrt(D) E[Lam z^T] = Q L
        Q = jnp.tril(solve_triangular(chol.T, ez.T, lower=False).T)
    return Kernels(mu, M, Q)


class Sample(NamedTuple):
    """One pass of the effective process: kernel estimates, ``train_loss``/``train_error``
    ``(T+1,)`` (averages over the sample) and whether the Cholesky factorisation succeeded."""

    kernels: Kernels
    train_loss: jax.Array
    train_error: jax.Array
    cholesky_ok: jax.Array


def effective_process(
    problem: gm.GaussianMixture, order: OrderParameters, noise: Noise, response: str = "probe",
    jitter: float = 1e-10, block: int = 16, gamma=None,
) -> Sample:
    """Sample the effective process given ``(m, C, R)`` and the common random numbers, and
    estimate the kernels: ``K_hat`` of the fixed-point map. ``O(N T^2)`` time, ``O(N T)`` memory.
    With Nesterov momentum (``gamma``), the fields are those of the lookahead point."""
    if gamma is not None:
        order = lookahead(order, gamma)
    chol = regularised_cholesky(order.C, jitter)
    g0 = chol @ noise.z  # (T+1, N), covariance C
    probe_noise = noise if response == "probe" else noise._replace(eps=jnp.zeros((noise.z.shape[0], 0)))
    lam, dlam_off, stats = effective_scan(problem, probe_noise, order.m, g0, order.R, block, gamma)
    kernels = estimate_kernels(problem, noise, lam, dlam_off, stats[:, 2], chol, response)
    return Sample(kernels, stats[:, 0], stats[:, 1], jnp.all(jnp.isfinite(chol)))


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


def _relative_change(new: Kernels, old: Kernels) -> jax.Array:
    """``max_X |X_new - X_old|_inf / max(|X_new|_inf, 1e-12)`` over the three kernels."""
    out = [jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(a)), 1e-12) for a, b in zip(new, old)]
    return jnp.max(jnp.stack(out))


# The jitted cores take the float parameters as traced values, so that a sweep over, e.g., the
# ridge, eta or the batch fraction reuses one compilation; only shapes and the kind of loss and
# mixture are static.
_PROBLEM_FLOATS = ("alpha", "delta", "rho", "kappa", "threshold", "ridge", "m0", "sigma0")
_DYNAMICS_FLOATS = ("eta", "p_on", "p_off", "b", "temperature", "beta", "gamma")


def _split(problem: gm.GaussianMixture, dynamics: Dynamics):
    """``(static skeleton, n_steps, dynamic float parameters)``."""
    skeleton = dataclasses.replace(problem, **{f: 0.0 for f in _PROBLEM_FLOATS})
    params = {f: jnp.asarray(float(getattr(problem, f)), jnp.float64) for f in _PROBLEM_FLOATS}
    params.update({f: jnp.asarray(np.asarray(getattr(dynamics, f), np.float64)) for f in _DYNAMICS_FLOATS})
    return skeleton, dynamics.n_steps, params


def _join(skeleton: gm.GaussianMixture, n_steps: int, params: dict):
    problem = dataclasses.replace(skeleton, **{f: params[f] for f in _PROBLEM_FLOATS})
    dynamics = Dynamics(n_steps=n_steps, **{f: params[f] for f in _DYNAMICS_FLOATS})
    return problem, dynamics


class _Step(NamedTuple):
    order: OrderParameters
    sample: Sample
    residual: jax.Array
    next_kernels: Kernels


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "samples", "probe"))
def _draw(key, params, *, skeleton, n_steps, samples, probe) -> Noise:
    """The common random numbers of a solve, drawn once (jitted)."""
    problem, dynamics = _join(skeleton, n_steps, params)
    return draw_noise(problem, dynamics, key, samples, probe)


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "response", "block", "momentum"))
def _iteration(kernels, noise, params, damping, jitter, *, skeleton, n_steps, response, block, momentum) -> _Step:
    """One fixed-point iteration: weight side from ``kernels``, sample, re-estimate, damp."""
    problem, dynamics = _join(skeleton, n_steps, params)
    order = weight_side(problem, dynamics, kernels, momentum)
    sample = effective_process(problem, order, noise, response, jitter, block, dynamics.gamma if momentum else None)
    residual = _relative_change(sample.kernels, kernels)
    nxt = Kernels(*(damping * old + (1.0 - damping) * new for old, new in zip(kernels, sample.kernels)))
    return _Step(order, sample, residual, nxt)


@partial(jax.jit, static_argnames=("skeleton", "n_steps", "chunks", "momentum"))
def _march_solve(noise, params, jitter, *, skeleton, n_steps, chunks, momentum):
    problem, dynamics = _join(skeleton, n_steps, params)
    return march(problem, dynamics, noise, jitter, chunks, momentum)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


class DMFTResult(NamedTuple):
    """Solution on the grid ``k = 0..T`` (``t = k eta``), as float64 numpy arrays.

    - ``t (T+1,)``; ``m``, ``q = diag C``, ``P`` ``(T+1,)``; ``C``, ``R`` ``(T+1, T+1)``
      (``C[k, j] = w_k . w_j / d``; ``R[k, j]`` response of ``w_k`` to a field inside the bracket
      of step ``j``);
    - ``kernels``: the ``mu``, ``M`` (``M_C``), ``Q`` that produced ``(m, C, R)``;
    - ``train_loss``, ``train_error``: averages over the effective sample; ``test_loss``,
      ``test_error``: exact from ``(m, q)`` (``gaussian_mixture.test_loss/test_error``);
    - ``residuals`` (one per fixed-point iteration), ``converged``, ``iterations`` (number run);
    - ``problem``, ``dynamics``, ``options``: the inputs.
    """

    t: np.ndarray
    m: np.ndarray
    q: np.ndarray
    C: np.ndarray
    R: np.ndarray
    P: np.ndarray
    kernels: Kernels
    train_loss: np.ndarray
    train_error: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    residuals: np.ndarray
    converged: bool
    iterations: int
    problem: gm.GaussianMixture
    dynamics: Dynamics
    options: SolverOptions


def solve_dmft(
    problem: gm.GaussianMixture,
    dynamics: Dynamics,
    options: SolverOptions = SolverOptions(),
    initial: Kernels | None = None,
) -> DMFTResult:
    """Solve the discrete-time DMFT of ``problem`` under ``dynamics``.

    ``options.start = "march"`` computes the fixed point of the sampled equations by one causal
    time march (:func:`march`); ``"zero"`` starts from zero kernels. ``initial`` (kernels of
    shapes ``(T+1,)``, ``(T+1, T+1)``, ``(T+1, T+1)``) overrides the start. Then the damped
    fixed-point iteration runs until the residual is below ``options.tolerance`` or
    ``options.iterations`` iterations have run (one jitted call each; the Python loop runs over
    iterations only, never over time).

    Returns a :class:`DMFTResult` for the last iteration: ``(m, C, R)`` from its input kernels and
    the training observables sampled with them. Warns :class:`DMFTConvergenceWarning` when the
    tolerance is not reached. Raises :class:`DMFTError` (naming the iteration) if ``C`` is not
    positive definite even with jitter or a kernel becomes non-finite; ``ValueError`` for invalid
    parameters.
    """
    _validate_problem(problem)
    dynamics = Dynamics(*dynamics).validate()
    options = SolverOptions(*options).validate()
    tp = dynamics.n_steps + 1
    if options.samples < 2 * tp:
        raise ValueError(
            f"samples={options.samples} must be >= 2 (n_steps + 1) = {2 * tp} (the probe regression needs "
            f"N > T + 1; its error is O(T/N), so use N >> T)"
        )
    key = jax.random.key(options.seed)
    if options.replica:
        key = jax.random.fold_in(key, options.replica)
    skeleton, _, params = _split(problem, dynamics)
    # The common random numbers, drawn once: every iteration (and the march) reuses them.
    noise = _draw(key, params, skeleton=skeleton, n_steps=dynamics.n_steps, samples=options.samples, probe=True)
    if initial is not None:
        kernels = Kernels(*(jnp.asarray(x, jnp.float64) for x in initial))
        if kernels.mu.shape != (tp,) or kernels.M.shape != (tp, tp) or kernels.Q.shape != (tp, tp):
            raise ValueError(f"initial kernels must have shapes ({tp},), ({tp}, {tp}), ({tp}, {tp})")
    elif options.start == "march":
        kernels, _, _, _, ok = _march_solve(
            noise, params, options.jitter, skeleton=skeleton, n_steps=dynamics.n_steps, chunks=options.chunks,
            momentum=dynamics.momentum,
        )
        if not bool(ok):
            raise DMFTError(
                f"DMFT time march: C(t, t') is not positive definite even with jitter {options.jitter:g}; "
                f"the sampled dynamics diverged - lower eta or check the parameters"
            )
        if not all(bool(jnp.all(jnp.isfinite(x))) for x in kernels):
            raise DMFTError("DMFT time march: a kernel became non-finite; the dynamics diverged - lower eta")
    else:
        kernels = zero_kernels(dynamics.n_steps)

    static = dict(skeleton=skeleton, n_steps=dynamics.n_steps, response=options.response, block=options.block,
                  momentum=dynamics.momentum)
    residuals: list[float] = []
    converged = False
    step = None
    for it in range(options.iterations):
        step = _iteration(kernels, noise, params, options.damping, options.jitter, **static)
        if not bool(step.sample.cholesky_ok):
            hint = " (the Stein estimator needs a well-conditioned C: use response='probe')" if options.response == "stein" else ""
            raise DMFTError(
                f"DMFT iteration {it}: C(t, t') is not positive definite even with jitter {options.jitter:g} "
                f"(relative); the iterates diverged - raise damping, use start='march', lower eta{hint}"
            )
        res = float(step.residual)
        if not math.isfinite(res):
            raise DMFTError(
                f"DMFT iteration {it}: a kernel became non-finite (residual {res}); the iterates diverged - "
                f"raise damping, use start='march' or lower eta"
            )
        residuals.append(res)
        if res < options.tolerance:
            converged = True
            break
        kernels = step.next_kernels
    assert step is not None
    if not converged:
        warnings.warn(
            f"DMFT did not converge in {options.iterations} iterations: last residual "
            f"{residuals[-1]:.3g} > tolerance {options.tolerance:g}",
            DMFTConvergenceWarning,
            stacklevel=2,
        )
    order = step.order
    m = np.asarray(order.m)
    C = np.asarray(order.C)
    q = np.diag(C).copy()
    return DMFTResult(
        t=np.concatenate([[0.0], np.cumsum(per_step_vector(dynamics.eta, tp)[:-1])]) if dynamics.per_step else np.arange(tp) * dynamics.eta,
        m=m,
        q=q,
        C=C,
        R=np.asarray(order.R),
        P=np.asarray(order.P),
        kernels=Kernels(*(np.asarray(x) for x in kernels)),
        train_loss=np.asarray(step.sample.train_loss),
        train_error=np.asarray(step.sample.train_error),
        test_loss=np.asarray(gm.test_loss(problem, jnp.asarray(m), jnp.asarray(q))),
        test_error=np.asarray(gm.test_error(problem, jnp.asarray(m), jnp.asarray(q))),
        residuals=np.asarray(residuals),
        converged=converged,
        iterations=len(residuals),
        problem=problem,
        dynamics=dynamics,
        options=options,
    )


def _problem_record(problem: gm.GaussianMixture) -> dict:
    from sgdlab.core.functions import spec_of

    record = dataclasses.asdict(problem)
    record["loss"] = spec_of(record["loss"])
    return record


def dmft_dataset(result: DMFTResult, save_every: int = 1, time_step: float | None = None, times=None):
    """The solution as an ``xarray.Dataset`` aligned with the simulation's time coordinate.

    Times ``t = k * time_step`` for ``k = 0, save_every, 2 save_every, ... <= T`` (the simulation
    saves ``j * save_every * eta`` for ``j = 0 .. n_steps // save_every``). ``time_step`` defaults
    to ``result.dynamics.eta``; pass the configured ``eta`` when the solve used the mapped
    ``eta / b`` of the normalised convention, so that ``t`` matches the simulation's. ``times``
    (``(T+1,)``, the time of every step; with schedules) overrides both. Variables: ``m, q,
    train_loss, train_error, test_loss, test_error`` with dims ``(method, t)``; ``C, R`` with dims
    ``(method, t, t_prime)``; ``residual`` with dim ``iteration``. Coordinates: ``method =
    ["dmft"]``, ``t``, ``t_prime``, ``step`` (along ``t``), ``iteration``. Attrs: ``converged``
    (0/1), ``iterations``, JSON ``solver_options``, ``dynamics``, ``problem``, ``sgdlab_version``.
    ``R`` keeps the solver's convention (response to a field inside the bracket of the update that
    was solved, ``R(t + eta, t) = eta``).
    """
    import xarray as xr

    from sgdlab import __version__

    if isinstance(save_every, bool) or not (isinstance(save_every, (int, np.integer)) and save_every >= 1):
        raise ValueError(f"save_every={save_every!r} must be an integer >= 1")
    n_steps = result.dynamics.n_steps
    if save_every > n_steps:
        raise ValueError(f"save_every={save_every} must be <= n_steps={n_steps}")
    if time_step is None:
        time_step = result.dynamics.eta
    if not (isinstance(time_step, (int, float, np.floating)) and math.isfinite(time_step) and time_step > 0):
        raise ValueError(f"time_step={time_step!r} must be > 0")
    idx = np.arange(0, n_steps // save_every + 1) * save_every
    t = idx * float(time_step) if times is None else np.asarray(times, np.float64)[idx]
    scalars = {
        "m": (result.m, "overlap m = w.v/d"),
        "q": (result.q, "self-overlap q = C(t,t) = w.w/d"),
        "train_loss": (result.train_loss, "training loss (mean over samples)"),
        "train_error": (result.train_error, "training error (fraction misclassified)"),
        "test_loss": (result.test_loss, "test loss (exact, from m and q)"),
        "test_error": (result.test_error, "test error (exact, from m and q)"),
    }
    data_vars = {k: (("method", "t"), np.asarray(v)[idx][None], {"long_name": ln}) for k, (v, ln) in scalars.items()}
    sub = np.ix_(idx, idx)
    data_vars["C"] = (("method", "t", "t_prime"), np.asarray(result.C)[sub][None], {"long_name": "C(t,t') = w(t).w(t')/d"})
    data_vars["R"] = (
        ("method", "t", "t_prime"),
        np.asarray(result.R)[sub][None],
        {"long_name": "R(t,t'): response of w(t) to a field inside the update bracket at t' (R(t'+eta,t') = eta)"},
    )
    data_vars["residual"] = (("iteration",), np.asarray(result.residuals), {"long_name": "relative kernel change per iteration"})
    return xr.Dataset(
        data_vars,
        coords={
            "method": ["dmft"],
            "t": ("t", t, {"long_name": "time t = k eta"}),
            "t_prime": ("t_prime", t, {"long_name": "time t' = k' eta"}),
            "step": ("t", idx.astype(np.int64)),
            "iteration": np.arange(len(result.residuals)),
        },
        attrs={
            "converged": int(result.converged),
            "iterations": int(result.iterations),
            "solver_options": json.dumps(result.options._asdict(), sort_keys=True),
            "dynamics": json.dumps({k: np.asarray(v).tolist() for k, v in result.dynamics._asdict().items()}, sort_keys=True),
            "problem": json.dumps(_problem_record(result.problem), sort_keys=True),
            "sgdlab_version": __version__,
        },
    )
