"""What every benchmark shares: the machine, the in-run baselines, tables and child processes.

Baselines are measured in the same run as what they are compared with (a shared machine's speed
drifts, ratios hold better than seconds):

- :func:`copy_bandwidth`: bytes per second moved by a large array copy (read + write), the
  memory-bandwidth bound of a streaming computation;
- :func:`matmul_flops`: float64 flops per second of a large matrix product, the flop bound;

and :func:`platforms` lists ``cpu`` and, when ``jax.devices()`` has one, ``gpu`` (a GPU column).
Peak memory of a piece of work is measured in a child process: :func:`reset_peak_rss` clears the
kernel's high-water mark (``/proc/self/clear_refs``), :func:`peak_rss` reads it back.
"""

from __future__ import annotations

import json
import os
import platform as _platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def platforms() -> list[str]:
    """``["cpu"]``, plus ``"gpu"`` when JAX sees a GPU."""
    import jax

    try:
        return ["cpu"] + (["gpu"] if jax.devices("gpu") else [])
    except RuntimeError:
        return ["cpu"]


def device(platform: str):
    import jax

    return jax.devices(platform)[0]


def machine() -> list[str]:
    """Lines describing the machine and its load now (``uptime``)."""
    import jax
    import psutil

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), _platform.processor()) if Path("/proc/cpuinfo").exists() else _platform.processor()
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uptime = "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    devices = ", ".join(str(d) for d in jax.devices())
    return [
        f"machine: {cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        f"uptime: {uptime}",
        f"python {sys.version.split()[0]}, jax {jax.__version__}, devices: {devices}",
    ]


def best_time(fn, repeats: int = 3) -> tuple[float, float]:
    """``(first call, best of repeats)`` in seconds; ``fn`` must block until its result is ready."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return first, best


def copy_bandwidth(platform: str = "cpu", nbytes: int = 2**29) -> float:
    """Bytes per second (read + write) of the best of three copies of an ``nbytes`` array: NumPy
    and jitted JAX on the CPU, JAX on a GPU."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    best = 0.0
    if platform == "cpu":
        src = np.ones(nbytes // 4, np.float32)
        dst = np.empty_like(src)
        for _ in range(3):
            t0 = time.perf_counter()
            np.copyto(dst, src)
            best = max(best, 2 * nbytes / (time.perf_counter() - t0))
        del src, dst
    with jax.default_device(device(platform)):
        a = jnp.ones(nbytes // 4, jnp.float32)
        copy = jax.jit(lambda x: x + 1.0)  # one read and one write of every entry
        copy(a).block_until_ready()
        for _ in range(3):
            t0 = time.perf_counter()
            copy(a).block_until_ready()
            best = max(best, 2 * nbytes / (time.perf_counter() - t0))
    return best


def matmul_flops(platform: str = "cpu", n: int = 1500) -> float:
    """float64 flops per second of the best of three ``n x n`` matrix products (``2 n^3`` flops)."""
    import jax
    import jax.numpy as jnp

    import sgdlab  # noqa: F401  (float64)

    with jax.default_device(device(platform)):
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float64)
        mm = jax.jit(lambda x: x @ x)
        _, t = best_time(lambda: mm(a).block_until_ready(), 3)
    return 2.0 * n**3 / t


def rss_bytes() -> int:
    """Resident memory of this process now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark to its resident size now (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Resident high-water mark (``VmHWM``) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def child(module: str, spec: dict, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run ``python -m benchmarks.<module> --case JSON`` in a fresh process; its last stdout line
    is the JSON result."""
    out = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--case", json.dumps(spec)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"benchmarks.{module} {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(title: str, header: list[str], rows: list[list], notes: list[str] = ()) -> str:
    """A Markdown table (numbers right-aligned), printed and returned."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = [f"### {title}", "", "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"]
    for r in cells:
        lines.append("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |")
    text = "\n".join(lines + [""] + list(notes) + ([""] if notes else []))
    print(text, flush=True)
    return text


def fmt(x) -> str:
    """Three significant digits (integers as they are, ``None`` as ``-``)."""
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return f"{x:.2e}"


def gib(nbytes: float) -> float:
    return nbytes / 2**30
