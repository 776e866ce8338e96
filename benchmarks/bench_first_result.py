"""Time to first result: commands as whole processes, without the persistent compilation cache
(``SGDLAB_JAX_CACHE=off``, the baseline), cold (a fresh, empty cache folder, which the run fills)
and warm (a second process with that folder). The floor of a warm run is measured beside them:
``imports``, a process that only imports the command line and the command's study (its wing, JAX,
xarray, pydantic; matplotlib is imported only to draw), which no cache can save; ``compiled``,
the same command run twice in one process and the second run timed (every program traced and
compiled, every module imported): ``imports + compiled`` is the fastest a warm process could be
if a cache saved all tracing, lowering and loading, so ``cold / (imports + compiled)`` bounds
the ratio any cache of programs can give; and ``sgdlab --help``, a process that imports the
command line alone (it imports no JAX).

Each round runs (off, cold, warm) in turn, so that the ratios hold when the machine's speed
drifts; the median of ``runs`` rounds is printed. ``--quick``: ``sgdlab run --example tiny``,
cold and warm only.

Usage: ``python -m benchmarks --only commands [--quick]`` (or this file, ``--runs 3``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, table

#: (command, its arguments): each command's default example; --quick runs the tiny examples.
COMMANDS = (("run", []), ("theory", []), ("noise", []), ("sde", []), ("manifold", []), ("timescales", []))
QUICK = (("run", ["--example", "tiny"]),)


def timed(command: str, args: list[str], cache: str, out: str) -> float:
    """Wall seconds of ``sgdlab COMMAND ARGS -o OUT -q --no-plot`` with ``SGDLAB_JAX_CACHE=cache``."""
    env = {**os.environ, "SGDLAB_JAX_CACHE": cache}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sgdlab.cli", command, *args, "-o", out, "-q", "--no-plot"], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"sgdlab {command} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def imports_only(command: str) -> float:
    """Wall seconds of a process that imports the command line and the study of ``command``, then
    exits (the warm run's floor)."""
    study = "run" if command == "theory" else command
    code = (f"from sgdlab.cli import STUDIES; from sgdlab.core.study import study_from_ref; "
            f"study_from_ref(STUDIES[{study!r}][0]).run; import jax.numpy, sgdlab.core.store, zarr, dask.array")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


#: run a command twice in one process (as the CLI does, ``-q --no-plot``) and print the second
#: run's wall seconds on the last line
_TWICE = """
import sys, tempfile, time
from pathlib import Path
from sgdlab.cli import _study, _theory_only
from sgdlab.core.command import CommonOptions, config_source, run_study_command
command, args = sys.argv[1], sys.argv[2:]
study = _study("run" if command == "theory" else command)
def once():
    source = config_source("run" if command == "theory" else command, None, args[1] if args else None, [])
    source = _theory_only(source) if command == "theory" else source
    with tempfile.TemporaryDirectory() as out:
        run_study_command(study, source, CommonOptions(out=Path(out), quiet=True, plot=False))
once()
start = time.perf_counter()
once()
print(time.perf_counter() - start)
"""


def compiled_seconds(command: str, args: list[str], cache: str) -> float:
    """Wall seconds of a second run of ``command`` in the process that ran it once (everything
    traced, compiled and imported): the computation and the store alone."""
    env = {**os.environ, "SGDLAB_JAX_CACHE": cache}
    proc = subprocess.run([sys.executable, "-c", _TWICE, command, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sgdlab {command} {' '.join(args)} (twice in one process) failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def help_seconds() -> float:
    """Wall seconds of ``sgdlab --help`` (the command line alone)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sgdlab.cli", "--help"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def off_cold_warm(command: str, args: list[str], runs: int = 1, off_too: bool = True) -> tuple[float | None, float, float, float]:
    """Median seconds of ``runs`` rounds of (cache off, cold cache, warm cache, compiled second
    run); ``None`` for the cache-off run when ``off_too`` is false."""
    off, cold, warm, compiled = [], [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            if off_too:
                off.append(timed(command, args, "off", out))
            cold.append(timed(command, args, cache, out))
            warm.append(timed(command, args, cache, out))
            compiled.append(compiled_seconds(command, args, cache))
    return (statistics.median(off) if off else None), statistics.median(cold), statistics.median(warm), statistics.median(compiled)


def section_commands(quick: bool = False, runs: int = 1, commands=None) -> list[str]:
    rows = []
    for command, args in commands or (QUICK if quick else COMMANDS):
        o, c, w, compiled = off_cold_warm(command, args, runs, off_too=not quick)
        floor = statistics.median(imports_only(command) for _ in range(runs))
        rows.append([" ".join(["sgdlab", command, *args]), o, c, w, floor, compiled, o and c / o, o and w / o, c / w,
                     (c - floor) / (w - floor), c / (floor + compiled)])
    return [table("Commands: cold and warm compilation cache (whole processes)",
                  ["command", "cache off s", "cold s", "warm s", "imports s", "compiled s", "cold / off", "warm / off",
                   "cold / warm", "cold / warm after imports", "cold / (imports + compiled)"], rows,
                  [f"median of {runs} round(s) of (off, cold, warm); `-q --no-plot`; cold: a new empty SGDLAB_JAX_CACHE folder"
                   + ("; --quick: no cache-off run" if quick else "")
                   + "; imports: a process that only imports sgdlab.cli and the command's study (the floor of its run); "
                   "cold / warm after imports: (cold - imports) / (warm - imports); "
                   "compiled: the second of two runs in one process (computation and store alone); "
                   "cold / (imports + compiled): the most any cache of programs could make cold / warm; "
                   f"`sgdlab --help`: {statistics.median(help_seconds() for _ in range(3)):.2f} s (median of 3)."])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--commands", nargs="*", default=None, help="commands (default examples) to time")
    args = parser.parse_args()
    section_commands(args.quick, args.runs, [(c, []) for c in args.commands] if args.commands else None)


if __name__ == "__main__":
    main()
