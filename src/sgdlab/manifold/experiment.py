"""Noisy GD near the zero-loss set, beside its slow limit: config, run, Dataset, figure, command.

Orchestration for spec 04 (Shalova, Schlichting, Peletier 2024; Li, Wang, Arora 2022): the only
place where a simulation (:mod:`sgdlab.manifold.noise`) and its limit
(:mod:`sgdlab.manifold.limit`) meet. For every step size ``alpha`` of the config the noisy
algorithm runs ``simulation.runs`` independent runs from ``model.init``; the limit starts at
``Phi(w0)`` (the fast phase is instantaneous in the rescaled time) and both are saved on the same
grid of rescaled times ``tau = j * simulation.tau_save``:

- non-degenerate (and trivial) noise: ``tau = alpha sigma^2 k``;
- degenerate noise: ``tau = alpha^2 sigma^2 k``;

which one applies is decided by :func:`sgdlab.manifold.limit.classify_noise` at ``Phi(w0)``
(``limit.kind = "auto"``) or forced by ``limit.kind``. The number of steps per save,
``tau_save / unit``, must be an integer for every alpha (a ConfigError names the key otherwise).

``noise.sigma_scaling``: with ``"fixed"`` every alpha uses ``noise.sigma``; with ``"sqrt_alpha"``
``sigma(alpha) = sigma sqrt(alpha / alphas[0])`` (``sigma^2 / alpha`` fixed). The non-degenerate
limit needs ``sigma -> 0`` as well as ``alpha -> 0``: at fixed sigma the simulation tends, as
``alpha -> 0``, to the gradient flow of ``L + sigma^2 Reg`` whose slow motion differs from the limit
by ``O(sigma^2)`` (e.g. Dropout on the two-unit network), so the O(alpha) bias is only visible with
``sigma^2 << alpha`` or ``sigma^2 proportional to alpha``.

TOML layout (``sgdlab manifold CONFIG.toml``)::

    name = "hyperbola_label_noise"          # optional (default: the file name)
    description = "..."
    [model]       name = "hyperbola" | "two_unit" | "diagonal" | "tanh", init = [...], model keys
    [noise]       name, sigma, sigma_scaling, distribution, batch_size
    [simulation]  alphas, runs, tau_max, tau_save, seed
    [limit]       kind, substeps, phi_tol, rank_rtol
    [plot]        variables

Dataset: dims ``(method, alpha, seed, tau)`` with ``method = ["sim", "limit"]``; one variable per
observable of the model plus ``loss``. The limit does not depend on alpha (it is repeated along
``alpha``); a deterministic limit is repeated along ``seed``, a stochastic one (SGLD) has one
independent path of the limit SDE per seed. Coordinates ``sigma(alpha)``, ``time_unit(alpha)``,
``steps_per_save(alpha)``; attrs ``config`` (JSON), ``config_hash``, ``sgdlab_version``,
``noise_kind``, ``time_scale``, ``phi0``, ``rank``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from pydantic import Field, field_validator, model_validator

from sgdlab import __version__
from sgdlab.manifold import noise as ni
from sgdlab.dmft.config import ConfigError, _Section, validate_config
from sgdlab.dmft.experiment import NonFiniteError
from sgdlab.manifold import models as mm
from sgdlab.manifold import limit as mf

NoiseName = Literal["label_noise", "dropout", "dropconnect", "perturbed_gd", "anticorrelated_perturbed_gd", "sgld", "minibatch_sgd"]

#: Model keys beyond ``name`` and ``init``, and the models they belong to.
_MODEL_KEYS = {
    "n": ("hyperbola", "diagonal", "tanh"),
    "d": ("diagonal",),
    "sparsity": ("diagonal",),
    "init_scale": ("diagonal",),
    "width": ("tanh",),
    "input_dim": ("tanh",),
    "data_seed": ("diagonal", "tanh"),
}
_DISTRIBUTIONS = {
    "label_noise": ("gaussian", "rademacher"),
    "perturbed_gd": ("gaussian", "rademacher"),
    "anticorrelated_perturbed_gd": ("gaussian",),
    "sgld": ("gaussian",),
    "dropout": ("bernoulli", "gaussian"),
    "dropconnect": ("bernoulli", "gaussian"),
    "minibatch_sgd": (),
}


class ManifoldModelConfig(_Section):
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
        for key, owners in _MODEL_KEYS.items():
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

    def build(self) -> mm.ManifoldModel:
        """The :class:`~sgdlab.manifold.models.ManifoldModel` of this section (the same
        object for the same keys, so that compiled solver pieces are reused across runs)."""
        return _build_model(json.dumps(self.model_dump(mode="json"), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _build_model(section_json: str) -> mm.ManifoldModel:
    section = json.loads(section_json)
    kwargs = {k: section[k] for k in _MODEL_KEYS if section.get(k) is not None}
    try:
        return mm.make_model(section["name"], init=section["init"], **kwargs)
    except ValueError as err:
        raise ConfigError(f"invalid config:\n  model: {err}") from None


class ManifoldNoiseConfig(_Section):
    """``[noise]``: the injected noise and its scale."""

    name: NoiseName = "label_noise"
    sigma: float | None = Field(None, gt=0, le=100, description="noise scale sigma (at alphas[0]), in (0, 100]; not for minibatch_sgd")
    sigma_scaling: Literal["fixed", "sqrt_alpha"] = "fixed"
    distribution: Literal["gaussian", "rademacher", "bernoulli"] | None = None
    batch_size: int | None = Field(None, ge=1, description="minibatch size b, in [1, n]; minibatch_sgd only")

    @model_validator(mode="after")
    def _cross_checks(self):
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
        allowed = _DISTRIBUTIONS[self.name]
        if self.distribution is not None and self.distribution not in allowed:
            raise ValueError(f"noise.distribution={self.distribution!r} is not allowed for {self.name}; allowed: {', '.join(allowed) or 'none'}")
        return self


class ManifoldSimulationConfig(_Section):
    """``[simulation]``: step sizes, runs and the rescaled-time grid."""

    alphas: list[float] = Field(default_factory=lambda: [0.04, 0.02], description="step sizes alpha, each in (0, 1], distinct")
    runs: int = Field(64, ge=2, le=100_000, description="independent runs per alpha, in [2, 100000]")
    tau_max: float = Field(3.0, gt=0, description="final rescaled time, in (0, inf)")
    tau_save: float = Field(0.1, gt=0, description="rescaled time between saves, in (0, tau_max], dividing tau_max")
    seed: int = Field(0, ge=0, description="base seed, in [0, inf)")
    max_steps: int = Field(5_000_000, ge=1, description="refuse runs longer than this many steps per alpha, in [1, inf)")

    @field_validator("alphas")
    @classmethod
    def _check_alphas(cls, v):
        if not v:
            raise ValueError("alphas must not be empty")
        bad = [a for a in v if not 0 < a <= 1]
        if bad:
            raise ValueError(f"alphas={v}: every alpha must be in (0, 1] (got {bad})")
        if len(set(v)) != len(v):
            raise ValueError(f"alphas={v} must be distinct")
        return v

    @model_validator(mode="after")
    def _grid(self):
        if self.tau_save > self.tau_max:
            raise ValueError(f"simulation.tau_save={self.tau_save} must be <= simulation.tau_max={self.tau_max}")
        ratio = self.tau_max / self.tau_save
        if abs(ratio - round(ratio)) > 1e-9 * ratio:
            raise ValueError(f"simulation.tau_save={self.tau_save} must divide simulation.tau_max={self.tau_max} (ratio {ratio:.6g})")
        return self

    @property
    def n_saves(self) -> int:
        return int(round(self.tau_max / self.tau_save))


class ManifoldLimitConfig(_Section):
    """``[limit]``: the limit solver."""

    kind: Literal["auto", "non_degenerate", "degenerate", "trivial"] = "auto"
    substeps: int = Field(10, ge=1, le=10_000, description="RK4 / Euler-Maruyama steps per save, in [1, 10000]")
    phi_tol: float = Field(mf.PHI_TOL, gt=0, le=1e-6, description="gradient-flow tolerance of Phi, in (0, 1e-6]")
    rank_rtol: float = Field(mf.RANK_RTOL, gt=0, lt=1e-2, description="relative eigenvalue threshold of the Hessian rank, in (0, 1e-2)")


class ManifoldPlotConfig(_Section):
    """``[plot]``: what the figure shows."""

    variables: list[str] | None = Field(None, description="observables to draw, first one also in the bias panel (default: the model's first five)")


class ManifoldConfig(_Section):
    """A full ``sgdlab manifold`` experiment."""

    name: str = "manifold"
    description: str = ""
    model: ManifoldModelConfig = Field(default_factory=ManifoldModelConfig)
    noise: ManifoldNoiseConfig = Field(default_factory=lambda: ManifoldNoiseConfig(sigma=1.0))
    simulation: ManifoldSimulationConfig = Field(default_factory=ManifoldSimulationConfig)
    limit: ManifoldLimitConfig = Field(default_factory=ManifoldLimitConfig)
    plot: ManifoldPlotConfig = Field(default_factory=ManifoldPlotConfig)

    @model_validator(mode="after")
    def _cross_section(self):
        if self.noise.name == "dropout" and self.model.name == "hyperbola":
            raise ValueError("noise.name = 'dropout' needs hidden units; model.name = 'hyperbola' has none (use two_unit, diagonal or tanh)")
        if self.noise.name == "minibatch_sgd":
            n = self.model.n if self.model.n is not None else {"hyperbola": 1, "two_unit": 1, "diagonal": 6, "tanh": 4}[self.model.name]
            if self.noise.batch_size > n:
                raise ValueError(f"noise.batch_size={self.noise.batch_size} must be in [1, n={n}] (the number of samples, model.n)")
        return self

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of the resolved config."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        """Short hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def load_manifold_config(source: ManifoldConfig | dict[str, Any] | str | Path | None = None) -> ManifoldConfig:
    """A validated :class:`ManifoldConfig` from a config, a dict, a TOML path or ``None`` (defaults).

    Raises :class:`~sgdlab.dmft.config.ConfigError` with one line per problem, each naming the key.
    """
    return ManifoldConfig() if source is None else validate_config(ManifoldConfig, source)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def sigma_for(cfg: ManifoldConfig, alpha: float, n_samples: int) -> float:
    """The noise scale used at step size ``alpha`` (see ``noise.sigma_scaling``)."""
    if cfg.noise.name == "minibatch_sgd":
        return ni.minibatch_sigma(cfg.noise.batch_size, n_samples)
    if cfg.noise.sigma_scaling == "sqrt_alpha":
        return cfg.noise.sigma * math.sqrt(alpha / cfg.simulation.alphas[0])
    return cfg.noise.sigma


def time_unit(kind: str, alpha: float, sigma: float) -> float:
    """Rescaled time per step: ``alpha^2 sigma^2`` (degenerate) or ``alpha sigma^2`` (otherwise)."""
    return alpha**2 * sigma**2 if kind == mf.DEGENERATE else alpha * sigma**2


def build_injection(cfg: ManifoldConfig, sigma: float, n_samples: int) -> ni.NoiseInjection:
    """The noise injection of ``cfg`` at scale ``sigma`` (anti-PGD: its z-variable form, perturbed GD)."""
    return ni.make_injection(cfg.noise.name, sigma, distribution=cfg.noise.distribution, batch_size=cfg.noise.batch_size, n_samples=n_samples)


def build_algorithm(cfg: ManifoldConfig, model: mm.ManifoldModel, alpha: float, sigma: float) -> ni.Algorithm:
    """The noisy algorithm of ``cfg`` on ``model`` at ``(alpha, sigma)``."""
    if cfg.noise.name == "anticorrelated_perturbed_gd":
        return ni.anticorrelated_perturbed_gd(model.loss, sigma, alpha)
    sizes = ni.Sizes(model.n_samples, model.n_units, model.n_params)
    return ni.noise_injected_gd(model.apply, model.x, model.y, sizes, build_injection(cfg, sigma, model.n_samples), alpha)


def limit_inputs(cfg: ManifoldConfig, model: mm.ManifoldModel):
    """``(loss_hat, eta_dim, correlation)`` of the noise of ``cfg`` on ``model``: what the limit
    solver needs. In rescaled time the limit does not depend on sigma, and the same function object
    is returned for the same model and noise (so the solver's compiled pieces are reused)."""
    return _limit_inputs(model, cfg.noise.name, cfg.noise.distribution, cfg.noise.batch_size)


@functools.lru_cache(maxsize=64)
def _limit_inputs(model: mm.ManifoldModel, name: str, distribution: str | None, batch_size: int | None):
    sizes = ni.Sizes(model.n_samples, model.n_units, model.n_params)
    sigma = 1.0 if name != "minibatch_sgd" else None
    injection = ni.make_injection(name, sigma or 0.0, distribution=distribution, batch_size=batch_size, n_samples=model.n_samples)
    loss_hat = ni.model_loss_hat(model.apply, model.x, model.y, model.n_units, injection)
    return loss_hat, injection.eta_size(sizes), injection.correlation(sizes)


def classify_manifold_noise(cfg: ManifoldConfig, model: mm.ManifoldModel, inputs=None) -> mf.NoiseClass:
    """Classification of the noise of ``cfg`` at ``Phi(w0)`` (see :func:`sgdlab.manifold.limit.classify_noise`).
    ``inputs``: the result of :func:`limit_inputs` (reuse it to reuse the compiled solver)."""
    loss_hat, eta_dim, corr = inputs or limit_inputs(cfg, model)
    phi0 = mf.jitted_gradient_flow_limit(model.loss, cfg.limit.phi_tol)(model.w0)
    rank = mf.hessian_rank(model.loss, phi0, cfg.limit.rank_rtol)
    return mf.classify_noise(model.loss, loss_hat, eta_dim, phi0, corr, rank)


def solve_manifold_limit(cfg: ManifoldConfig, model: mm.ManifoldModel, inputs=None) -> mf.LimitSolution:
    """The slow limit of ``cfg`` (the generic solver of :mod:`sgdlab.manifold.limit`)."""
    loss_hat, eta_dim, corr = inputs or limit_inputs(cfg, model)
    lim, sim = cfg.limit, cfg.simulation
    keys = ni.run_keys(sim.seed, sim.runs, salt=1_000_003)
    return mf.solve_limit(
        model.loss,
        loss_hat,
        eta_dim,
        model.w0,
        sim.tau_save,
        sim.n_saves,
        substeps=lim.substeps,
        correlation=corr,
        kind=None if lim.kind == "auto" else lim.kind,
        keys=keys,
        phi_tol=lim.phi_tol,
        rank_rtol=lim.rank_rtol,
    )


def steps_per_save(cfg: ManifoldConfig, unit: float, alpha: float) -> int:
    """``tau_save / unit`` as an integer, or a ConfigError naming ``simulation.tau_save``."""
    exact = cfg.simulation.tau_save / unit
    k = int(round(exact))
    if k < 1 or abs(exact - k) > 1e-6 * exact:
        raise ConfigError(
            f"invalid config:\n  simulation.tau_save: {cfg.simulation.tau_save} must be a positive integer multiple of the time unit "
            f"{unit:.6g} at alpha={alpha} ({exact:.6g} steps per save); change tau_save, alphas or sigma"
        )
    if k * cfg.simulation.n_saves > cfg.simulation.max_steps:
        raise ConfigError(
            f"invalid config:\n  simulation.max_steps: alpha={alpha} needs {k * cfg.simulation.n_saves} steps (> max_steps="
            f"{cfg.simulation.max_steps}); raise max_steps, lower tau_max or raise alpha / sigma"
        )
    return k


def run_manifold_experiment(config: ManifoldConfig | dict[str, Any] | str | Path | None = None, progress=None) -> xr.Dataset:
    """Run the noisy algorithm for every alpha of ``config`` and its slow limit; see the module
    docstring for the Dataset. ``progress(done, total)`` is called after the limit and each alpha."""
    cfg = load_manifold_config(config)
    model = cfg.model.build()
    sim = cfg.simulation
    known = list(model.observables) + ["loss"]
    unknown = [v for v in (cfg.plot.variables or []) if v not in known]
    if unknown or cfg.plot.variables == []:
        raise ConfigError(f"invalid config:\n  plot.variables: {unknown or '[]'} not observables of model {cfg.model.name!r}; allowed: {', '.join(known)}")
    total = len(sim.alphas) + 1
    inputs = limit_inputs(cfg, model)
    kind = classify_manifold_noise(cfg, model, inputs).kind if cfg.limit.kind == "auto" else cfg.limit.kind
    sigmas = [sigma_for(cfg, alpha, model.n_samples) for alpha in sim.alphas]
    units = [time_unit(kind, alpha, sigma) for alpha, sigma in zip(sim.alphas, sigmas)]
    steps = [steps_per_save(cfg, unit, alpha) for unit, alpha in zip(units, sim.alphas)]  # ConfigError before any work
    limit = solve_manifold_limit(cfg, model, inputs)
    names = list(model.observables) + ["loss"]
    observe = jax.jit(jax.vmap(jax.vmap(model.observe)))
    lim_obs = {k: np.asarray(v) for k, v in observe(jnp.asarray(limit.w)).items()}  # (paths, T)
    if progress is not None:
        progress(1, total)

    n_t = sim.n_saves + 1
    sim_out = {k: np.full((len(sim.alphas), sim.runs, n_t), np.nan) for k in names}
    for ia, (alpha, sigma, k) in enumerate(zip(sim.alphas, sigmas, steps)):
        runner = ni.make_runner(build_algorithm(cfg, model, alpha, sigma), model.observe, k, sim.n_saves)
        _, obs = runner(model.w0, ni.run_keys(sim.seed, sim.runs, salt=ia))
        for name in names:
            sim_out[name][ia] = np.asarray(obs[name])
            if not np.all(np.isfinite(sim_out[name][ia])):
                raise NonFiniteError(
                    f"simulation diverged: {name} is not finite at alpha={alpha} (GD is stable only for alpha lambda_max(H) < 2; "
                    f"lower simulation.alphas or noise.sigma)"
                )
        if progress is not None:
            progress(ia + 2, total)

    data_vars = {}
    for name in names:
        lim = np.broadcast_to(lim_obs[name], (sim.runs, n_t)) if lim_obs[name].shape[0] == 1 else lim_obs[name]
        arr = np.stack([sim_out[name], np.broadcast_to(lim, (len(sim.alphas), sim.runs, n_t))])
        data_vars[name] = (("method", "alpha", "seed", "tau"), arr, {"long_name": model.descriptions.get(name, name)})
    return xr.Dataset(
        data_vars,
        coords={
            "method": ["sim", "limit"],
            "alpha": ("alpha", np.asarray(sim.alphas, float), {"long_name": "step size alpha"}),
            "seed": np.arange(sim.runs, dtype=np.int64),
            "tau": ("tau", limit.tau, {"long_name": limit.noise.time_scale}),
            "sigma": ("alpha", np.asarray(sigmas)),
            "time_unit": ("alpha", np.asarray(units), {"long_name": "rescaled time per step"}),
            "steps_per_save": ("alpha", np.asarray(steps, dtype=np.int64)),
        },
        attrs={
            "config": cfg.to_json(),
            "config_hash": cfg.config_hash(),
            "sgdlab_version": __version__,
            "jax_version": jax.__version__,
            "experiment": "manifold",
            "model": model.description,
            "noise": cfg.noise.name,
            "noise_kind": kind,
            "time_scale": limit.noise.time_scale,
            "limit_stochastic": int(limit.noise.stochastic and kind == mf.DEGENERATE),
            "phi0": json.dumps([float(v) for v in limit.phi0]),
            "rank": limit.noise.rank,
            "status": "complete",
        },
    )


def manifold_config_of(ds: xr.Dataset) -> ManifoldConfig:
    """The validated config stored in a manifold Dataset's attrs."""
    return load_manifold_config(json.loads(ds.attrs["config"]))


def simulation_bias(ds: xr.Dataset, var: str) -> xr.Dataset:
    """Bias of the simulation against the limit: ``bias(alpha, tau) = mean_seed sim - mean_seed limit``
    and its standard error ``se`` (seed-to-seed spread of both, over the number of runs)."""
    sim, lim = ds[var].sel({"method": "sim"}), ds[var].sel({"method": "limit"})
    n = ds.sizes["seed"]
    lim_var = lim.var("seed", ddof=1) if bool(ds.attrs.get("limit_stochastic", 0)) else 0.0 * lim.isel(seed=0)
    return xr.Dataset({"bias": sim.mean("seed") - lim.mean("seed"), "se": np.sqrt(sim.var("seed", ddof=1) / n + lim_var / n)})


def bias_summary(ds: xr.Dataset, var: str) -> list[dict]:
    """Per alpha: the largest ``|bias|`` over ``tau > 0`` (and its tau and SE) of observable ``var``
    (``tau = 0`` compares ``w0`` with ``Phi(w0)``: the fast phase, instantaneous in the limit)."""
    b = simulation_bias(ds, var)
    rows = []
    for ia, alpha in enumerate(ds.alpha.values):
        bias, se = np.abs(b.bias.values[ia]), b.se.values[ia]
        j = 1 + int(np.nanargmax(bias[1:])) if bias.size > 1 else 0  # tau > 0: after the fast phase
        rows.append({"alpha": float(alpha), "sigma": float(ds.sigma.values[ia]), "max_bias": float(bias[j]), "se": float(se[j]), "tau": float(ds.tau.values[j])})
    return rows


# ---------------------------------------------------------------------------------------------
# figure and command
# ---------------------------------------------------------------------------------------------


def plot_manifold(ds: xr.Dataset, variables: list[str] | None = None, title: str | None = None):
    """Simulation for every alpha (mean over runs, band one standard error) with the limit (black,
    dashed; band one standard deviation of its paths when stochastic) against rescaled time, one
    panel per observable, and a last panel ``|sim - limit| / alpha`` of the first observable (curves
    collapse when the bias is O(alpha)) or, for a stochastic limit, its variance over runs and over
    the limit's paths. Returns a matplotlib Figure."""
    from sgdlab.dmft import plot as _plot  # noqa: F401  (imported first: it selects the Agg backend)

    import matplotlib.pyplot as plt

    if variables is None:
        variables = [v for v in ds.data_vars if v != "loss"][:5]
    panels = len(variables) + 1
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows), squeeze=False, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tau = ds.tau.values
    n = ds.sizes["seed"]
    stochastic = bool(ds.attrs.get("limit_stochastic", 0))
    for ax, var in zip(axes.flat, variables):
        for ia, alpha in enumerate(ds.alpha.values):
            da = ds[var].sel({"method": "sim"}).isel(alpha=ia)
            mean, sem = da.mean("seed").values, da.std("seed", ddof=1).values / np.sqrt(n)
            c = colors[ia % len(colors)]
            ax.fill_between(tau, mean - sem, mean + sem, color=c, alpha=0.25, lw=0)
            ax.plot(tau, mean, color=c, lw=1.3, label=f"sim alpha={alpha:g}, sigma={float(ds.sigma.values[ia]):.3g}")
        lim = ds[var].sel({"method": "limit"}).isel(alpha=0)
        lm = lim.mean("seed").values
        if stochastic:
            ls = lim.std("seed", ddof=1).values
            ax.fill_between(tau, lm - ls, lm + ls, color="k", alpha=0.08, lw=0)
        ax.plot(tau, lm, "k--", lw=1.5, label="limit" + (f" (mean of {n} paths, ±std)" if stochastic else ""))
        ax.set_title(ds[var].attrs.get("long_name", var), fontsize=10)
        ax.set_xlabel(ds.tau.attrs.get("long_name", "tau"))
        ax.grid(alpha=0.3)
    ax = list(axes.flat)[len(variables)]
    main = variables[0]
    if stochastic:  # the mean bias is noise here: compare the spread (the diffusion of the limit SDE)
        for ia, alpha in enumerate(ds.alpha.values):
            var_sim = ds[main].sel({"method": "sim"}).isel(alpha=ia).var("seed", ddof=1).values
            ax.plot(tau, var_sim, color=colors[ia % len(colors)], lw=1.3, label=f"sim alpha={alpha:g}")
        ax.plot(tau, ds[main].sel({"method": "limit"}).isel(alpha=0).var("seed", ddof=1).values, "k--", lw=1.5, label="limit SDE")
        ax.set_title(f"variance of {main} over runs / paths", fontsize=10)
    else:
        b = simulation_bias(ds, main)
        for ia, alpha in enumerate(ds.alpha.values):
            c = colors[ia % len(colors)]
            bias, se = np.abs(b.bias.values[ia, 1:]), b.se.values[ia, 1:]  # tau > 0 (after the fast phase)
            ax.plot(tau[1:], bias / alpha, color=c, lw=1.3, label=f"alpha={alpha:g}")
            ax.fill_between(tau[1:], np.maximum(bias - 2 * se, 0) / alpha, (bias + 2 * se) / alpha, color=c, alpha=0.15, lw=0)
        ax.set_title(f"|sim - limit| / alpha of {main} (band: 2 SE)", fontsize=10)
    ax.set_xlabel(ds.tau.attrs.get("long_name", "tau"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for extra in list(axes.flat)[panels:]:
        extra.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or f"{ds.attrs.get('model', '')}: {ds.attrs.get('noise', '')} ({ds.attrs.get('noise_kind', '')}, {ds.attrs.get('time_scale', '')})", fontsize=10)
    return fig


def manifold_table(ds: xr.Dataset, title: str = ""):
    """A rich Table: per observable and alpha, the largest ``|sim - limit|`` over ``tau > 0``, its SE
    and the ratio to the next (smaller) alpha (about 2 when alpha halves and the bias is O(alpha))."""
    from rich.table import Table

    table = Table(title=title or f"{ds.attrs.get('noise')} on {ds.attrs.get('model')}: {ds.attrs.get('noise_kind')}, {ds.attrs.get('time_scale')}", title_justify="left")
    for col in ("observable", "alpha", "sigma", "steps/save", "max|sim-limit|", "SE", "at tau", "ratio"):
        table.add_column(col, justify="left" if col == "observable" else "right", no_wrap=True)
    for var in [v for v in ds.data_vars]:
        rows = bias_summary(ds, var)
        for i, row in enumerate(rows):
            ratio = f"{row['max_bias'] / rows[i + 1]['max_bias']:.2f}" if i + 1 < len(rows) and rows[i + 1]["max_bias"] > 0 else ""
            table.add_row(
                var if i == 0 else "",
                f"{row['alpha']:g}",
                f"{row['sigma']:.4g}",
                str(int(ds.steps_per_save.values[i])),
                f"{row['max_bias']:.3e}",
                f"{row['se']:.1e}",
                f"{row['tau']:.3g}",
                ratio,
            )
    return table


def manifold_command(config_path: str | Path, out_dir: str | Path = "results", progress=None):
    """Run the manifold experiment of ``config_path``; write ``OUT_DIR/NAME.zarr`` (with
    :func:`sgdlab.core.store.save`) and ``OUT_DIR/NAME.png``; return a rich Table of the biases.

    ``progress(done, total)`` is passed to :func:`run_manifold_experiment` (one tick for the limit
    and one per alpha). Raises :class:`~sgdlab.dmft.config.ConfigError` for an invalid config (the CLI
    prints it and exits with 2) and :class:`~sgdlab.dmft.experiment.NonFiniteError` if a run diverges.
    """
    from sgdlab.core import store
    from sgdlab.dmft.plot import save_figure

    cfg = load_manifold_config(config_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ds = run_manifold_experiment(cfg, progress=progress)
    elapsed = time.perf_counter() - start
    store.save(ds, out / f"{cfg.name}.zarr")
    save_figure(plot_manifold(ds, variables=cfg.plot.variables, title=cfg.description or None), out / f"{cfg.name}.png")
    return manifold_table(ds, title=f"{cfg.name} ({elapsed:.1f} s): {ds.attrs['noise']} on {ds.attrs['model']}, {ds.attrs['noise_kind']}, {ds.attrs['time_scale']}")
