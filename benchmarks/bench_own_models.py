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

    python -m benchmarks --only own_models           # the same, as a section of the runner
    python benchmarks/bench_own_models.py            # d = 2000, 8 seeds, N = 10000
    python benchmarks/bench_own_models.py --quick    # d = 500, 4 seeds, N = 3000
"""

from __future__ import annotations

import argparse

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


def run(quick: bool = False, repeats: int = 3) -> list[dict]:
    """Rows ``{variant, steps, dmft_s, dmft_ratio, sim_s, sim_ratio}`` (ratios to ``plain``)."""
    import sgdlab  # noqa: F401  (float64, compilation cache)
    from benchmarks.common import best_time
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
        dmft_s = best_time(lambda: solve_dmft(problem, dynamics, options), repeats)[1]
        sim_s = best_time(lambda: simulate(cfg), repeats)[1]
        rows.append({"variant": name, "steps": cfg.algorithm.n_steps, "dmft_s": dmft_s, "sim_s": sim_s})
    for row in rows:
        row["dmft_ratio"] = row["dmft_s"] / rows[0]["dmft_s"]
        row["sim_ratio"] = row["sim_s"] / rows[0]["sim_s"]
    return rows


def section_own_models(quick: bool = False, repeats: int = 3) -> list[str]:
    """The ratio table of the module doc (a section of ``python -m benchmarks``)."""
    from benchmarks.common import table

    rows = run(quick, repeats)
    return [table("Schedules and momentum: cost relative to the plain run (warm)",
                  ["variant", "steps", "DMFT solve (s)", "ratio", "simulation (s)", "ratio"],
                  [[r["variant"], r["steps"], r["dmft_s"], r["dmft_ratio"], r["sim_s"], r["sim_ratio"]] for r in rows])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    section_own_models(args.quick, args.repeats)


if __name__ == "__main__":
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    main()
