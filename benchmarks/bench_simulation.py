"""Throughput of the Gaussian-mixture simulator versus a NumPy loop and the memory-bandwidth bound.

Persistent SGD (square loss, alpha = 2, b = 0.3, tau = 2, eta = 0.1) at d = 2000 and 8000, 16
seeds, float32 and float64. Each case runs in its own subprocess so that its peak memory (max
RSS) is its own. Printed per case:

- ``sim``: seed-steps per second of the jitted, vmapped JAX simulator (compilation excluded);
- ``numpy``: a straightforward NumPy loop over seeds doing the same work per step (two passes
  over the data matrix, the mask chain, the update), timed on ``--numpy-seeds`` seeds;
- ``bound``: the memory-bandwidth bound ``BW / (2 n d bytes)``: each step must read the data
  matrix twice (``X w`` and ``X^T r``); BW is measured in the same run (a large streaming
  reduction, best of JAX and NumPy);
- the speed-up over NumPy, the fraction of the bound reached, and the peak memory.

Usage: ``python benchmarks/bench_simulation.py [--quick] [--steps 100]``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def measure_bandwidth() -> float:
    """Streaming read bandwidth in bytes/s: best of a JAX and a NumPy reduction over 1 GiB."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = np.ones(2**28, np.float32)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t0))
    ja = jnp.ones(2**28, jnp.float32)
    f = jax.jit(jnp.sum)
    f(ja).block_until_ready()
    for _ in range(3):
        t0 = time.perf_counter()
        f(ja).block_until_ready()
        best = max(best, ja.nbytes / (time.perf_counter() - t0))
    return best


def run_case(d: int, dtype: str, seeds: int, steps: int, seed_batch: int, numpy_seeds: int) -> dict:
    """One case, in this process: returns the measurements as a dict."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sgdlab  # noqa: F401  (float64 mode)
    from sgdlab.dmft.problem import GaussianMixture
    from sgdlab.dmft.simulation import batched, simulation_setup, tile_params

    problem = GaussianMixture(alpha=2.0, delta=0.5, ridge=0.1, loss="square")
    eta, b, tau, save_every = 0.1, 0.3, 2.0, 10
    jdtype = jnp.float32 if dtype == "float32" else jnp.float64
    spec, params = simulation_setup(problem, "persistent_sgd", d, eta, b, tau, save_every=save_every, dtype=jdtype)
    init, _, advance = batched(spec)
    n_blocks = steps // save_every
    elapsed = 0.0
    for start in range(0, seeds, seed_batch):
        keys = jax.vmap(jax.random.key)(jnp.arange(start, min(seeds, start + seed_batch), dtype=jnp.uint32))
        p = tile_params(params, keys.shape[0])
        data, state = init(p, keys)
        jax.block_until_ready(advance(p, data, keys, state, n_blocks))  # compile + warm up
        t0 = time.perf_counter()
        state, obs = advance(p, data, keys, state, n_blocks)
        jax.block_until_ready(obs)
        elapsed += time.perf_counter() - t0
        del data, state, obs
    sim_rate = seeds * n_blocks * save_every / elapsed

    # A straightforward NumPy loop over seeds doing the same work per step.
    npdtype = np.float32 if dtype == "float32" else np.float64
    n = problem.n_samples(d)
    rng = np.random.default_rng(0)
    np_elapsed = 0.0
    p_on, p_off = eta / tau, (1 - b) * eta / (b * tau)
    for _ in range(numpy_seeds):
        v = rng.standard_normal(d).astype(npdtype)
        c = np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(npdtype)
        x = (c[:, None] * v[None] / math.sqrt(d) + math.sqrt(0.5) * rng.standard_normal((n, d), dtype=np.float32)).astype(npdtype)
        w = rng.standard_normal(d).astype(npdtype)
        s = rng.random(n) < b
        t0 = time.perf_counter()
        for _k in range(steps):
            h = x @ w / math.sqrt(d)
            g = x.T @ (s * (h - c)) / math.sqrt(d)
            w = w - eta * (0.1 * w + g)
            u = rng.random(n)
            s = np.where(s, u >= p_off, u < p_on)
        np_elapsed += time.perf_counter() - t0
        del x
    numpy_rate = numpy_seeds * steps / np_elapsed
    itemsize = 4 if dtype == "float32" else 8
    return {
        "d": d,
        "dtype": dtype,
        "seeds": seeds,
        "seed_batch": seed_batch,
        "sim_rate": sim_rate,
        "numpy_rate": numpy_rate,
        "bytes_per_step": 2 * n * d * itemsize,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "device": str(jax.devices()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per seed (multiple of 10)")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--numpy-seeds", type=int, default=2, help="seeds timed for the NumPy loop (rate is per seed-step)")
    parser.add_argument("--quick", action="store_true", help="d = 2000 only")
    parser.add_argument("--dtypes", default="float32,float64", help="comma-separated dtypes to run")
    parser.add_argument("--case", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return

    bandwidth = measure_bandwidth()
    cases = [(2000, "float32", 16), (2000, "float64", 16)]
    if not args.quick:
        # 16 seeds at d = 8000 hold 8 GiB (float32) / 16 GiB (float64) of data: batch them.
        cases += [(8000, "float32", 8), (8000, "float64", 4)]
    cases = [c for c in cases if c[1] in args.dtypes.split(",")]
    print(f"memory bandwidth (measured, streaming read): {bandwidth / 1e9:.1f} GB/s", flush=True)
    header = f"{'d':>6} {'dtype':>8} {'seeds':>5} {'batch':>5} | {'sim steps/s':>11} {'numpy steps/s':>13} {'speed-up':>8} | {'bound steps/s':>13} {'of bound':>8} | {'peak GiB':>8}"
    print(header)
    print("-" * len(header), flush=True)
    for d, dtype, batch in cases:
        spec = dict(d=d, dtype=dtype, seeds=args.seeds, steps=args.steps, seed_batch=min(batch, args.seeds), numpy_seeds=args.numpy_seeds)
        out = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(f"case {spec} failed")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        bound = bandwidth / r["bytes_per_step"]
        print(
            f"{r['d']:>6} {r['dtype']:>8} {r['seeds']:>5} {r['seed_batch']:>5} | {r['sim_rate']:>11.0f} {r['numpy_rate']:>13.0f} "
            f"{r['sim_rate'] / r['numpy_rate']:>7.1f}x | {bound:>13.0f} {r['sim_rate'] / bound:>7.0%} | {r['peak_rss_gib']:>8.2f}",
            flush=True,
        )
    print(f"device: {r['device']}")
    print("steps/s are seed-steps per second (one step of one seed); 'bound' = bandwidth / (2 n d bytes).")


if __name__ == "__main__":
    main()
