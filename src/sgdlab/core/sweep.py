"""Parameter sweeps on dask.distributed, written point by point into one zarr store.

A sweep is a config with a ``[sweep]`` section (see :class:`sgdlab.dmft.config.SweepConfig`). Each
grid point is an ordinary experiment. Execution:

1. **Plan**: every point's config is built and validated on the client; a point whose values are
   invalid is recorded as failed with the validation message (the others run).
2. **Batch**: valid points sharing a static structure (same :class:`~sgdlab.dmft.simulation.SimSpec`
   and number of saves) are grouped ``points_per_task`` at a time; a task runs its points in one
   vmapped program (:func:`sgdlab.dmft.experiment.simulate_many`), compiled once per worker.
3. **Execute** on a dask ``Client``: a ``LocalCluster`` by default (one single-threaded worker
   process per core, loopback only, no dashboard unless asked), or an existing scheduler.
4. **Write** by region: the store is created up front (xarray, metadata only) with every point
   NaN and ``status = 0`` (pending); as each point finishes, the client writes its region with
   zarr directly (chunks are one point wide, so no two points share a chunk) and then a marker
   ``STORE/_points/<flat index>.json`` (status, config hash, error, seconds). The client is the
   only writer. A killed sweep loses no finished point; re-running the same command resumes,
   skipping every point whose marker says done with the same config hash.

Store layout: dims ``(*sweep dims, method, seed, t)``; one dim per grid key (named by the key,
e.g. ``algorithm.batch_fraction``) and a ``zip`` dim for zipped keys (each zipped key a
coordinate along it); ``status`` over the sweep dims (0 pending, 1 done, 2 failed); ``time``
(the actual times of each point, which differ when ``eta`` is swept; the ``t`` coordinate is
that of the first point).
"""

from __future__ import annotations

import itertools
import json
import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from sgdlab import __version__
from sgdlab.dmft.config import Config, ConfigError, load_config

PENDING, DONE, FAILED = 0, 1, 2
MARKERS = "_points"


@dataclass
class Point:
    """One grid point: its position, overrides, validated config (or the validation error)."""

    index: tuple[int, ...]
    flat: int
    overrides: dict[str, Any]
    config: Config | None = None
    error: str | None = None

    @property
    def config_hash(self) -> str:
        return self.config.config_hash() if self.config is not None else ""


@dataclass
class Plan:
    """The sweep's dims (name, coordinate values), points, and extra coordinates along ``zip``."""

    base: Config
    dims: list[tuple[str, list[Any]]]
    points: list[Point]
    zip_coords: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.dims)


def _set(tree: dict, dotted: str, value: Any) -> None:
    section, key = dotted.split(".", 1)
    tree.setdefault(section, {})[key] = value


def plan_sweep(cfg: Config) -> Plan:
    """Expand ``cfg.sweep`` into points (validated one by one; invalid ones carry their error)."""
    if cfg.sweep is None:
        raise ConfigError("config has no [sweep] section")
    sw = cfg.sweep
    dims: list[tuple[str, list[Any]]] = [(k, list(v)) for k, v in sw.grid.items()]
    if sw.zip:
        n_zip = len(next(iter(sw.zip.values())))
        dims.append(("zip", list(range(n_zip))))
    base = cfg.model_dump(mode="json", exclude={"sweep"})
    points = []
    for flat, index in enumerate(itertools.product(*(range(len(v)) for _, v in dims))):
        overrides = {}
        for (name, values), i in zip(dims, index):
            if name == "zip":
                overrides.update({k: v[i] for k, v in sw.zip.items()})
            else:
                overrides[name] = values[i]
        tree = json.loads(json.dumps(base))
        for key, value in overrides.items():
            _set(tree, key, value)
        point = Point(index, flat, overrides)
        try:
            point.config = load_config(tree)
        except ConfigError as err:
            point.error = str(err)
        points.append(point)
    return Plan(cfg, dims, points, dict(sw.zip))


def _groups(plan: Plan, todo: list[Point]) -> list[list[Point]]:
    """Points of equal static structure, ``points_per_task`` at a time."""
    from sgdlab.dmft.experiment import simulation_inputs

    by_key: dict[Any, list[Point]] = {}
    for p in todo:
        spec, _ = simulation_inputs(p.config)
        by_key.setdefault((spec, p.config.algorithm.n_saves), []).append(p)
    size = plan.base.sweep.points_per_task
    return [g[i : i + size] for g in by_key.values() for i in range(0, len(g), size)]


def run_points(config_jsons: list[str]) -> list[dict]:
    """Task body (runs on a worker): simulate configs of one structure in one vmapped program.

    Returns per config ``{"ok": True, "values": {var: (seeds, t)}, "time": (t,), "seconds": s}``
    or ``{"ok": False, "error": message}``.
    """
    _configure_worker_jax()
    from sgdlab.dmft.experiment import NonFiniteError, simulate_many

    start = time.perf_counter()
    cfgs = [load_config(json.loads(c)) for c in config_jsons]
    try:
        results = simulate_many(cfgs, max_chunks=1)
    except Exception as err:  # a whole task failed (e.g. out of memory): every point records it
        msg = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
        return [{"ok": False, "error": msg} for _ in cfgs]
    seconds = (time.perf_counter() - start) / len(cfgs)
    out = []
    for res in results:
        if isinstance(res, NonFiniteError):
            out.append({"ok": False, "error": f"NonFiniteError: {res}"})
        else:
            values = {k: res[k].values[0] for k in res.data_vars}
            out.append({"ok": True, "values": values, "time": res.t.values, "seconds": seconds})
    return out


def _configure_worker_jax() -> None:
    """Enable JAX's persistent compilation cache in this process (idempotent)."""
    import jax

    cache = os.environ.get("SGDLAB_JAX_CACHE", str(Path.home() / ".cache" / "sgdlab" / "jax"))
    if jax.config.jax_compilation_cache_dir != cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# ----------------------------------------------------------------------------- the store


def _template(plan: Plan, names: list[str], seeds: list[int], times: np.ndarray) -> xr.Dataset:
    import dask.array as da

    shape = plan.shape
    sweep_dims = [name for name, _ in plan.dims]
    full = shape + (1, len(seeds), len(times))
    chunks = (1,) * len(shape) + (1, len(seeds), len(times))
    dims = sweep_dims + ["method", "seed", "t"]
    data_vars = {k: (dims, da.full(full, np.nan, chunks=chunks)) for k in names}
    data_vars["time"] = (sweep_dims + ["t"], da.full(shape + (len(times),), np.nan, chunks=(1,) * len(shape) + (len(times),)))
    data_vars["status"] = (sweep_dims, da.zeros(shape, dtype=np.int8, chunks=(1,) * len(shape)))
    coords: dict[str, Any] = {name: values for name, values in plan.dims}
    coords.update({"method": ["sim"], "seed": np.asarray(seeds, dtype=np.int64), "t": times})
    for key, values in plan.zip_coords.items():
        coords[key] = ("zip", values)
    ds = xr.Dataset(data_vars, coords=coords)
    ds["method"] = ds["method"].astype(object)
    ds.attrs = {
        "config": plan.base.to_json(),
        "sweep_hash": plan.base.config_hash(),
        "sweep_dims": json.dumps(sweep_dims),
        "sgdlab_version": __version__,
        "kind": "sweep",
    }
    return ds


def _marker_dir(store: Path) -> Path:
    return store / MARKERS


def read_markers(store: str | Path) -> dict[int, dict]:
    """The per-point markers of a sweep store: ``{flat index: marker dict}``."""
    folder = _marker_dir(Path(store))
    out = {}
    if folder.is_dir():
        for f in folder.glob("[0-9]*.json"):
            out[int(f.stem)] = json.loads(f.read_text())
    return out


def _write_marker(store: Path, point: Point, status: str, error: str | None = None, seconds: float | None = None) -> None:
    folder = _marker_dir(store)
    if not folder.is_dir():
        folder.mkdir()
        # an empty zarr group, so that zarr readers see a known node and not a stray folder
        (folder / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    body = {
        "status": status,
        "index": list(point.index),
        "overrides": point.overrides,
        "config_hash": point.config_hash,
        "error": error,
        "seconds": seconds,
        "finished_at": time.time(),
    }
    tmp = folder / f".{point.flat}.json.tmp"
    tmp.write_text(json.dumps(body))
    tmp.replace(folder / f"{point.flat}.json")


def _write_point(group, plan: Plan, point: Point, result: dict | None) -> None:
    """Write one point's region (its own chunks) into the open zarr group, status last."""
    idx = tuple(point.index)
    if result:
        for k, v in result["values"].items():
            group[k][idx] = np.asarray(v, dtype=np.float64)[None]  # (method=1, seed, t)
        group["time"][idx] = np.asarray(result["time"], dtype=np.float64)
    group["status"][idx] = DONE if result else FAILED


def _open_group(store: Path):
    import zarr

    return zarr.open_group(str(store), mode="r+")


# ----------------------------------------------------------------------------- execution


def _make_client(scheduler: str | None, workers: int | None, dashboard: bool):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    saved = {k: os.environ.get(k) for k in ("XLA_FLAGS", "OMP_NUM_THREADS")}
    # one thread per worker process: flags must be in the environment before JAX is imported there
    os.environ["XLA_FLAGS"] = ((saved["XLA_FLAGS"] or "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        cluster = LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":8787" if dashboard else None,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Client(cluster), cluster


@dataclass
class SweepSummary:
    """Counts after a sweep (or of a store)."""

    total: int
    done: int
    failed: int
    pending: int
    skipped: int = 0
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


def run_sweep(
    config: Config | dict | str | Path,
    store: str | Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    dashboard: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    client=None,
) -> SweepSummary:
    """Run (or resume) the sweep of ``config`` into the zarr ``store``; see the module doc.

    ``client``: an existing ``dask.distributed.Client`` (else one is made from ``scheduler`` or
    a ``LocalCluster`` with ``workers`` processes). ``progress(done, total)`` after each point.
    """
    start = time.perf_counter()
    cfg = load_config(config)
    plan = plan_sweep(cfg)
    store = Path(store)
    markers: dict[int, dict] = {}
    if store.exists():
        existing = _open_attrs(store)
        if overwrite:
            import shutil

            shutil.rmtree(store)
        elif existing.get("sweep_hash") != cfg.config_hash():
            raise ConfigError(
                f"{store} holds a different sweep (config hash {existing.get('sweep_hash')} != {cfg.config_hash()}); "
                "use another store or --overwrite"
            )
        else:
            markers = read_markers(store)
    valid = [p for p in plan.points if p.config is not None]
    if not store.exists():
        if not valid:
            raise ConfigError("no valid point in the sweep:\n" + "\n".join(p.error or "" for p in plan.points))
        first = valid[0].config
        times = np.arange(first.algorithm.n_saves + 1) * first.algorithm.save_every * first.algorithm.eta
        shapes = {(len(p.config.simulation.seed_list), p.config.algorithm.n_saves) for p in valid}
        if len(shapes) > 1:
            raise ConfigError(f"sweep points must share the number of seeds and of saved times; got {sorted(shapes)}")
        from sgdlab.dmft.simulation import observable_names

        names = list(observable_names(first.simulation.test_samples))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
            _template(plan, names, first.simulation.seed_list, times).to_zarr(store, mode="w", compute=False, consolidated=True)
        # unwritten chunks read as their fill values: NaN for the data, 0 (pending) for status
    zgroup = _open_group(store)
    done_ok = {i for i, m in markers.items() if m["status"] == "done"}
    skipped = 0
    todo = []
    for p in plan.points:
        if p.flat in done_ok and markers[p.flat].get("config_hash") == p.config_hash:
            skipped += 1
        elif p.config is None:
            _write_point(zgroup, plan, p, None)
            _write_marker(store, p, "failed", error=p.error)
        else:
            todo.append(p)
    total, finished = len(plan.points), skipped + (len(plan.points) - skipped - len(todo))
    if progress:
        progress(finished, total)
    if todo:
        own = client is None
        cluster = None
        if own:
            client, cluster = _make_client(scheduler, workers, dashboard)
        try:
            from dask.distributed import as_completed

            futures = {}
            for batch in _groups(plan, todo):
                fut = client.submit(run_points, [p.config.to_json() for p in batch], pure=False)
                futures[fut] = batch
            for fut in as_completed(futures):
                batch = futures[fut]
                try:
                    results = fut.result()
                except Exception as err:  # the worker died or the task could not run
                    results = [{"ok": False, "error": f"{type(err).__name__}: {err}"}] * len(batch)
                for p, res in zip(batch, results):
                    if res["ok"]:
                        _write_point(zgroup, plan, p, res)
                        _write_marker(store, p, "done", seconds=res["seconds"])
                    else:
                        _write_point(zgroup, plan, p, None)
                        _write_marker(store, p, "failed", error=res["error"])
                    finished += 1
                    if progress:
                        progress(finished, total)
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    summary = sweep_status(store)
    summary.skipped = skipped
    summary.seconds = time.perf_counter() - start
    return summary


def _open_attrs(store: Path) -> dict:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        with xr.open_zarr(store, consolidated=False) as ds:
            return dict(ds.attrs)


def sweep_status(store: str | Path) -> SweepSummary:
    """Done / failed / pending counts of a sweep store, and the error of each failed point."""
    store = Path(store)
    if not store.exists():
        raise FileNotFoundError(f"no sweep store at {str(store)!r}")
    attrs = _open_attrs(store)
    plan = plan_sweep(load_config(json.loads(attrs["config"])))
    markers = read_markers(store)
    done = sum(1 for p in plan.points if markers.get(p.flat, {}).get("status") == "done")
    failed = {p.flat: markers[p.flat] for p in plan.points if markers.get(p.flat, {}).get("status") == "failed"}
    errors = {json.dumps(m["overrides"]): " ".join((m["error"] or "").split()) for m in failed.values()}
    n = len(plan.points)
    return SweepSummary(total=n, done=done, failed=len(failed), pending=n - done - len(failed), errors=errors)


def load_sweep(store: str | Path) -> xr.Dataset:
    """Open a sweep store (every point, pending ones NaN) and load it into memory."""
    from sgdlab.core.store import load

    return load(store)
