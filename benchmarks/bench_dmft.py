"""Benchmark of the discrete-time DMFT solver (``sgdlab.dmft.solver``).

Prints, for persistent SGD with the square loss (``alpha = 2, Delta = 0.5, lambda = 0.1,
eta = 0.1, b = 0.3, tau = 2``):

1. a full solve: wall time (first call, with compilation, and warm), peak resident memory (of a
   fresh child process, minus the same child's footprint after importing JAX) for
   - the default solver (``start = "march"``: causal time march + one certifying iteration), and
   - the damped Eissfeller-Opper iteration from zero kernels for a fixed number of iterations;
2. the time of one iteration and its split: sampling (weight side, Cholesky, ``g0 = L z``), the
   effective-process scan with its tangent, and the kernel algebra (``M``, ``mu``, probe
   regression for ``Q``), beside the flop lower bound ``5 N T^2`` of an iteration (memory term and
   tangent ``2 N T^2``, ``g0`` ``N T^2``, ``M`` ``N T^2``, ``Q`` ``N T^2``, using the triangular /
   symmetric structure); the common random numbers are drawn once per solve and timed apart;
3. scaling of the march and of one iteration with ``T`` and with ``N``.

Usage::

    python benchmarks/bench_dmft.py                 # the full benchmark (several minutes)
    python benchmarks/bench_dmft.py --quick         # about a minute
    python benchmarks/bench_dmft.py --steps 150 --samples 30000 --iterations 50 \\
        --scale-steps 50,100,200,400 --scale-samples 7500,15000,30000,60000 --repeats 3

Timings are the minimum over ``--repeats`` warm calls (``block_until_ready``); on a shared machine
the minimum is the least perturbed estimate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

PROBLEM_KW = dict(alpha=2.0, delta=0.5, loss="square", ridge=0.1)
ETA, B, TAU = 0.1, 0.3, 2.0


def _setup(steps: int):
    import sgdlab  # noqa: F401  (enables float64)
    from sgdlab.dmft.problem import GaussianMixture
    from sgdlab.dmft.solver import Dynamics

    problem = GaussianMixture(**PROBLEM_KW)
    dynamics = Dynamics(ETA, steps, ETA / TAU, (1 - B) * ETA / (B * TAU), B)
    return problem, dynamics


def _timed(fn, repeats: int):
    """``(first call seconds, min warm seconds)``; ``fn`` must block until its result is ready."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return first, min(warm)


def _child_solve(queue, steps, samples, iterations, start, baseline_only):
    """Run in a fresh process: peak RSS of a full solve (or of the bare import, as baseline)."""
    import warnings

    problem, dynamics = _setup(steps)
    from sgdlab.dmft.solver import DMFTConvergenceWarning, SolverOptions, solve_dmft

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall = first = 0.0
    its = 0
    if not baseline_only:
        if start == "zero":  # force exactly `iterations` iterations
            opts = SolverOptions(samples=samples, iterations=iterations, tolerance=1e-300, start="zero")
        else:
            opts = SolverOptions(samples=samples, iterations=iterations, start="march")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DMFTConvergenceWarning)
            t0 = time.perf_counter()
            res = solve_dmft(problem, dynamics, opts)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = solve_dmft(problem, dynamics, opts)
            wall = time.perf_counter() - t0
        its = res.iterations
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((base, peak, first, wall, its))


def full_solve(steps, samples, iterations, start):
    ctx = mp.get_context("spawn")
    out = []
    for baseline_only in (True, False):
        q = ctx.Queue()
        p = ctx.Process(target=_child_solve, args=(q, steps, samples, iterations, start, baseline_only))
        p.start()
        out.append(q.get())
        p.join()
    (_, base_peak, _, _, _), (_, peak, first, wall, its) = out
    return first, wall, its, (peak - base_peak) / 1024.0, peak / 1024.0  # MiB (ru_maxrss is KiB on Linux)


def _solver_pieces(steps, samples):
    """The solver's own jitted functions, with the benchmark problem bound."""
    import jax

    from sgdlab.dmft import solver as D

    problem, dynamics = _setup(steps)
    skeleton, n_steps, params = D._split(problem, dynamics)
    key = jax.random.key(0)

    def draw():
        return D._draw(key, params, skeleton=skeleton, n_steps=n_steps, samples=samples, probe=True)

    def march(noise):
        return D._march_solve(noise, params, 1e-10, skeleton=skeleton, n_steps=n_steps, chunks=4)

    def iteration(kernels, noise):
        return D._iteration(kernels, noise, params, 0.3, 1e-10, skeleton=skeleton, n_steps=n_steps, response="probe", block=16)

    return problem, dynamics, draw, march, iteration


def iteration_split(steps, samples, repeats):
    """Seconds of the one-time draw of the common random numbers and of the three parts of one
    fixed-point iteration (warm, min over repeats)."""
    import jax

    from sgdlab.dmft import solver as D

    problem, dynamics, draw, march, _ = _solver_pieces(steps, samples)
    noise = draw()
    kernels = march(noise)[0]

    @jax.jit
    def sampling(kernels, noise):
        order = D.weight_side(problem, dynamics, kernels)
        chol = D.regularised_cholesky(order.C, 1e-10)
        return order, chol, chol @ noise.z

    @jax.jit
    def scan(noise, order, g0):
        return D.effective_scan(problem, noise, order.m, g0, order.R, 16)

    @jax.jit
    def algebra(noise, lam, dlam_off, mean_a, chol):
        return D.estimate_kernels(problem, noise, lam, dlam_off, mean_a, chol, "probe")

    order, chol, g0 = sampling(kernels, noise)
    lam, dlam_off, stats = scan(noise, order, g0)
    t_draw = _timed(lambda: jax.block_until_ready(draw()), repeats)[1]
    t_samp = _timed(lambda: jax.block_until_ready(sampling(kernels, noise)), repeats)[1]
    t_scan = _timed(lambda: jax.block_until_ready(scan(noise, order, g0)), repeats)[1]
    t_alg = _timed(lambda: jax.block_until_ready(algebra(noise, lam, dlam_off, stats[:, 2], chol)), repeats)[1]
    return t_draw, t_samp, t_scan, t_alg


def iteration_and_march(steps, samples, repeats):
    """Warm seconds of the march (one solve, without the draw) and of one fixed-point iteration,
    timing the solver's own jitted functions."""
    import jax

    _, _, draw, march, iteration = _solver_pieces(steps, samples)
    noise = draw()
    t_march = _timed(lambda: jax.block_until_ready(march(noise)), repeats)[1]
    kernels = march(noise)[0]
    t_iter = _timed(lambda: jax.block_until_ready(iteration(kernels, noise)), repeats)[1]
    return t_march, t_iter


def flops(steps, samples):
    return 5.0 * samples * (steps + 1) ** 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="T of the full solve and the split (default 150)")
    ap.add_argument("--samples", type=int, default=30000, help="N of the full solve and the split (default 30000)")
    ap.add_argument("--iterations", type=int, default=50, help="iterations of the zero-start solve (default 50)")
    ap.add_argument("--scale-steps", default="50,100,200,400", help="comma-separated T for the T scaling")
    ap.add_argument("--scale-samples", default="7500,15000,30000,60000", help="comma-separated N for the N scaling")
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats per timing (min is reported)")
    ap.add_argument("--quick", action="store_true", help="small sizes: runs in about a minute")
    ap.add_argument("--skip-full", action="store_true", help="skip the full-solve (memory) section")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.samples, args.iterations = 60, 6000, 5
        args.scale_steps, args.scale_samples, args.repeats = "30,60,120", "3000,12000", 1
    scale_t = [int(x) for x in args.scale_steps.split(",") if x]
    scale_n = [int(x) for x in args.scale_samples.split(",") if x]

    import jax

    import sgdlab

    print(f"sgdlab {sgdlab.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s), python {sys.version.split()[0]}")
    print(f"persistent SGD, square loss, {PROBLEM_KW}, eta={ETA}, b={B}, tau={TAU}; "
          f"flop lower bound per iteration 5 N (T+1)^2\n")

    T, N = args.steps, args.samples
    if not args.skip_full:
        print(f"== full solve, T = {T}, N = {N} ==")
        print(f"{'solver':34s} {'first call [s]':>14s} {'warm [s]':>9s} {'iters':>6s} {'peak RSS [MiB]':>15s} {'solver part':>12s}")
        for label, start, its in (("march + certifying iteration", "march", args.iterations),
                                  (f"damped iteration from zero x{args.iterations}", "zero", args.iterations)):
            first, wall, n_it, extra, peak = full_solve(T, N, its, start)
            print(f"{label:34s} {first:14.2f} {wall:9.2f} {n_it:6d} {peak:15.0f} {extra:12.0f}")
        hist = 2 * (T + 1) * N * 8 / 2**20
        print(f"(one (T+1) x N float64 array is {hist / 2:.0f} MiB; the iteration holds about six, the march four)\n")

    print(f"== one fixed-point iteration, T = {T}, N = {N} ==")
    draw, samp, scan, alg = iteration_split(T, N, args.repeats)
    t_march, whole = iteration_and_march(T, N, args.repeats)
    fl = flops(T, N)
    print(f"{'part':40s} {'time [s]':>9s} {'share':>6s}")
    for label, t in (("sampling (weight side, Cholesky, g0 = Lz)", samp), ("effective-process scan + tangent", scan),
                     ("kernel algebra (M, mu, Q regression)", alg), ("whole iteration (one jit)", whole)):
        print(f"{label:40s} {t:9.3f} {t / whole:6.0%}")
    print(f"once per solve: common random numbers + probe Gram factor {draw:.3f} s")
    print(f"flop lower bound 5 N (T+1)^2 = {fl:.2e} -> {fl / whole / 1e9:.1f} GFLOP/s achieved by the iteration")
    print(f"time march (whole solve, same flop count): {t_march:.3f} s -> {fl / t_march / 1e9:.1f} GFLOP/s\n")

    print("== scaling with T (N = %d) ==" % N)
    print(f"{'T':>5s} {'march [s]':>10s} {'iteration [s]':>14s} {'5NT^2 [GFLOP]':>14s} {'march GFLOP/s':>14s} {'iter GFLOP/s':>13s}")
    for t in scale_t:
        tm, ti = iteration_and_march(t, N, args.repeats)
        fl = flops(t, N)
        print(f"{t:5d} {tm:10.3f} {ti:14.3f} {fl / 1e9:14.2f} {fl / tm / 1e9:14.1f} {fl / ti / 1e9:13.1f}")
    print()
    print("== scaling with N (T = %d) ==" % T)
    print(f"{'N':>7s} {'march [s]':>10s} {'iteration [s]':>14s} {'5NT^2 [GFLOP]':>14s} {'march GFLOP/s':>14s} {'iter GFLOP/s':>13s}")
    for n in scale_n:
        tm, ti = iteration_and_march(T, n, args.repeats)
        fl = flops(T, n)
        print(f"{n:7d} {tm:10.3f} {ti:14.3f} {fl / 1e9:14.2f} {fl / tm / 1e9:14.1f} {fl / ti / 1e9:13.1f}")


if __name__ == "__main__":
    main()
