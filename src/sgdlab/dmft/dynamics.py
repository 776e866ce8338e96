"""Parameters of the discrete-time DMFT solve: the dynamics (step sizes, mask chain, temperature,
momentum) and the Monte-Carlo solver's options, with their validation and errors.

See :mod:`sgdlab.dmft.solver` for the equations and the method.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from sgdlab.dmft import problem as gm

RESPONSES = ("probe", "stein")
STARTS = ("march", "zero")
PRECISIONS = ("auto", "mixed", "float64")
#: Smallest ``tolerance`` of a solve whose ``N``-sized work is float32: the residual of the
#: certifying iteration floors at ~4e-7 in float32 (~1e-13 in float64).
MIXED_TOLERANCE = 1e-5
#: Smallest relative innovation variance ``min_k L_kk^2 / C_kk`` of the march (how close ``C`` is
#: to singular) at which ``precision = "auto"`` keeps the float32 ``N``-sized work: below, the
#: float32 rounding of ``C`` can reach its smallest eigenvalues (converging GD: ~1e-10, where the
#: float32 factorisation breaks down); at 5e-6 (i.i.d. SGD) mixed and float64 agree to 2e-8.
MIXED_MIN_INNOVATION = 1e-8


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
    - ``chunks``: at most this many segments the time march cuts its histories into (its products
      over the past skip the segments not reached yet: fewer memory reads; one compiled body
      whatever the number, a little more to compile per segment). Performance only.
    - ``replica``: index of an independent solve with the same ``seed`` (its random stream is
      ``fold_in(key(seed), replica)``; replica 0 is ``key(seed)`` itself). Independent replicas
      give the Monte-Carlo standard error of the solution (:mod:`sgdlab.dmft.experiment`).
    - ``precision``: ``"mixed"``: the ``N``-sized work (the common random numbers, the histories of
      the effective process and the products over the ``N`` trajectories) in float32, the
      ``T x T`` algebra (Cholesky factors, kernels, the weight side) in float64; ``"float64"``:
      everything in float64; ``"auto"`` (default): mixed for the march start with ``tolerance >=
      MIXED_TOLERANCE = 1e-5``, falling back to float64 when the mixed march finds ``C`` (nearly)
      singular (``MIXED_MIN_INNOVATION``), float64 otherwise and for noiseless full-batch GD
      (whose ``C`` becomes singular as it converges). Mixed is ~1.6x faster
      at long horizons (the march is memory-bound), takes ~2/3 of the memory, and agrees with
      float64 far within the Monte-Carlo error (``docs/dmft.md``, Performance); its iteration
      residual floors at ~4e-7 instead of ~1e-13. ``"mixed"`` with a smaller tolerance is an error.
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
    chunks: int = 8
    replica: int = 0
    precision: str = "auto"

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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.precision == "mixed" and self.tolerance < MIXED_TOLERANCE:
            raise ValueError(f"tolerance={self.tolerance:g} must be >= {MIXED_TOLERANCE:g} with precision='mixed' (its float32 "
                             f"residual floor is ~4e-7); use precision='float64' or 'auto'")
        return SolverOptions(
            int(self.samples), float(self.damping), int(self.iterations), float(self.tolerance), int(self.seed),
            str(self.response), str(self.start), float(self.jitter), int(self.block), int(self.chunks), int(self.replica),
            str(self.precision),
        )

    @property
    def resolved_precision(self) -> str:
        """``"mixed"`` or ``"float64"``: what ``precision`` means for this start and tolerance
        (before the fallback of ``"auto"`` after the march)."""
        if self.precision == "auto":
            return "mixed" if self.start == "march" and self.tolerance >= MIXED_TOLERANCE else "float64"
        return self.precision


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
