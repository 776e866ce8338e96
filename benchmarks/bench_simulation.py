"""The Gaussian-mixture simulator: throughput against a NumPy loop and the bandwidth bound, and
the peak memory of generating its data.

Throughput (:func:`simulator_case`, one child process per case): persistent SGD (square loss,
alpha = 2, b = 0.3, tau = 2, eta = 0.1), seed-steps per second of the jitted, vmapped simulator
(compilation excluded) against

- a straightforward NumPy loop over seeds doing the same work per step (two passes over the data
  matrix, the mask chain, the update; CPU only), and
- the memory-bandwidth bound ``BW / (2 n d bytes)``: each step reads the data matrix twice
  (``X w`` and ``X^T r``); ``BW`` is a large array copy measured in the same process.

Data memory (:func:`memory_case`, one child process per case): the simulator's ``init`` (data,
initial weights, masks) with the row-block generator of :func:`sgdlab.dmft.problem.sample_inputs`
against the whole-matrix draw it replaced (the in-run baseline): XLA's memory plan (outputs +
temporaries) and the measured resident high-water mark above the compiled program, both over the
data size, and the generation rate. From the rate, the cost per step of regenerating the data on
the fly from the counter-based key (one generation of every row per step) against reading it
twice from memory.

Usage: ``python -m benchmarks --only simulator memory [--quick]`` (or this file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import child, copy_bandwidth, fmt, platforms, table

PROBLEM = dict(alpha=2.0, delta=0.5, ridge=0.1, loss="square")
ETA, B, TAU, SAVE_EVERY = 0.1, 0.3, 2.0, 10
JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda"}


def _setup(d: int, dtype: str):
    import jax.numpy as jnp

    import sgdlab  # noqa: F401  (float64 mode)
    from sgdlab.dmft.problem import GaussianMixture
    from sgdlab.dmft.simulation import simulation_setup

    problem = GaussianMixture(**PROBLEM)
    jdtype = jnp.float32 if dtype == "float32" else jnp.float64
    return (problem, *simulation_setup(problem, "persistent_sgd", d, ETA, B, TAU, save_every=SAVE_EVERY, dtype=jdtype))


def numpy_loop_rate(problem, d: int, dtype: str, steps: int, seeds: int) -> float:
    """Seed-steps per second of a plain NumPy loop over seeds (one seed's data at a time)."""
    import numpy as np

    npdtype = np.float32 if dtype == "float32" else np.float64
    n = problem.n_samples(d)
    rng = np.random.default_rng(0)
    elapsed = 0.0
    p_on, p_off = ETA / TAU, (1 - B) * ETA / (B * TAU)
    for _ in range(seeds):
        v = rng.standard_normal(d).astype(npdtype)
        c = np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(npdtype)
        x = (c[:, None] * v[None] / math.sqrt(d) + math.sqrt(0.5) * rng.standard_normal((n, d), dtype=np.float32)).astype(npdtype)
        w = rng.standard_normal(d).astype(npdtype)
        s = rng.random(n) < B
        t0 = time.perf_counter()
        for _k in range(steps):
            h = x @ w / math.sqrt(d)
            g = x.T @ (s * (h - c)) / math.sqrt(d)
            w = w - ETA * (0.1 * w + g)
            u = rng.random(n)
            s = np.where(s, u >= p_off, u < p_on)
        elapsed += time.perf_counter() - t0
        del x
    return seeds * steps / elapsed


def simulator_case(d: int, dtype: str, seeds: int, steps: int, seed_batch: int, numpy_seeds: int, platform: str,
                   entries: str = "auto") -> dict:
    """One throughput case, in this process (its platform is JAX's default device); ``entries``
    as :func:`sgdlab.dmft.simulation.batched` (``"auto"``: seed by seed on a CPU)."""
    import jax
    import jax.numpy as jnp

    problem, spec, params = _setup(d, dtype)
    from sgdlab.dmft.simulation import batched, tile_params

    bandwidth = copy_bandwidth(platform, 2**28 if d <= 2000 else 2**29)
    init, _, advance = batched(spec, entries)
    n_blocks = steps // SAVE_EVERY
    elapsed = 0.0
    for start in range(0, seeds, seed_batch):
        keys = jax.vmap(jax.random.key)(jnp.arange(start, min(seeds, start + seed_batch), dtype=jnp.uint32))
        p = tile_params(params, keys.shape[0])
        data, state = init(p, keys)
        jax.block_until_ready(advance(p, data, keys, state, n_blocks))  # compile and warm up
        t0 = time.perf_counter()
        state, obs = advance(p, data, keys, state, n_blocks)
        jax.block_until_ready(obs)
        elapsed += time.perf_counter() - t0
        del data, state, obs
    itemsize = 4 if dtype == "float32" else 8
    return {
        "sim": seeds * n_blocks * SAVE_EVERY / elapsed,
        "numpy": numpy_loop_rate(problem, d, dtype, steps, numpy_seeds) if platform == "cpu" and numpy_seeds else None,
        "bound": bandwidth / (2 * spec.n * d * itemsize),
        "bandwidth": bandwidth,
    }


def default_width(d: int, dtype: str, seeds: int) -> int:
    """The simulator's default seed batch for this case (:meth:`sgdlab.dmft.config.Config.seed_batch_width`)."""
    from sgdlab.dmft.config import Config

    cfg = Config.model_validate({"problem": PROBLEM, "simulation": {"d": d, "dtype": dtype, "seeds": seeds}})
    return min(seeds, cfg.seed_batch_width())


def whole_matrix_inputs(key, problem, c, v):
    """The baseline: the data drawn as one ``(n, d)`` Gaussian matrix plus the ``c v^T`` outer product."""
    import jax.numpy as jnp

    from sgdlab.dmft.problem import standard_normal

    d = v.shape[0]
    z = standard_normal(key, (c.shape[0], d), v.dtype)
    return (c[:, None] * v[None, :]) / jnp.sqrt(d).astype(v.dtype) + jnp.sqrt(problem.delta).astype(v.dtype) * z


def memory_case(d: int, dtype: str, seeds: int, generator: str, execute: bool, platform: str, layout: str = "vmap") -> dict:
    """Memory plan and measured peak of the simulator's ``init`` with ``generator`` (``blocks``
    or ``whole``), in this process; the compiled program is loaded before the high-water mark is
    reset, so the peak is that of running it (once: a freed buffer would stay resident).
    ``layout``: ``"vmap"`` (the seeds vmapped: the generator alone) or ``"library"`` (the
    library's own ``init``, seed by seed on a CPU)."""
    import jax

    from benchmarks.common import peak_rss, reset_peak_rss, rss_bytes
    from sgdlab.dmft import problem as gm
    from sgdlab.dmft import simulation as S

    if generator == "whole":
        gm.sample_inputs = whole_matrix_inputs
    _, spec, params = _setup(d, dtype)
    init = jax.jit(jax.vmap(lambda p, k: S.init(spec, p, k))) if layout == "vmap" else S.batched(spec)[0]
    p, keys = S.tile_params(params, seeds), S.seed_keys(range(seeds))
    compiled = init.lower(p, keys).compile()
    plan = compiled.memory_analysis()
    data = seeds * spec.n * d * (4 if dtype == "float32" else 8)
    out = {"data_gib": data / 2**30, "plan": None if plan is None else (plan.temp_size_in_bytes + plan.output_size_in_bytes) / data}
    if execute:
        base = rss_bytes()
        measured = platform == "cpu" and reset_peak_rss()
        t0 = time.perf_counter()
        res = jax.block_until_ready(compiled(p, keys))
        seconds = time.perf_counter() - t0
        out.update(seconds=seconds, rate=seeds * spec.n * d / seconds, rss=(peak_rss() - base) / data if measured else None)
        del res
    return out


def section_simulator(quick: bool = False) -> list[str]:
    """Throughput table: per (d, dtype), the library's layout at its default width and, as the
    in-run baseline, the seeds vmapped (16 at once, and at the default width where it differs);
    the NumPy ratio and the fraction of the bandwidth bound (GPU column where one is lent)."""
    # (d, dtype, seeds): default layout at the default width; vmapped at that width and at 16
    cases = [(300, "float32", 16), (1000, "float32", 16)] if quick else \
        [(300, "float32", 16), (1000, "float32", 16), (1000, "float64", 16), (2000, "float32", 16),
         (2000, "float64", 16), (8000, "float32", 4), (8000, "float64", 4)]
    steps, numpy_seeds = (20, 1) if quick else (100, 2)
    plats = platforms()
    rows = []
    for d, dtype, seeds in cases:
        width = default_width(d, dtype, seeds)
        case = dict(d=d, dtype=dtype, seeds=seeds, steps=steps, seed_batch=width)
        res = {pl: child("bench_simulation", dict(case, numpy_seeds=numpy_seeds if pl == "cpu" else 0, platform=pl),
                         env={"JAX_PLATFORMS": JAX_PLATFORM[pl]}) for pl in plats}
        cpu = res["cpu"]
        vmapped = [child("bench_simulation", dict(case, seed_batch=b, numpy_seeds=0, platform="cpu", entries="vmap"),
                         env={"JAX_PLATFORMS": "cpu"})["sim"] for b in sorted({max(2, width), seeds})]
        row = [f"{d} {dtype}", f"{seeds} ({width})", cpu["sim"], " / ".join(fmt(v) for v in vmapped), cpu["numpy"],
               cpu["sim"] / cpu["numpy"], cpu["sim"] / max(vmapped), cpu["bandwidth"] / 1e9, cpu["bound"], cpu["sim"] / cpu["bound"]]
        if "gpu" in res:
            row += [res["gpu"]["sim"], res["gpu"]["sim"] / res["gpu"]["bound"]]
        rows.append(row)
    header = ["d, dtype", "seeds (batch)", "sim steps/s", "vmapped steps/s", "NumPy steps/s", "sim / NumPy",
              "sim / best vmapped", "copy GB/s", "bound steps/s", "sim / bound"]
    if "gpu" in plats:
        header += ["GPU sim steps/s", "GPU sim / GPU bound"]
    return [table("Simulator throughput (seed-steps per second)", header, rows, [
        f"persistent SGD, square loss, alpha = 2, {steps} timed steps. sim: the library's CPU layout (seeds one "
        "after the other, row-blocked products), batch = its default width (16 MiB of data, at least 1 seed). "
        "vmapped: the same step with the seeds vmapped (the GPU layout) in batches of max(2, default) / all seeds. "
        f"NumPy: a one-seed loop on {numpy_seeds} seed(s). bound = copy bandwidth (read + write, same process) / "
        "(2 n d bytes per step)."])]


def section_memory(quick: bool = False) -> list[str]:
    """Data peak memory / data size and generation rate: row blocks against the whole-matrix draw."""
    cases = [(1000, "float32", 4)] if quick else [(1000, "float32", 16), (2000, "float32", 16), (2000, "float64", 16), (8000, "float64", 4)]
    bandwidth = copy_bandwidth("cpu", 2**28)
    rows = []
    for d, dtype, seeds in cases:
        blocks = child("bench_simulation", dict(memory=True, d=d, dtype=dtype, seeds=seeds, generator="blocks", execute=True, platform="cpu"))
        # the whole-matrix baseline is run only where its ~4x peak fits comfortably
        whole = child("bench_simulation", dict(memory=True, d=d, dtype=dtype, seeds=seeds, generator="whole",
                                               execute=blocks["data_gib"] <= 1.0, platform="cpu"))
        width = default_width(d, dtype, seeds)
        library = child("bench_simulation", dict(memory=True, d=d, dtype=dtype, seeds=width, generator="blocks", execute=False,
                                                 platform="cpu", layout="library"))
        itemsize = 4 if dtype == "float32" else 8
        rows.append([f"{d} {dtype}", seeds, blocks["data_gib"], blocks["plan"], blocks["rss"], f"{fmt(library['plan'])} ({width})",
                     whole["plan"], whole.get("rss"),
                     blocks["seconds"], whole.get("seconds"), blocks["rate"] / 1e6, bandwidth / (2 * itemsize * blocks["rate"])])
    return [table("Simulator data: peak memory / data size", [
        "d, dtype", "seeds", "data GiB", "blocks: plan / data", "blocks: peak RSS / data", "library call: plan / data (seeds)",
        "whole: plan / data",
        "whole: peak RSS / data", "blocks s", "whole s", "blocks M entries/s", "on-the-fly / stored per step"], rows, [
        "plan: XLA's memory plan of the simulator's init (outputs + temporaries); peak RSS: resident high-water mark above "
        "the loaded program while it runs. library call: the plan of one call of the library's init at its default width "
        "(on a CPU the seeds one after the other). 'whole' is the whole-matrix draw the row blocks replaced (run only up to 1 GiB of data). "
        f"on-the-fly / stored: regenerating every row once per step from the counter-based key (at the blocks' rate) "
        f"against reading the stored matrix twice at the copy bandwidth ({bandwidth / 1e9:.1f} GB/s)."])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        spec = json.loads(args.case)
        print(json.dumps(memory_case(**{k: v for k, v in spec.items() if k != "memory"}) if spec.get("memory") else simulator_case(**spec)))
        return
    section_simulator(args.quick)
    section_memory(args.quick)


if __name__ == "__main__":
    main()
