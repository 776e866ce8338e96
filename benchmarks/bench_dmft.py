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
- :func:`phases_case` (a child process): the phases of a solve, each first (compiling) and warm:
  the draw of the common random numbers, the time march, one fixed-point iteration; the peak
  memory; a profile of the warm march and iteration split into the solver's parts (sampling the
  effective process, the kernel estimates, the weight side; :func:`profile_split`);
- :func:`pieces`: warm times of the solver's public pieces (one iteration split into the weight
  side with the Cholesky factor and ``g0 = L z``, the effective-process scan and the kernel algebra);
- the sections: scaling of the march and of one iteration with ``T`` and with ``N``; long
  horizons (``T = 1000``, and ``--dmft-long 1000,5000``) with their memory and split, against the
  in-run baselines float64 and one history segment (products over the whole masked history).
  ``--quick``: T = 40, N = 4000, no whole solves (those compile the most).

Usage: ``python -m benchmarks --only dmft [--quick] [--dmft-long 1000,5000]`` (or this file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import best_time, child, device, matmul_flops, platforms, table

PROBLEM_KW = dict(alpha=2.0, delta=0.5, loss="square", ridge=0.1)
ETA, B, TAU = 0.1, 0.3, 2.0
PARTS = ("effective process", "kernels", "weight side", "Lam pass", "rest")


def _setup(steps: int):
    import sgdlab  # noqa: F401  (float64)
    from sgdlab.dmft.problem import GaussianMixture
    from sgdlab.dmft.solver import Dynamics

    return GaussianMixture(**PROBLEM_KW), Dynamics(ETA, steps, ETA / TAU, (1 - B) * ETA / (B * TAU), B)


def flops(steps: int, samples: int) -> float:
    """The flop lower bound ``5 N (T+1)^2`` of one iteration or of the march."""
    return 5.0 * samples * (steps + 1) ** 2


def full_solve_case(steps: int, samples: int, start: str = "march", iterations: int = 50, precision: str | None = None) -> dict:
    """A whole solve in this (fresh) process: first call, warm call, iterations, peak MiB above
    the import footprint."""
    import warnings

    from benchmarks.common import peak_rss, reset_peak_rss, rss_bytes

    problem, dynamics = _setup(steps)
    from sgdlab.dmft.solver import DMFTConvergenceWarning, SolverOptions, solve_dmft

    prec = {} if precision is None else {"precision": precision}
    if start == "zero":  # exactly `iterations` iterations
        opts = SolverOptions(samples=samples, iterations=iterations, tolerance=1e-300, start="zero", **prec)
    else:
        opts = SolverOptions(samples=samples, iterations=iterations, start="march", **prec)
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


_PLUMBING = ("while", "conditional", "call", "parameter", "get-tuple-element", "tuple", "constant", "bitcast")


def _parts_of_instructions(hlo: str, scopes: dict) -> dict:
    """``{instruction name: part}`` of a compiled module's text: the part of the named scope in
    the instruction's metadata, else that of the innermost enclosing conditional that has one
    (XLA drops the metadata of matrix-vector products), else ``rest``; loops, conditionals and
    plumbing are left out (their contents are counted)."""
    def scope(line):
        meta = re.search(r'op_name="([^"]*)"', line)
        return next((p for s, p in scopes.items() if meta and s in meta.group(1)), None)

    computation, own, owner, opcode_of, caller = None, {}, {}, {}, {}
    for line in hlo.splitlines():
        head = re.match(r"(?:ENTRY )?%(\S+) .*\{$", line)
        if head:
            computation = head.group(1)
            continue
        m = re.match(r"\s*(?:ROOT )?%(\S+) = .*? ([\w-]+)\(", line)
        if not m:
            continue
        name, opcode = m.groups()
        owner[name], opcode_of[name], own[name] = computation, opcode, scope(line)
        if opcode == "conditional":
            branches = re.findall(r"(?:true|false)_computation=%([\w.-]+)", line)
            listed = re.search(r"branch_computations=\{([^}]*)\}", line)
            branches += [b.strip().lstrip("%") for b in listed.group(1).split(",")] if listed else []
            for b in branches:
                caller[b] = name

    def part(name, depth=0):
        if own.get(name) or depth > 32:
            return own.get(name)
        cond = caller.get(owner.get(name))
        return None if cond is None else part(cond, depth + 1)

    return {name: part(name) or PARTS[-1] for name, op in opcode_of.items() if op not in _PLUMBING}


def profile_split(compiled, run) -> dict:
    """Seconds of the leaf operations of one ``run()`` of ``compiled`` (a compiled jitted function)
    by part, from a ``jax.profiler`` trace: an operation belongs to the part of the solver's named
    scope (``sgdlab.dmft.weight_side.EFFECTIVE/KERNELS/WEIGHT_SIDE``, ``sgdlab.dmft.march.LAM_PASS``)
    that it or its enclosing conditional carries, else to ``rest``. ``total``: the wall time of the
    profiled run (the profiler's own cost included)."""
    import glob
    import tempfile

    import jax

    from sgdlab.dmft.march import LAM_PASS
    from sgdlab.dmft.weight_side import EFFECTIVE, KERNELS, WEIGHT_SIDE

    part_of = _parts_of_instructions(compiled.as_text(), {EFFECTIVE: PARTS[0], KERNELS: PARTS[1], WEIGHT_SIDE: PARTS[2], LAM_PASS: PARTS[3]})
    out = dict.fromkeys(PARTS, 0.0)
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder, profiler_options=options)
        t0 = time.perf_counter()
        run()
        out["total"] = time.perf_counter() - t0
        jax.profiler.stop_trace()
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
        for plane in data.planes:
            for line in plane.lines:
                for event in line.events:
                    part = part_of.get(event.name)
                    if part is not None:
                        out[part] += event.duration_ns * 1e-9
    return out


def phases_case(steps: int, samples: int, precision: str = "mixed", chunks: int | None = None, profile: bool = True) -> dict:
    """The phases of a solve in this (fresh) process, each ``[first call, warm]`` in seconds (the
    first call traces, compiles and runs), the peak MiB above the import footprint (before any
    profile), and the profile splits of the warm march and iteration (:func:`profile_split`)."""
    import jax

    from benchmarks.common import peak_rss, reset_peak_rss, rss_bytes
    from sgdlab.dmft import solver as D

    problem, dynamics = _setup(steps)
    opts = D.SolverOptions(samples=samples, precision=precision, **({} if chunks is None else {"chunks": chunks})).validate()
    skeleton, _, params = D._split(problem, dynamics)
    base = rss_bytes()
    reset_peak_rss()
    out, compiled = {}, {}

    def phase(name, fn, *args, **static):
        t0 = time.perf_counter()
        compiled[name] = fn.lower(*args, **static).compile()
        value = jax.block_until_ready(compiled[name](*args))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(compiled[name](*args))
        out[name] = [first, time.perf_counter() - t0]
        return value, (lambda: jax.block_until_ready(compiled[name](*args)))

    noise, _ = phase("draw", D._draw, jax.random.key(0), params, skeleton=skeleton, n_steps=steps, samples=samples,
                     probe=True, precision=precision)
    (kernels, *_), run_march = phase("march", D._march_solve, noise, params, opts.jitter, skeleton=skeleton, n_steps=steps,
                                     chunks=opts.chunks, momentum=False)
    step, run_iteration = phase("iteration", D._iteration, kernels, noise, params, opts.damping, opts.jitter,
                                skeleton=skeleton, n_steps=steps, response="probe", block=opts.block, momentum=False)
    out["peak_mib"] = (peak_rss() - base) / 2**20
    out["residual"] = float(step.residual)
    if profile:
        out["split_march"] = profile_split(compiled["march"], run_march)
        out["split_iteration"] = profile_split(compiled["iteration"], run_iteration)
    return out


def pieces(steps: int, samples: int, repeats: int = 2, split: bool = True, platform: str = "cpu", precision: str | None = None) -> dict:
    """Warm seconds of the solver's pieces (public functions, each jitted with the problem bound)."""
    import jax
    import jax.numpy as jnp

    from sgdlab.dmft import solver as D

    problem, dynamics = _setup(steps)
    dtype = {"float64": jnp.float64, "mixed": jnp.float32}[precision or D.SolverOptions().resolved_precision]
    with jax.default_device(device(platform)):
        draw = jax.jit(lambda key: D.draw_noise(problem, dynamics, key, samples, True, dtype))
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
                return order, chol, chol.astype(nz.z.dtype) @ nz.z

            scan = jax.jit(lambda nz, order, g0: D.effective_scan(problem, nz, order.m, g0, order.R, 16))
            algebra = jax.jit(lambda nz, lam, dl, a, chol: D.estimate_kernels(problem, nz, lam, dl, a, chol, "probe"))
            order, chol, g0 = sampling(kernels, noise)
            lam, dlam, stats = scan(noise, order, g0)
            out["weight side + Cholesky + g0"] = best_time(lambda: jax.block_until_ready(sampling(kernels, noise)), repeats)[1]
            out["effective-process scan"] = best_time(lambda: jax.block_until_ready(scan(noise, order, g0)), repeats)[1]
            out["kernel algebra"] = best_time(lambda: jax.block_until_ready(algebra(noise, lam, dlam, stats[:, 2], chol)), repeats)[1]
    return out


def long_samples(steps: int, samples: int = 10000) -> int:
    """``N`` of a long-horizon run: ``samples``, at least the solver's minimum ``2 (T + 1)``."""
    return max(samples, 2 * (steps + 1))


def section_long(long_steps: tuple[int, ...], peak: float) -> list[str]:
    """Long horizons: the phases cold and warm, memory, the split into parts, and the baselines
    float64 and one history segment at the first T."""
    env = {"SGDLAB_JAX_CACHE": os.environ.get("SGDLAB_JAX_CACHE", "off")}
    runs = []
    for i, t_ in enumerate(long_steps):
        n_ = long_samples(t_)
        cases = [("mixed", None)] + ([("float64", None), ("mixed", 1)] if i == 0 else [])
        for prec, chunks in cases:
            r = child("bench_dmft", {"phases": dict(steps=t_, samples=n_, precision=prec, chunks=chunks, profile=(prec, chunks) == ("mixed", None))}, env)
            runs.append((t_, n_, prec, chunks, r))
    rows = []
    for t_, n_, prec, chunks, r in runs:
        cold = sum(r[p][0] for p in ("draw", "march", "iteration"))
        warm = sum(r[p][1] for p in ("draw", "march", "iteration"))
        label = prec + ("" if chunks is None else ", 1 segment")
        rows.append([t_, n_, label, r["draw"][0], r["draw"][1], r["march"][0], r["march"][1], r["iteration"][0], r["iteration"][1],
                     cold, warm, r["march"][1] / (flops(t_, n_) / peak), r["peak_mib"], (t_ + 1) * n_ * (4 if prec == "mixed" else 8) / 2**20])
    out = [table("DMFT long horizons: draw, march, one certifying iteration (first call / warm)",
                 ["T", "N", "N-sized work", "draw 1st s", "draw s", "march 1st s", "march s", "iteration 1st s", "iteration s",
                  "solve 1st s", "solve warm s", "march / flop bound", "peak MiB", "one (T+1) x N array MiB"], rows, [
        "first call: trace + compile + run in a fresh process without the persistent compilation cache; warm: the "
        "compiled program again. solve = draw + march + iteration (what solve_dmft does with start='march'). "
        f"flop bound: 5 N (T+1)^2 at the float64 matmul rate of this run ({peak / 1e9:.1f} GFLOP/s). Baselines at "
        f"T = {long_steps[0]}: float64 (everything in float64) and 1 segment (chunks = 1: every product runs over the "
        "whole, masked, history). peak: resident high-water mark above the import footprint."])]
    base = {(prec, chunks): r for t_, _, prec, chunks, r in runs if t_ == long_steps[0]}
    ref = base[("mixed", None)]
    notes = [f"at T = {long_steps[0]}, warm march: float64 / mixed = {base[('float64', None)]['march'][1] / ref['march'][1]:.2f}, "
             f"1 segment / segments = {base[('mixed', 1)]['march'][1] / ref['march'][1]:.2f}; first call (compiling): "
             f"1 segment / segments = {base[('mixed', 1)]['march'][0] / ref['march'][0]:.2f}."]
    rows = []
    for t_, n_, prec, chunks, r in runs:
        if "split_march" not in r:
            continue
        for what in ("march", "iteration"):
            sp = r[f"split_{what}"]
            ops = sum(sp[p] for p in PARTS)
            rows.append([t_, n_, what, r[what][1], sp["total"], ops] + [f"{100 * sp[p] / ops:.0f}%" for p in PARTS])
    out.append(table("DMFT long horizons: where the time goes (profiled warm run, mixed precision)",
                     ["T", "N", "phase", "warm s", "profiled s", "operations s"] + list(PARTS), rows, notes + [
        "operations s: the summed durations of the leaf operations of the profiled run (more than its wall time "
        "where operations ran concurrently on the two cores); the parts are shares of that sum, by the solver's "
        "named scopes: effective process = Cholesky rows / factor, fields g0 = L z, the process and its tangent "
        "(memory products); kernels = M, mu and the probe regression for Q; weight side = R, P, m, C; Lam pass = "
        "the march's shared pass over Lam (M row and next memory: half kernels, half effective process); rest = "
        "unscoped operations (the march's set-up, loop plumbing)."]))
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
        f"({peak / 1e9:.1f} GFLOP/s); peak: resident high-water mark of a fresh process above its import footprint."])]

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
        out += section_long(tuple(long_steps), peak)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dmft-long", default=None, help="comma-separated T of whole long-horizon solves (default 1000; none in --quick)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        spec = json.loads(args.case)
        print(json.dumps(phases_case(**spec["phases"]) if "phases" in spec else full_solve_case(**spec)))
        return
    os.environ.setdefault("SGDLAB_JAX_CACHE", "off")
    section_dmft(args.quick, None if args.dmft_long is None else tuple(int(x) for x in args.dmft_long.split(",") if x))


if __name__ == "__main__":
    main()
