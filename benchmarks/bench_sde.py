"""Throughput of the SMF Monte Carlo versus diffrax, on the same problem, in one run.

Problem: least squares with ``n = 1000`` Gaussian samples in ``d = 100``
(:func:`sgdlab.sde.problems.random_least_squares`), the SMF at ``eta = 0.1``
(drift ``-grad(F + eta/4 |grad F|^2)``, one Brownian motion per sample), ``10^4`` paths,
``--steps`` fixed steps of ``T / steps`` from ``x0 = (1, ..., 1)``.

Printed per solver: wall time of the solve (compilation excluded: each solver runs once to
compile, then is timed), paths x steps per second, and E X_T[0] with its standard error (all rows
solve the same SDE with the same step, so the Euler rows agree within Monte Carlo error):

- ``sgdlab euler``: :func:`sgdlab.sde.sde_monte_carlo` with ``scheme="euler"``;
  matrix-free noise ``sigma(x) w = c sum_i (mean(w) - w_i) grad f_i(x)`` (one reverse pass);
- ``sgdlab talay_tubaro`` / ``sgdlab weak2``: the order-2 routes, for their cost per step (weak2
  on ``--weak2-paths`` paths: its Ito correction holds ``n d`` floats per path);
- ``diffrax euler (lineax)``: ``diffrax.diffeqsolve`` with ``Euler``, an ``UnsafeBrownianPath``
  of shape ``(n,)`` and a ``ControlTerm`` whose vector field is a matrix-free
  ``lineax.FunctionLinearOperator`` of the same noise function, ``vmap``-ed over paths;
- ``diffrax euler (dense)``: the same with the usual dense ``(d, n)`` diffusion matrix, in
  chunks of ``--dense-chunk`` paths (``10^4`` dense ``(d, n)`` matrices are 8 GB: they do not fit
  at once).

Usage: ``python -m benchmarks --only sde [--quick]`` or ``python benchmarks/bench_sde.py [--paths 10000] [--steps 20] [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import table


def section_sde(quick: bool = False, paths: int = 10_000, steps: int = 20, n: int = 1000, d: int = 100, eta: float = 0.1,
                dense_chunk: int = 100, weak2_paths: int = 1000, skip_dense: bool = False) -> list[str]:
    """The table of the module doc: each solver's time, rate and E X_T[0], and sgdlab euler's speed-up."""
    if quick:
        paths, steps, skip_dense = 1000, 5, True

    import diffrax
    import jax
    import jax.numpy as jnp
    import lineax
    import numpy as np

    from sgdlab import sde
    from sgdlab.sde.problems import random_least_squares

    problem = random_least_squares(0, n, d, noise=0.5)
    T, P = 1.0, paths
    x0 = np.ones((1, d))
    h = T / steps
    system = sde.sde_for(problem, sde.SMF, eta)
    rows = []

    def record(name, seconds, values, n_paths=P):
        values = np.asarray(values, dtype=np.float64)
        rows.append([name, seconds, n_paths * steps / seconds, values.mean(), values.std() / math.sqrt(len(values))])

    # --- sgdlab ---------------------------------------------------------------------------------
    for scheme in ("euler", "talay_tubaro", "weak2"):
        # weak2 holds the per-sample gradients (n x d floats per path) for its Ito correction:
        # its cost per path-step is measured on at most weak2_paths paths
        n_paths = min(P, weak2_paths) if scheme == "weak2" else P

        @jax.jit
        def ours(key, n_paths=n_paths, scheme=scheme):
            return sde.simulate_features(system, jnp.asarray(x0), h, steps, key, n_paths, scheme, lambda xs: xs[0, :1])

        jax.block_until_ready(ours(jax.random.key(0)))
        t0 = time.perf_counter()
        out = jax.block_until_ready(ours(jax.random.key(1)))
        record(f"sgdlab {scheme}" + ("" if n_paths == P else f" ({n_paths} paths)"), time.perf_counter() - t0, np.asarray(out)[:, 0], n_paths)

    # --- diffrax, matrix-free (lineax) ------------------------------------------------------------
    n_samples = problem.n_samples
    w_struct = jax.ShapeDtypeStruct((n_samples,), jnp.float64)

    def solve_with(vf):
        def solve(key):
            bm = diffrax.UnsafeBrownianPath(shape=(n_samples,), key=key)
            terms = diffrax.MultiTerm(diffrax.ODETerm(lambda t, y, a: system.drift(y)), diffrax.ControlTerm(vf, bm))
            sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, T, h, jnp.asarray(x0[0]), saveat=diffrax.SaveAt(t1=True),
                                      adjoint=diffrax.DirectAdjoint(), max_steps=steps + 1)
            return sol.ys[0, 0]

        return solve

    lin_vf = lambda t, y, a: lineax.FunctionLinearOperator(lambda w: system.noise(y, w), w_struct)  # noqa: E731
    run = jax.jit(jax.vmap(solve_with(lin_vf)))
    jax.block_until_ready(run(jax.random.split(jax.random.key(2), P)))
    t0 = time.perf_counter()
    vals = jax.block_until_ready(run(jax.random.split(jax.random.key(3), P)))
    record("diffrax euler (lineax)", time.perf_counter() - t0, vals)

    # --- diffrax, dense diffusion matrix ---------------------------------------------------------
    if not skip_dense:
        c = math.sqrt(eta / n_samples)

        def dense_vf(t, y, a):
            g = problem.sample_grads(y)  # (n, d)
            return c * (jnp.mean(g, axis=0)[None] - g).T  # (d, n)

        chunk = min(dense_chunk, P)
        run_dense = jax.jit(jax.vmap(solve_with(dense_vf)))
        jax.block_until_ready(run_dense(jax.random.split(jax.random.key(4), chunk)))
        t0 = time.perf_counter()
        outs = [jax.block_until_ready(run_dense(jax.random.split(jax.random.key(5 + i), chunk))) for i in range(math.ceil(P / chunk))]
        record(f"diffrax euler (dense, chunks of {chunk})", time.perf_counter() - t0, np.concatenate(outs)[:P])

    base = rows[0][2]
    for row in rows:
        row.append(base / row[2])
    return [table(f"SMF Monte Carlo: least squares n = {n}, d = {d}, eta = {eta}, {P} paths x {steps} steps",
                  ["solver", "time s", "paths*steps/s", "E X_T[0]", "± se", "sgdlab euler speed-up"], rows,
                  ["compilation excluded; the Euler rows solve the same SDE with the same step: their means agree within the standard error."])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--eta", type=float, default=0.1)
    parser.add_argument("--dense-chunk", type=int, default=100)
    parser.add_argument("--weak2-paths", type=int, default=1000)
    parser.add_argument("--skip-dense", action="store_true", help="skip diffrax with a dense diffusion matrix")
    parser.add_argument("--quick", action="store_true", help="1000 paths, 5 steps, no dense diffrax")
    args = parser.parse_args()
    section_sde(args.quick, args.paths, args.steps, args.n, args.d, args.eta, args.dense_chunk, args.weak2_paths, args.skip_dense)


if __name__ == "__main__":
    main()
