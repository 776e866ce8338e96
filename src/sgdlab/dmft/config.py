"""Validated experiment configuration (pydantic), with the same keys as the TOML files.

A config has the sections ``[problem]``, ``[algorithm]`` and ``[simulation]`` (see the README for
every key). Defaults are the built-in default experiment: persistent SGD on the two-cluster
mixture with ``alpha = 2, Delta = 0.5, lambda = 0.1``, square loss, ``eta = 0.1, b = 0.3,
tau = 2``, ``d = 2000``, 8 seeds, ``t`` up to 15.

Rules beyond the per-key ranges (each raises :class:`ConfigError` naming the key):

- unknown keys are errors;
- ``gd`` uses every sample: ``batch_fraction`` other than 1 and any ``persistence_time`` are errors;
- ``sgd`` draws i.i.d. batches: its persistence time is ``eta / b`` by definition (an explicit
  different value is an error);
- ``persistent_sgd`` needs ``tau >= eta`` and ``(1 - b) eta <= b tau`` (transition probabilities
  at most 1); ``sgf`` needs only ``tau > 0``;
- ``temperature`` belongs to ``langevin`` only; ``langevin`` defaults to ``b = 1`` (full batch);
- a nonzero ``kappa`` belongs to ``squared_hinge``, a ``threshold`` other than 1 to three clusters,
  which also need a warm
  start ``m0 != 0`` (``m = 0`` is a fixed point of the dynamics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from pydantic import Field, PrivateAttr, field_serializer, field_validator, model_validator

from sgdlab.core.config import ExperimentConfig, Section, validate_config
from sgdlab.core.errors import ConfigError  # noqa: F401  (re-exported: the error of every loader)
from sgdlab.core.schedule import Schedule
from sgdlab.dmft.batch_mask import mask_chain
from sgdlab.dmft.losses import LOSS_NAMES, resolve_loss
from sgdlab.dmft.problem import GaussianMixture
from sgdlab.dmft.steps import StepPlan, step_plan


#: the largest scale of alpha, Delta, the ridge, |m0| and sigma0: with every order parameter and
#: loss at most ~1e12 x its natural size, float32 simulations (range 3e38) stay finite for any
#: horizon the step budget allows; beyond, a run could only end in a non-finite value
MAX_SCALE = 1e6


class ProblemConfig(Section):
    """``[problem]``: the Gaussian-mixture classification task."""

    name: Literal["gaussian_mixture"] = "gaussian_mixture"
    clusters: Literal[2, 3] = 2
    alpha: float = Field(2.0, gt=0, le=MAX_SCALE, description="sample ratio n / d, in (0, 1e6]")
    delta: float = Field(0.5, gt=0, le=MAX_SCALE, description="cluster variance Delta, in (0, 1e6]")
    rho: float = Field(0.5, gt=0, lt=1, description="weight of the +1 cluster (two) or of the outer clusters (three), in (0, 1)")
    loss: Any = Field("square", description="square, logistic, squared_hinge, a 'package.module:function' loss(y, z), or a callable")
    kappa: float = Field(0.0, description="margin of the squared hinge")
    threshold: float = Field(1.0, gt=0, description="theta of the even classifier phi(h) = h^2 - theta (three clusters), in (0, inf)")
    ridge: float = Field(0.1, ge=0, le=MAX_SCALE, description="ridge lambda, in [0, 1e6]")
    m0: float = Field(0.0, ge=-MAX_SCALE, le=MAX_SCALE, description="initial overlap: w(0) = m0 v + sigma0 N(0, I), in [-1e6, 1e6]")
    sigma0: float = Field(1.0, ge=0, le=MAX_SCALE, description="initial weight scale, in [0, 1e6]")

    @field_validator("loss")
    @classmethod
    def _loss(cls, v):
        if not (isinstance(v, str) or callable(v)):
            raise ValueError(f"loss = {v!r}; allowed: {', '.join(LOSS_NAMES)}, a 'package.module:function' string or a callable")
        try:
            return resolve_loss(v, key="loss")
        except ValueError as err:
            raise ValueError(str(err).removeprefix("loss: ")) from None

    @field_serializer("loss", when_used="json")
    def _loss_text(self, v):
        from sgdlab.core.functions import spec_of

        return spec_of(v)

    @model_validator(mode="after")
    def _cross_checks(self):
        if self.kappa != 0 and self.loss != "squared_hinge":
            raise ValueError("kappa is the margin of loss = 'squared_hinge' only; remove it or change the loss")
        if self.threshold != 1.0 and self.clusters != 3:
            raise ValueError("threshold belongs to the three-cluster even classifier (clusters = 3) only")
        if self.clusters == 3 and self.m0 == 0:
            raise ValueError("m0 must be nonzero for clusters = 3: m = 0 is a fixed point, a warm start is needed")
        return self

    def to_problem(self) -> GaussianMixture:
        """The hashable problem object used by the numerical cores."""
        return GaussianMixture(**self.model_dump(exclude={"name"}))


#: the largest number of steps a run may take (a run is refused before any computation beyond it)
MAX_STEPS = 10**8
#: the largest number of seeds of one run
MAX_SEEDS = 100_000
#: the largest number of training samples round(alpha d) of a simulation
MAX_SAMPLES = 10**9
#: the default seed batch holds at most this much training data (``n d`` entries per seed; at
#: least one seed): the data of one compiled call, in memory at once
SEED_BATCH_BYTES = 16 * 2**20


class AlgorithmConfig(Section):
    """``[algorithm]``: the training algorithm and its time grid ``t = k eta``."""

    name: Literal["gd", "sgd", "persistent_sgd", "sgf", "langevin"] = "persistent_sgd"
    eta: float = Field(0.1, gt=0, description="learning rate (time step), in (0, inf)")
    batch_fraction: float = Field(0.3, gt=0, le=1, description="batch fraction b, in (0, 1]")
    persistence_time: float | None = Field(2.0, gt=0, le=1e12, description="persistence time tau, in [eta, 1e12] for persistent SGD")
    temperature: float = Field(0.0, ge=0, description="Langevin temperature T, in [0, inf)")
    normalisation: Literal["unnormalised", "normalised"] = "unnormalised"
    horizon: float = Field(15.0, gt=0, description="final time t_max, in [eta, inf)")
    save_every: int = Field(1, ge=1, description="save order parameters every this many steps, in [1, inf)")
    momentum: float = Field(0.0, ge=0, lt=1, description="momentum beta (heavy-ball, or Nesterov with nesterov = true), in [0, 1)")
    nesterov: bool = Field(False, description="Nesterov momentum: the gradient is taken at w_k + beta (w_k - w_{k-1})")
    schedule: "ScheduleConfig" = Field(default_factory=lambda: ScheduleConfig())
    _plan: StepPlan | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self):
        fields = self.model_fields_set
        name = self.name
        if name == "gd" or (name == "langevin" and "batch_fraction" not in fields):
            if "batch_fraction" in fields and self.batch_fraction != 1:
                raise ValueError(f"batch_fraction must be 1 (or omitted) for {name}, which uses every sample; use sgd or persistent_sgd for minibatches")
            self.batch_fraction = 1.0
        if self.batch_fraction == 1.0:
            if "persistence_time" in fields and self.persistence_time is not None and name in ("gd",):
                raise ValueError("persistence_time has no meaning for gd")
            self.persistence_time = None
        elif name == "sgd":
            iid = self.eta / self.batch_fraction
            if "persistence_time" in fields and self.persistence_time is not None and abs(self.persistence_time - iid) > 1e-12 * iid:
                raise ValueError(f"persistence_time of sgd is eta / b = {iid} by definition; omit it or use persistent_sgd")
            self.persistence_time = iid
        elif self.persistence_time is None:
            raise ValueError(f"persistence_time is required for {name} with batch_fraction < 1")
        if "temperature" in fields and self.temperature != 0 and name != "langevin":
            raise ValueError(f"temperature belongs to langevin only (algorithm.name = {name!r})")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov = true needs a momentum > 0")
        if self.horizon < self.eta:
            raise ValueError(f"horizon={self.horizon} must be >= eta={self.eta} (at least one step)")
        if self.horizon / self.eta > MAX_STEPS:
            raise ValueError(f"horizon / eta = {self.horizon / self.eta:.3g} steps; allowed: at most {MAX_STEPS:.0e} (lower algorithm.horizon or raise algorithm.eta)")
        sched = self.schedule
        if not sched.batch_fraction.is_constant:
            if self.batch_fraction == 1.0:
                raise ValueError("schedule.batch_fraction needs a minibatch algorithm with batch_fraction < 1")
            if self.normalisation == "normalised":
                raise ValueError(
                    "schedule.batch_fraction with normalisation = 'normalised' is not supported (the mapping to the "
                    "unnormalised update, eta' = eta/b_k, lambda' = b_k lambda, would make the ridge vary); use 'unnormalised'"
                )
        chain_kind = "persistent_sgd" if name == "langevin" else name
        try:
            mask_chain(chain_kind, self.eta, self.batch_fraction, self.persistence_time)
            self._plan = step_plan(name, self.eta, self.batch_fraction, self.persistence_time, self.horizon,
                                   sched.eta, sched.batch_fraction)
        except ValueError as err:
            raise ValueError(str(err)) from None
        if self.save_every > self.n_steps:
            raise ValueError(f"save_every={self.save_every} must be <= the number of steps {self.n_steps}")
        return self

    @property
    def plan(self) -> StepPlan:
        """The per-step numbers (:class:`sgdlab.dmft.steps.StepPlan`): ``eta_k``, ``b_k``, the mask
        chain and the times ``t_k``."""
        return self._plan

    @property
    def n_steps(self) -> int:
        """Number of steps: ``floor(horizon / eta)`` (up to rounding), or with a step-size schedule
        the fewest steps whose times ``sum eta_k`` reach the horizon."""
        return self._plan.n_steps

    @property
    def n_saves(self) -> int:
        """Number of save blocks; the saved steps are ``j * save_every`` for ``j = 0..n_saves``."""
        return self.n_steps // self.save_every

    def save_times(self) -> np.ndarray:
        """The saved times ``t_{j save_every}``, ``j = 0..n_saves`` (``(n_saves + 1,)``)."""
        return np.asarray(self._plan.times)[: self.n_saves * self.save_every + 1 : self.save_every]


class ScheduleConfig(Section):
    """``[algorithm.schedule]``: step-size and batch-fraction schedules (``[algorithm.schedule.eta]``,
    ``[algorithm.schedule.batch_fraction]``, each a :class:`sgdlab.core.schedule.Schedule` that
    multiplies ``algorithm.eta`` / ``algorithm.batch_fraction``)."""

    eta: Schedule = Field(default_factory=Schedule)
    batch_fraction: Schedule = Field(default_factory=Schedule)


AlgorithmConfig.model_rebuild()


class SimulationConfig(Section):
    """``[simulation]``: size, seeds and precision of the direct simulation."""

    enabled: bool = Field(True, description="run the direct simulation; false: the [theory] methods only (e.g. a DMFT phase diagram)")
    d: int = Field(2000, ge=2, description="dimension, in [2, inf)")
    seeds: int | list[int] = Field(8, description="number of seeds (0..n-1) or an explicit list of seeds")
    dtype: Literal["float32", "float64"] = "float32"
    test_samples: int = Field(0, ge=0, description="size of a sampled test set to check the exact test error (0: none)")
    seed_batch: int | None = Field(None, ge=1, le=MAX_SEEDS, description="seeds in one compiled call (their data in memory at once), in [1, 100000]; default: as many as hold 16 MiB of data, at least 1")

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v):
        if isinstance(v, int):
            if not 1 <= v <= MAX_SEEDS:
                raise ValueError(f"seeds={v} must be >= 1 and <= {MAX_SEEDS} (a count) or a list of seeds")
        else:
            if not v:
                raise ValueError("seeds must not be an empty list")
            if any(s < 0 or s >= 2**31 for s in v) or len(set(v)) != len(v) or len(v) > MAX_SEEDS:
                raise ValueError(f"seeds={v} must be at most {MAX_SEEDS} distinct non-negative integers below 2^31")
        return v

    @property
    def seed_list(self) -> list[int]:
        """The seeds as a list of integers."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class TheoryConfig(Section):
    """``[theory]``: which theories to solve beside the simulation, and the DMFT solver's options."""

    methods: list[Literal["dmft"]] = Field(default_factory=list, description="theories to compute, e.g. [\"dmft\"]")
    samples: int = Field(10000, ge=2, description="DMFT effective trajectories N of one solve, in [2, inf)")
    solves: int = Field(4, ge=2, le=256, description="independent DMFT solves averaged; their spread is the standard error, in [2, 256]")
    damping: float = Field(0.3, ge=0, lt=1, description="DMFT damping: K <- damping K + (1 - damping) K_new, in [0, 1)")
    iterations: int = Field(50, ge=1, le=100_000, description="maximum DMFT fixed-point iterations, in [1, 100000]")
    tolerance: float = Field(1e-4, gt=0, le=1, description="DMFT stopping tolerance on the relative kernel change, in (0, 1]")
    seed: int = Field(0, ge=0, lt=2**32, description="DMFT random stream, in [0, 2^32)")
    response: Literal["probe", "stein"] = "probe"
    start: Literal["march", "zero"] = "march"

    @field_validator("methods")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"methods={v} lists a method twice")
        return v


class Config(ExperimentConfig):
    """A full experiment; ``Config()`` is the built-in default experiment (without the DMFT)."""

    fixed_keys: ClassVar[dict[str, str]] = {
        "simulation.seeds": "seeds are the seed dimension of every point",
        "problem.name": "a sweep varies one problem's parameters",
    }

    problem: ProblemConfig = Field(default_factory=ProblemConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    theory: TheoryConfig = Field(default_factory=TheoryConfig)

    @model_validator(mode="after")
    def _theory_fits_the_grid(self):
        if "dmft" in self.theory.methods:
            need = 2 * (self.algorithm.n_saves * self.algorithm.save_every + 1)
            if self.theory.samples < need:
                raise ValueError(
                    f"theory.samples={self.theory.samples} must be >= 2 (n_steps + 1) = {need} for the DMFT's "
                    f"response regression (n_steps = algorithm.horizon / algorithm.eta = {self.algorithm.n_steps}); "
                    "raise theory.samples, shorten algorithm.horizon or raise algorithm.eta"
                )
        self._check_sizes(dmft="dmft" in self.theory.methods)
        if not self.simulation.enabled and not self.theory.methods:
            raise ValueError("simulation.enabled = false needs a theory: set theory.methods = [\"dmft\"]")
        return self

    def seed_batch_width(self) -> int:
        """Seeds in one compiled call (their training data in memory at once):
        ``simulation.seed_batch``, else as many as hold :data:`SEED_BATCH_BYTES` of training data,
        at least 1. On a CPU the entries of a call run one after the other, so the width bounds
        memory and the number of calls and changes no number; on a GPU they are vmapped. The
        automatic width is not capped by the number of seeds: a sweep task fills its calls with
        the seeds of several points."""
        sim = self.simulation
        if sim.seed_batch:
            return sim.seed_batch
        per_seed = self.problem.to_problem().n_samples(sim.d) * sim.d * (8 if sim.dtype == "float64" else 4)
        return max(1, SEED_BATCH_BYTES // per_seed)

    def _check_sizes(self, dmft: bool, replicas: int = 1, solves: int = 1) -> None:
        """Refuse (``ValueError`` naming the keys) a sample count out of range or arrays that would
        not fit in memory; ``replicas`` weight vectors per seed and ``solves`` DMFT solves at once
        (the noise study's)."""
        n = self.problem.alpha * self.simulation.d
        if self.simulation.enabled and not 1 <= n <= MAX_SAMPLES:
            raise ValueError(
                f"problem.alpha * simulation.d = {n:.3g} training samples; allowed: 1 to {MAX_SAMPLES:.0e} "
                "(the simulation draws round(alpha d) samples)"
            )
        why = self._memory_problem(dmft, replicas, solves)
        if why is not None:
            raise ValueError(why)

    def _memory_problem(self, dmft: bool | None = None, replicas: int = 1, solves: int = 1) -> str | None:
        """The refusal message if the run's largest arrays would not fit in memory."""
        from sgdlab.core.memory import memory_problem

        dmft = "dmft" in self.theory.methods if dmft is None else dmft

        sim, alg = self.simulation, self.algorithm
        if sim.enabled:
            n = self.problem.to_problem().n_samples(sim.d)
            itemsize = 8 if sim.dtype == "float64" else 4
            n_seeds = sim.seeds if isinstance(sim.seeds, int) else len(sim.seeds)
            # the noise study's replicas run every seed at once
            batch = n_seeds if replicas > 1 else min(self.seed_batch_width(), n_seeds)
            # x (+ its generation temporaries, and on a CPU the copy of the entry being run), weights
            data = batch * ((n + sim.test_samples) * 3 + 4 * replicas) * sim.d * itemsize
            why = memory_problem(data, f"the simulation ({batch} seeds x {n} samples x d = {sim.d})",
                                 "simulation.d, problem.alpha, simulation.seed_batch or simulation.test_samples"
                                 + (" (or noise.n_replicas)" if replicas > 1 else ""))
            if why:
                return why
        if dmft:
            steps = alg.n_saves * alg.save_every + 1
            need = 8.0 * (12 * self.theory.samples * steps + 8 * steps * steps)  # N x T fields, T x T kernels
            return memory_problem(need, f"the DMFT ({self.theory.samples} samples x {steps} times)",
                                  "theory.samples or algorithm.horizon (or raise algorithm.eta)")
        return None


def load_config(source: Config | dict[str, Any] | str | Path | None = None) -> Config:
    """A validated :class:`Config` from a Config, a dict, a TOML path, or ``None`` (the built-in
    default experiment ``examples/run/default.toml``: the model defaults plus DMFT beside the simulation).

    Raises :class:`ConfigError` with one line per problem, each naming the key.
    """
    if source is None:
        from importlib import resources

        source = Path(str(resources.files("sgdlab") / "examples" / "run" / "default.toml"))
    return validate_config(Config, source)
