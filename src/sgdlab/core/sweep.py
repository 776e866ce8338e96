"""The one sweep engine: a grid of runs of any study, on dask.distributed, into one zarr store.

A sweep is a config with a ``[sweep]`` table (:class:`~sgdlab.core.config.SweepConfig`) of
dotted keys. Every command of every wing runs it the same way:

1. **Plan**: every point's config is built and validated on the client; a point whose values are
   invalid is recorded as failed with the validation message (the others run).
2. **Batch**: valid points with equal ``Study.group_key`` are grouped ``points_per_task`` at a
   time; a task computes its points with ``Study.run_many`` (the DMFT wing vmaps the simulation
   of a group in one compiled program).
3. **Execute** in this process (``workers=0``), on a ``LocalCluster`` of ``workers`` single-threaded
   worker processes (loopback only), or on an existing scheduler (``scheduler``/``client``). Given
   none of them (the default, "auto"), the sweep starts in this process and hands the rest to a
   ``LocalCluster`` (one worker per core) only when the work left is estimated to outweigh the
   cluster's start-up: see :func:`_want_cluster`.
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

import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import xarray as xr

from sgdlab.core.config import ConfigError, ExperimentConfig
from sgdlab.core.jaxconfig import configure_compilation_cache
from sgdlab.core.store import recover, writer_lock
from sgdlab.core.study import Study, study_from_ref
from sgdlab.core.sweep_plan import Plan, Point, _groups, plan_sweep
from sgdlab.core.sweep_store import (
    DONE,
    FAILED,
    MARKERS,
    PENDING,
    _open_attrs,
    _Writer,
    damaged_points,
    load_sweep,
    read_markers,
)

__all__ = [
    "DONE", "FAILED", "MARKERS", "PENDING", "Plan", "Point", "SweepSummary", "damaged_points", "load_sweep",
    "make_client", "plan_sweep", "read_markers", "run_points", "run_sweep", "sweep_status",
]

#: Auto execution: the work left after the pilot tasks, estimated in seconds of this process,
#: above which a LocalCluster is started for it. A cluster costs its start-up (worker processes
#: importing JAX, loading or compiling each program: ~5-10 s on 2 cores, see docs/sweeps.md) and
#: saves at most (1 - 1/cores) of the work left; this process already runs large array
#: operations on several threads.
AUTO_CLUSTER_SECONDS = 20.0
#: Auto execution: tasks computed in this process before deciding (the first one compiles; the
#: second gives the per-task time of a compiled program).
AUTO_PILOT_TASKS = 2


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
    flagged: dict[str, str] = field(default_factory=dict)
    executor: str = ""


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

    ``workers=0`` computes in this process; ``client`` (an existing ``dask.distributed.Client``),
    ``scheduler`` or ``workers=N`` send every task to dask (``N`` local worker processes). With
    none of them, execution is automatic (:func:`_want_cluster`): the first tasks run in this
    process and the rest moves to a ``LocalCluster`` of one worker per core only when it is
    estimated to take more than :data:`AUTO_CLUSTER_SECONDS` here. ``progress(done, total)``
    after each point. The summary's ``executor`` says where the tasks ran.
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
    auto = workers is None and client is None and not scheduler
    executor = "nothing to compute"
    if groups and (workers == 0 and client is None and not scheduler):
        executor = "in this process (--workers 0)"
        for batch in groups:
            record(batch, _run_here(study, batch))
    elif groups and auto:
        executor = "in this process (auto)"
        seconds: list[float] = []
        while groups and not (len(seconds) >= AUTO_PILOT_TASKS and _want_cluster(seconds, len(groups))):
            batch = groups.pop(0)
            t0 = time.perf_counter()
            record(batch, _run_here(study, batch))
            seconds.append(time.perf_counter() - t0)
        if groups:
            n_workers = os.cpu_count() or 1
            executor = f"{len(seconds)} tasks in this process, {len(groups)} on a LocalCluster of {n_workers} workers (auto)"
            _run_on_dask(study, groups, record, None, n_workers, dashboard, None)
    elif groups:
        executor = (f"dask scheduler {scheduler}" if scheduler else "the given dask client" if client is not None
                    else f"a LocalCluster of {workers} workers")
        _run_on_dask(study, groups, record, scheduler, workers, dashboard, client)
    writer.close()
    summary = sweep_status(store)
    summary.skipped = skipped
    summary.seconds = time.perf_counter() - start
    summary.executor = executor
    return summary


def _run_here(study: Study, batch: list[Point]) -> list:
    return run_points(study.ref, [p.config.to_json() for p in batch])


def _want_cluster(seconds: list[float], tasks_left: int, cores: int | None = None) -> bool:
    """Auto execution's rule, once the tasks run here so far took ``seconds`` (at least
    :data:`AUTO_PILOT_TASKS` of them): move the ``tasks_left`` remaining tasks to a LocalCluster
    when they are estimated to take more than :data:`AUTO_CLUSTER_SECONDS` in this process (each
    as long as the fastest task so far: the first one includes compiling) and a cluster can run
    two of them at once (two tasks or more left, two cores or more)."""
    cores = cores or os.cpu_count() or 1
    if tasks_left < 2 or cores < 2 or not seconds:
        return False
    return tasks_left * min(seconds) > AUTO_CLUSTER_SECONDS


def _run_on_dask(study: Study, groups: list[list[Point]], record, scheduler, workers, dashboard, client) -> None:
    """Submit every group as one task to ``client`` (or to a new client of ``scheduler`` or of a
    ``LocalCluster`` of ``workers``) and record each result as it comes back."""
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
    flagged = {json.dumps(markers[p.flat]["overrides"]): str(markers[p.flat].get("attrs", {}).get("status"))
               for p in plan.points if markers.get(p.flat, {}).get("status") == "done"
               and str(markers[p.flat].get("attrs", {}).get("status", "complete")).startswith("flagged")}
    for flat in damaged:
        errors[json.dumps(plan.points[flat].overrides)] = "damaged: marked done but its data does not read back; running the sweep again recomputes it"
    n = len(plan.points)
    return SweepSummary(total=n, done=done, failed=len(failed), pending=n - done - len(failed), errors=errors, flagged=flagged)
