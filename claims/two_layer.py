"""Claims of Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
Found. Comput. Math. (2024) (arXiv 2303.00055).

Both claims read one run of :func:`sgdlab.two_layer.run` (``sgdlab timescales``): the reduced
``(a, s)`` dynamics (``d = infinity``, 64 particles, implicit ``kvaerno5``) for the staircase
target ``phi = sigma = h1 + h2 + h3`` with an ``eps`` scan over ten decades
(``[scan] eps``); the finite-``d`` flow and SGD are off (they are compared with the reduced
dynamics in ``docs/timescales.md``). The run is cached per process, so the two claims (and their
tests) pay for it once. The reduced dynamics is deterministic: its numbers are exact up to the
ODE tolerances; the errors of fitted exponents are the regressions' 95% intervals.
"""

from __future__ import annotations

import functools
import time
from importlib import resources
from pathlib import Path

import numpy as np

from claims.record import Claim, Number, cli_command

PAPER = "two_layer"

#: the eps scan (every decade, 1e-11 left out: there the implicit solver exhausted 300000 steps in a
#: trial run, while 1e-12 needs fewer than 100000); the degree-l half-learning time t_l ~ eps^(1/(2l))
EPS_FULL = [10.0 ** -k for k in range(3, 11)] + [1e-12]
EPS_SMALL = [1e-3, 1e-4, 1e-5, 1e-6]
#: the window boundary between the "upper" (today's) and "lower" fits of the degree-3 exponent
SPLIT = 1e-8


def _overrides(small: bool) -> dict:
    """The keys set on the built-in example ``staircase`` (phi = sigma = h1 + h2 + h3, 64 particles)."""
    return {"dynamics": {"t_max": 0.3, "max_steps": 50_000 if small else 100_000},
            "flow": {"enabled": False}, "sgd": {"enabled": False}, "reduced": {"solver": "kvaerno5"},
            "scan": {"eps": EPS_SMALL if small else EPS_FULL, "t_max": 0.3, "d": []}}


@functools.lru_cache(maxsize=2)
def _scan(small: bool):
    """``sgdlab timescales --example staircase`` with :func:`_overrides`: ``(Dataset, seconds)``."""
    from sgdlab.core.config import merge_tables, read_toml
    from sgdlab.two_layer import run

    t0 = time.time()
    example = Path(str(resources.files("sgdlab") / "examples" / "timescales" / "staircase.toml"))
    ds = run(merge_tables(read_toml(example), _overrides(small)))
    return ds, time.time() - t0


def _command(small: bool, name: str) -> str:
    return cli_command("timescales", "staircase", _overrides(small)) + f" (or python -m claims {name})"


def claim_tl_plateaus(small: bool = False) -> Claim:
    """Plateaus at (1/2) sum_{k >= l} phi_k^2: a staircase on a log-time axis."""
    from sgdlab.two_layer.analysis import detect_plateaus, match_plateaus

    t0 = time.time()
    ds, cost = _scan(small)
    predicted = ds.plateau_predicted.values                       # level l = 0..K+1
    ok_eps = ds.eps.values[ds.scan_ok.values]
    numbers, found = [], {}
    t = ds.t_scan.values
    for e in sorted(ok_eps)[:3]:                                   # the three smallest solved eps
        r = ds.risk_scan.sel(eps=e).values
        plats = detect_plateaus(t, r)
        for l, p in match_plateaus(plats, predicted):
            if p is None or l == 0 or l == len(predicted) - 1:
                continue
            inside = r[(t >= p.start) & (t <= p.end)]
            half = 0.5 * float(inside.max() - inside.min())
            found.setdefault(l, []).append((e, p, half))
    for l in range(1, len(predicted) - 1):
        for e, p, half in found.get(l, []):
            numbers.append(Number(f"plateau l={l} (predicted {predicted[l]:.1f}) at eps={e:.0e}", p.level, max(half, 1e-12),
                                  note=f"over {p.decades:.2f} decades; error = half the range of R on the plateau"))
    final = float(ds.risk_scan.sel(eps=min(ok_eps)).values[-1])
    numbers.append(Number(f"final risk at eps={min(ok_eps):.0e}, t=0.3 (predicted 0)", final, kind="exact"))
    ok_level = {}
    for l in range(1, len(predicted) - 1):
        hits = found.get(l, [])
        ok_level[l] = bool(hits) and all(abs(p.level - predicted[l]) <= 2 * max(h, 1e-12) for _, p, h in hits)
    missing = [l for l in ok_level if not found.get(l)]
    wrong = [l for l in ok_level if found.get(l) and not ok_level[l]]
    if not missing and not wrong and final < 0.01:
        verdict = "reproduced"
    elif any(ok_level.values()) and not wrong:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    why = ("The risk of the reduced dynamics is a staircase on log time: "
           + "; ".join(f"level {predicted[l]:.1f} seen at eps = " + ", ".join(f"{e:.0e} ({p.level:.4f})" for e, p, _ in found[l])
                       for l in sorted(found))
           + (". Not detected (needs smaller eps): " + ", ".join(f"the {predicted[l]:.1f} plateau" for l in missing)
              + " -- degrees 2 and 3 drop within a factor "
              f"{_ratio(ds, min(ok_eps)):.1f} in time at eps = {min(ok_eps):.0e} (t_3/t_2 ~ eps^(-1/12) grows slowly; BMZ: "
              "clean degree-3 plateaus need eps ~ 1e-16)" if missing else "")
           + (f". Off the prediction: levels {wrong}" if wrong else "") + f". The risk reaches {final:.1e} by t = 0.3.")
    return Claim(
        name="tl_plateaus", paper=PAPER,
        claim="The risk plateaus at (1/2) sum_{k >= l} phi_k^2 once the degrees below l are learned: a staircase on "
              "a log-time axis (phi = h1 + h2 + h3: 1.5, 1.0, 0.5, 0).",
        command=_command(small, "tl_plateaus"),
        numbers=numbers, verdict=verdict, small=small, elapsed_s=time.time() - t0 + cost,
        rule="plateaus detected by the study's criterion (|d log R / d log t| <= 0.05 over >= 0.3 decades) on the "
             "three smallest solved eps and matched to the predictions; a detected level agrees when within 2x half "
             "its range on the plateau. reproduced iff every intermediate level (1.0, 0.5) is detected and agrees "
             "and the final risk is < 0.01; partly iff some are detected, all agree.",
        why=why,
        details={"setting": "reduced (a, s) dynamics, 64 particles, kvaerno5, rtol 1e-7, t in [eps_min/100, 0.3]"},
    )


def _ratio(ds, e) -> float:
    th = ds.t_half_scan.sel(eps=e).values
    return float(th[3] / th[2])


def claim_tl_exponents(small: bool = False) -> Claim:
    """Half-learning times t_l ~ eps^(1/(2l)); the degree-3 exponent towards 1/6 at smaller eps."""
    from sgdlab.two_layer.analysis import fit_power_law

    t0 = time.time()
    ds, cost = _scan(small)
    eps = ds.eps.values
    ok = ds.scan_ok.values
    numbers, contains = [], {}
    for l in (1, 2, 3):
        pred = 1 / (2 * l)
        e, lo, hi = (float(ds.exponent.sel(degree=l)), float(ds.exponent_low.sel(degree=l)),
                     float(ds.exponent_high.sel(degree=l)))
        contains[l] = lo <= pred <= hi
        numbers.append(Number(f"exponent of t_{l}" + (" / L(eps) (log removed)" if l == 1 else "")
                              + f", eps in [{eps[ok].min():.0e}, {eps[ok].max():.0e}]", e, low=lo, high=hi, kind="ci95",
                              note=f"predicted 1/{2 * l}"))
    t3 = ds.t_half_scan.sel(degree=3).values
    windows = {}
    for name, sel in (("upper", (eps >= SPLIT) & ok), ("lower", (eps <= SPLIT) & ok)):
        if sel.sum() >= 3:
            f = fit_power_law(eps[sel], t3[sel])
            windows[name] = f
            numbers.append(Number(f"exponent of t_3, eps in [{eps[sel].min():.0e}, {eps[sel].max():.0e}]", f.exponent,
                                  low=f.low, high=f.high, kind="ci95", note="predicted 1/6"))
    o = np.argsort(eps)
    e_s, t_s = eps[o][ok[o]], t3[o][ok[o]]
    local = np.diff(np.log(t_s)) / np.diff(np.log(e_s))
    numbers.append(Number("local slope of t_3, spread over neighbouring eps", float(np.std(local, ddof=1)), kind="exact",
                          note="min " + f"{local.min():.3f}, max {local.max():.3f}"))
    failed = [f"{x:.0e}" for x in eps[~ok]]
    ratio = (t3 / ds.t_half_scan.sel(degree=2).values)[ok]
    r_lo, r_hi = float(ratio.min()), float(ratio.max())
    towards = ("upper" in windows and "lower" in windows
               and abs(windows["lower"].exponent - 1 / 6) < abs(windows["upper"].exponent - 1 / 6))
    lower_ok = "lower" in windows and windows["lower"].contains(1 / 6)
    if contains[1] and contains[2] and contains[3] and towards and lower_ok:
        verdict = "reproduced"
    elif contains[1] and contains[2] and (contains[3] or towards):
        verdict = "partly"
    else:
        verdict = "not reproduced"
    up, lo_ = windows.get("upper"), windows.get("lower")
    why = ("Degrees 1 (after removing its log(1/eps) factor) and 2 follow eps^(1/2) and eps^(1/4)"
           + ("" if contains[1] and contains[2] else " (not within their intervals: see the numbers)") + ". Degree 3: "
           + (f"over eps >= {SPLIT:.0e} (the range of docs/timescales.md) the exponent is {up.exponent:.3f} "
              f"[{up.low:.3f}, {up.high:.3f}], over eps <= {SPLIT:.0e} it is {lo_.exponent:.3f} [{lo_.low:.3f}, "
              f"{lo_.high:.3f}], and " if up and lo_ else "")
           + f"over the whole scan {float(ds.exponent.sel(degree=3)):.3f}"
           + (" (its interval contains 1/6)" if contains[3] else " (its interval misses 1/6)")
           + f". The local slope between neighbouring eps ranges over [{local.min():.2f}, {local.max():.2f}]"
           + (" and is not monotone in eps" if np.any(np.diff(local) > 0) and np.any(np.diff(local) < 0) else "")
           + f"; degree 3 is learned {r_lo:.1f} to {r_hi:.1f} times later than degree 2 over the scan (t_3/t_2 = "
           "eps^(-1/12) in the limit): "
           + ("t_3 is still pre-asymptotic at these eps." if verdict != "reproduced" or r_hi < 10 else
              "the time scales have separated.")
           + (f" The solver's step budget ran out at eps = {', '.join(failed)} (left out of the fits)." if failed else ""))
    return Claim(
        name="tl_exponents", paper=PAPER,
        claim="The degree-l half-learning time scales as t_l ~ eps^(1/(2l)) (degree 1 up to a log(1/eps) factor): "
              "exponents 1/2, 1/4, 1/6 for the staircase target.",
        command=_command(small, "tl_exponents"),
        numbers=numbers, verdict=verdict, small=small, elapsed_s=time.time() - t0 + cost,
        rule="a fitted exponent agrees when its 95% interval contains 1/(2l). reproduced iff all three agree over the "
             f"whole scan, and the degree-3 exponent over eps <= {SPLIT:.0e} contains 1/6 and is closer to it than over "
             f"eps >= {SPLIT:.0e}; partly iff degrees 1 and 2 agree and degree 3 agrees over the whole scan or moves "
             "towards 1/6; otherwise not reproduced.",
        why=why,
        details={"setting": "reduced (a, s) dynamics, 64 particles, kvaerno5, rtol 1e-7, max_steps 100000 (1e-11 left out: "
                            "the solver exhausted 300000 steps there in a trial run), "
                            f"eps = {[f'{x:.0e}' for x in eps]}; half-learning time: sigma_l M_l / phi_l = 1/2"},
    )


CLAIMS = {
    "tl_plateaus": claim_tl_plateaus,
    "tl_exponents": claim_tl_exponents,
}
