"""Throughput of a 64-point sweep: 1 vs 2 local workers, with and without vmap batching.

Each point is a small simulation (persistent SGD, d = 200, 2 seeds, 100 steps) over an 8 x 8 grid
of (batch fraction, persistence time): every point has the same static structure, so a task
can run ``points_per_task`` of them in one vmapped program. Printed: wall time (cluster start-up
included and excluded), points per second, and the overhead per point against the same
experiments run by a plain Python loop over ``sgdlab.run`` in this process (one compilation, as
every point shares one structure).

Usage: ``python benchmarks/bench_sweep.py [--d 200] [--grid 8]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def base_config(d: int, grid: int) -> dict:
    bs = [round(0.2 + 0.1 * i, 2) for i in range(grid)]
    taus = [round(0.5 + 0.25 * i, 2) for i in range(grid)]
    return {
        "name": "bench",
        "algorithm": {"name": "persistent_sgd", "eta": 0.1, "horizon": 10.0, "save_every": 10},
        "simulation": {"d": d, "seeds": 2},
        "sweep": {"algorithm.batch_fraction": bs, "algorithm.persistence_time": taus},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=200)
    parser.add_argument("--grid", type=int, default=8, help="grid side: grid^2 points")
    args = parser.parse_args()

    import sgdlab
    from sgdlab.core.sweep import make_client, plan_sweep, run_sweep
    from sgdlab.dmft.command import STUDY

    cfg = base_config(args.d, args.grid)
    points = plan_sweep(STUDY, sgdlab.load_config(cfg)).points
    n = len(points)

    # plain loop in this process
    sgdlab.run(points[0].config)  # compile once
    t0 = time.perf_counter()
    for p in points:
        sgdlab.run(p.config)
    loop = time.perf_counter() - t0

    rows = []
    for workers in (1, 2):
        for per_task in (1, 8, 32):
            cfg["sweep"]["points_per_task"] = per_task
            with tempfile.TemporaryDirectory() as tmp:
                t_start = time.perf_counter()
                client, cluster = make_client(None, workers, False)
                t_ready = time.perf_counter()
                try:
                    summary = run_sweep(STUDY, cfg, Path(tmp) / "s.zarr", client=client)
                    t_end = time.perf_counter()
                    again = run_sweep(STUDY, cfg, Path(tmp) / "s2.zarr", client=client)  # warm workers
                    t_warm = time.perf_counter() - t_end
                finally:
                    client.close()
                    cluster.close()
            assert summary.done == n and again.done == n, (summary, again)
            rows.append((workers, per_task, t_end - t_start, t_end - t_ready, t_warm))

    print(f"{n}-point sweep, d = {args.d}, 2 seeds, 100 steps per point")
    print(f"plain loop over sgdlab.run (one process, compiled once): {loop:.2f} s = {n / loop:.1f} points/s")
    header = (
        f"{'workers':>7} {'points/task':>11} | {'cold wall s':>11} {'w/o cluster start':>17} {'points/s':>9} | "
        f"{'warm s':>7} {'points/s':>9} {'overhead/point vs loop':>23}"
    )
    print(header)
    print("-" * len(header))
    for workers, per_task, wall, run, warm in rows:
        print(
            f"{workers:>7} {per_task:>11} | {wall:>11.2f} {run:>17.2f} {n / run:>9.1f} | "
            f"{warm:>7.2f} {n / warm:>9.1f} {1e3 * (warm - loop) / n:>20.1f} ms"
        )
    print("cold: a new LocalCluster (workers import JAX and compile once); warm: the same sweep again on the same workers.")


if __name__ == "__main__":
    main()
