"""Cost of the three two-layer simulators of spec 05 (BMZ time scales) to the same final time, vs d.

Problem: ``phi = sigma = h_1 + h_2 + h_3`` (normalised Hermite), ``m`` neurons (default 256),
``a0`` the uniform quantiles on ``[-1, 1]``, learning-rate ratio ``eps`` (default 0.02), final time
``T`` (default 0.6: through the degree-1 drop), order parameters saved at ``--saves`` times. For
each ``d`` in ``--dims`` (default 1000, 4000, 16000), one seed:

- ``flow``: :func:`sgdlab.two_layer.flow.solve_population_flow` with ``solver="tsit5"`` (the
  exact finite-``d`` population flow on the overlaps ``(a, s, G)``; ``d`` enters only through the
  initial overlaps, drawn by :func:`~sgdlab.two_layer.flow.random_overlaps`, not timed). Its
  cost per step is ``O(m^3)``; the implicit default ``kvaerno5`` cannot run at ``m = 256`` (dense
  Jacobian of the ``m x m`` state).
- ``reduced``: :func:`sgdlab.two_layer.flow.solve_reduced` (the ``d = inf`` particle dynamics;
  no ``d`` at all), with ``tsit5`` and with the default implicit ``kvaerno5``.
- ``online SGD``: :func:`sgdlab.two_layer.sgd.online_sgd`, batch 1, step ``--eta``
  (``T / eta`` steps of cost ``O(m d)``; the first layer on the sphere).

Printed per row as it arrives: compile time (first call minus warm call) and the warm wall time
(a second call with other random numbers, same shapes), the adaptive step count of the ODE
solvers; at the end the ratios: each method against itself at the smallest ``d`` (the reduced
dynamics must stay at ~1, the flow too up to its step count, SGD grows like ``d``) and the flow and
SGD against the reduced dynamics.

Usage: ``python benchmarks/bench_timescales.py [--m 256] [--dims 1000 4000 16000] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--dims", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--eps", type=float, default=0.02)
    parser.add_argument("--T", type=float, default=0.6, help="final time")
    parser.add_argument("--eta", type=float, default=1e-4, help="online-SGD step")
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="m = 64, T = 0.3, eta = 2e-4")
    args = parser.parse_args()
    if args.quick:
        args.m, args.T, args.eta = 64, 0.3, 2e-4

    import jax
    import jax.numpy as jnp
    import numpy as np

    import sgdlab
    from sgdlab.two_layer.sgd import online_sgd
    from sgdlab.two_layer.problem import SingleIndex
    from sgdlab.two_layer import flow as tl

    problem = SingleIndex(phi=(0, 1, 1, 1), sigma=(0, 1, 1, 1))
    m, eps = args.m, args.eps
    ts = jnp.asarray(np.linspace(args.T / args.saves, args.T, args.saves))
    n_steps = int(round(args.T / args.eta))
    steps = jnp.asarray(np.round(np.asarray(ts) / args.eta).astype(np.int64))
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))

    print(f"two-layer simulators, P123, m = {m}, eps = {eps}, T = {args.T}, {args.saves} saves, SGD eta = {args.eta:g} "
          f"({n_steps} steps); sgdlab {sgdlab.__version__}, jax {jax.__version__} ({jax.default_backend()}, {os.cpu_count()} CPUs)")
    print(f"{'method':<22}{'d':>7}{'compile [s]':>13}{'run [s]':>10}{'steps':>8}{'final risk':>12}", flush=True)
    times: dict[tuple[str, int], float] = {}

    def timed(name, d, fn, *, steps_of=None):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(0))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(1))
        warm = time.perf_counter() - t0
        times[(name, d)] = warm
        n = int(steps_of(out)) if steps_of else n_steps
        risk = float(np.asarray(out[0].risk if hasattr(out[0], "risk") else out[1])[-1].sum())
        print(f"{name:<22}{d:>7}{max(first - warm, 0.0):>13.2f}{warm:>10.3f}{n:>8}{risk:>12.5f}", flush=True)

    for d in args.dims:
        overlaps = {seed: tl.random_overlaps(jax.random.key(100 + seed), m, d) for seed in (0, 1)}
        jax.block_until_ready(overlaps)
        timed("flow (tsit5)", d, lambda seed: tl.solve_population_flow(problem, a0, *overlaps[seed], eps, ts, solver="tsit5"), steps_of=lambda o: o[1])
        for solver in ("tsit5", "kvaerno5"):
            # the reduced dynamics starts at s = 0 whatever d is; seed 1 shifts a0 slightly so the
            # warm call is a fresh computation with the same shapes
            timed(f"reduced ({solver})", d, lambda seed, solver=solver: tl.solve_reduced(problem, a0 * (1 + 1e-3 * seed), jnp.zeros(m), eps, ts, solver=solver),
                  steps_of=lambda o: o[1])
        timed("online SGD", d, lambda seed: online_sgd(problem, jax.random.key(seed), a0, d, eps, args.eta, steps))

    d0 = args.dims[0]
    names = ["flow (tsit5)", "reduced (tsit5)", "reduced (kvaerno5)", "online SGD"]
    print(f"\nwarm time relative to d = {d0} (same method):")
    print(f"{'d':>7}" + "".join(f"{n:>20}" for n in names))
    for d in args.dims:
        print(f"{d:>7}" + "".join(f"{times[(n, d)] / times[(n, d0)]:>20.2f}" for n in names))
    print("\nwarm time relative to the reduced dynamics (tsit5) at the same d:")
    print(f"{'d':>7}{'flow / reduced':>20}{'SGD / reduced':>20}{'SGD / flow':>20}")
    for d in args.dims:
        r = times[("reduced (tsit5)", d)]
        print(f"{d:>7}{times[('flow (tsit5)', d)] / r:>20.1f}{times[('online SGD', d)] / r:>20.1f}"
              f"{times[('online SGD', d)] / times[('flow (tsit5)', d)]:>20.2f}")


if __name__ == "__main__":
    main()
