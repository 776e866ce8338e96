"""The config of ``sgdlab manifold``: model, noise, step sizes, limit solver, figure.

TOML layout (every key is optional; ``sgdlab manifold --example default`` shows one)::

    name = "manifold_hyperbola_label_noise"     # names the outputs
    description = "..."
    [model]       name = "hyperbola" | "two_unit" | "diagonal" | "tanh", init = [...], model keys
    [noise]       name, sigma, sigma_scaling, distribution, batch_size
    [simulation]  etas, runs, tau_max, tau_save, seed, max_steps
    [limit]       kind, substeps, phi_tol, rank_rtol
    [plot]        variables
    [sweep]       optional: dotted keys of any table but simulation.etas (see docs/manifold.md)

``simulation.etas`` (the step sizes; the paper's alpha is our eta) is part of one run, not a sweep
axis: the result compares the simulations at several eta with the eta -> 0 limit.

This module is pure pydantic (cheap to import); the models and solvers are built in
:mod:`sgdlab.manifold.experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from sgdlab.core.config import ExperimentConfig, Section, validate_config

__all__ = [
    "DEFAULT_PHI_TOL",
    "DEFAULT_RANK_RTOL",
    "ManifoldConfig",
    "ManifoldLimitConfig",
    "ManifoldModelConfig",
    "ManifoldNoiseConfig",
    "ManifoldPlotConfig",
    "ManifoldSimulationConfig",
    "load_config",
]

#: the built-in noises (:data:`sgdlab.manifold.injections.NOISE_NAMES`; a test checks they agree)
NOISE_NAMES = ("label_noise", "dropout", "dropconnect", "perturbed_gd", "anticorrelated_perturbed_gd", "sgld", "minibatch_sgd")

#: the limit solver's defaults (:data:`sgdlab.manifold.limit.PHI_TOL`, ``RANK_RTOL``; a test checks
#: they agree), written here so that loading a config does not import the solver
DEFAULT_PHI_TOL = 1e-12
DEFAULT_RANK_RTOL = 1e-8

#: noises whose limit can be an SDE with one path per run (SGLD always; Dropout and DropConnect
#: when their noise has a tangent part): the memory estimate counts the limit's paths for them
STOCHASTIC_LIMITS = ("sgld", "dropout", "dropconnect")

#: Model keys beyond ``name`` and ``init``, and the models they belong to.
MODEL_KEYS = {
    "n": ("hyperbola", "diagonal", "tanh"),
    "d": ("diagonal",),
    "sparsity": ("diagonal",),
    "init_scale": ("diagonal",),
    "width": ("tanh",),
    "input_dim": ("tanh",),
    "data_seed": ("diagonal", "tanh"),
}
DISTRIBUTIONS = {
    "label_noise": ("gaussian", "rademacher"),
    "perturbed_gd": ("gaussian", "rademacher"),
    "anticorrelated_perturbed_gd": ("gaussian",),
    "sgld": ("gaussian",),
    "dropout": ("bernoulli", "gaussian"),
    "dropconnect": ("bernoulli", "gaussian"),
    "minibatch_sgd": (),
}


class ManifoldModelConfig(Section):
    """``[model]``: which model, its data and the initial weights."""

    name: Literal["hyperbola", "two_unit", "diagonal", "tanh"] = "hyperbola"
    init: list[float] | None = Field(None, description="initial weights w0 (length p of the model); default: the model's")
    n: int | None = Field(None, ge=1, le=10_000, description="number of samples, in [1, 10000] (hyperbola: default 1; diagonal: < d; tanh: <= input_dim)")
    d: int | None = Field(None, ge=2, le=2000, description="diagonal network dimension, in [2, 2000]")
    sparsity: int | None = Field(None, ge=0, description="number of nonzero entries of beta*, in [0, d]")
    init_scale: float | None = Field(None, gt=0, description="diagonal network start u = v = init_scale, in (0, inf)")
    width: int | None = Field(None, ge=1, le=256, description="tanh network width, in [1, 256]")
    input_dim: int | None = Field(None, ge=1, le=256, description="tanh network input dimension, in [1, 256]")
    data_seed: int | None = Field(None, ge=0, description="seed of the data (diagonal, tanh), in [0, inf)")

    @model_validator(mode="after")
    def _keys_belong(self):
        for key, owners in MODEL_KEYS.items():
            if getattr(self, key) is not None and self.name not in owners:
                raise ValueError(f"model.{key} belongs to the {' / '.join(owners)} model(s), not to model.name = {self.name!r}")
        if self.name == "diagonal":
            d = self.d if self.d is not None else 12
            n = self.n if self.n is not None else 6
            if n >= d:
                raise ValueError(f"model.n={n} must be < model.d={d} (fewer data than dimensions)")
            if self.sparsity is not None and self.sparsity > d:
                raise ValueError(f"model.sparsity={self.sparsity} must be in [0, model.d={d}]")
        if self.name == "tanh":
            n, d = (self.n or 4), (self.input_dim or 4)
            if n > d:
                raise ValueError(f"model.n={n} must be <= model.input_dim={d} (orthonormal inputs; fewer data than parameters)")
        if self.init is not None and len(self.init) != self.n_params:
            raise ValueError(f"model.init must have {self.n_params} entries for model.name = {self.name!r} (got {len(self.init)})")
        return self

    @property
    def n_params(self) -> int:
        """Number of weights ``p`` of the configured model."""
        if self.name == "hyperbola":
            return 2
        if self.name == "two_unit":
            return 4
        if self.name == "diagonal":
            return 2 * (self.d if self.d is not None else 12)
        return (self.width or 3) * ((self.input_dim or 4) + 1)

    @property
    def n_samples(self) -> int:
        """Number of samples ``n`` of the configured model."""
        return self.n if self.n is not None else {"hyperbola": 1, "two_unit": 1, "diagonal": 6, "tanh": 4}[self.name]

    @property
    def n_units(self) -> int:
        """Number of hidden units ``u`` of the configured model (0: none)."""
        return {"hyperbola": 0, "two_unit": 2, "diagonal": self.d or 12, "tanh": self.width or 3}[self.name]

    @property
    def n_observables(self) -> int:
        """Number of saved observables (the model's own and the loss)."""
        return {"hyperbola": 3, "two_unit": 6, "diagonal": 6, "tanh": 3}[self.name]


class ManifoldNoiseConfig(Section):
    """``[noise]``: the injected noise and its scale."""

    name: Any = Field("label_noise", description="label_noise, dropout, dropconnect, perturbed_gd, anticorrelated_perturbed_gd, sgld, "
                      "minibatch_sgd, a 'package.module:factory' string or a callable factory(sigma) -> NoiseInjection")
    sigma: float | None = Field(None, gt=0, le=100, description="noise scale sigma (at etas[0]), in (0, 100]; not for minibatch_sgd")
    sigma_scaling: Literal["fixed", "sqrt_eta"] = "fixed"
    distribution: Literal["gaussian", "rademacher", "bernoulli"] | None = None
    batch_size: int | None = Field(None, ge=1, description="minibatch size b, in [1, n]; minibatch_sgd only")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not (isinstance(v, str) or callable(v)):
            raise ValueError(f"name = {v!r}; allowed: {', '.join(NOISE_NAMES)}, a 'package.module:factory' string or a callable")
        from sgdlab.core.functions import FunctionError
        from sgdlab.manifold.user_noise import resolve_noise

        try:
            return resolve_noise(v, key="name")
        except FunctionError as err:
            raise ValueError(str(err).removeprefix("name = ").removeprefix("name: ")) from None

    @field_serializer("name", when_used="json")
    def _name_text(self, v):
        from sgdlab.core.functions import spec_of

        return spec_of(v)

    @property
    def builtin(self) -> bool:
        """Whether ``name`` is one of the built-in noises (else a user factory)."""
        return isinstance(self.name, str)

    @property
    def label(self) -> str:
        """``name`` as text (a user factory: its import string)."""
        from sgdlab.core.functions import spec_of

        return self.name if self.builtin else spec_of(self.name)

    @model_validator(mode="after")
    def _cross_checks(self):
        if not self.builtin:
            if self.sigma is None:
                raise ValueError(f"noise.sigma is required for the noise {self.label}")
            for extra in ("batch_size", "distribution"):
                if getattr(self, extra) is not None:
                    raise ValueError(f"noise.{extra} belongs to the built-in noises; a user noise ({self.label}) sets its own law in its factory")
            return self
        if self.name == "minibatch_sgd":
            if self.batch_size is None:
                raise ValueError("noise.batch_size is required for minibatch_sgd (sigma^2 = n/b - 1 follows from it)")
            if self.sigma is not None:
                raise ValueError("noise.sigma is set by noise.batch_size for minibatch_sgd (sigma^2 = n/b - 1); remove it")
            if self.sigma_scaling != "fixed":
                raise ValueError("noise.sigma_scaling must be 'fixed' for minibatch_sgd")
        else:
            if self.sigma is None:
                raise ValueError(f"noise.sigma is required for {self.name}")
            if self.batch_size is not None:
                raise ValueError(f"noise.batch_size belongs to minibatch_sgd only (noise.name = {self.name!r})")
        allowed = DISTRIBUTIONS[self.name]
        if self.distribution is not None and self.distribution not in allowed:
            raise ValueError(f"noise.distribution={self.distribution!r} is not allowed for {self.name}; allowed: {', '.join(allowed) or 'none'}")
        return self


class ManifoldSimulationConfig(Section):
    """``[simulation]``: step sizes, runs and the rescaled-time grid."""

    etas: list[float] = Field(default_factory=lambda: [0.04, 0.02], description="step sizes eta, each in (0, 1], distinct")
    runs: int = Field(64, ge=2, le=100_000, description="independent runs per eta, in [2, 100000]")
    tau_max: float = Field(3.0, gt=0, description="final rescaled time, in (0, inf)")
    tau_save: float = Field(0.1, gt=0, description="rescaled time between saves, in (0, tau_max], dividing tau_max")
    seed: int = Field(0, ge=0, description="base seed, in [0, inf)")
    max_steps: int = Field(5_000_000, ge=1, description="refuse runs longer than this many steps per eta, in [1, inf)")

    @field_validator("etas")
    @classmethod
    def _check_etas(cls, v):
        if not v:
            raise ValueError("etas must not be empty")
        bad = [a for a in v if not 0 < a <= 1]
        if bad:
            raise ValueError(f"etas={v}: every eta must be in (0, 1] (got {bad})")
        if len(set(v)) != len(v):
            raise ValueError(f"etas={v} must be distinct")
        return v

    @model_validator(mode="after")
    def _grid(self):
        if self.tau_save > self.tau_max:
            raise ValueError(f"simulation.tau_save={self.tau_save} must be <= simulation.tau_max={self.tau_max}")
        ratio = self.tau_max / self.tau_save
        if ratio > 100_000:
            raise ValueError(f"simulation.tau_max / simulation.tau_save = {ratio:.3g} saved times; allowed: at most 100000")
        if abs(ratio - round(ratio)) > 1e-9 * ratio:
            raise ValueError(f"simulation.tau_save={self.tau_save} must divide simulation.tau_max={self.tau_max} (ratio {ratio:.6g})")
        return self

    @property
    def n_saves(self) -> int:
        return int(round(self.tau_max / self.tau_save))


class ManifoldLimitConfig(Section):
    """``[limit]``: the limit solver."""

    kind: Literal["auto", "non_degenerate", "degenerate", "trivial"] = "auto"
    substeps: int = Field(10, ge=1, le=10_000, description="RK4 / Euler-Maruyama steps per save, in [1, 10000]")
    phi_tol: float = Field(DEFAULT_PHI_TOL, gt=0, le=1e-6, description="gradient-flow tolerance of Phi, in (0, 1e-6]")
    rank_rtol: float = Field(DEFAULT_RANK_RTOL, gt=0, lt=1e-2, description="relative eigenvalue threshold of the Hessian rank, in (0, 1e-2)")


class ManifoldPlotConfig(Section):
    """``[plot]``: what the figure shows."""

    variables: list[str] | None = Field(None, description="observables to draw, first one also in the bias panel (default: the model's first five)")


class ManifoldConfig(ExperimentConfig):
    """A full ``sgdlab manifold`` experiment (``name``, ``description``, ``[sweep]``: the base's)."""

    model: ManifoldModelConfig = Field(default_factory=ManifoldModelConfig)
    noise: ManifoldNoiseConfig = Field(default_factory=lambda: ManifoldNoiseConfig(sigma=1.0))
    simulation: ManifoldSimulationConfig = Field(default_factory=ManifoldSimulationConfig)
    limit: ManifoldLimitConfig = Field(default_factory=ManifoldLimitConfig)
    plot: ManifoldPlotConfig = Field(default_factory=ManifoldPlotConfig)

    #: the step sizes are one axis of a single run (sim at several eta against the eta -> 0 limit)
    fixed_keys: ClassVar[dict[str, str]] = {
        "simulation.etas": "the study's own axis: every run compares its step sizes with the eta -> 0 limit",
    }

    @model_validator(mode="after")
    def _cross_section(self):
        if self.noise.name == "dropout" and self.model.name == "hyperbola":
            raise ValueError("noise.name = 'dropout' needs hidden units; model.name = 'hyperbola' has none (use two_unit, diagonal or tanh)")
        if self.noise.name == "minibatch_sgd":
            n = self.model.n_samples
            if self.noise.batch_size >= n:
                raise ValueError(f"noise.batch_size={self.noise.batch_size} must be in [1, n - 1 = {n - 1}] (model.n = {n} samples; "
                                 "b = n is full-batch GD: sigma^2 = n/b - 1 = 0, no noise and no slow motion)")
        if not self.noise.builtin:  # the factory checked against this model (shapes, correlation, moments)
            from sgdlab.core.functions import FunctionError
            from sgdlab.manifold.injections import Sizes
            from sgdlab.manifold.user_noise import check_user_noise

            try:
                check_user_noise(self.noise.name, Sizes(self.model.n_samples, self.model.n_units, self.model.n_params), "noise.name")
            except FunctionError as err:
                raise ValueError(str(err)) from None
        stochastic = (not self.noise.builtin or self.noise.name in STOCHASTIC_LIMITS) and self.limit.kind in ("auto", "degenerate")
        why = self.memory_problem(stochastic_limit=stochastic)
        if why is not None:
            raise ValueError(why)
        return self

    def memory_estimate(self, stochastic_limit: bool) -> dict[str, tuple[float, str, str]]:
        """The bytes of the largest arrays of a run, by part: ``{part: (bytes, what, keys)}``.

        With ``R`` runs, ``E`` step sizes, ``T = n_saves + 1`` saved times, ``O`` observables,
        ``p`` weights, ``n`` samples, ``u`` hidden units and ``m`` noise dimensions (label noise
        ``n``, Dropout ``u``, minibatch ``n``, the others ``p``), in floats:

        - ``results``: ``(3 E + 2) R T O`` (the simulated observables, their copy per eta and the
          Dataset);
        - ``simulation``: ``R (32 + 8 p + 4 m + 6 n h)`` working memory of one eta (``h`` = width of
          the tanh network, else 1), plus ``1.5 R p n h`` for the tanh network, whose observable
          ``tr H`` takes a forward-mode Jacobian;
        - ``limit``: ``P (T p + 12 p^2 + 6 p m) + 16 m^2 + 10 p^2`` with ``P = R`` paths when the
          limit is an SDE (``stochastic_limit``), else 1 (Hessians, ``D (p, m)``; the noise
          correlation ``(m, m)`` and its copies as constants of the compiled solver: 12 to 15
          ``m^2`` of peak RSS measured for the hyperbola with ``n = 5000``).

        Calibrated against XLA's compiled memory analysis of the runner and of the limit
        integrators (``tests/manifold/test_manifold_safety.py``).
        """
        mc, sim = self.model, self.simulation
        p, n, u, O = mc.n_params, mc.n_samples, mc.n_units, mc.n_observables
        if self.noise.builtin:
            m = {"label_noise": n, "minibatch_sgd": n, "dropout": u}.get(self.noise.name, p)
        else:  # the factory's own dimension (checked, and cached, by the cross-section validator)
            from sgdlab.manifold.injections import Sizes
            from sgdlab.manifold.user_noise import check_user_noise

            m = check_user_noise(self.noise.name, Sizes(n, u, p), "noise.name")
        h = (mc.width or 3) if mc.name == "tanh" else 1
        R, E, T = sim.runs, len(sim.etas), sim.n_saves + 1
        paths = R if stochastic_limit else 1
        size_keys = {"hyperbola": "model.n", "two_unit": "", "diagonal": "model.d or model.n", "tanh": "model.width, model.input_dim or model.n"}[mc.name]
        return {
            "results": (8.0 * (3 * E + 2) * R * T * O, f"the saved results ({R} runs x {T} times x {E} etas x {O} observables)",
                        "simulation.runs, simulation.etas or simulation.tau_max / simulation.tau_save"),
            "simulation": (8.0 * R * (32 + 8 * p + 4 * m + 6 * n * h + (1.5 * p * n * h if mc.name == "tanh" else 0)), f"the simulation ({R} runs, p = {p} weights, n = {n} samples)",
                           "simulation.runs" + (f" or {size_keys}" if size_keys else "")),
            "limit": (8.0 * (paths * (T * p + 12.0 * p * p + 6.0 * p * m) + 16.0 * m * m + 10.0 * p * p),
                      f"the limit ({paths} path{'s' * (paths > 1)} x {T} times, p = {p} weights, {m} noise dimensions)",
                      ("simulation.runs (one limit path per run), " if paths > 1 else "") + (size_keys or "simulation.tau_max / simulation.tau_save")),
        }

    def memory_problem(self, stochastic_limit: bool) -> str | None:
        """The refusal message if the run's largest arrays would not fit in memory (the saved results
        and the limit's path, plus the larger of the simulation's and the limit's working memory)."""
        from sgdlab.core.memory import memory_problem

        parts = self.memory_estimate(stochastic_limit)
        total = parts["results"][0] + max(parts["simulation"][0], parts["limit"][0])
        _, what, keys = max(parts.values())
        return memory_problem(total, what, keys)


def load_config(source: ManifoldConfig | dict[str, Any] | str | Path | None = None) -> ManifoldConfig:
    """A validated :class:`ManifoldConfig` from a config, a dict of TOML keys, a TOML path or
    ``None`` (the built-in ``default`` example). Raises
    :class:`~sgdlab.core.errors.ConfigError` with one line per problem, each naming the key."""
    if source is None:
        from sgdlab.core.command import example_path

        source = example_path("manifold", "default")
    return validate_config(ManifoldConfig, source)
