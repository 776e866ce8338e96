"""Time to first result: every command's default example as a whole process, without the
persistent compilation cache (``SGDLAB_JAX_CACHE=off``, the baseline), cold (an empty cache, which
the run fills) and warm (a second process with that cache).

Prints, per command, the median wall time of ``--runs`` rounds of (off, cold, warm), run in turn
so that the ratios warm / off and cold / off hold when the machine's speed drifts. Each cold run
gets a new empty cache folder (``SGDLAB_JAX_CACHE``); each warm run reuses it.

Usage: ``python benchmarks/bench_first_result.py [--runs 2] [--commands run theory noise sde manifold timescales]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = ("run", "theory", "noise", "sde", "manifold", "timescales")


def timed(command: str, cache: str, out: str) -> float:
    env = {**os.environ, "SGDLAB_JAX_CACHE": cache}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sgdlab.cli", command, "-o", out, "-q", "--no-plot"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sgdlab {command} failed:\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--commands", nargs="*", default=list(COMMANDS))
    args = parser.parse_args()
    print(f"{'command':<11} {'off s':>7} {'cold s':>7} {'warm s':>7} {'cold/off':>9} {'warm/off':>9}"
          f"   (median of {args.runs}, default example, --no-plot)")
    for command in args.commands:
        off, cold, warm = [], [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
                off.append(timed(command, "off", out))
                cold.append(timed(command, cache, out))
                warm.append(timed(command, cache, out))
        o, c, w = statistics.median(off), statistics.median(cold), statistics.median(warm)
        print(f"{command:<11} {o:7.1f} {c:7.1f} {w:7.1f} {c / o:9.2f} {w / o:9.2f}", flush=True)


if __name__ == "__main__":
    main()
