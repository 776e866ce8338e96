"""The config of ``sgdlab timescales`` (study ``two_layer``): TOML tables and their validation.

TOML layout (``sgdlab timescales CONFIG.toml``; every key documented in docs/timescales.md)::

    name, description, seed
    [problem]   target, activation (names or Hermite coefficients), degree
    [dynamics]  eps, train_second_layer, a_scale, a_law, t_min, t_max, n_times, rtol, atol, max_steps
    [flow]      enabled, d, m, seeds, solver
    [sgd]       enabled, d, m, seeds, eta, batch
    [reduced]   enabled, m, solver
    [scan]      eps (list), t_max, n_times, d (list: the d scan of the flow)
    [sweep]     optional: dotted keys -> lists, run on the core sweep engine

``eps`` is the ratio of the first- to the second-layer learning rate (BMZ's ``epsilon``), ``eta``
the step of online SGD (first layer ``eta``, second layer ``eta / eps``; time ``t = k eta``).
Every error is a :class:`~sgdlab.core.errors.ConfigError` naming the full key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from sgdlab.core.config import ExperimentConfig, Section, validate_config
from sgdlab.two_layer.problem import NAMED_FUNCTIONS, SingleIndex, hermite_coefficients

__all__ = ["TSDynamics", "TSFlow", "TSProblem", "TSReduced", "TSScan", "TSSGD", "TimescalesConfig", "load_config", "log_grid"]


def log_grid(t_min: float, t_max: float, n: int) -> np.ndarray:
    """``n`` log-spaced times from ``t_min`` to ``t_max``."""
    return np.logspace(np.log10(t_min), np.log10(t_max), n)


class TSProblem(Section):
    """``[problem]``: target ``phi`` and activation ``sigma`` (a name or Hermite coefficients)."""

    target: str | list[float] = Field([0.0, 1.0, 1.0, 1.0], description="name (relu, tanh, erf, ...) or coefficients phi_0..phi_K")
    activation: str | list[float] = Field([0.0, 1.0, 1.0, 1.0], description="name or coefficients sigma_0..sigma_K")
    degree: int = Field(3, ge=1, le=8, description="Hermite truncation K (named functions are projected on 0..K), in [1, 8]")

    @field_validator("target", "activation")
    @classmethod
    def _known(cls, v):
        if isinstance(v, str) and v not in NAMED_FUNCTIONS:
            raise ValueError(f"unknown function {v!r}; use one of {sorted(NAMED_FUNCTIONS)} or a list of Hermite coefficients")
        return v

    @model_validator(mode="after")
    def _check(self):
        for key in ("target", "activation"):
            v = getattr(self, key)
            if isinstance(v, list) and len(v) > self.degree + 1:
                raise ValueError(f"problem.{key} has {len(v)} coefficients but degree={self.degree} (at most degree + 1)")
            if isinstance(v, list) and not any(v):
                raise ValueError(f"problem.{key} coefficients are all zero")
        return self

    def to_problem(self) -> SingleIndex:
        """The hashable :class:`~sgdlab.two_layer.problem.SingleIndex` (named functions
        projected on degrees ``0..degree`` by quadrature)."""

        def coef(x):
            if isinstance(x, str):
                return tuple(float(c) for c in hermite_coefficients(x, self.degree))
            return tuple(float(c) for c in x) + (0.0,) * (self.degree + 1 - len(x))

        return SingleIndex(phi=coef(self.target), sigma=coef(self.activation))


class TSDynamics(Section):
    """``[dynamics]``: learning-rate ratio, second layer, initialisation and the log time grid."""

    eps: float = Field(1e-2, gt=0, le=1, description="ratio eps of first- to second-layer learning rate, in (0, 1]")
    train_second_layer: bool = True
    a_scale: float = Field(1.0, gt=0, description="initial second layer: uniform on [-a_scale, a_scale] or N(0, a_scale^2), in (0, inf)")
    a_law: Literal["uniform", "gaussian"] = "uniform"
    t_max: float = Field(2.0, gt=0, description="final time, in (0, inf)")
    t_min: float | None = Field(None, gt=0, description="first saved time, in (0, t_max) (default eps / 100)")
    n_times: int = Field(81, ge=10, le=2000, description="log-spaced saved times, in [10, 2000]")
    rtol: float = Field(1e-7, gt=0, lt=1e-2, description="ODE solver relative tolerance, in (0, 0.01)")
    atol: float = Field(1e-12, gt=0, lt=1e-3, description="ODE solver absolute tolerance, in (0, 0.001)")
    max_steps: int = Field(50_000, ge=100, le=10_000_000, description="ODE solver step budget, in [100, 1e7]")

    @model_validator(mode="after")
    def _check(self):
        if self.t_min is not None and self.t_min >= self.t_max:
            raise ValueError(f"dynamics.t_min={self.t_min} must be < dynamics.t_max={self.t_max}")
        return self

    @property
    def grid(self) -> np.ndarray:
        """The log-spaced save times ``(n_times,)``."""
        return log_grid(self.t_min or self.eps / 100, self.t_max, self.n_times)


class TSFlow(Section):
    """``[flow]``: the exact finite-``d`` population flow (cost ``O(m^3)`` per step, independent of ``d``)."""

    enabled: bool = True
    d: int = Field(100_000, ge=2, le=10**18, description="dimension, in [2, 1e18] (its cost does not depend on d)")
    m: int = Field(64, ge=1, le=256, description="neurons, in [1, 256]")
    seeds: int = Field(2, ge=1, le=64, description="random first-layer initialisations, in [1, 64]")
    solver: Literal["tsit5", "kvaerno5"] = Field("tsit5", description="tsit5 (explicit, O(t_max/eps) steps) or kvaerno5 (implicit, dense (m^2)-Jacobian: m <= 24)")

    @model_validator(mode="after")
    def _check(self):
        if self.solver == "kvaerno5" and self.m > 24:
            raise ValueError(f"flow.solver='kvaerno5' factorises an (m^2 + 2m)-square Jacobian: use m <= 24 (got m={self.m}) or solver='tsit5'")
        return self


class TSSGD(Section):
    """``[sgd]``: online SGD, fresh samples each step; first-layer step ``eta``, time ``t = k eta``."""

    enabled: bool = True
    d: int = Field(2000, ge=2, le=200_000, description="dimension, in [2, 200000]")
    m: int = Field(64, ge=1, le=4096, description="neurons, in [1, 4096]")
    seeds: int = Field(4, ge=1, le=256, description="seeds, in [1, 256]")
    eta: float = Field(2e-4, gt=0, description="SGD step size: first layer eta, second layer eta/eps; in (0, eps) and < t_max; needs eta d / batch << 1")
    batch: int = Field(8, ge=1, le=4096, description="fresh samples per step, in [1, 4096]")


class TSReduced(Section):
    """``[reduced]``: the reduced ``(a, s)`` dynamics with ``m`` particles (deterministic quantiles)."""

    enabled: bool = True
    m: int = Field(64, ge=2, le=512, description="particles, in [2, 512] (implicit solver: cost ~ m^3 per step)")
    solver: Literal["kvaerno5", "tsit5"] = Field("kvaerno5", description="kvaerno5 (implicit, stiff: any eps) or tsit5 (explicit: O(t_max/eps) steps, eps >~ 1e-3)")


class TSScan(Section):
    """``[scan]``: the axes the study itself needs, inside one run: ``eps`` values for the exponent
    fit ``t_l ~ eps^{1/(2l)}`` of the reduced dynamics, ``d`` values for the convergence of ``t_l``
    in ``d`` of the finite-``d`` flow (empty lists: no scan)."""

    eps: list[float] = Field(default_factory=list, description="eps values, each in (0, 1), at least 3 (empty: no scan)")
    t_max: float = Field(0.3, gt=0, description="final time of every scan run, in (0, inf)")
    n_times: int | None = Field(None, ge=10, le=4000, description="log-spaced saved times from min(eps)/100 to t_max, in [10, 4000] (default: dynamics.n_times, which reuses the compiled solver of the main run)")
    d: list[int] = Field(default_factory=list, description="dimensions of a d-scan of the finite-d flow at dynamics.eps (flow.m, flow.seeds), each >= 2 (empty: no d-scan)")

    @field_validator("d")
    @classmethod
    def _dims(cls, v):
        if any(x < 2 for x in v):
            raise ValueError(f"every scan.d value must be >= 2 (got {v})")
        if len(set(v)) != len(v):
            raise ValueError(f"scan.d lists a value twice (got {v})")
        return sorted(v)

    @field_validator("eps")
    @classmethod
    def _eps(cls, v):
        if any(not 0 < e < 1 for e in v):
            raise ValueError(f"every scan.eps value must lie in (0, 1) (got {v})")
        if v and len(v) < 3:
            raise ValueError("scan.eps needs >= 3 values for an exponent with a confidence interval")
        if len(set(v)) != len(v):
            raise ValueError(f"scan.eps lists a value twice (got {v})")
        return sorted(v)


class TimescalesConfig(ExperimentConfig):
    """A full ``sgdlab timescales`` study; ``TimescalesConfig()`` are the model defaults."""

    #: the in-run scans are axes of the study's own fit / check (one coordinate each): a sweep
    #: over them would give every point a different coordinate
    fixed_keys: ClassVar[dict[str, str]] = {
        "scan.eps": "the study's own axis: the exponent of t_l ~ eps^(1/2l) is fitted over the whole list",
        "scan.d": "the study's own axis: the convergence of t_l in d is read over the whole list",
    }

    seed: int = Field(0, ge=0, lt=2**32, description="root random seed, in [0, 2^32)")
    problem: TSProblem = Field(default_factory=TSProblem)
    dynamics: TSDynamics = Field(default_factory=TSDynamics)
    flow: TSFlow = Field(default_factory=TSFlow)
    sgd: TSSGD = Field(default_factory=TSSGD)
    reduced: TSReduced = Field(default_factory=TSReduced)
    scan: TSScan = Field(default_factory=TSScan)

    @model_validator(mode="after")
    def _cross(self):
        if self.sgd.enabled and self.sgd.eta >= self.dynamics.eps:
            raise ValueError(f"sgd.eta={self.sgd.eta} must be < dynamics.eps={self.dynamics.eps} (the second-layer step is eta/eps)")
        if self.sgd.enabled and self.sgd.eta >= self.dynamics.t_max:
            raise ValueError(f"sgd.eta={self.sgd.eta} must be < dynamics.t_max={self.dynamics.t_max}")
        if not (self.flow.enabled or self.sgd.enabled or self.reduced.enabled):
            raise ValueError("enable at least one of flow, sgd, reduced")
        return self


def default_config_path() -> Path:
    """The built-in default example ``examples/timescales/default.toml``."""
    from importlib import resources

    return Path(str(resources.files("sgdlab") / "examples" / "timescales" / "default.toml"))


def load_config(source: TimescalesConfig | dict[str, Any] | str | Path | None = None) -> TimescalesConfig:
    """A validated config from itself, a dict of TOML keys, a TOML path or ``None`` (the
    built-in ``default`` example). Raises :class:`~sgdlab.core.errors.ConfigError` with one line
    per problem, each naming the key."""
    return validate_config(TimescalesConfig, default_config_path() if source is None else source)
