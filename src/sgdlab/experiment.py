"""Run an experiment described by a config and return an ``xarray.Dataset``.

This is orchestration, outside the numerical core: it builds the pure simulator of
:mod:`sgdlab.simulation`, ``jit(vmap(...))``-s it over seeds, drives the time loop in chunks (for the
progress bar and to stop at the first non-finite value), and assembles the Dataset with dims
``(method, seed, t)``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sgdlab import __version__
from sgdlab.config import Config, load_config
from sgdlab.simulation import batched, observable_names, simulation_setup, tile_params

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


class NonFiniteError(FloatingPointError):
    """A simulated quantity became NaN or inf. ``partial`` holds the Dataset up to that time."""

    def __init__(self, message: str, partial: xr.Dataset | None = None):
        super().__init__(message)
        self.partial = partial


def run(config: Config | dict[str, Any] | str | None = None, progress: ProgressFn | None = None) -> xr.Dataset:
    """Run ``config`` (a :class:`~sgdlab.config.Config`, a dict of TOML keys, a TOML path or
    ``None`` for the default experiment) and return its Dataset.

    Dims ``(method, seed, t)``; ``method = ["sim"]``; variables ``m, q, train_loss, train_error,
    test_loss, test_error, batch_occupancy`` (plus ``*_sampled`` with a sampled test set); attrs
    ``config`` (JSON), ``sgdlab_version``. ``progress(done, total)`` is called after each chunk.
    Raises :class:`NonFiniteError` at the first saved time where a quantity is NaN or inf.
    """
    cfg = load_config(config)
    return simulate(cfg, progress)


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
    )


def simulate(cfg: Config, progress: ProgressFn | None = None) -> xr.Dataset:
    """Direct simulation of ``cfg`` (validated), vmapped over seeds; see :func:`run`."""
    alg, sim = cfg.algorithm, cfg.simulation
    spec, params = simulation_inputs(cfg)
    init, observe, advance = batched(spec)
    seeds = sim.seed_list
    names = observable_names(sim.test_samples)
    n_blocks = alg.n_saves
    per_chunk, n_chunks = _chunking(n_blocks)
    batch = sim.seed_batch or len(seeds)
    seed_batches = [seeds[i : i + batch] for i in range(0, len(seeds), batch)]

    times = np.arange(n_blocks + 1) * alg.save_every * alg.eta
    out = {k: np.full((len(seeds), n_blocks + 1), np.nan) for k in names}
    done, total = 0, len(seed_batches) * n_chunks
    for ib, batch_seeds in enumerate(seed_batches):
        rows = slice(ib * batch, ib * batch + len(batch_seeds))
        keys = jax.vmap(jax.random.key)(jnp.asarray(batch_seeds, dtype=jnp.uint32))
        batch_params = tile_params(params, len(batch_seeds))
        data, state = init(batch_params, keys)
        obs0 = observe(batch_params, data, state)
        for k in names:
            out[k][rows, 0] = np.asarray(obs0[k], dtype=np.float64)
        filled = 0
        for _ in range(n_chunks):
            state, obs = advance(batch_params, data, keys, state, per_chunk)
            take = min(per_chunk, n_blocks - filled)
            for k in names:
                out[k][rows, 1 + filled : 1 + filled + take] = np.asarray(obs[k][:, :take], dtype=np.float64)
            filled += take
            done += 1
            bad = _first_non_finite(out, rows, filled + 1)
            if bad is not None:
                name, j, seed_index = bad
                partial = _to_dataset(cfg, {k: v[:, :j] for k, v in out.items()}, times[:j], seeds)
                partial.attrs["status"] = "failed: non-finite"
                raise NonFiniteError(
                    f"{name} became {out[name][seed_index, j]} at t={times[j]:g} (step {j * alg.save_every}) "
                    f"for seed {seeds[seed_index]}; the run stopped there (lower eta or check the config)",
                    partial,
                )
            if progress is not None:
                progress(done, total)
        del data, state
    return _to_dataset(cfg, out, times, seeds)


def _first_non_finite(out: dict, rows: slice, upto: int):
    """``(quantity, time index, seed index)`` of the earliest non-finite value, or ``None``."""
    best = None
    for name, arr in out.items():
        block = arr[rows, :upto]
        bad = ~np.isfinite(block)
        if bad.any():
            seed_i, j = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
            if best is None or j < best[1]:
                best = (name, int(j), rows.start + int(seed_i))
    return best


def _to_dataset(cfg: Config, out: dict, times: np.ndarray, seeds: list[int]) -> xr.Dataset:
    steps = np.rint(times / cfg.algorithm.eta).astype(np.int64)
    data_vars = {
        k: (("method", "seed", "t"), v[None], {"long_name": DESCRIPTIONS.get(k, k)}) for k, v in out.items()
    }
    ds = xr.Dataset(
        data_vars,
        coords={
            "method": ["sim"],
            "seed": np.asarray(seeds, dtype=np.int64),
            "t": ("t", times, {"long_name": "time t = k eta"}),
            "step": ("t", steps),
        },
        attrs={
            "config": cfg.to_json(),
            "config_hash": cfg.config_hash(),
            "sgdlab_version": __version__,
            "jax_version": jax.__version__,
            "backend": jax.default_backend(),
            "status": "complete",
        },
    )
    return ds


def config_of(ds: xr.Dataset) -> Config:
    """The validated config stored in a Dataset's attrs."""
    return load_config(json.loads(ds.attrs["config"]))
