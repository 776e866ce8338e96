"""Time to first result: every command's default example, cold (empty compilation cache) and warm
(a second process with the cache that the first one filled), as whole processes.

Prints, per command, the median wall time of ``--runs`` cold and warm runs and the ratio
cold / warm (measured in the same invocation, so the ratio holds when the machine's speed
drifts). Each cold run gets a new empty cache folder (``SGDLAB_JAX_CACHE``); each warm run reuses
the folder of the cold run before it.

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
    print(f"{'command':<11} {'cold s':>8} {'warm s':>8} {'cold/warm':>10}   (median of {args.runs}, default example, --no-plot)")
    for command in args.commands:
        cold, warm = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
                cold.append(timed(command, cache, out))
                warm.append(timed(command, cache, out))
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"{command:<11} {c:8.1f} {w:8.1f} {c / w:10.2f}", flush=True)


if __name__ == "__main__":
    main()
