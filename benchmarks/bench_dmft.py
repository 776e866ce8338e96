"""The discrete-time DMFT solver (:mod:`sgdlab.dmft.solver`) against its ``O(N T^2)`` flop bound.

Persistent SGD with the square loss (``alpha = 2, Delta = 0.5, lambda = 0.1, eta = 0.1,
b = 0.3, tau = 2``). The bound: an iteration (or the time march) must do at least ``5 N (T+1)^2``
flops (the memory term and its tangent ``2 N T^2``, the fields ``g0 = L z`` ``N T^2``, the
kernels ``M`` and ``Q`` ``N T^2`` each, using the triangular / symmetric structure); it is
divided by the float64 matrix-product rate measured in the same run, so "x bound" is how many
times slower than a machine doing only those flops at matmul speed.

- :func:`full_solve_case` (a child process): a whole ``solve_dmft`` (march + certifying
  iteration), first call (with compilation) and warm, and the peak resident memory above the
  process's import footprint;
- :func:`pieces`: warm times of the solver's public pieces: the draw of the common random
  numbers, the time march, and one fixed-point iteration split into the weight side (with the
  Cholesky factor and ``g0 = L z``), the effective-process scan and the kernel algebra;
- the sections: scaling of the march and of one iteration with ``T`` and with ``N``; long
  horizons (``T = 1000``, and ``--dmft-long 5000``) as whole solves with their memory.
  ``--quick``: T = 40, N = 4000, no whole solves (those compile the most).

Usage: ``python -m benchmarks --only dmft [--quick] [--dmft-long 1000,5000]`` (or this file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import best_time, child, device, matmul_flops, platforms, table

PROBLEM_KW = dict(alpha=2.0, delta=0.5, loss="square", ridge=0.1)
ETA, B, TAU = 0.1, 0.3, 2.0


def _setup(steps: int):
    import sgdlab  # noqa: F401  (float64)
    from sgdlab.dmft.problem import GaussianMixture
    from sgdlab.dmft.solver import Dynamics

    return GaussianMixture(**PROBLEM_KW), Dynamics(ETA, steps, ETA / TAU, (1 - B) * ETA / (B * TAU), B)


def flops(steps: int, samples: int) -> float:
    """The flop lower bound ``5 N (T+1)^2`` of one iteration or of the march."""
    return 5.0 * samples * (steps + 1) ** 2


def full_solve_case(steps: int, samples: int, start: str = "march", iterations: int = 50) -> dict:
    """A whole solve in this (fresh) process: first call, warm call, iterations, peak MiB above
    the import footprint."""
    import warnings

    from benchmarks.common import peak_rss, reset_peak_rss, rss_bytes

    problem, dynamics = _setup(steps)
    from sgdlab.dmft.solver import DMFTConvergenceWarning, SolverOptions, solve_dmft

    if start == "zero":  # exactly `iterations` iterations
        opts = SolverOptions(samples=samples, iterations=iterations, tolerance=1e-300, start="zero")
    else:
        opts = SolverOptions(samples=samples, iterations=iterations, start="march")
    base = rss_bytes()
    reset_peak_rss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DMFTConvergenceWarning)
        t0 = time.perf_counter()
        solve_dmft(problem, dynamics, opts)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = solve_dmft(problem, dynamics, opts)
        warm = time.perf_counter() - t0
    return {"first": first, "warm": warm, "iterations": res.iterations, "peak_mib": (peak_rss() - base) / 2**20}


def pieces(steps: int, samples: int, repeats: int = 2, split: bool = True, platform: str = "cpu") -> dict:
    """Warm seconds of the solver's pieces (public functions, each jitted with the problem bound)."""
    import jax

    from sgdlab.dmft import solver as D

    problem, dynamics = _setup(steps)
    with jax.default_device(device(platform)):
        draw = jax.jit(lambda key: D.draw_noise(problem, dynamics, key, samples, True))
        noise = draw(jax.random.key(0))
        march = jax.jit(lambda nz: D.march(problem, dynamics, nz)[0])
        kernels = march(noise)

        @jax.jit
        def iteration(k, nz):
            order = D.weight_side(problem, dynamics, k)
            return D.effective_process(problem, order, nz).kernels

        out = {"draw": best_time(lambda: jax.block_until_ready(draw(jax.random.key(1))), repeats)[1],
               "march": best_time(lambda: jax.block_until_ready(march(noise)), repeats)[1],
               "iteration": best_time(lambda: jax.block_until_ready(iteration(kernels, noise)), repeats)[1]}
        if split:
            @jax.jit
            def sampling(k, nz):
                order = D.weight_side(problem, dynamics, k)
                chol = D.regularised_cholesky(order.C, 1e-10)
                return order, chol, chol @ nz.z

            scan = jax.jit(lambda nz, order, g0: D.effective_scan(problem, nz, order.m, g0, order.R, 16))
            algebra = jax.jit(lambda nz, lam, dl, a, chol: D.estimate_kernels(problem, nz, lam, dl, a, chol, "probe"))
            order, chol, g0 = sampling(kernels, noise)
            lam, dlam, stats = scan(noise, order, g0)
            out["weight side + Cholesky + g0"] = best_time(lambda: jax.block_until_ready(sampling(kernels, noise)), repeats)[1]
            out["effective-process scan"] = best_time(lambda: jax.block_until_ready(scan(noise, order, g0)), repeats)[1]
            out["kernel algebra"] = best_time(lambda: jax.block_until_ready(algebra(noise, lam, dlam, stats[:, 2], chol)), repeats)[1]
    return out


def section_dmft(quick: bool = False, long_steps: tuple[int, ...] | None = None) -> list[str]:
    """Full solve, the split of one iteration, scaling in T and N, long horizons."""
    T, N = (40, 4000) if quick else (150, 30000)
    scale_t = (40, 80) if quick else (50, 100, 150, 200, 400)
    scale_n = (4000, 8000) if quick else (7500, 15000, 30000, 60000)
    long_steps = () if quick and long_steps is None else (long_steps if long_steps is not None else (1000,))
    repeats = 2 if quick else 3
    peak = matmul_flops("cpu")
    plats = platforms()
    out = []
    cache: dict = {}

    def timed_pieces(t_, n_, platform, split=False):
        if (t_, n_, platform) not in cache or split and "kernel algebra" not in cache[(t_, n_, platform)]:
            cache[(t_, n_, platform)] = pieces(t_, n_, repeats, split=split, platform=platform)
        return cache[(t_, n_, platform)]

    rows = []
    solvers = [] if quick else [("march + certifying iteration", "march", 50), ("damped iteration from zero x5", "zero", 5)]
    for label, start, its in solvers:
        r = child("bench_dmft", dict(steps=T, samples=N, start=start, iterations=its))
        bound = flops(T, N) * (r["iterations"] + (start == "march")) / peak
        rows.append([label, r["first"], r["warm"], r["iterations"], r["warm"] / bound, r["peak_mib"]])
    out += [] if not rows else [table(f"DMFT full solve, T = {T}, N = {N}", ["solver", "first call s", "warm s", "iterations", "warm / flop bound",
                                                             "peak MiB"], rows, [
        f"flop bound: 5 N (T+1)^2 per iteration (and for the march) at the float64 matmul rate measured in this run "
        f"({peak / 1e9:.1f} GFLOP/s); peak: resident high-water mark of a fresh process above its import footprint; "
        f"one (T+1) x N float64 array is {(T + 1) * N * 8 / 2**20:.0f} MiB."])]

    p = timed_pieces(T, N, "cpu", split=True)
    bound = flops(T, N) / peak
    rows = [[name, p[name], p[name] / p["iteration"], p[name] / bound] for name in
            ("weight side + Cholesky + g0", "effective-process scan", "kernel algebra", "iteration", "march")]
    rows.append(["draw of the common random numbers (once per solve)", p["draw"], p["draw"] / p["iteration"], None])
    out.append(table(f"DMFT pieces, T = {T}, N = {N} (warm)", ["piece", "s", "of one iteration", "x flop bound"], rows, [
        f"flop bound: 5 N (T+1)^2 flops at the float64 matmul rate measured in this run ({peak / 1e9:.1f} GFLOP/s); "
        "each piece is jitted alone, so the pieces need not add up to the iteration."]))

    for name, values, fixed in (("T", scale_t, N), ("N", scale_n, T)):
        rows = []
        for v in values:
            t_, n_ = (v, fixed) if name == "T" else (fixed, v)
            q = {pl: timed_pieces(t_, n_, pl) for pl in plats}
            b = flops(t_, n_) / peak
            row = [v, q["cpu"]["march"], q["cpu"]["iteration"], b, q["cpu"]["march"] / b, q["cpu"]["iteration"] / b]
            if "gpu" in q:
                row += [q["gpu"]["march"], q["gpu"]["iteration"]]
            rows.append(row)
        base = rows[0]
        for row in rows:
            growth = (row[0] / base[0]) ** (2 if name == "T" else 1)
            row.insert(3, (row[1] / base[1]) / growth)
        header = [name, "march s", "iteration s", f"march growth / {name}^{2 if name == 'T' else 1}", "flop bound s",
                  "march / bound", "iteration / bound"] + (["GPU march s", "GPU iteration s"] if "gpu" in plats else [])
        out.append(table(f"DMFT scaling in {name} ({'N' if name == 'T' else 'T'} = {fixed})", header, rows, [
            "growth: the march's time against the first row's, divided by the growth of the flop bound (1 = O(N T^2))."]))

    if long_steps:
        rows = []
        for t_ in long_steps:
            n_ = max(N, 4 * (t_ + 1))
            r = child("bench_dmft", dict(steps=t_, samples=n_, start="march", iterations=1))
            rows.append([t_, n_, r["first"], r["warm"], r["warm"] / (2 * flops(t_, n_) / peak), r["peak_mib"], (t_ + 1) * n_ * 8 / 2**20])
        out.append(table("DMFT long horizons (march + one certifying iteration)", ["T", "N", "first call s", "warm s",
                                                                                    "warm / flop bound", "peak MiB", "one (T+1) x N array MiB"], rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dmft-long", default=None, help="comma-separated T of whole long-horizon solves (default 1000; none in --quick)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(full_solve_case(**json.loads(args.case))))
        return
    section_dmft(args.quick, None if args.dmft_long is None else tuple(int(x) for x in args.dmft_long.split(",") if x))


if __name__ == "__main__":
    main()
