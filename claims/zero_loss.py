"""Claims of Shalova, Schlichting & Peletier, "Singular-limit analysis of gradient descent with
noise injection" (arXiv 2404.12293, 2024).

Every claim runs :func:`sgdlab.manifold.run` (``sgdlab manifold``) on the built-in examples of
``src/sgdlab/examples/manifold/`` (some keys overridden, as ``--set`` would): noisy GD at two step
sizes ``eta`` and ``eta/2`` beside the generic limit solver on the slow time scale. "Bias" is the
mean over runs of the time average over ``tau > 0`` of ``sim - limit`` (standard error over runs);
the limit is reached when the bias is ``O(eta)``: it halves with ``eta`` and its Richardson
extrapolation ``2 e(eta/2) - e(eta)`` vanishes within its error.
"""

from __future__ import annotations

import math
import time
from importlib import resources
from pathlib import Path

import numpy as np

from claims.record import Claim, Number, cli_command, mean_se, z_score

PAPER = "zero_loss"


def _example(name: str) -> dict:
    from sgdlab.core.config import read_toml

    return read_toml(Path(str(resources.files("sgdlab") / "examples" / "manifold" / f"{name}.toml")))


def _run(name: str, over: dict, commands: list[str]):
    """``sgdlab manifold --example NAME`` with the keys of ``over`` set (as ``--set`` does); the
    equivalent command line is appended to ``commands``."""
    from sgdlab import manifold
    from sgdlab.core.config import merge_tables

    commands.append(cli_command("manifold", name, over))
    return manifold.run(merge_tables(_example(name), over))


def _sim(ds, var):
    return ds[var].sel({"method": "sim"})


def _lim(ds, var):
    return ds[var].sel({"method": "limit"})


def _bias(ds, var):
    """Per eta: (mean, se) over runs of the time-averaged ``sim - limit`` over ``t > 0``."""
    diff = (_sim(ds, var) - _lim(ds, var)).isel(t=slice(1, None)).mean("t")    # (eta, seed)
    return [mean_se(diff.sel(eta=e).values) for e in ds.eta.values]


def _halving(ds, var, label):
    """Numbers and the check of an O(eta) bias for ``var``: resolved at eta and extrapolating to 0."""
    (e1, s1), (e2, s2) = _bias(ds, var)
    ex, sx = 2 * e2 - e1, math.hypot(2 * s2, s1)
    etas = ds.eta.values
    nums = [Number(f"{label}: bias of {var} (eta={etas[0]:g})", e1, s1),
            Number(f"{label}: bias of {var} (eta={etas[1]:g})", e2, s2),
            Number(f"{label}: extrapolated bias 2e(eta/2) - e(eta)", ex, sx, note="0 if the bias is O(eta)")]
    ok = abs(z_score(e1, s1)) > 2 and abs(z_score(ex, sx)) < 2
    return nums, ok, (e1, e2, ex, sx)


def claim_manifold_time_scales(small: bool = False) -> Claim:
    """The noise structure sets both the limiting process and its time scale (hyperbola)."""
    t0 = time.time()
    runs, cmds = (64 if small else 256), []
    label = _run("hyperbola_label_noise", {"simulation": {"runs": runs}}, cmds)
    pgd = _run("hyperbola_perturbed_gd", {"simulation": {"runs": runs}}, cmds)
    numbers, oks = [], []
    for ds, name, rate, t1 in ((label, "label noise", 1.0, 1.0), (pgd, "perturbed GD", 2.0, 1.0)):
        lim = _lim(ds, "C").isel(eta=0, seed=0)
        c0 = float(lim.isel(t=0))
        ratio = float(lim.sel(t=t1, method="nearest")) / c0
        numbers.append(Number(f"{name}: limit C(tau={t1:g}) / C(0)  [{ds.attrs['time_scale']}]", ratio, kind="exact",
                              note=f"closed form exp(-{rate:g} tau) = {math.exp(-rate * t1):.5f}"))
        oks.append(abs(ratio - math.exp(-rate * t1)) < 1e-3)
        nums, ok, _ = _halving(ds, "C", name)
        numbers += nums
        oks.append(ok)
    scales_differ = label.attrs["time_scale"] != pgd.attrs["time_scale"]
    ok = all(oks) and scales_differ
    verdict = "reproduced" if ok else ("partly" if any(oks) else "not reproduced")
    why = (f"On the hyperbola (xy - 1)^2/2 label noise is degenerate: its limit is C0 e^(-tau) on "
           f"{label.attrs['time_scale']}; perturbed GD is not: C0 e^(-2 tau) on {pgd.attrs['time_scale']}. The generic "
           "limit solver reproduces both closed forms, and the simulations converge to them with an O(eta) bias "
           "(resolved at eta, extrapolating to zero).") if ok else "Some checks failed: see the numbers."
    return Claim(
        name="manifold_time_scales", paper=PAPER,
        claim="The structure of the injected noise changes both the limiting process on the zero-loss "
              "manifold and its time scale (label noise: eta^2 sigma^2; perturbed GD: eta sigma^2).",
        command="; ".join(cmds),
        numbers=numbers, verdict=verdict, small=small, elapsed_s=time.time() - t0,
        rule="reproduced iff (i) each limit equals its closed form C0 exp(-rate tau) to 1e-3 (deterministic solver), "
             "(ii) for each noise the simulation's bias is resolved at eta (> 2 s.e.) and its extrapolation "
             "2e(eta/2) - e(eta) is within 2 s.e. of 0, and (iii) the two time scales differ.",
        why=why,
        details={"setting": f"hyperbola, init (2, 0.6), {runs} runs per eta, eta = 0.05 and 0.025; label noise sigma = 1, "
                            "tau up to 3; perturbed GD sigma^2 = 0.04 eta / 0.05, tau up to 1.5"},
    )


def _motion(ds, var, label):
    """How far ``var`` moves from the first save to the end: the limit's motion and the simulated one
    at each eta (mean ± s.e. over runs), and the simulation's Richardson extrapolation to eta -> 0,
    compared with the limit's (z-score)."""
    lim = _lim(ds, var).isel(eta=0, seed=0)
    dl = float(lim.isel(t=-1) - lim.isel(t=1))
    sim = _sim(ds, var)
    moves = [mean_se((sim.sel(eta=e).isel(t=-1) - sim.sel(eta=e).isel(t=1)).values) for e in ds.eta.values]
    (m1, s1), (m2, s2) = moves
    ex, sx = 2 * m2 - m1, math.hypot(2 * s2, s1)
    tau = float(ds.t[-1] - ds.t[1])
    nums = [Number(f"{label}: limit change of {var} over tau = {tau:g}", dl, kind="exact")]
    nums += [Number(f"{label}: simulated change of {var} (eta={e:g})", m, s) for e, (m, s) in zip(ds.eta.values, moves)]
    nums.append(Number(f"{label}: simulated change extrapolated to eta = 0", ex, sx, note="2 m(eta/2) - m(eta)"))
    return nums, dl, (m1, s1), (ex, sx)


def claim_manifold_dropout_vs_label(small: bool = False) -> Claim:
    """Dropout and label noise move a two-unit network on different time scales."""
    t0 = time.time()
    runs, cmds = (64 if small else 256), []
    drop = _run("two_unit_dropout", {"simulation": {"runs": runs}}, cmds)
    # label noise observed on Dropout's time scale eta sigma^2 (forced), and on its own eta^2 sigma^2
    fast = _run("two_unit_label_noise", {"simulation": {"runs": runs, "tau_max": 3.0}, "limit": {"kind": "non_degenerate"}}, cmds)
    slow = _run("two_unit_label_noise", {"simulation": {"runs": runs}}, cmds)
    numbers = []
    n1, d_drop, _, (ex1, sx1) = _motion(drop, "delta", "Dropout, tau = eta sigma^2 k")
    n2, d_fast, (mf, sf), (ex2, sx2) = _motion(fast, "c1", "label noise, tau = eta sigma^2 k")
    n3, d_slow, _, (ex3, sx3) = _motion(slow, "c1", "label noise, tau = eta^2 sigma^2 k")
    numbers += n1 + n2 + n3
    lim = _lim(slow, "c1").isel(eta=0, seed=0)
    tau = float(slow.t[-1] - slow.t[1])
    decay = float(lim.isel(t=-1) / lim.isel(t=1))
    numbers.append(Number(f"label noise, tau = eta^2 sigma^2 k: limit c1 ratio over tau = {tau:g}", decay, kind="exact",
                          note=f"closed form exp(-tau) = {math.exp(-tau):.5f}"))
    drop_ok = abs(d_drop) > 0.1 and abs(z_score(ex1, sx1, d_drop)) < 2
    frozen = abs(d_fast) < 1e-6 and abs(z_score(mf, sf)) > 2 and abs(z_score(ex2, sx2)) < 2
    slow_ok = abs(d_slow) > 0.1 and abs(z_score(ex3, sx3, d_slow)) < 2 and abs(decay - math.exp(-tau)) < 1e-3
    ok = drop_ok and frozen and slow_ok
    verdict = "reproduced" if ok else ("partly" if (drop_ok or frozen or slow_ok) else "not reproduced")
    why = (f"On tau = eta sigma^2 k Dropout moves delta = p1 - p2 by {d_drop:+.3f} in the limit and the simulation's motion "
           f"extrapolates to {ex1:+.3f} ± {sx1:.3f} ({'agrees' if drop_ok else 'check'}); label noise on that scale is "
           f"frozen in the limit and the simulation moves c1 by {mf:+.4f} at eta = {fast.eta.values[0]:g}, extrapolating "
           f"to {ex2:+.4f} ± {sx2:.4f} ({'O(eta): frozen' if frozen else 'not frozen'}). On its own scale eta^2 sigma^2 k "
           f"label noise moves c1 by {d_slow:+.3f} (limit; closed form c1(0) exp(-tau)) and the simulation extrapolates to "
           f"{ex3:+.3f} ± {sx3:.3f}.")
    return Claim(
        name="manifold_dropout_vs_label", paper=PAPER,
        claim="Dropout and label noise evolve on different time scales: Dropout on tau = eta sigma^2 k, label noise "
              "only on tau = eta^2 sigma^2 k (frozen on Dropout's scale).",
        command="; ".join(cmds),
        numbers=numbers, verdict=verdict, small=small, elapsed_s=time.time() - t0,
        rule="motion = change from the first save to the end; the simulation's is extrapolated to eta = 0 by "
             "2 m(eta/2) - m(eta). reproduced iff (Dropout) the limit moves delta by > 0.1 and the extrapolated "
             "simulation agrees within 2 s.e.; (label noise on eta sigma^2) the limit is frozen, the simulation moves "
             "by > 2 s.e. at eta and extrapolates to 0 within 2 s.e.; (label noise on eta^2 sigma^2) the limit moves "
             "c1 by > 0.1 as c1(0) exp(-tau) (to 1e-3) and the extrapolated simulation agrees within 2 s.e.; partly "
             "iff some of the three hold.",
        why=why,
        details={"setting": f"two-unit linear network (a1 b1 + a2 b2 - 1)^2/2, {runs} runs per eta, eta = 0.05, 0.025; "
                            "Dropout from the balanced start p = (0.65, 0.25), sigma^2 = 0.04 eta/0.05; label noise "
                            "sigma = 1 from (1.2, 0.5, 0.3, 0.9), tau up to 3 on both scales"},
    )


def claim_manifold_minibatch_trivial(small: bool = False) -> Claim:
    """Minibatch SGD does not move along the zero-loss manifold on either time scale."""
    t0 = time.time()
    runs, cmds = (16 if small else 64), []
    numbers, oks = [], []
    # (limit.kind, time scale, tau_max, tau_save): the first save (100 steps at eta = 0.05) ends the fast phase
    for kind, scale, tmax, tsave in (("non_degenerate", "eta sigma^2 k", 50.0, 10.0), ("degenerate", "eta^2 sigma^2 k", 3.0, 0.5)):
        ds = _run("hyperbola_minibatch", {"simulation": {"runs": runs, "tau_max": tmax, "tau_save": tsave},
                                          "limit": {"kind": kind}}, cmds)
        c = _sim(ds, "C")
        for e in ds.eta.values:
            ce = c.sel(eta=e)
            drift = float(np.max(np.abs(ce.isel(t=-1) - ce.isel(t=1))))
            numbers.append(Number(f"tau = {scale}: max over runs |C(tau={tmax:g}) - C(tau={tsave:g})| (eta={e:g})", drift,
                                  kind="exact", note="motion after the fast phase"))
            oks.append(drift < 1e-9 * max(1.0, float(np.abs(ce).max())))
        off = [mean_se((c.sel(eta=e).isel(t=1) - _lim(ds, "C").sel(eta=e).isel(t=1)).values) for e in ds.eta.values]
        (o1, s1), (o2, s2) = off
        numbers.append(Number(f"tau = {scale}: fast-phase offset C - C_limit (eta={ds.eta.values[0]:g})", o1, s1))
        numbers.append(Number(f"tau = {scale}: fast-phase offset C - C_limit (eta={ds.eta.values[1]:g})", o2, s2))
        oks.append(abs(o2) < abs(o1))
    ok = all(oks)
    verdict = "reproduced" if ok else "not reproduced"
    why = ("Every per-sample gradient vanishes on the zero-loss set, so minibatch noise vanishes there: after the "
           "fast phase the conserved coordinate C = x^2 - y^2 does not move at all (to round-off) on either time "
           "scale, and its offset from Phi(w0) is the discrete fast phase, which shrinks with eta."
           if ok else "Minibatch SGD moved along the manifold: see the numbers.")
    return Claim(
        name="manifold_minibatch_trivial", paper=PAPER,
        claim="Minibatch SGD is trivial on both time scales: it does not move along the zero-loss manifold.",
        command="; ".join(cmds),
        numbers=numbers, verdict=verdict, small=small, elapsed_s=time.time() - t0,
        rule="reproduced iff on both time scales C moves by less than 1e-9 |C| after the fast phase in every run, "
             "and the fast-phase offset from the limit is smaller at eta/2 than at eta.",
        why=why,
        details={"setting": f"hyperbola with n = 3 samples, minibatch b = 1, init (2, 0.6), {runs} runs, eta = 0.05, 0.025, "
                            "tau up to 50 on eta sigma^2 k and up to 3 on eta^2 sigma^2 k (the time scale forced by limit.kind)"},
    )


CLAIMS = {
    "manifold_time_scales": claim_manifold_time_scales,
    "manifold_dropout_vs_label": claim_manifold_dropout_vs_label,
    "manifold_minibatch_trivial": claim_manifold_minibatch_trivial,
}
