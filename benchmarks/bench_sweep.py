"""Sweeps: in this process against a dask LocalCluster, cold and warm, and the engine's overhead.

:func:`section_sweep` runs the 16-point phase diagram (``sgdlab run --example phase_diagram``,
4 x 4 grid of (batch fraction, persistence time), d = 500, 4 seeds, two tasks of 8 points) as
whole processes, with the default execution (auto: in this process for a sweep this small),
``--workers 0`` and a LocalCluster of one worker per core (``--workers N``), each cold (a new
empty compilation cache folder) and warm (that folder again); the plain loop over ``sgdlab.run``
in one process is the baseline of the engine's own cost. ``--quick`` shrinks the points (d = 100,
2 seeds, horizon 2), not their number, and runs cold only, without ``--workers 0``.

:func:`engine_throughput` (full runs only): a 64-point sweep of tiny points (d = 200, 2 seeds,
100 steps) on LocalClusters of 1 and ``cores`` workers with 1 or 8 points per task, cold (new
cluster) and warm (same workers again), against the plain loop.

Usage: ``python -m benchmarks --only sweep [--quick]`` (or this file).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, table

SMALL = ["--set", "simulation.d=100", "--set", "simulation.seeds=2", "--set", "algorithm.horizon=2.0"]


def sweep_process(args: list[str], cache: str, out: str) -> float:
    """Wall seconds of ``sgdlab run ARGS -o OUT -q --no-plot`` as a whole process."""
    env = {**os.environ, "SGDLAB_JAX_CACHE": cache}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sgdlab.cli", "run", *args, "-o", out, "-q", "--no-plot"],
                          env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sgdlab run {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def loop_process(args: list[str], cache: str) -> float:
    """Wall seconds of a whole process that plans the same sweep and loops over ``sgdlab.run``."""
    code = (
        "import sys, json, sgdlab\n"
        "from sgdlab.core.command import config_source\n"
        "from sgdlab.core.sweep import plan_sweep\n"
        "from sgdlab.dmft.command import STUDY\n"
        "args = json.loads(sys.argv[1])\n"
        "ex = args[args.index('--example') + 1]\n"
        "sets = [args[i + 1] for i, a in enumerate(args) if a == '--set']\n"
        "for p in plan_sweep(STUDY, STUDY.load(config_source('run', None, ex, sets))).points:\n"
        "    sgdlab.run(p.config)\n"
    )
    import json

    env = {**os.environ, "SGDLAB_JAX_CACHE": cache}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the plain loop failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def section_sweep(quick: bool = False) -> list[str]:
    base = ["--example", "phase_diagram"] + (SMALL if quick else [])
    cores = os.cpu_count() or 1
    modes = [("auto (default)", []), ("--workers 0", ["--workers", "0"]), (f"LocalCluster, --workers {cores}", ["--workers", str(cores)])]
    if quick:
        modes = [modes[0], modes[2]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in modes:
            cache = str(Path(tmp) / f"cache-{len(rows)}")  # each run writes a new store: nothing to resume
            cold = sweep_process(base + extra, cache, str(Path(tmp) / f"cold-{len(rows)}"))
            warm = None if quick else sweep_process(base + extra, cache, str(Path(tmp) / f"warm-{len(rows)}"))
            rows.append([label, cold, warm])
        cache = str(Path(tmp) / "cache-loop")
        loop = [loop_process(base, cache), None if quick else loop_process(base, cache)]
    for row in rows:
        row += [row[1] / loop[0], None if quick else row[2] / loop[1]]
    rows.append(["plain loop over sgdlab.run (no store)", loop[0], loop[1], 1.0, None if quick else 1.0])
    what = "d = 100, 2 seeds, horizon 2 (--quick)" if quick else "d = 500, 4 seeds, horizon 10"
    return [table("Sweep: the 16-point phase diagram, whole processes", ["execution", "cold s", "warm s", "cold / loop", "warm / loop"],
                  rows, [f"`sgdlab run --example phase_diagram` ({what}); cold: a new empty compilation cache; "
                         "warm: the same cache again (not in --quick); loop: one process planning the same points and calling sgdlab.run on each."])]


def engine_throughput(d: int = 200, grid: int = 8) -> list[str]:
    """Points per second of the dask path for many tiny points, against the plain loop."""
    import sgdlab
    from sgdlab.core.sweep import make_client, plan_sweep, run_sweep
    from sgdlab.dmft.command import STUDY

    cfg = {"name": "bench", "algorithm": {"name": "persistent_sgd", "eta": 0.1, "horizon": 10.0, "save_every": 10},
           "simulation": {"d": d, "seeds": 2},
           "sweep": {"algorithm.batch_fraction": [round(0.2 + 0.1 * i, 2) for i in range(grid)],
                     "algorithm.persistence_time": [round(0.5 + 0.25 * i, 2) for i in range(grid)]}}
    points = plan_sweep(STUDY, sgdlab.load_config(cfg)).points
    n = len(points)
    sgdlab.run(points[0].config)  # compile once
    t0 = time.perf_counter()
    for p in points:
        sgdlab.run(p.config)
    loop = time.perf_counter() - t0
    rows = []
    for workers in sorted({1, os.cpu_count() or 1}):
        for per_task in (1, 8):
            cfg["sweep"]["points_per_task"] = per_task
            with tempfile.TemporaryDirectory() as tmp:
                t_start = time.perf_counter()
                client, cluster = make_client(None, workers, False)
                t_ready = time.perf_counter()
                try:
                    run_sweep(STUDY, cfg, Path(tmp) / "s.zarr", client=client)
                    t_end = time.perf_counter()
                    run_sweep(STUDY, cfg, Path(tmp) / "s2.zarr", client=client)  # warm workers
                    t_warm = time.perf_counter() - t_end
                finally:
                    client.close()
                    cluster.close()
            rows.append([workers, per_task, t_end - t_start, t_end - t_ready, t_warm, n / t_warm, 1e3 * (t_warm - loop) / n])
    rows.append(["loop", "-", None, None, loop, n / loop, 0.0])
    return [table(f"Sweep engine on dask: {n} tiny points (d = {d}, 2 seeds, 100 steps)",
                  ["workers", "points/task", "cold s", "cold s w/o cluster start", "warm s", "warm points/s", "warm overhead ms/point vs loop"],
                  rows, ["cold: a new LocalCluster (workers import JAX and compile once); warm: the same sweep again on the same workers."])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--engine", action="store_true", help="also the 64-point dask throughput table")
    args = parser.parse_args()
    section_sweep(args.quick)
    if args.engine:
        engine_throughput()


if __name__ == "__main__":
    main()
