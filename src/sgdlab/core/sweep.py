"""The one sweep engine: a grid of runs of any study, on dask.distributed, into one zarr store.

A sweep is a config with a ``[sweep]`` table (:class:`~sgdlab.core.config.SweepConfig`) of
dotted keys. Every command of every wing runs it the same way:

1. **Plan**: every point's config is built and validated on the client; a point whose values are
   invalid is recorded as failed with the validation message (the others run).
2. **Batch**: valid points with equal ``Study.group_key`` are grouped ``points_per_task`` at a
   time; a task computes its points with ``Study.run_many`` (the DMFT wing vmaps the simulation
   of a group in one compiled program).
3. **Execute** in this process (``workers=0``), on a ``LocalCluster`` (one single-threaded worker
   process per core, loopback only; the default), or on an existing scheduler (``scheduler``).
4. **Write** by region: when the first point is back, the store is created (beside its final
   path, then renamed in) with every point NaN and ``status = 0`` (pending); each finished
   point's region is written with zarr directly (chunks are one point wide), then a marker
   ``STORE/_points/<flat index>.json`` (status, config hash, error, seconds, the point's attrs).
   The client is the only writer. A killed sweep loses no finished point; running the same
   command again resumes, skipping every point whose marker says done with the same config hash.

Store layout: dims ``(*sweep dims, *point dims)``: one dim per grid key (named by the key, e.g.
``algorithm.batch_fraction``) and a ``zip`` dim for zipped keys (each zipped key a coordinate
along it), then the dims of a single run's Dataset; ``status`` over the sweep dims (0 pending,
1 done, 2 failed); ``time`` (the times of each point, which differ when the step size is swept;
the ``t`` coordinate is that of the first point); every numeric non-index coordinate of a run
(e.g. ``step`` along ``t``) is kept per point as a variable. Attrs: ``kind = "sweep"``, ``study``,
``study_ref``, ``config``, ``sweep_hash``, ``sweep_dims``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from sgdlab.core.config import ConfigError, ExperimentConfig, set_dotted
from sgdlab.core.jaxconfig import configure_compilation_cache
from sgdlab.core.store import _sibling, recover, writer_lock
from sgdlab.core.study import Study, study_from_ref

PENDING, DONE, FAILED = 0, 1, 2
MARKERS = "_points"


@dataclass
class Point:
    """One grid point: its position, overrides, validated config (or the validation error)."""

    index: tuple[int, ...]
    flat: int
    overrides: dict[str, Any]
    config: ExperimentConfig | None = None
    error: str | None = None

    @property
    def config_hash(self) -> str:
        return self.config.config_hash() if self.config is not None else ""


@dataclass
class Plan:
    """The sweep's dims (name, coordinate values), points, and extra coordinates along ``zip``."""

    study: Study
    base: ExperimentConfig
    dims: list[tuple[str, list[Any]]]
    points: list[Point]
    zip_coords: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.dims)

    @property
    def sweep_dims(self) -> list[str]:
        return [name for name, _ in self.dims]


def plan_sweep(study: Study, cfg: ExperimentConfig, order: list[str] | None = None) -> Plan:
    """Expand ``cfg.sweep`` into points (validated one by one; invalid ones carry their error).

    The grid's dims come in the order of the ``[sweep]`` table, or of ``order`` (the
    ``sweep_dims`` of a store: its config JSON has sorted keys)."""
    if cfg.sweep is None:
        raise ConfigError("the config has no [sweep] table")
    sw = cfg.sweep
    keys = [k for k in (order or []) if k in sw.grid] or list(sw.grid)
    dims: list[tuple[str, list[Any]]] = [(k, list(sw.grid[k])) for k in keys]
    if sw.zip:
        dims.append(("zip", list(range(len(next(iter(sw.zip.values())))))))
    base = cfg.model_dump(mode="json", exclude={"sweep"})
    points = []
    for flat, index in enumerate(itertools.product(*(range(len(v)) for _, v in dims))):
        overrides: dict[str, Any] = {}
        for (name, values), i in zip(dims, index):
            if name == "zip":
                overrides.update({k: v[i] for k, v in sw.zip.items()})
            else:
                overrides[name] = values[i]
        tree = json.loads(json.dumps(base))
        for key, value in overrides.items():
            set_dotted(tree, key, value)
        point = Point(index, flat, overrides)
        try:
            point.config = study.load(tree)
        except ConfigError as err:
            point.error = str(err)
        points.append(point)
    return Plan(study, cfg, dims, points, dict(sw.zip))


def _groups(plan: Plan, todo: list[Point]) -> list[list[Point]]:
    """Points of equal ``group_key``, ``points_per_task`` at a time."""
    key = plan.study.group_key or (lambda c: id(c))
    by_key: dict[Any, list[Point]] = {}
    for p in todo:
        by_key.setdefault(key(p.config), []).append(p)
    size = plan.base.sweep.points_per_task
    return [g[i : i + size] for g in by_key.values() for i in range(0, len(g), size)]


def run_points(ref: str, config_jsons: list[str]) -> list[xr.Dataset | str]:
    """Task body (runs on a worker): the Dataset of each config, or its error message."""
    configure_compilation_cache()  # a worker process compiles once per structure, then reuses
    study = study_from_ref(ref)
    start = time.perf_counter()
    try:
        cfgs = [study.load(json.loads(c)) for c in config_jsons]
        results = study.compute_many(cfgs)
    except Exception as err:  # a whole task failed (e.g. out of memory): every point records it
        msg = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
        return [msg for _ in config_jsons]
    seconds = (time.perf_counter() - start) / max(1, len(config_jsons))
    out: list[xr.Dataset | str] = []
    for res in results:
        if isinstance(res, BaseException):
            out.append(f"{type(res).__name__}: {res}")
        else:
            res.attrs["seconds"] = seconds
            out.append(res)
    return out


# ----------------------------------------------------------------------------- the store


def _quiet_zarr():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
    warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
    return ctx


def _is_numeric(da: xr.DataArray) -> bool:
    return da.dtype.kind in "biuf"


def _template(plan: Plan, first: xr.Dataset | None) -> xr.Dataset:
    """The store of the whole grid: NaN data, pending status, the point's dims after the sweep's."""
    import dask.array as da

    shape, sweep_dims = plan.shape, plan.sweep_dims
    one = (1,) * len(shape)
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {name: values for name, values in plan.dims}
    for key, values in plan.zip_coords.items():
        coords[key] = ("zip", values)
    if first is not None:
        for name, var in first.data_vars.items():
            if _is_numeric(var):
                data_vars[name] = (sweep_dims + list(var.dims), da.full(shape + var.shape, np.nan, chunks=one + var.shape), var.attrs)
        if "t" in first.dims:
            n_t = first.sizes["t"]
            data_vars["time"] = (sweep_dims + ["t"], da.full(shape + (n_t,), np.nan, chunks=one + (n_t,)))
        for name, c in first.coords.items():
            if name in coords:
                continue
            if name not in first.dims and _is_numeric(c):  # may differ between points: one per point
                data_vars[name] = (sweep_dims + list(c.dims), da.full(shape + c.shape, np.nan, chunks=one + c.shape), c.attrs)
            else:
                coords[name] = (c.dims, c.values, c.attrs)
    data_vars["status"] = (sweep_dims, da.zeros(shape, dtype=np.int8, chunks=one))
    ds = xr.Dataset(data_vars, coords=coords)
    for name in list(ds.coords):
        if ds[name].dtype.kind == "U":
            ds[name] = ds[name].astype(object)
    ds.attrs = {
        "kind": "sweep",
        "study": plan.study.name,
        "study_ref": plan.study.ref,
        "config": plan.base.to_json(),
        "sweep_hash": plan.base.config_hash(),
        "sweep_dims": json.dumps(sweep_dims),
        **{k: v for k, v in (first.attrs if first is not None else {}).items() if k in ("sgdlab_version", "jax_version", "backend")},
    }
    return ds


def _create_store(store: Path, template: xr.Dataset) -> None:
    """Write the template (metadata only) beside ``store`` and rename it into place."""
    tmp = _sibling(store, "tmp")
    ctx = _quiet_zarr()
    try:
        template.to_zarr(tmp, mode="w", compute=False, consolidated=True)
    finally:
        ctx.__exit__(None, None, None)
    tmp.rename(store)


def read_markers(store: str | Path) -> dict[int, dict]:
    """The per-point markers of a sweep store: ``{flat index: marker dict}``."""
    folder = Path(store) / MARKERS
    out = {}
    if folder.is_dir():
        for f in folder.glob("[0-9]*.json"):
            try:
                body = json.loads(f.read_text())
                index = int(f.stem)
            except (ValueError, OSError):
                continue  # a truncated or stray marker: the point is not done (it is recomputed)
            if isinstance(body, dict) and body.get("status") in ("done", "failed"):
                out[index] = body
    return out


def damaged_points(store: str | Path, plan: Plan, markers: dict[int, dict]) -> list[int]:
    """Points whose marker says done but whose data does not read back (a missing or corrupted
    chunk, a deleted array, a status that is not done): they are recomputed on resume."""
    import zarr

    try:
        group = zarr.open_group(str(store), mode="r")
        sweep_dims = tuple(plan.sweep_dims)

        def per_point(name: str) -> bool:  # a variable over the sweep dims (not a coordinate)
            dims = getattr(group[name].metadata, "dimension_names", None) or ()
            return name not in ("status", "time") and tuple(dims[: len(sweep_dims)]) == sweep_dims

        names = [k for k in group.array_keys() if per_point(k)]
        status = group["status"]
    except Exception:
        return sorted(i for i, m in markers.items() if m.get("status") == "done")
    bad = []
    for p in plan.points:
        if markers.get(p.flat, {}).get("status") != "done":
            continue
        empty = set(markers[p.flat].get("empty", []))  # variables that were all-NaN when written
        try:
            ok = int(status[tuple(p.index)]) == DONE and all(
                n in empty or np.isfinite(np.asarray(group[n][tuple(p.index)], dtype=float)).any() for n in names
            )
        except Exception:
            ok = False
        if not ok:
            bad.append(p.flat)
    return bad


def _write_marker(store: Path, point: Point, status: str, error: str | None = None, seconds: float | None = None,
                  attrs: dict | None = None, empty: list[str] | None = None) -> None:
    folder = store / MARKERS
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
        "attrs": {k: v for k, v in (attrs or {}).items() if k != "config" and isinstance(v, (str, int, float, bool))},
        "empty": empty or [],
        "finished_at": time.time(),
    }
    tmp = folder / f".{point.flat}.json.tmp"
    tmp.write_text(json.dumps(body))
    tmp.replace(folder / f"{point.flat}.json")


def _check_fits(group, ds: xr.Dataset) -> str | None:
    """Why the point Dataset ``ds`` does not fit the store (``None`` when it does)."""
    for name, var in ds.data_vars.items():
        if not _is_numeric(var):
            continue
        if name not in group:
            return f"variable {name!r} is not in the store (every point must give the same variables)"
        want = group[name].shape[-var.ndim:] if var.ndim else ()
        if tuple(want) != var.shape:
            return f"variable {name!r} has shape {var.shape}, the store's points have {tuple(want)}"
    return None


def _write_point(group, point: Point, ds: xr.Dataset | None) -> None:
    """Write one point's region (its own chunks) into the open zarr group, status last."""
    idx = tuple(point.index)
    if ds is not None:
        for name, var in [*ds.data_vars.items(), *((n, c) for n, c in ds.coords.items() if n not in ds.dims)]:
            if _is_numeric(var) and name in group:
                group[name][idx] = np.asarray(var.values, dtype=np.float64)
        if "t" in ds.dims and "time" in group:
            group["time"][idx] = np.asarray(ds["t"].values, dtype=np.float64)
    group["status"][idx] = DONE if ds is not None else FAILED


# ----------------------------------------------------------------------------- execution


def make_client(scheduler: str | None, workers: int | None, dashboard: bool = False):
    """``(client, cluster)``: a client of ``scheduler``, or of a new ``LocalCluster`` of
    ``workers`` single-threaded processes (``cluster`` is ``None`` for an existing scheduler)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as err:
            raise ConfigError(f"cannot reach the dask scheduler --scheduler {scheduler} ({type(err).__name__}: {err}); "
                              "check the address, or leave --scheduler out for a local cluster") from None
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


class _Writer:
    """The client side: creates the store at the first result, writes regions and markers."""

    def __init__(self, plan: Plan, store: Path):
        self.plan, self.store = plan, store
        self.group = self._open() if store.exists() else None
        self.waiting: list[tuple[Point, str]] = []  # failures before the store exists

    def _open(self):
        import zarr

        return zarr.open_group(str(self.store), mode="r+")

    def _ensure(self, first: xr.Dataset | None) -> None:
        if self.group is None:
            _create_store(self.store, _template(self.plan, first))
            self.group = self._open()
            for point, msg in self.waiting:
                self.failed(point, msg)
            self.waiting = []

    def done(self, point: Point, ds: xr.Dataset) -> None:
        self._ensure(ds)
        why = _check_fits(self.group, ds)
        if why is not None:
            return self.failed(point, why)
        _write_point(self.group, point, ds)
        empty = [n for n, v in [*ds.data_vars.items(), *ds.coords.items()] if _is_numeric(v) and not np.isfinite(v.values).any()]
        _write_marker(self.store, point, "done", seconds=ds.attrs.get("seconds"), attrs=ds.attrs, empty=empty)

    def failed(self, point: Point, msg: str) -> None:
        if self.group is None:
            self.waiting.append((point, msg))
            return
        _write_point(self.group, point, None)
        _write_marker(self.store, point, "failed", error=msg)

    def close(self) -> None:
        if self.waiting:
            self._ensure(None)


def run_sweep(
    study: Study,
    config: ExperimentConfig | dict | str | Path,
    store: str | Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    dashboard: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    client=None,
) -> SweepSummary:
    """Run (or resume) the sweep of ``config`` (a config of ``study`` with a ``[sweep]`` table)
    into the zarr ``store``; see the module doc.

    ``workers=0`` computes in this process; otherwise tasks go to ``client`` (an existing
    ``dask.distributed.Client``), to ``scheduler``, or to a new ``LocalCluster`` with ``workers``
    processes (default one per core). ``progress(done, total)`` after each point.
    """
    start = time.perf_counter()
    cfg = study.load(config)
    plan = plan_sweep(study, cfg)
    store = Path(store)
    if workers is not None and workers < 0:
        raise ConfigError(f"workers={workers} must be >= 0 (0: compute in this process)")
    with writer_lock(store):
        return _run_sweep_locked(study, cfg, plan, store, scheduler, workers, dashboard, overwrite, progress, client, start)


def _run_sweep_locked(study, cfg, plan, store, scheduler, workers, dashboard, overwrite, progress, client, start) -> SweepSummary:
    recover(store)
    markers: dict[int, dict] = {}
    if store.exists():
        existing = _open_attrs(store)
        if overwrite:
            shutil.rmtree(store)
        elif (existing.get("sweep_hash") != cfg.config_hash() or existing.get("study") != study.name
              or json.loads(existing.get("sweep_dims", "[]")) != plan.sweep_dims):
            raise ConfigError(
                f"{store} holds a different sweep (config hash {existing.get('sweep_hash')} != {cfg.config_hash()}, or the same axes in another order); "
                "use another store or --overwrite"
            )
        else:
            markers = read_markers(store)
            for flat in damaged_points(store, plan, markers):
                markers.pop(flat)  # recomputed below
    if not any(p.config is not None for p in plan.points) and not store.exists():
        raise ConfigError("no valid point in the sweep:\n" + "\n".join(p.error or "" for p in plan.points))
    writer = _Writer(plan, store)
    skipped, todo = 0, []
    for p in plan.points:
        m = markers.get(p.flat)
        if m is not None and m.get("status") == "done" and m.get("config_hash") == p.config_hash:
            skipped += 1
        elif p.config is None:
            writer.failed(p, p.error or "invalid config")
        else:
            todo.append(p)
    total, finished = len(plan.points), len(plan.points) - len(todo)
    if progress:
        progress(finished, total)

    def record(batch: list[Point], results: list) -> None:
        nonlocal finished
        for p, res in zip(batch, results):
            if isinstance(res, xr.Dataset):
                writer.done(p, res)
            else:
                writer.failed(p, str(res))
            finished += 1
            if progress:
                progress(finished, total)

    groups = _groups(plan, todo) if todo else []
    if groups and workers == 0 and client is None and not scheduler:
        for batch in groups:
            record(batch, run_points(study.ref, [p.config.to_json() for p in batch]))
    elif groups:
        own = client is None
        cluster = None
        if own:
            client, cluster = make_client(scheduler, workers, dashboard)
        try:
            from dask.distributed import as_completed

            futures = {client.submit(run_points, study.ref, [p.config.to_json() for p in b], pure=False): b for b in groups}
            for fut in as_completed(futures):
                try:
                    results = fut.result()
                except Exception as err:  # the worker died or the task could not run
                    results = [f"{type(err).__name__}: {err}"] * len(futures[fut])
                record(futures[fut], results)
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    writer.close()
    summary = sweep_status(store)
    summary.skipped = skipped
    summary.seconds = time.perf_counter() - start
    return summary


def _open_attrs(store: Path) -> dict:
    ctx = _quiet_zarr()
    try:
        with xr.open_zarr(store, consolidated=False) as ds:
            return dict(ds.attrs)
    finally:
        ctx.__exit__(None, None, None)


def is_sweep_store(store: str | Path) -> bool:
    """Whether ``store`` is a zarr store written by :func:`run_sweep`."""
    try:
        return _open_attrs(Path(store)).get("kind") == "sweep"
    except Exception:
        return False


def sweep_status(store: str | Path) -> SweepSummary:
    """Done / failed / pending counts of a sweep store, and the error of each failed point."""
    store = Path(store)
    if not store.exists():
        raise FileNotFoundError(f"no sweep store at {str(store)!r}")
    recover(store)
    try:
        attrs = _open_attrs(store)
    except Exception as err:
        raise ConfigError(f"{store} is not a readable sweep store ({type(err).__name__}: {err}); "
                          "run the sweep again into a new store, or with --overwrite") from None
    if attrs.get("kind") != "sweep":
        raise ConfigError(f"{store} is not a sweep store (it holds a single run of study {attrs.get('study', '?')!r})")
    study = study_from_ref(attrs["study_ref"])
    plan = plan_sweep(study, study.load(json.loads(attrs["config"])), order=json.loads(attrs.get("sweep_dims", "[]")))
    markers = read_markers(store)
    damaged = damaged_points(store, plan, markers)
    for flat in damaged:
        markers.pop(flat)
    done = sum(1 for p in plan.points if markers.get(p.flat, {}).get("status") == "done")
    failed = {p.flat: markers[p.flat] for p in plan.points if markers.get(p.flat, {}).get("status") == "failed"}
    errors = {json.dumps(m["overrides"]): " ".join((m["error"] or "").split()) for m in failed.values()}
    for flat in damaged:
        errors[json.dumps(plan.points[flat].overrides)] = "damaged: marked done but its data does not read back; running the sweep again recomputes it"
    n = len(plan.points)
    return SweepSummary(total=n, done=done, failed=len(failed), pending=n - done - len(failed), errors=errors)


def load_sweep(store: str | Path) -> xr.Dataset:
    """Open a sweep store (every point, pending ones NaN) and load it into memory."""
    from sgdlab.core.store import load

    return load(store)
