"""The per-step numbers of a run: step sizes ``eta_k``, batch fractions ``b_k``, the mask chain's
transition probabilities and the time grid ``t_k``; the same arrays feed the simulator and the DMFT.

With constant schedules everything stays scalar (the cores' scalar path, bit for bit with the
runs before schedules existed) and ``t_k = k eta``. With a schedule:

- ``t_k = sum_{j<k} eta_j`` (physical time; ``t_0 = 0``), and the run takes the fewest steps with
  ``t_n >= horizon`` (up to rounding);
- the batch mask keeps its stationary fraction equal to ``b_k`` at every step: ``s(0) ~
  Bernoulli(b_0)`` and the transition ``k -> k + 1`` has ``p_on + p_off = r_k`` (the decorrelation
  of the algorithm: ``1`` for i.i.d. SGD, ``eta_k / (b_k tau)`` for persistent SGD,
  ``1 - exp(-eta_k / (b_k tau))`` for the stochastic gradient flow) and
  ``p_on = b_{k+1} - b_k (1 - r_k)``, so that ``P(s(k+1) = 1) = b_k (1 - p_off) + (1 - b_k) p_on
  = b_{k+1}``. With constant ``b`` these are the chains of :mod:`sgdlab.dmft.batch_mask`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sgdlab.core.schedule import Schedule

#: the most steps a run with a schedule may take (its per-step arrays are held in memory)
MAX_SCHEDULE_STEPS = 10**7


class StepPlan(NamedTuple):
    """Per-step numbers; scalars when constant, else arrays: ``eta (n,)`` (step ``k``), ``b (n+1,)``
    (stationary fraction of ``s(k)``), ``p_on, p_off (n,)`` (transition ``k -> k+1``),
    ``times (n+1,)``."""

    n_steps: int
    times: np.ndarray
    eta: float | np.ndarray
    b: float | np.ndarray
    p_on: float | np.ndarray
    p_off: float | np.ndarray

    @property
    def constant(self) -> bool:
        return np.ndim(self.eta) == 0 and np.ndim(self.b) == 0

    @property
    def b0(self) -> float:
        return float(np.ravel(self.b)[0])


def _eta_values(eta: float, schedule: Schedule, horizon: float) -> np.ndarray:
    """``eta_k`` for as many steps as reach ``horizon`` (``t_n >= horizon (1 - 1e-9)``)."""
    n = max(2, int(horizon / eta) + 2)
    while True:
        values = schedule.values(eta, n, key="algorithm.schedule.eta.function")
        if np.any(values <= 0):
            k = int(np.flatnonzero(values <= 0)[0])
            raise ValueError(f"schedule.eta gives eta_k = {values[k]:g} at step {k}; allowed: eta_k > 0")
        t = np.cumsum(values)
        reach = np.flatnonzero(t >= horizon * (1 - 1e-9))
        if reach.size:
            return values[: reach[0] + 1]
        if n >= MAX_SCHEDULE_STEPS:
            raise ValueError(
                f"schedule.eta: {MAX_SCHEDULE_STEPS:.0e} steps reach only t = {t[-1]:.4g} < horizon = {horizon:g}; "
                "lower algorithm.horizon or let the step size decay more slowly"
            )
        n = min(4 * n, MAX_SCHEDULE_STEPS)


def step_plan(algorithm: str, eta: float, b: float, tau: float | None, horizon: float,
              eta_schedule: Schedule, b_schedule: Schedule) -> StepPlan:
    """The :class:`StepPlan` of an algorithm (``gd, sgd, persistent_sgd, sgf, langevin``);
    ``ValueError`` naming the key when a transition probability leaves ``[0, 1]`` or a value
    leaves its range."""
    from sgdlab.dmft.batch_mask import decorrelation, mask_chain

    if eta_schedule.is_constant and b_schedule.is_constant:
        n = int(horizon / eta + 1e-9)
        chain = mask_chain("persistent_sgd" if algorithm == "langevin" else algorithm, eta, b, tau)
        return StepPlan(n, np.arange(n + 1) * eta, eta, b, chain.p_on, chain.p_off)
    etas = _eta_values(eta, eta_schedule, horizon)
    n = etas.size
    times = np.concatenate([[0.0], np.cumsum(etas)])
    bs = b_schedule.values(b, n + 1, key="algorithm.schedule.batch_fraction.function")
    if np.any((bs <= 0) | (bs > 1)):
        k = int(np.flatnonzero((bs <= 0) | (bs > 1))[0])
        raise ValueError(f"schedule.batch_fraction gives b_k = {bs[k]:g} at step {k}; allowed: b_k in (0, 1]")
    kind = "persistent_sgd" if algorithm == "langevin" else algorithm
    if kind == "gd" or np.all(bs == 1.0):
        if not b_schedule.is_constant and kind == "gd":
            raise ValueError("schedule.batch_fraction belongs to minibatch algorithms; gd uses every sample")
        ones = np.ones(n)
        return StepPlan(n, times, etas, np.ones(n + 1), ones, 0.0 * ones)
    if kind != "sgd" and tau is None:
        raise ValueError(f"persistence_time is required for {algorithm} with batch_fraction < 1")
    rate = decorrelation(kind, etas, bs[:-1], tau)
    p_on = bs[1:] - bs[:-1] * (1.0 - rate)
    p_off = rate - p_on
    tol = 1e-12
    for name, p in (("P(0 -> 1)", p_on), ("P(1 -> 0)", p_off)):
        bad = np.flatnonzero((p < -tol) | (p > 1 + tol))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"schedule: the batch-mask transition {name} = {p[k]:.4g} at step {k} leaves [0, 1] "
                f"(eta_k = {etas[k]:g}, b_k = {bs[k]:g} -> {bs[k + 1]:g}, tau = {tau}); raise algorithm.persistence_time, "
                "lower the step size, or let b vary more slowly"
            )
    return StepPlan(n, times, etas, bs, np.clip(p_on, 0.0, 1.0), np.clip(p_off, 0.0, 1.0))

