"""Noisy GD near the zero-loss set, beside its slow limit: :func:`run` and the Dataset.

Orchestration for the zero-loss-manifold study (``docs/manifold.md``; Shalova, Schlichting, Peletier 2024; Li, Wang, Arora 2022): the only
place where a simulation (:mod:`sgdlab.manifold.noise`) and its limit
(:mod:`sgdlab.manifold.limit`) meet. For every step size ``eta`` of ``simulation.etas`` (the
paper's alpha) the noisy algorithm runs ``simulation.runs`` independent runs from ``model.init``;
the limit starts at ``Phi(w0)`` (the fast phase is instantaneous in the rescaled time) and both are
saved on the same grid of rescaled times ``t = j * simulation.tau_save``:

- non-degenerate (and trivial) noise: ``tau = eta sigma^2 k``;
- degenerate noise: ``tau = eta^2 sigma^2 k``;

which one applies is decided by :func:`sgdlab.manifold.limit.classify_noise` at ``Phi(w0)``
(``limit.kind = "auto"``) or forced by ``limit.kind``. The number of steps per save,
``tau_save / unit``, must be an integer for every eta (a ConfigError names the key otherwise).

``noise.sigma_scaling``: with ``"fixed"`` every eta uses ``noise.sigma``; with ``"sqrt_eta"``
``sigma(eta) = sigma sqrt(eta / etas[0])`` (``sigma^2 / eta`` fixed). The non-degenerate limit
needs ``sigma -> 0`` as well as ``eta -> 0``: at fixed sigma the simulation tends, as ``eta -> 0``,
to the gradient flow of ``L + sigma^2 Reg`` whose slow motion differs from the limit by
``O(sigma^2)``, so the O(eta) bias is only visible with ``sigma^2 proportional to eta``.

Dataset: one variable per observable of the model plus ``loss``, dims ``(method, eta, seed, t)``
with ``method = ["sim", "limit"]`` and ``t`` the rescaled time (its ``long_name`` says which). The
limit does not depend on eta (it is repeated along ``eta``); a deterministic limit is repeated
along ``seed``, a stochastic one (SGLD) has one independent path of the limit SDE per seed.
Variables ``sigma``, ``time_unit``, ``steps_per_save`` along ``eta``. Attrs: the standard ones
(:func:`sgdlab.core.provenance.provenance`, study ``"manifold"``) and ``model``, ``noise``,
``noise_kind``, ``time_scale``, ``limit_stochastic``, ``phi0``, ``rank``, ``observables``.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.core.provenance import provenance
from sgdlab.manifold import limit as mf
from sgdlab.manifold import models as mm
from sgdlab.manifold import noise as ni
from sgdlab.manifold.config import MODEL_KEYS, ManifoldConfig, ManifoldModelConfig, load_config

__all__ = [
    "build_algorithm",
    "build_model",
    "classify_manifold_noise",
    "fast_phase",
    "limit_inputs",
    "run",
    "sigma_for",
    "solve_manifold_limit",
    "steps_per_save",
    "time_unit",
]

STUDY_NAME = "manifold"


def build_model(section: ManifoldModelConfig) -> mm.ManifoldModel:
    """The :class:`~sgdlab.manifold.models.ManifoldModel` of ``[model]`` (the same object for the
    same keys, so that compiled solver pieces are reused across runs)."""
    return _build_model(json.dumps(section.model_dump(mode="json"), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _build_model(section_json: str) -> mm.ManifoldModel:
    section = json.loads(section_json)
    kwargs = {k: section[k] for k in MODEL_KEYS if section.get(k) is not None}
    try:
        return mm.make_model(section["name"], init=section["init"], **kwargs)
    except ValueError as err:
        raise ConfigError(f"invalid config:\n  model: {err}") from None


def sigma_for(cfg: ManifoldConfig, eta: float, n_samples: int) -> float:
    """The noise scale used at step size ``eta`` (see ``noise.sigma_scaling``)."""
    if cfg.noise.name == "minibatch_sgd":
        return ni.minibatch_sigma(cfg.noise.batch_size, n_samples)
    if cfg.noise.sigma_scaling == "sqrt_eta":
        return cfg.noise.sigma * math.sqrt(eta / cfg.simulation.etas[0])
    return cfg.noise.sigma


def time_unit(kind: str, eta: float, sigma: float) -> float:
    """Rescaled time per step: ``eta^2 sigma^2`` (degenerate) or ``eta sigma^2`` (otherwise)."""
    return eta**2 * sigma**2 if kind == mf.DEGENERATE else eta * sigma**2


def build_algorithm(cfg: ManifoldConfig, model: mm.ManifoldModel, eta: float, sigma: float) -> ni.Algorithm:
    """The noisy algorithm of ``cfg`` on ``model`` at ``(eta, sigma)``."""
    return _algorithm(model, _noise_key(cfg), eta, sigma)


def _noise_key(cfg: ManifoldConfig) -> tuple:
    """``(name, distribution, batch_size)``: the keys of ``[noise]`` that fix the algorithm."""
    return cfg.noise.name, cfg.noise.distribution, cfg.noise.batch_size


def _algorithm(model: mm.ManifoldModel, noise: tuple, eta: float, sigma: float) -> ni.Algorithm:
    name, distribution, batch_size = noise
    if name == "anticorrelated_perturbed_gd":
        return ni.anticorrelated_perturbed_gd(model.loss, sigma, eta)
    sizes = ni.Sizes(model.n_samples, model.n_units, model.n_params)
    injection = ni.make_injection(name, sigma, distribution=distribution, batch_size=batch_size, n_samples=model.n_samples)
    return ni.noise_injected_gd(model.apply, model.x, model.y, sizes, injection, eta)


def limit_inputs(cfg: ManifoldConfig, model: mm.ManifoldModel):
    """``(loss_hat, zeta_dim, correlation)`` of the noise of ``cfg`` on ``model``: what the limit
    solver needs. In rescaled time the limit does not depend on sigma, and the same function object
    is returned for the same model and noise (so the solver's compiled pieces are reused)."""
    return _limit_inputs(model, *_noise_key(cfg))


@functools.lru_cache(maxsize=64)
def _limit_inputs(model: mm.ManifoldModel, name: str, distribution: str | None, batch_size: int | None):
    sizes = ni.Sizes(model.n_samples, model.n_units, model.n_params)
    sigma = 1.0 if name != "minibatch_sgd" else None
    injection = ni.make_injection(name, sigma or 0.0, distribution=distribution, batch_size=batch_size, n_samples=model.n_samples)
    loss_hat = ni.model_loss_hat(model.apply, model.x, model.y, model.n_units, injection)
    return loss_hat, injection.zeta_size(sizes), injection.correlation(sizes)


def classify_manifold_noise(cfg: ManifoldConfig, model: mm.ManifoldModel, inputs=None) -> mf.NoiseClass:
    """Classification of the noise of ``cfg`` at ``Phi(w0)`` (see :func:`sgdlab.manifold.limit.classify_noise`).
    ``inputs``: the result of :func:`limit_inputs` (reuse it to reuse the compiled solver)."""
    loss_hat, zeta_dim, corr = inputs or limit_inputs(cfg, model)
    phi0, rank = fast_phase(cfg, model)
    return mf.classify_noise(model.loss, loss_hat, zeta_dim, phi0, corr, rank)


def fast_phase(cfg: ManifoldConfig, model: mm.ManifoldModel) -> tuple[np.ndarray, int]:
    """``(Phi(w0), rank of H there)``, or a named error: :class:`NonFiniteError` when the gradient
    flow from ``model.init`` does not reach the zero-loss set (Phi is NaN), :class:`ConfigError`
    naming ``model.init`` when it ends at a critical point of positive loss (a saddle) and
    ``limit.rank_rtol`` when the Hessian there has no clear rank gap."""
    tol = cfg.limit.phi_tol
    phi0 = np.asarray(mf.jitted_gradient_flow_limit(model.loss, tol)(model.w0))
    if not np.all(np.isfinite(phi0)):
        raise NonFiniteError(
            f"the fast phase failed: Phi(w0), the end of the gradient flow from w0 = {np.asarray(model.w0).tolist()} "
            f"stopped at |grad L| < limit.phi_tol = {tol:g}, is not finite at t=0 (deterministic, no seed): the flow did not "
            "reach the zero-loss set within 200000 steps; start closer to it (model.init) or raise limit.phi_tol"
        )
    end_loss, start_loss = (float(v) for v in np.asarray(_end_and_start_loss(model.loss)(phi0, model.w0)))
    if end_loss > 1e-10 * max(1.0, start_loss):
        raise ConfigError(
            f"invalid config:\n  model.init: the gradient flow from w0 = {np.asarray(model.w0).tolist()} ends at a critical point "
            f"with loss {end_loss:.3g} > 0 (a saddle, not the zero-loss set), where there is no slow limit; change model.init"
        )
    try:
        rank = mf.hessian_rank(model.loss, phi0, cfg.limit.rank_rtol)
    except ValueError as err:
        raise ConfigError(f"invalid config:\n  limit.rank_rtol: {err} (at Phi(w0); change limit.rank_rtol, "
                          "limit.phi_tol or model.init)") from None
    return phi0, rank


@functools.lru_cache(maxsize=16)
def _end_and_start_loss(loss):
    """``(phi0, w0) -> [L(phi0), L(w0)]``: one jitted program (eager calls would compile every op)."""

    def losses(end, start):
        return jnp.stack([loss(end), loss(start)])

    return jax.jit(losses)


@functools.lru_cache(maxsize=16)
def _observer(model: mm.ManifoldModel):
    """``w (paths, T, p) -> {name: (paths, T)}``, jitted once per model."""
    return jax.jit(jax.vmap(jax.vmap(model.observe)))


@functools.lru_cache(maxsize=32)
def _runner(model: mm.ManifoldModel, noise: tuple, eta: float, sigma: float, k: int, n_saves: int):
    """The jitted runner of the noise ``noise`` (:func:`_noise_key`) at ``(eta, sigma, k, n_saves)``,
    built once: another seed reuses it."""
    return ni.make_runner(_algorithm(model, noise, eta, sigma), model.observe, k, n_saves)


def solve_manifold_limit(cfg: ManifoldConfig, model: mm.ManifoldModel, inputs=None) -> mf.LimitSolution:
    """The slow limit of ``cfg`` (the generic solver of :mod:`sgdlab.manifold.limit`)."""
    loss_hat, zeta_dim, corr = inputs or limit_inputs(cfg, model)
    lim, sim = cfg.limit, cfg.simulation
    keys = ni.run_keys(sim.seed, sim.runs, salt=1_000_003)
    return mf.solve_limit(
        model.loss,
        loss_hat,
        zeta_dim,
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


def steps_per_save(cfg: ManifoldConfig, unit: float, eta: float) -> int:
    """``tau_save / unit`` as an integer, or a ConfigError naming ``simulation.tau_save``."""
    if not unit > 0:
        raise ConfigError(
            f"invalid config:\n  noise: the noise scale is 0 at eta={eta} (time unit {unit:g}): the rescaled time does not "
            "advance; use a noisy setting (noise.batch_size < model.n for minibatch_sgd)"
        )
    exact = cfg.simulation.tau_save / unit
    k = int(round(exact))
    if k < 1 or abs(exact - k) > 1e-6 * exact:
        raise ConfigError(
            f"invalid config:\n  simulation.tau_save: {cfg.simulation.tau_save} must be a positive integer multiple of the time unit "
            f"{unit:.6g} at eta={eta} ({exact:.6g} steps per save); change tau_save, etas or sigma"
        )
    if k * cfg.simulation.n_saves > cfg.simulation.max_steps:
        raise ConfigError(
            f"invalid config:\n  simulation.max_steps: eta={eta} needs {k * cfg.simulation.n_saves} steps (> max_steps="
            f"{cfg.simulation.max_steps}); raise max_steps, lower tau_max or raise eta / sigma"
        )
    return k


def _first_non_finite(values: dict[str, np.ndarray]) -> tuple[str, int, int] | None:
    """``(name, path index, time index)`` of the earliest non-finite entry of arrays ``(paths, T)``."""
    best = None
    for name, arr in values.items():
        where = np.argwhere(~np.isfinite(arr))
        if where.size:
            r, j = where[np.argmin(where[:, 1])]
            if best is None or j < best[2]:
                best = (name, int(r), int(j))
    return best


def _dataset(cfg, model, limit, kind, names, sim_out, lim_obs, sigmas, units, steps, status) -> xr.Dataset:
    sim = cfg.simulation
    n_eta, n_t = len(sim.etas), sim.n_saves + 1
    data_vars: dict[str, Any] = {}
    for name in names:
        lim = lim_obs[name]
        lim = np.broadcast_to(lim, (sim.runs, n_t)) if lim.shape[0] == 1 else lim
        arr = np.stack([sim_out[name], np.broadcast_to(lim, (n_eta, sim.runs, n_t))])
        data_vars[name] = (("method", "eta", "seed", "t"), arr, {"long_name": model.descriptions.get(name, name)})
    data_vars["sigma"] = ("eta", np.asarray(sigmas, float), {"long_name": "noise scale sigma at eta"})
    data_vars["time_unit"] = ("eta", np.asarray(units, float), {"long_name": "rescaled time per step"})
    data_vars["steps_per_save"] = ("eta", np.asarray(steps, dtype=np.int64), {"long_name": "steps between saves"})
    attrs = provenance(cfg, study=STUDY_NAME, status=status)
    attrs.update(
        model=model.description,
        noise=cfg.noise.label,
        noise_kind=kind,
        time_scale=limit.noise.time_scale,
        limit_stochastic=int(limit.noise.stochastic and kind == mf.DEGENERATE),
        phi0=json.dumps([float(v) for v in limit.phi0]),
        rank=limit.noise.rank,
        observables=json.dumps(names),
    )
    return xr.Dataset(
        data_vars,
        coords={
            "method": ["sim", "limit"],
            "eta": ("eta", np.asarray(sim.etas, float), {"long_name": "step size eta (the paper's alpha)"}),
            "seed": np.arange(sim.runs, dtype=np.int64),
            "t": ("t", np.asarray(limit.tau, float), {"long_name": f"rescaled time ({limit.noise.time_scale})"}),
        },
        attrs=attrs,
    )


def run(config: ManifoldConfig | dict[str, Any] | str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """Run the noisy algorithm for every eta of ``config`` and its slow limit; see the module
    docstring for the Dataset. ``config``: a dict of TOML keys, a TOML path, a validated
    :class:`ManifoldConfig` or ``None`` (the built-in ``default`` example).
    ``progress(done, total)`` is called after the limit and after each eta.

    Raises :class:`~sgdlab.core.errors.ConfigError` (before any simulation) and
    :class:`~sgdlab.core.errors.NonFiniteError` naming the quantity, the time, eta and the run
    (``partial``: the Dataset of what was computed, NaN where nothing was).
    """
    cfg = load_config(config)
    model = build_model(cfg.model)
    sim = cfg.simulation
    names = list(model.observables) + ["loss"]
    unknown = [v for v in (cfg.plot.variables or []) if v not in names]
    if unknown or cfg.plot.variables == []:
        raise ConfigError(f"invalid config:\n  plot.variables: {unknown or '[]'} not observables of model {cfg.model.name!r}; allowed: {', '.join(names)}")
    total = len(sim.etas) + 1
    inputs = limit_inputs(cfg, model)
    noise_class = classify_manifold_noise(cfg, model, inputs)
    kind = noise_class.kind if cfg.limit.kind == "auto" else cfg.limit.kind
    sigmas = [sigma_for(cfg, eta, model.n_samples) for eta in sim.etas]
    units = [time_unit(kind, eta, sigma) for eta, sigma in zip(sim.etas, sigmas)]
    steps = [steps_per_save(cfg, unit, eta) for unit, eta in zip(units, sim.etas)]  # ConfigError before any work
    if kind == mf.DEGENERATE and noise_class.stochastic:  # one limit path per run: the memory check with them
        why = cfg.memory_problem(stochastic_limit=True)
        if why is not None:
            raise ConfigError(f"invalid config:\n  config: {why}")
    limit = solve_manifold_limit(cfg, model, inputs)
    lim_obs = {k: np.asarray(v) for k, v in _observer(model)(limit.w).items()}  # (paths, T)
    n_t = sim.n_saves + 1
    sim_out = {k: np.full((len(sim.etas), sim.runs, n_t), np.nan) for k in names}

    def failed(message: str) -> NonFiniteError:
        ds = _dataset(cfg, model, limit, kind, names, sim_out, lim_obs, sigmas, units, steps, f"failed: {message}")
        return NonFiniteError(message, partial=ds)

    bad = _first_non_finite(lim_obs)
    if bad is not None:
        name, path, j = bad
        raise failed(f"the limit is not finite: {name} at t={limit.tau[j]:g} ({limit.noise.time_scale}), limit path {path} "
                     f"(simulation.seed={sim.seed}); try more limit.substeps")
    if progress is not None:
        progress(1, total)

    noise = _noise_key(cfg)
    for ie, (eta, sigma, k) in enumerate(zip(sim.etas, sigmas, steps)):
        try:
            runner = _runner(model, noise, eta, sigma, k, sim.n_saves)
        except TypeError:  # an unhashable user noise factory: not cached
            runner = _runner.__wrapped__(model, noise, eta, sigma, k, sim.n_saves)
        _, obs = runner(model.w0, ni.run_keys(sim.seed, sim.runs, salt=ie))
        for name in names:
            sim_out[name][ie] = np.asarray(obs[name])
        bad = _first_non_finite({name: sim_out[name][ie] for name in names})
        if bad is not None:
            name, r, j = bad
            raise failed(
                f"simulation diverged: {name} is not finite at t={limit.tau[j]:g} (step {j * k}) for eta={eta:g} (sigma={sigma:.4g}), "
                f"run {r} of {sim.runs} (simulation.seed={sim.seed}); GD is stable only for eta lambda_max(H) < 2: "
                f"lower simulation.etas or noise.sigma"
            )
        if progress is not None:
            progress(ie + 2, total)
    return _dataset(cfg, model, limit, kind, names, sim_out, lim_obs, sigmas, units, steps, "complete")


def config_of(ds: xr.Dataset) -> ManifoldConfig:
    """The validated config stored in a manifold Dataset's attrs."""
    return load_config(json.loads(ds.attrs["config"]))
