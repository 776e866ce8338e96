"""Cost of a schedule and of momentum relative to the plain constant-step run.

For persistent SGD on the Gaussian mixture (``alpha = 2, Delta = 0.5, lambda = 0.1, eta = 0.1,
b = 0.3, tau = 2``, horizon ``t = 15``, i.e. 150 steps), times (warm: compiled once before,
minimum over ``--repeats``) of

- one DMFT solve (``theory.samples`` trajectories, the march plus its certifying iteration), and
- the simulation (``d``, ``seeds``),

for the plain update, a decaying step size (``inverse_time``, ``K = 50``; horizon cut so that the
run has the same number of steps), a batch-fraction schedule (cosine), heavy-ball and Nesterov
momentum (``beta = 0.6``). Prints the ratio of each to the plain run, measured in the same process.

Usage::

    python benchmarks/bench_own_models.py            # d = 2000, 8 seeds, N = 10000
    python benchmarks/bench_own_models.py --quick    # d = 500, 4 seeds, N = 3000
"""

from __future__ import annotations

import argparse
import time

VARIANTS = {
    "plain": {},
    "eta schedule (inverse_time)": {"schedule": {"eta": {"kind": "inverse_time", "scale": 50}}},
    "b schedule (cosine)": {"schedule": {"batch_fraction": {"kind": "cosine", "scale": 150, "final": 0.5}}},
    "heavy ball (beta 0.6)": {"momentum": 0.6},
    "Nesterov (beta 0.6)": {"momentum": 0.6, "nesterov": True},
}


def _config(extra: dict, d: int, seeds: int, samples: int, horizon: float):
    from sgdlab.dmft.config import load_config

    alg = {"name": "persistent_sgd", "eta": 0.1, "batch_fraction": 0.3, "persistence_time": 2.0, "horizon": horizon, **extra}
    return load_config({
        "name": "bench",
        "algorithm": alg,
        "simulation": {"d": d, "seeds": seeds},
        "theory": {"methods": ["dmft"], "samples": samples, "solves": 2},
    })


def _best(fn, repeats: int) -> float:
    fn()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """Rows ``{variant, steps, dmft_s, dmft_ratio, sim_s, sim_ratio}`` (ratios to ``plain``)."""
    import sgdlab  # noqa: F401  (float64, compilation cache)
    from sgdlab.dmft.experiment import dmft_inputs, simulate
    from sgdlab.dmft.solver import solve_dmft

    d, seeds, samples = (500, 4, 3000) if quick else (2000, 8, 10000)
    rows = []
    for name, extra in VARIANTS.items():
        horizon = 15.0
        if "schedule" in extra and "eta" in extra["schedule"]:
            horizon = sum(0.1 / (1 + k / 50) for k in range(150)) - 1e-9  # the same 150 steps
        cfg = _config(extra, d, seeds, samples, horizon)
        problem, dynamics, options = dmft_inputs(cfg)
        dmft_s = _best(lambda: solve_dmft(problem, dynamics, options), repeats)
        sim_s = _best(lambda: simulate(cfg), repeats)
        rows.append({"variant": name, "steps": cfg.algorithm.n_steps, "dmft_s": dmft_s, "sim_s": sim_s})
    for row in rows:
        row["dmft_ratio"] = row["dmft_s"] / rows[0]["dmft_s"]
        row["sim_ratio"] = row["sim_s"] / rows[0]["sim_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.quick, args.repeats)
    print(f"{'variant':32s} {'steps':>5s} {'DMFT solve':>11s} {'ratio':>6s} {'simulation':>11s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['variant']:32s} {r['steps']:5d} {r['dmft_s']:10.3f}s {r['dmft_ratio']:6.2f} {r['sim_s']:10.3f}s {r['sim_ratio']:6.2f}")


if __name__ == "__main__":
    main()
