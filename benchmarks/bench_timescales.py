"""Two-layer time scales (BMZ): the ODE solver by default, the committee ODE's compilation, and the
cost of the three simulators to the same final time versus d.

**Solvers** (:func:`run`, the first table): the reduced ``(a, s)`` dynamics
(:func:`sgdlab.two_layer.reduced.solve_reduced`) of ``phi = sigma = h_1 + h_2 + h_3`` with ``m``
particles (default 400; ``--quick``: 64) at ``eps = 1e-4``, saved at 81 log-spaced times from
``eps / 100`` to ``t = 1``, rtol 1e-7, atol 1e-12 (the study's tolerances), solved by the default
``solver = "auto"``, by explicit ``tsit5`` and by implicit ``kvaerno5`` (the default before
``auto``, the baseline of the ratios). Per row: the first call (compilation + solve), a second,
warm call (``kvaerno5`` at ``m >= 200``: not repeated, its solve dominates), the steps, the solver
``auto`` chose, the half-learning times ``t_1, t_2, t_3`` and their largest relative difference
to ``kvaerno5``; the ratio is ``kvaerno5``'s first call over the row's. Without ``--quick`` also
``eps = 1e-8`` with ``auto`` alone (``kvaerno5`` takes more than 10 minutes there at ``m = 400``).

**Committee ODE** (:func:`sgdlab.two_layer.committee_ode.solve_committee`, ``K = 2``): calls with
7, 50 and 600 save points; the compiled program count stays at one.

**Simulators vs d**: ``phi = sigma = h_1 + h_2 + h_3``, ``m`` neurons (default 256), ``a0`` the
uniform quantiles on ``[-1, 1]``, ``eps = 0.02``, final time ``T = 0.6`` (through the degree-1
drop), order parameters saved at ``saves`` times. For each ``d`` (default 1000, 4000, 16000), one seed:

- ``flow``: :func:`sgdlab.two_layer.flow.solve_population_flow` with ``solver="tsit5"`` (the
  exact finite-``d`` population flow on the overlaps ``(a, s, G)``; ``d`` enters only through the
  initial overlaps, drawn by :func:`~sgdlab.two_layer.flow.random_overlaps`, not timed). Its
  cost per step is ``O(m^3)``; the implicit ``kvaerno5`` cannot run at ``m = 256`` (dense
  Jacobian of the ``m x m`` state).
- ``reduced``: :func:`sgdlab.two_layer.reduced.solve_reduced` (the ``d = inf`` particle dynamics;
  no ``d`` at all), with ``tsit5`` and with the default ``auto``.
- ``online SGD``: :func:`sgdlab.two_layer.sgd.online_sgd`, batch 1, step ``eta``
  (``T / eta`` steps of cost ``O(m d)``; the first layer on the sphere).

Printed per row: compile time (first call minus warm call) and the warm wall time (a second call
with other random numbers, same shapes), the adaptive step count of the ODE solvers; then the
ratios: each method against itself at the smallest ``d`` (the reduced dynamics must stay at ~1, the
flow too up to its step count, SGD grows like ``d``) and the flow and SGD against the reduced dynamics.

Usage: ``python -m benchmarks --only timescales [--quick]`` or ``python benchmarks/bench_timescales.py [--m 256] [--dims 1000 4000 16000] [--solver-m 400] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import table


P123 = (0.0, 1.0, 1.0, 1.0)


def run(quick: bool = False, m: int | None = None) -> list[dict]:
    """The solver comparison of the module doc: one dict per row, ``{solver, chosen, m, eps, steps,
    ok, first_s, warm_s, t_half (list), t_half_rel_diff, ratio, warm_ratio}`` (``ratio``:
    ``kvaerno5``'s first call over this row's, at the same ``m`` and ``eps``, ``warm_ratio`` the
    same for the warm calls; ``None`` where ``kvaerno5`` is not run or has no warm call)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sgdlab.two_layer import flow as tl
    from sgdlab.two_layer.analysis import half_learning_times
    from sgdlab.two_layer.problem import SingleIndex
    from sgdlab.two_layer.reduced import solve_reduced

    m = m or (64 if quick else 400)
    problem = SingleIndex(phi=P123, sigma=P123)
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
    cases = [(1e-4, ("auto", "tsit5", "kvaerno5"))] + ([] if quick else [(1e-8, ("auto",))])  # eps = 1e-8: ~2 min a call
    rows = []
    for eps, solvers in cases:
        t = np.logspace(np.log10(eps / 100), 0.0, 81)
        by_solver = {}
        for solver in solvers:
            def call(shift, solver=solver):
                sol = solve_reduced(problem, a0 * (1 + 1e-9 * shift), jnp.zeros(m), eps, jnp.asarray(t), True, 1e-7, 1e-12, solver, 10_000_000)
                jax.block_until_ready(sol.obs)
                return sol

            t0 = time.perf_counter()
            sol = call(0)
            first = time.perf_counter() - t0
            warm = None
            if not (solver == "kvaerno5" and m >= 200) and eps == cases[0][0]:
                t0 = time.perf_counter()
                call(1)
                warm = time.perf_counter() - t0
            th = half_learning_times(t, np.asarray(sol.obs.M), np.array(P123), np.array(P123))[1:]
            by_solver[solver] = {"solver": solver, "chosen": sol.solver, "m": m, "eps": eps, "steps": int(sol.num_steps),
                                 "ok": bool(sol.success), "first_s": first, "warm_s": warm, "t_half": [float(x) for x in th]}
            print(f"  reduced m = {m}, eps = {eps:g}, {solver}: {first:.1f} s, {int(sol.num_steps)} steps", flush=True)
        base = by_solver.get("kvaerno5")
        for row in by_solver.values():
            row["ratio"] = base["first_s"] / row["first_s"] if base else None
            row["warm_ratio"] = base["warm_s"] / row["warm_s"] if base and base["warm_s"] and row["warm_s"] else None
            row["t_half_rel_diff"] = float(np.max(np.abs(np.array(row["t_half"]) / np.array(base["t_half"]) - 1))) if base else None
            rows.append(row)
    return rows


def section_solvers(quick: bool = False, m: int | None = None) -> list[str]:
    """The table of :func:`run`."""
    rows = run(quick, m)
    return [table(f"Reduced dynamics: the default solver against Kvaerno5 (P123, m = {rows[0]['m']}, t from eps/100 to 1, 81 saves)",
                  ["solver", "chosen", "eps", "steps", "first call s", "warm s", "t_1", "t_2", "t_3", "max rel. diff t_l", "kvaerno5 / this",
                   "warm: kvaerno5 / this"],
                  [[r["solver"], r["chosen"], r["eps"], r["steps"], r["first_s"], r["warm_s"], *r["t_half"], r["t_half_rel_diff"], r["ratio"],
                    r["warm_ratio"]] for r in rows],
                  ["first call: compilation + solve; kvaerno5 / this: kvaerno5's first call over this row's (same m, eps); "
                   "warm: a second call (not repeated for kvaerno5 at m >= 200, whose solve dominates)."])]


def section_committee() -> list[str]:
    """Calls of the committee ODE with three numbers of save points: one compiled program."""
    import jax.numpy as jnp
    import numpy as np

    from sgdlab.two_layer import committee_ode as co

    K = 2
    params = co.CommitteeParams(jnp.eye(K), jnp.ones(K), eta=0.5)
    st0 = co.CommitteeState(0.2 * jnp.eye(K) + 0.05, jnp.full((K, K), 1e-3) + 0.01 * jnp.eye(K), jnp.ones(K))
    rows = []
    before = co._committee_chunk._cache_size()
    for n in (7, 50, 600):
        t0 = time.perf_counter()
        _, eg = co.solve_committee(st0, params, np.logspace(-2, 3, n))
        eg.block_until_ready()
        rows.append([n, time.perf_counter() - t0, co._committee_chunk._cache_size() - before, float(eg[-1])])
    return [table("Committee ODE (K = 2, eta = 0.5, to alpha = 1000): one compiled program for any number of save points",
                  ["save points", "call s", "programs compiled", "final eps_g"], rows)]


def section_timescales(quick: bool = False, m: int = 256, dims=(1000, 4000, 16000), eps: float = 0.02, T: float = 0.6,
                       eta: float = 1e-4, saves: int = 20, solver_m: int | None = None) -> list[str]:
    """Every table of the module doc: the solvers (:func:`run`), the committee ODE, the simulators vs d."""
    return section_solvers(quick, solver_m) + section_committee() + section_simulators(quick, m, dims, eps, T, eta, saves)


def section_simulators(quick: bool = False, m: int = 256, dims=(1000, 4000, 16000), eps: float = 0.02, T: float = 0.6,
                       eta: float = 1e-4, saves: int = 20) -> list[str]:
    """The three tables of the module doc: per (method, d) compile and warm time, then the ratios.
    The reduced dynamics runs with ``tsit5``, ``kvaerno5`` and the default solver of
    ``solve_reduced`` when that is another (e.g. an automatic choice)."""
    if quick:
        m, T, eta, dims = 64, 0.3, 2e-4, (1000, 4000)

    import jax
    import jax.numpy as jnp
    import numpy as np

    import inspect

    from sgdlab.two_layer import flow as tl
    from sgdlab.two_layer import solve_reduced
    from sgdlab.two_layer.problem import SingleIndex
    from sgdlab.two_layer.sgd import online_sgd

    default = inspect.signature(solve_reduced).parameters["solver"].default
    solvers = ("tsit5", "kvaerno5") + (() if default in ("tsit5", "kvaerno5") else (default,))

    problem = SingleIndex(phi=(0, 1, 1, 1), sigma=(0, 1, 1, 1))
    ts = jnp.asarray(np.linspace(T / saves, T, saves))
    n_steps = int(round(T / eta))
    steps = jnp.asarray(np.round(np.asarray(ts) / eta).astype(np.int64))
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
    times: dict[tuple[str, int], float] = {}
    rows = []

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
        rows.append([name, d, max(first - warm, 0.0), warm, n, risk])

    for d in dims:
        overlaps = {seed: tl.random_overlaps(jax.random.key(100 + seed), m, d) for seed in (0, 1)}
        jax.block_until_ready(overlaps)
        timed("flow (tsit5)", d, lambda seed: tl.solve_population_flow(problem, a0, *overlaps[seed], eps, ts, solver="tsit5")[:3], steps_of=lambda o: o[1])
        for solver in solvers:
            # the reduced dynamics starts at s = 0 whatever d is; seed 1 shifts a0 slightly so the
            # warm call is a fresh computation with the same shapes
            timed(f"reduced ({solver})", d, lambda seed, solver=solver: solve_reduced(problem, a0 * (1 + 1e-3 * seed), jnp.zeros(m), eps, ts, solver=solver),
                  steps_of=lambda o: o[1])
        timed("online SGD", d, lambda seed: online_sgd(problem, jax.random.key(seed), a0, d, eps, eta, steps))

    out = [table(f"Two-layer simulators: P123, m = {m}, eps = {eps}, T = {T}, {saves} saves, SGD eta = {eta:g} ({n_steps} steps)",
                 ["method", "d", "compile s", "warm s", "steps", "final risk"], rows)]
    d0 = dims[0]
    names = ["flow (tsit5)", *(f"reduced ({solver})" for solver in solvers), "online SGD"]
    out.append(table(f"Two-layer: warm time relative to d = {d0} (same method)", ["d", *names],
                     [[d, *(times[(n, d)] / times[(n, d0)] for n in names)] for d in dims]))
    out.append(table("Two-layer: warm time relative to the reduced dynamics (tsit5) at the same d",
                     ["d", "flow / reduced", "SGD / reduced", "SGD / flow"],
                     [[d, times[("flow (tsit5)", d)] / times[("reduced (tsit5)", d)], times[("online SGD", d)] / times[("reduced (tsit5)", d)],
                       times[("online SGD", d)] / times[("flow (tsit5)", d)]] for d in dims]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--dims", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--eps", type=float, default=0.02)
    parser.add_argument("--T", type=float, default=0.6, help="final time")
    parser.add_argument("--eta", type=float, default=1e-4, help="online-SGD step")
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--solver-m", type=int, default=None, help="particles of the solver comparison (default 400; --quick: 64)")
    parser.add_argument("--only-solvers", action="store_true", help="the solver comparison alone")
    parser.add_argument("--quick", action="store_true", help="m = 64, T = 0.3, eta = 2e-4, d = 1000 and 4000")
    args = parser.parse_args()
    if args.only_solvers:
        section_solvers(args.quick, args.solver_m)
        return
    section_timescales(args.quick, args.m, tuple(args.dims), args.eps, args.T, args.eta, args.saves, args.solver_m)


if __name__ == "__main__":
    main()
