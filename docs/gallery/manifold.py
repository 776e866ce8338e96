# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Noisy GD on a valley of minimisers: which slow motion, on which time scale?
#
# **Question.** The loss $L(x, y) = (xy - 1)^2/2$ is zero on the whole hyperbola $xy = 1$.
# Gradient descent with step $\eta$ reaches it quickly and then stops; injected noise makes it
# drift *along* the valley, slowly. Does the kind of noise decide where it drifts and how fast?
# We follow $C = x^2 - y^2$ (the position along the valley) under **label noise** (the target
# $1$ is perturbed by $\sigma\zeta$ at every step) and under **perturbed GD** (the gradient is
# taken at $w + \sigma\zeta$), at two step sizes, beside the $\eta \to 0$ limit on the valley that
# sgdlab computes by automatic differentiation.
#
# Predicted: label noise is *degenerate* (its regulariser is constant on the valley): $C$ decays as
# $C_0 e^{-\tau}$ on the slow time $\tau = \eta^2\sigma^2 k$, i.e. after $\sim 1/\eta^2$ steps.
# Perturbed GD is *non-degenerate*: $C_0 e^{-2\tau}$ on $\tau = \eta\sigma^2 k$, after
# $\sim 1/\eta$ steps. (Its limit in general needs $\sigma \to 0$ too; for $C$ on the hyperbola the
# $O(\sigma^2)$ correction vanishes, so $\sigma$ is kept fixed here.) The definitions are on the
# page *Zero-loss manifolds* of the documentation.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from sgdlab import manifold

SMALL = os.environ.get("SGDLAB_GALLERY_SMALL") == "1"   # CI runs every notebook at tiny sizes

# %%
simulation = {"etas": [0.05] if SMALL else [0.05, 0.025], "runs": 32 if SMALL else 512}
noises = {
    "label noise": {"name": "label_noise", "sigma": 1.0},
    "perturbed GD": {"name": "perturbed_gd", "sigma": 0.2},
}
runs = {
    label: manifold.run({"model": {"name": "hyperbola", "init": [2.0, 0.6]}, "noise": noise,
                         "simulation": {**simulation, "tau_max": 1.0 if SMALL else 2.0, "tau_save": 0.1}})
    for label, noise in noises.items()
}

# %% [markdown]
# Each Dataset has dims `(method, eta, seed, t)`, `method = ["sim", "limit"]`, where `t` is the
# slow time $\tau$ of the noise (attr `time_scale`) and `time_unit (eta)` the slow time of one
# step: a run of $\tau_{\max}$ takes $\tau_{\max}$ / `time_unit` steps.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), layout="constrained", sharey=True)
for ax, (label, ds) in zip(axes, runs.items()):
    for i, color in zip(range(ds.sizes["eta"]), ["C0", "C1"]):
        sim = ds.C.sel({"method": "sim"}).isel(eta=i)   # a dict: xarray reads method= as its own keyword
        mean, se = sim.mean("seed"), sim.std("seed", ddof=1) / np.sqrt(sim.sizes["seed"])
        eta, unit = float(ds.eta[i]), float(ds.time_unit[i])
        ax.plot(ds.t, mean, color=color, label=rf"simulation $\eta = {eta:g}$ ({ds.t.values[-1] / unit:,.0f} steps)")
        ax.fill_between(ds.t, mean - se, mean + se, color=color, alpha=0.3, lw=0)
    ax.plot(ds.t, ds.C.sel({"method": "limit"}).isel(eta=0).mean("seed"), "k--", label=r"limit $\eta \to 0$")
    scale = ds.attrs["time_scale"]   # e.g. "tau = eta^2 sigma^2 k", written as mathtext below
    for symbol in ("tau", "eta", "sigma"):
        scale = scale.replace(symbol, "\\" + symbol)
    ax.set(xlabel=f"slow time ${scale}$", title=f"{label} ({ds.attrs['noise_kind'].replace('_', '-')})")
    ax.legend(fontsize=7)
axes[0].set_ylabel(r"$C = x^2 - y^2$ (mean $\pm$ s.e. over runs)")
fig

# %% [markdown]
# How close to the limit, and does the gap shrink with $\eta$? The largest distance between the
# simulation's mean and the limit over the run, per step size:

# %%
for label, ds in runs.items():
    gap = abs(ds.C.sel({"method": "sim"}).mean("seed") - ds.C.sel({"method": "limit"}).mean("seed")).max("t")
    print(f"{label}: " + ", ".join(f"eta = {float(e):g}: max |sim - limit| = {float(g):.3f}" for e, g in zip(ds.eta, gap)))

# %% [markdown]
# At the full sizes (512 runs per step size, $\tau$ up to 2) the figure cell draws:
#
# ![the figure of this notebook at full size](images/manifold.png)
#
# **Answer.** Yes, on both counts. Each noise has its own slow law (the limit, dashed, is
# $C_0 e^{-\tau}$ for label noise and $C_0 e^{-2\tau}$ for perturbed GD, as the tests check) and its
# own clock: to reach $\tau = 2$, label noise needs 800 steps at $\eta = 0.05$ and 3,200 at
# $\eta = 0.025$ (four times more: the $1/\eta^2$ scale), perturbed GD 1,000 and 2,000 (twice more:
# the $1/\eta$ scale). In its own slow time every simulation follows its limit, and the largest gap
# halves with $\eta$ (0.108 to 0.054 for label noise, 0.108 to 0.058 for perturbed GD): an $O(\eta)$
# bias. The bands (one standard error over 512 runs) are thinner than the lines.
