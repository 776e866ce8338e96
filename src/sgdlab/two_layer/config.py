"""The config of ``sgdlab timescales`` (study ``two_layer``): TOML tables and their validation.

TOML layout (``sgdlab timescales CONFIG.toml``; every key documented in docs/timescales.md)::

    name, description, seed
    [problem]   degree, target, activation (Hermite coefficients, names, 'module:function' or callables)
    [dynamics]  eps, train_second_layer, a_scale, a_law, t_min, t_max, n_times, rtol, atol, max_steps
    [flow]      enabled, d, m, seeds, solver
    [sgd]       enabled, d, m, seeds, eta, batch
    [reduced]   enabled, m, solver
    [scan]      eps (list), t_max, n_times, d (list: the d scan of the flow)
    [sweep]     optional: dotted keys -> lists, run on the core sweep engine

``eps`` is the ratio of the first- to the second-layer learning rate (BMZ's ``epsilon``), ``eta``
the step of online SGD (first layer ``eta``, second layer ``eta / eps``; time ``t = k eta``).
Every error is a :class:`~sgdlab.core.errors.ConfigError` naming the full key, raised before any
computation; so is a run whose largest arrays would not fit in the memory available now
(:meth:`TimescalesConfig.memory_estimates`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_serializer, field_validator, model_validator

from sgdlab.core.config import ExperimentConfig, Section, validate_config
from sgdlab.core.functions import FunctionError, check_traceable, is_import_string, resolve, spec_of
from sgdlab.core.memory import memory_problem
from sgdlab.two_layer.problem import NAMED_FUNCTIONS, Projection, SingleIndex, hermite_projection

__all__ = ["TSDynamics", "TSFlow", "TSProblem", "TSReduced", "TSScan", "TSSGD", "TimescalesConfig", "load_config", "log_grid"]


def log_grid(t_min: float, t_max: float, n: int) -> np.ndarray:
    """``n`` log-spaced times from ``t_min`` to ``t_max``."""
    return np.logspace(np.log10(t_min), np.log10(t_max), n)


#: truncation errors ``||f - P_K f|| / ||f||`` above this are flagged in the table (and the attrs)
TRUNCATION_WARN = 1e-3
#: ... and above this refused: the degree-K polynomial would be another function
TRUNCATION_REFUSE = 0.25
FunctionSpec = str | list[float] | Callable[..., Any]


class TSProblem(Section):
    """``[problem]``: target ``phi`` and activation ``sigma``, each a built-in name, a list of
    Hermite coefficients, a ``"package.module:function"`` import string (TOML) or a JAX-traceable
    callable (Python); functions are projected on degrees ``0..degree``
    (:func:`~sgdlab.two_layer.problem.hermite_projection`)."""

    degree: int = Field(3, ge=1, le=8, description="Hermite truncation K (functions are projected on 0..K), in [1, 8]")
    target: FunctionSpec = Field([0.0, 1.0, 1.0, 1.0], description="coefficients phi_0..phi_K, a name (relu, tanh, erf, ...), 'module:function' or a callable")
    activation: FunctionSpec = Field([0.0, 1.0, 1.0, 1.0], description="coefficients sigma_0..sigma_K, a name, 'module:function' or a callable")

    @field_validator("target", "activation")
    @classmethod
    def _function(cls, v, info: ValidationInfo):
        if isinstance(v, list):
            return v
        key = f"problem.{info.field_name}"
        if isinstance(v, str) and v not in NAMED_FUNCTIONS and not is_import_string(v) and not v.startswith("<python:"):
            raise ValueError(f"unknown function {v!r}; use one of {sorted(NAMED_FUNCTIONS)}, a 'package.module:function' "
                             "import string or a list of Hermite coefficients")
        try:
            fn = _function_of(v, key)
            if not isinstance(fn, str):  # elementwise on a vector and on a scalar (the quadrature's calls)
                check_traceable(fn, (np.zeros(5),), key=key)
                check_traceable(fn, (np.zeros(()),), key=key)
            if "degree" in info.data:  # the truncation error at this degree (quadrature, cached)
                proj = hermite_projection(fn, info.data["degree"])
        except FunctionError as err:
            raise ValueError(_without_key(str(err), key, v)) from None
        if "degree" in info.data and proj.relative > TRUNCATION_REFUSE:
            raise ValueError(
                f"projected on Hermite degrees 0..{info.data['degree']} it leaves ||f - P f|| = {proj.remainder:.3g}, "
                f"{proj.relative:.1%} of ||f|| = {proj.norm:.3g} (more than {TRUNCATION_REFUSE:.0%}): raise problem.degree "
                "(at most 8) or give the Hermite coefficients as a list")
        return v

    @field_serializer("target", "activation")
    def _spec(self, v):
        """A callable is stored as its import string (``<python:NAME>`` if it cannot be imported)."""
        return spec_of(v) if callable(v) else v

    @model_validator(mode="after")
    def _check(self):
        for key in ("target", "activation"):
            v = getattr(self, key)
            if isinstance(v, list) and len(v) > self.degree + 1:
                raise ValueError(f"problem.{key} has {len(v)} coefficients but degree={self.degree} (at most degree + 1)")
            if isinstance(v, list) and not any(v):
                raise ValueError(f"problem.{key} coefficients are all zero")
        return self

    def projections(self) -> dict[str, Projection]:
        """``{"target": Projection, "activation": Projection}`` for the keys given as functions
        (names, import strings, callables); coefficient lists are exact and not listed."""
        out = {}
        for key in ("target", "activation"):
            v = getattr(self, key)
            if not isinstance(v, list):
                out[key] = hermite_projection(_function_of(v, f"problem.{key}"), self.degree)
        return out

    def to_problem(self) -> SingleIndex:
        """The hashable :class:`~sgdlab.two_layer.problem.SingleIndex` (functions projected on
        degrees ``0..degree`` by quadrature)."""
        proj = self.projections()

        def coef(key):
            x = getattr(self, key)
            if key in proj:
                return tuple(float(c) for c in proj[key].coefficients)
            return tuple(float(c) for c in x) + (0.0,) * (self.degree + 1 - len(x))

        return SingleIndex(phi=coef("target"), sigma=coef("activation"))


def _function_of(value, key: str):
    """A built-in name as it is (:func:`hermite_projection` knows its kinks), anything else resolved
    to its callable (:func:`sgdlab.core.functions.resolve`)."""
    if isinstance(value, str) and value in NAMED_FUNCTIONS:
        return value
    return resolve(value, key=key, builtins=NAMED_FUNCTIONS)


def _without_key(message: str, key: str, value) -> str:
    """A :class:`FunctionError` message without its leading ``key`` (the config error adds it)."""
    for prefix in (f"{key} = {value!r}: ", f"{key} = {value!r} ", f"{key}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


class TSDynamics(Section):
    """``[dynamics]``: learning-rate ratio, second layer, initialisation and the log time grid."""

    eps: float = Field(1e-2, gt=0, le=1, description="ratio eps of first- to second-layer learning rate, in (0, 1]")
    train_second_layer: bool = True
    a_scale: float = Field(1.0, gt=0, description="initial second layer: uniform on [-a_scale, a_scale] or N(0, a_scale^2), in (0, inf)")
    a_law: Literal["uniform", "gaussian"] = "uniform"
    t_max: float = Field(2.0, gt=0, le=1e12, description="final time, in (0, 1e12]")
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
    solver: Literal["auto", "tsit5", "kvaerno5"] = Field("auto", description="auto (tsit5; kvaerno5 if m <= 24 and tsit5 runs out of its budget), tsit5 (explicit) or kvaerno5 (implicit, dense (m^2)-Jacobian: m <= 24)")

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
    m: int = Field(64, ge=2, le=512, description="particles, in [2, 512]")
    solver: Literal["auto", "tsit5", "kvaerno5"] = Field("auto", description="auto (tsit5 unless stiff: then kvaerno5), tsit5 (explicit) or kvaerno5 (implicit, cost ~ m^3 per step)")


class TSScan(Section):
    """``[scan]``: the axes the study itself needs, inside one run: ``eps`` values for the exponent
    fit ``t_l ~ eps^{1/(2l)}`` of the reduced dynamics, ``d`` values for the convergence of ``t_l``
    in ``d`` of the finite-``d`` flow (empty lists: no scan)."""

    eps: list[float] = Field(default_factory=list, description="eps values, each in (0, 1), at least 3 (empty: no scan)")
    t_max: float = Field(0.3, gt=0, le=1e12, description="final time of every scan run, in (0, 1e12]")
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
        for need, what, keys in self.memory_estimates():
            why = memory_problem(need, what, keys)
            if why is not None:
                raise ValueError(why)
        return self

    def memory_estimates(self) -> list[tuple[float, str, str]]:
        """``(bytes, what, keys)`` of the largest arrays of every enabled part (they run one after
        the other), float64. Online SGD, all seeds at once (vmapped): per seed ``u``, its gradient
        and two update temporaries (``4 m d``), the batch and its features (``2 B d + 3 B m``) and
        the Mehler risk's ``(m, m, K+1)`` powers of the Gram matrix. Flow, all seeds at once: those
        powers, ~20 copies of the ``m^2 + 2m`` state (solver stages, error estimate, interpolation),
        the saved ``(n_t, 2m + 2K + 2)`` observables twice (the solver's buffer, ``n_t`` padded to a
        power of two, and the result), the initial ``m x d`` vectors when ``d <= m + 1000`` and, for
        the implicit solver (``m <= 24``), 8 copies of its Jacobian. Reduced: the saved observables
        twice and 8 copies of the ``(2m)^2`` Jacobian. Checked against XLA's memory analysis of the
        compiled programs (tests/two_layer/test_two_layer_run_fuzz.py): 1.2-2x above it."""
        K, out = self.problem.degree, []
        bucket = lambda n: max(16, 1 << (int(n) - 1).bit_length())  # noqa: E731  (flow.padded_times)
        if self.sgd.enabled:
            g = self.sgd
            per_seed = 4 * g.m * g.d + 2 * g.batch * g.d + 3 * g.batch * g.m + (K + 3) * g.m**2
            out.append((8.0 * g.seeds * per_seed, f"online SGD ({g.seeds} seeds x m = {g.m} x d = {g.d})",
                        "sgd.seeds, sgd.m, sgd.d or sgd.batch"))
        if self.flow.enabled:
            f = self.flow
            n = f.m * f.m + 2 * f.m
            saved = 2 * bucket(self.dynamics.n_times) * (2 * f.m + 2 * K + 2)
            per_seed = (K + 3) * f.m**2 + 20 * n + saved + (8 * n * n if f.m <= 24 and f.solver != "tsit5" else 0)
            d_max = max([f.d, *self.scan.d])
            per_seed += f.m * d_max if d_max <= f.m + 1000 else 0
            out.append((8.0 * f.seeds * per_seed, f"the finite-d flow ({f.seeds} seeds x m = {f.m}, {self.dynamics.n_times} times)",
                        "flow.seeds, flow.m or dynamics.n_times"))
        if self.reduced.enabled or self.scan.eps:
            r = self.reduced
            saved = 2 * bucket(max(self.dynamics.n_times, self.scan.n_times or 0)) * (2 * r.m + 2 * K + 2)
            out.append((8.0 * (saved + 8 * (2 * r.m) ** 2), f"the reduced dynamics (m = {r.m})",
                        "reduced.m, dynamics.n_times or scan.n_times"))
        return out


def default_config_path() -> Path:
    """The built-in default example ``examples/timescales/default.toml``."""
    from importlib import resources

    return Path(str(resources.files("sgdlab") / "examples" / "timescales" / "default.toml"))


def load_config(source: TimescalesConfig | dict[str, Any] | str | Path | None = None) -> TimescalesConfig:
    """A validated config from itself, a dict of TOML keys, a TOML path or ``None`` (the
    built-in ``default`` example). Raises :class:`~sgdlab.core.errors.ConfigError` with one line
    per problem, each naming the key."""
    return validate_config(TimescalesConfig, default_config_path() if source is None else source)
