"""Run an experiment described by a config and return an ``xarray.Dataset``.

This is orchestration, outside the numerical core: it builds the pure simulator of
:mod:`sgdlab.dmft.simulation`, ``jit(vmap(...))``-s it over seeds, drives the time loop in chunks (for the
progress bar and to stop at the first non-finite value), and assembles the Dataset with dims
``(method, seed, t)``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import xarray as xr

from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.core.provenance import provenance
from sgdlab.dmft.config import Config, load_config
from sgdlab.dmft.simulation import batched, observable_names, seed_keys, simulation_setup, tile_params

#: Long names of the saved variables (stored as attrs and used as plot labels).
DESCRIPTIONS = {
    "m": "overlap m = w.v/d",
    "q": "self-overlap q = C(t,t) = w.w/d",
    "train_loss": "training loss (mean over samples)",
    "train_error": "training error (fraction misclassified)",
    "test_loss": "test loss (exact, from m and q)",
    "test_error": "test error (exact, from m and q)",
    "batch_occupancy": "fraction of samples in the batch",
    "test_loss_sampled": "test loss on a sampled test set",
    "test_error_sampled": "test error on a sampled test set",
}

ProgressFn = Callable[[int, int], None]


def run(
    config: Config | dict[str, Any] | str | None = None,
    progress: ProgressFn | None = None,
    simulation: bool | None = None,
) -> xr.Dataset:
    """Run ``config`` (a :class:`~sgdlab.dmft.config.Config`, a dict of TOML keys, a TOML path or
    ``None`` for the built-in default experiment) and return its Dataset.

    Dims ``(method, seed, t)``: ``method`` holds ``"sim"`` (the direct simulation, unless
    ``simulation.enabled = false`` or ``simulation=False``) and every theory of ``[theory]
    methods`` (e.g. ``"dmft"``, whose curves are repeated along ``seed`` when there is a
    simulation: a theory has no seed; without a simulation the dims are ``(method, t)``).
    Variables ``m, q, train_loss, train_error, test_loss, test_error`` for every method,
    ``batch_occupancy`` (plus ``*_sampled`` with a sampled test set) for the simulation, and for
    the DMFT ``C, R`` over ``(method, t, t_prime)`` and ``residual`` over ``(method, iteration)``.
    Attrs: the standard provenance (``config``, ``config_hash``, ``study = "dmft"``, ``status``,
    versions) and per theory ``<method>_converged``. ``progress(done, total)`` is called after
    each simulation chunk. Raises :class:`NonFiniteError` at the first saved time where a
    simulated quantity is NaN or inf (its ``partial`` keeps the run up to that time).
    """
    cfg = load_config(config)
    if simulation is not None and simulation != cfg.simulation.enabled:
        cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"enabled": simulation})})
    parts = []
    if cfg.simulation.enabled:
        parts.append(simulate(cfg, progress))
    for method in cfg.theory.methods:
        parts.append(solve_theory(cfg, method))
    if not parts:
        raise ConfigError("nothing to run: simulation.enabled = false and no [theory] methods")
    return combine(parts, cfg)


def run_many(cfgs: list[Config]) -> list[xr.Dataset | Exception]:
    """The Datasets of several configs of one structure (sweep points; see :func:`group_key`):
    their simulations in one vmapped program, then each config's theories. A failed config
    gives its exception in place of a Dataset; the others are unaffected."""
    first = cfgs[0]
    width = first.seed_batch_width() if first.simulation.seed_batch is None else min(first.seed_batch_width(), len(first.simulation.seed_list))
    sims: list[Any] = simulate_many(cfgs, max_entries=width, max_chunks=1) if first.simulation.enabled else [None] * len(cfgs)
    out: list[xr.Dataset | Exception] = []
    for cfg, sim in zip(cfgs, sims):
        if isinstance(sim, Exception):
            out.append(sim)
            continue
        try:
            parts = ([sim] if sim is not None else []) + [solve_theory(cfg, m) for m in cfg.theory.methods]
            out.append(combine(parts, cfg))
        except Exception as err:  # e.g. a DMFT that cannot be solved at this point
            out.append(err)
    return out


def group_key(cfg: Config):
    """Configs with equal keys share one compiled simulation in :func:`run_many`."""
    spec = simulation_inputs(cfg)[0] if cfg.simulation.enabled else None
    return (spec, cfg.algorithm.n_saves, cfg.simulation.enabled, tuple(cfg.theory.methods))


def dmft_inputs(cfg: Config):
    """``(problem, Dynamics, SolverOptions)`` of the DMFT for a validated config.

    The DMFT is written for the unnormalised update; a normalised config is mapped exactly by
    ``eta' = eta/b, lambda' = b lambda, T' = b T`` (the mask chain's probabilities are unchanged:
    they depend on ``eta/tau``). The number of steps covers the saved times.
    """
    from dataclasses import replace

    from sgdlab.dmft.batch_mask import mask_chain
    from sgdlab.dmft.solver import Dynamics, SolverOptions

    alg, th = cfg.algorithm, cfg.theory
    problem = cfg.problem.to_problem()
    langevin = alg.name == "langevin"
    chain = mask_chain("persistent_sgd" if langevin else alg.name, alg.eta, alg.batch_fraction, alg.persistence_time)
    eta, temperature = alg.eta, (alg.temperature if langevin else 0.0)
    n_steps = alg.n_saves * alg.save_every
    plan = alg.plan
    if not plan.constant:  # per-step arrays (the batch-fraction schedule is unnormalised only)
        eta = np.asarray(plan.eta)[:n_steps]
        chain = chain._replace(p_on=np.asarray(plan.p_on)[:n_steps], p_off=np.asarray(plan.p_off)[:n_steps], b=plan.b0)
    if alg.normalisation == "normalised":
        b = alg.batch_fraction
        eta, temperature = eta / b, temperature * b
        problem = replace(problem, ridge=problem.ridge * b)
    beta = alg.momentum
    dynamics = Dynamics(
        eta=eta, n_steps=n_steps, p_on=chain.p_on, p_off=chain.p_off, b=chain.b, temperature=temperature,
        beta=beta, gamma=beta if alg.nesterov else 0.0,
    )
    options = SolverOptions(
        samples=th.samples, damping=th.damping, iterations=th.iterations, tolerance=th.tolerance, seed=th.seed,
        response=th.response, start=th.start,
    )
    return problem, dynamics, options


#: the DMFT curves that carry a Monte-Carlo standard error ``<name>_se``
DMFT_CURVES = ("m", "q", "train_loss", "train_error", "test_loss", "test_error")


def solve_theory(cfg: Config, method: str) -> xr.Dataset:
    """The Dataset of one theory (``"dmft"``) for ``cfg``, on the simulation's time grid.

    The DMFT is solved ``theory.solves`` times with independent random streams (replica ``r``:
    ``fold_in(key(theory.seed), r)``), ``theory.samples`` trajectories each; the curves and
    ``C, R`` are their means, and every curve ``X`` carries ``X_se``, the standard error of that
    mean (sample standard deviation over the solves / sqrt(solves)). Independent solves, rather
    than batch means over one solve's trajectories, because the kernels are self-consistent: the
    noise of one part of the sample feeds back into every trajectory through ``(m, C, R)``, so
    trajectories of one solve are not independent, while separate solves are.
    """
    if method != "dmft":
        raise ValueError(f"unknown theory method {method!r}; available: dmft")
    import warnings

    from sgdlab.dmft.solver import DMFTConvergenceWarning, dmft_dataset, solve_dmft

    problem, dynamics, options = dmft_inputs(cfg)
    alg = cfg.algorithm
    times = np.asarray(alg.plan.times)[: alg.n_saves * alg.save_every + 1]
    parts = []
    with warnings.catch_warnings(record=True) as caught:  # non-convergence becomes the result's status
        warnings.simplefilter("always", DMFTConvergenceWarning)
        for r in range(cfg.theory.solves):
            result = solve_dmft(problem, dynamics, options._replace(replica=r))
            # time_step: the config's own eta (a normalised config is solved with eta / b, but t = k eta)
            parts.append(dmft_dataset(result, alg.save_every, time_step=alg.eta, times=times))
    ds = parts[0].copy()
    stack = xr.concat([p.drop_vars(["residual", "iteration"]) for p in parts], dim="solve")
    n = cfg.theory.solves
    for name in [v for v in stack.data_vars]:
        ds[name] = stack[name].mean("solve").assign_attrs(parts[0][name].attrs)
    for name in DMFT_CURVES:
        se = stack[name].std("solve", ddof=1) / np.sqrt(n)
        ds[f"{name}_se"] = se.assign_attrs(long_name=f"Monte-Carlo standard error of the DMFT {name} ({n} independent solves)")
    ds.attrs = {f"dmft_{k}": v for k, v in ds.attrs.items() if k != "sgdlab_version"}
    ds.attrs["dmft_converged"] = int(all(p.attrs["converged"] for p in parts))
    ds.attrs["dmft_solves"] = n
    flags = [str(w.message) for w in caught if issubclass(w.category, DMFTConvergenceWarning)]
    if flags:
        ds.attrs["status"] = f"flagged: {flags[0]} (raise theory.iterations or theory.damping, or theory.tolerance)"
    return ds


def combine(parts: list[xr.Dataset], cfg: Config) -> xr.Dataset:
    """One Dataset from a simulation and theories: theories are repeated along ``seed``."""
    sim = next((p for p in parts if "seed" in p.dims), None)
    aligned = []
    for p in parts:
        if sim is not None and "seed" not in p.dims:
            p = p.copy()
            for name in [v for v in p.data_vars if set(p[v].dims) == {"method", "t"}]:
                p[name] = p[name].expand_dims(seed=sim.seed).transpose("method", "seed", "t")
        aligned.append(p)
    attrs = {}
    for p in parts:
        attrs.update(p.attrs)
    ds = aligned[0] if len(aligned) == 1 else xr.concat(aligned, dim="method", data_vars="all", join="outer", combine_attrs="drop")
    flags = [p.attrs["status"] for p in parts if str(p.attrs.get("status", "complete")).startswith("flagged")]
    ds.attrs = {**attrs, **provenance(cfg, study="dmft")}
    if flags:  # a theory that did not converge flags the whole result (kept, marked, exit != 0)
        ds.attrs["status"] = "; ".join(flags)
    return ds


def _chunking(n_blocks: int, max_chunks: int = 25) -> tuple[int, int]:
    """``(blocks per chunk, number of chunks)`` covering ``n_blocks`` with little padding."""
    n_chunks = max(1, min(n_blocks, max_chunks))
    per_chunk = math.ceil(n_blocks / n_chunks)
    return per_chunk, math.ceil(n_blocks / per_chunk)


def simulation_inputs(cfg: Config):
    """``(SimSpec, SimParams)`` of a validated config."""
    alg, sim = cfg.algorithm, cfg.simulation
    return simulation_setup(
        cfg.problem.to_problem(),
        alg.name,
        sim.d,
        alg.eta,
        alg.batch_fraction,
        alg.persistence_time,
        alg.temperature,
        alg.normalisation,
        alg.save_every,
        jnp.float64 if sim.dtype == "float64" else jnp.float32,
        sim.test_samples,
        alg.plan,
        alg.momentum,
        alg.nesterov,
    )


def simulate(cfg: Config, progress: ProgressFn | None = None) -> xr.Dataset:
    """Direct simulation of ``cfg`` (validated), vmapped over seeds; see :func:`run`."""
    (result,) = simulate_many([cfg], progress, max_entries=cfg.seed_batch_width())
    if isinstance(result, NonFiniteError):
        raise result
    return result


def simulate_many(
    cfgs: list[Config], progress: ProgressFn | None = None, max_entries: int | None = None, max_chunks: int = 25
) -> list[xr.Dataset | NonFiniteError]:
    """Simulate several configs that share one static structure (:class:`SimSpec` and number of
    saves) in one vmapped program; returns one Dataset per config, or the
    :class:`NonFiniteError` of a config whose run produced NaN/inf (the others are unaffected).

    The batch axis holds every (config, seed) pair, at most ``max_entries`` at a time (default:
    all), in groups of one width (the last padded), so the program compiles once.
    The time loop runs in at most ``max_chunks`` jitted calls (progress and NaN checks between).
    """
    specs = [simulation_inputs(c) for c in cfgs]
    spec, n_blocks = specs[0][0], cfgs[0].algorithm.n_saves
    if any(sp != spec or c.algorithm.n_saves != n_blocks for (sp, _), c in zip(specs, cfgs)):
        raise ValueError("simulate_many needs configs with the same static structure and number of saves")
    init, observe, advance = batched(spec)
    names = observable_names(spec.test_samples)
    per_chunk, n_chunks = _chunking(n_blocks, max_chunks)
    entries = [(i, seed) for i, c in enumerate(cfgs) for seed in c.simulation.seed_list]
    # balanced groups of one width (one compiled shape): ceil(E / max_entries) groups, the last
    # one padded with copies of its own entries
    n_groups = -(-len(entries) // (max_entries or len(entries)))
    width = -(-len(entries) // n_groups)
    groups = [entries[i : i + width] for i in range(0, len(entries), width)]
    out = np.full((len(names), len(entries), n_blocks + 1), np.nan)
    failed: dict[int, tuple] = {}  # config index -> (quantity, time index, seed)
    done, total = 0, len(groups) * n_chunks
    for ig, group in enumerate(groups):
        rows = slice(ig * width, ig * width + len(group))
        owner = np.array([i for i, _ in group])
        # a short group is padded to the width with copies of its entries (one compiled shape)
        run_group = [group[k % len(group)] for k in range(width)]
        n_run = len(group)
        keys = seed_keys([seed for _, seed in run_group])
        params = tile_params([specs[i][1] for i, _ in run_group], 1)
        data, state = init(params, keys)
        obs = observe(params, data, state)
        out[:, rows, 0] = np.stack([np.asarray(obs[k], dtype=np.float64)[:n_run] for k in names])
        filled = 0
        for _ in range(n_chunks):
            state, obs = advance(params, data, keys, state, per_chunk)
            take = min(per_chunk, n_blocks - filled)
            out[:, rows, 1 + filled : 1 + filled + take] = np.stack([np.asarray(obs[k], dtype=np.float64)[:n_run, :take] for k in names])
            filled += take
            done += 1
            bad = ~np.isfinite(out[:, rows, : filled + 1])  # (names, entries, t)
            broken = np.nonzero(bad.any(axis=(0, 2)))[0]
            for e in broken:  # the earliest time of each config over all its seeds (ties: first seed)
                i = int(owner[e])
                j = int(np.nonzero(bad[:, e].any(axis=0))[0][0])
                if i not in failed or (j, rows.start + int(e)) < (failed[i][1], failed[i][3]):
                    failed[i] = (names[int(np.nonzero(bad[:, e, j])[0][0])], j, group[e][1], rows.start + int(e))
            if progress is not None:
                progress(done, total)
            if len(broken) == len(group):
                break  # every entry of this group has failed: stop early (other groups still run)
        del data, state
    results: list[xr.Dataset | NonFiniteError] = []
    for i, cfg in enumerate(cfgs):
        rows_i = [r for r, (owner_i, _) in enumerate(entries) if owner_i == i]
        values = {k: out[a, rows_i] for a, k in enumerate(names)}
        times = cfg.algorithm.save_times()
        seeds = cfg.simulation.seed_list
        if i in failed:
            name, j, seed, row = failed[i]
            partial = _to_dataset(cfg, {k: v[:, :j] for k, v in values.items()}, times[:j], seeds)
            partial.attrs["status"] = "failed: non-finite"
            results.append(
                NonFiniteError(
                    f"{name} became {out[names.index(name), row, j]} at t={times[j]:g} "
                    f"(step {j * cfg.algorithm.save_every}) for seed {seed}; the run stopped there "
                    "(lower eta or check the config)",
                    partial,
                )
            )
        else:
            results.append(_to_dataset(cfg, values, times, seeds))
    return results


def _to_dataset(cfg: Config, out: dict, times: np.ndarray, seeds: list[int]) -> xr.Dataset:
    steps = (np.arange(times.size) * cfg.algorithm.save_every).astype(np.int64)
    data_vars = {
        k: (("method", "seed", "t"), v[None], {"long_name": DESCRIPTIONS.get(k, k)}) for k, v in out.items()
    }
    ds = xr.Dataset(
        data_vars,
        coords={
            "method": ["sim"],
            "seed": np.asarray(seeds, dtype=np.int64),
            "t": ("t", times, {"long_name": "time t_k = sum_{j<k} eta_j (k eta at constant eta)"}),
            "step": ("t", steps),
        },
        attrs=provenance(cfg, study="dmft"),
    )
    return ds



def config_of(ds: xr.Dataset) -> Config:
    """The validated config stored in a Dataset's attrs."""
    return load_config(json.loads(ds.attrs["config"]))
