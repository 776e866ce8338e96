"""One benchmark runner: ``python -m benchmarks [--quick] [--only NAME ...]``.

Runs the measurements of every ``bench_*.py`` in one run and prints Markdown tables of ratios
against baselines measured in the same run:

- ``simulator``: the Gaussian-mixture simulator against a one-seed NumPy loop and the memory-
  bandwidth bound (a large array copy);
- ``memory``: the simulator's data generation, peak memory / data size, row blocks against the
  whole-matrix draw;
- ``dmft``: the DMFT solver against its ``O(N T^2)`` flop bound (the float64 matmul rate), its
  pieces, scaling in ``T`` and ``N``, long horizons;
- ``commands``: commands as whole processes, compilation cache off / cold / warm;
- ``sweep``: the 16-point phase diagram in this process against a dask LocalCluster, cold/warm;
- ``sde``: the SMF Monte Carlo against diffrax; ``timescales``: the two-layer simulators;
- ``peers``: whether peer codes are installed (how to compare: docs/benchmarks.md, Peers).

A GPU column appears where ``jax.devices()`` has a GPU. The machine and its load (``uptime``)
head the output. ``SGDLAB_JAX_CACHE`` is switched off for the measurements (first calls include
compilation) unless it is set; ``commands`` and ``sweep`` give each process its own cache folder.
``--quick``: small sizes (all sections but ``sde``, ``timescales`` and long DMFT horizons; a
couple of minutes on 2 quiet cores). ``--out FILE`` also writes everything printed to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import sys
import time
import traceback

SECTIONS = ("simulator", "memory", "dmft", "own_models", "commands", "sweep", "sde", "timescales", "peers")
QUICK = ("simulator", "memory", "dmft", "commands", "sweep", "peers")
PEERS = {"nn2pp": "nn2pp (committee ODEs, Goldt et al.)", "pyscm": "pyscm (soft committee machine ODEs)"}


def section_peers(quick: bool = False) -> list[str]:
    lines = ["### Peers", ""]
    for module, what in PEERS.items():
        found = importlib.util.find_spec(module) is not None
        lines.append(f"- {what}: {'installed' if found else 'not installed'}")
    lines += ["- the SPOC group's DMFT code: a repository of scripts, not a package (not detected)", "",
              "Not timed by the runner: how to reproduce the comparisons is in docs/benchmarks.md (Peers).", ""]
    print("\n".join(lines), flush=True)
    return ["\n".join(lines)]


def run_section(name: str, args) -> list[str]:
    if name == "simulator":
        from benchmarks.bench_simulation import section_simulator
        return section_simulator(args.quick)
    if name == "memory":
        from benchmarks.bench_simulation import section_memory
        return section_memory(args.quick)
    if name == "dmft":
        from benchmarks.bench_dmft import section_dmft
        long_steps = None if args.dmft_long is None else tuple(int(x) for x in args.dmft_long.split(",") if x)
        return section_dmft(args.quick, long_steps)
    if name == "own_models":
        from benchmarks.bench_own_models import section_own_models
        return section_own_models(args.quick)
    if name == "commands":
        from benchmarks.bench_first_result import section_commands
        return section_commands(args.quick, args.runs)
    if name == "sweep":
        from benchmarks.bench_sweep import engine_throughput, section_sweep
        return section_sweep(args.quick) + (engine_throughput() if args.engine else [])
    if name == "sde":
        from benchmarks.bench_sde import section_sde
        return section_sde(args.quick)
    if name == "timescales":
        from benchmarks.bench_timescales import section_timescales
        return section_timescales(args.quick)
    return section_peers(args.quick)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes; without sde, timescales, long DMFT horizons")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"sections to run, of: {', '.join(SECTIONS)}")
    parser.add_argument("--dmft-long", default=None, help="comma-separated T of long DMFT solves (default 1000; none with --quick)")
    parser.add_argument("--runs", type=int, default=1, help="rounds per command in `commands` (median)")
    parser.add_argument("--engine", action="store_true", help="`sweep`: also the 64-point dask engine table")
    parser.add_argument("--out", default=None, help="also write the output to this file")
    args = parser.parse_args(argv)
    names = [n for item in (args.only or []) for n in item.split(",") if n] or list(QUICK if args.quick else SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"--only {' '.join(unknown)}: not a section; sections: {', '.join(SECTIONS)}")
    os.environ.setdefault("SGDLAB_JAX_CACHE", "off")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # a GPU shared with the child processes

    out_file = open(args.out, "w") if args.out else None
    with contextlib.ExitStack() as stack:
        if out_file is not None:
            stack.enter_context(out_file)
            stack.enter_context(contextlib.redirect_stdout(_Tee(sys.stdout, out_file)))
        from benchmarks.common import machine

        print("\n".join(["## sgdlab benchmarks" + (" (--quick)" if args.quick else ""), ""] + [f"- {line}" for line in machine()] + [""]), flush=True)
        failed, start = [], time.perf_counter()
        for name in names:
            t0 = time.perf_counter()
            try:
                run_section(name, args)
            except Exception as err:  # one section's failure does not stop the others
                failed.append(name)
                print(f"section {name} FAILED: {type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}", flush=True)
            print(f"({name}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
        from benchmarks.common import machine as again

        print(f"total {time.perf_counter() - start:.0f} s; {again()[1]}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
