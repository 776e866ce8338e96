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
# # Two-layer networks: in which order, and how fast, are the Hermite components learned?
#
# **Question.** A wide two-layer network $f(x) = \frac1m \sum_i a_i \sigma(\langle u_i, x\rangle)$
# learns a single-index target $y = \varphi(\langle\theta^*, x\rangle)$ by gradient flow, with the
# second layer $1/\varepsilon$ times faster than the first. Expand target and activation in
# normalised Hermite polynomials, $\varphi = \sum_k \varphi_k h_k$. Is the target learned degree
# by degree, with the risk resting on the plateaus $\frac12\sum_{k \ge l}\varphi_k^2$, and does
# degree $l$ take a time $t_l \sim \varepsilon^{1/(2l)}$?
#
# We solve the reduced dynamics of the particles $(a_i, s_i = \langle u_i, \theta^*\rangle)$
# (the $d \to \infty$ limit, $m$ particles) for several $\varepsilon$ and read off the risk and
# the half-learning times. The model is on the page *Two-layer time scales* of the
# documentation.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from sgdlab import two_layer

SMALL = os.environ.get("SGDLAB_GALLERY_SMALL") == "1"   # CI runs every notebook at tiny sizes

# %% [markdown]
# Target and activation $h_1 + h_2 + h_3$: predicted plateaus $1.5 \to 1 \to 0.5 \to 0$. Only
# the reduced dynamics (`flow` and `sgd` switched off); `[scan] eps` solves it for every
# $\varepsilon$ and fits the exponents. The explicit solver is enough for
# $\varepsilon \ge 10^{-3}$; the implicit one reaches smaller $\varepsilon$.

# %%
eps = [1e-2, 3e-2, 1e-1] if SMALL else [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
ds = two_layer.run({
    "problem": {"target": [0.0, 1.0, 1.0, 1.0], "activation": [0.0, 1.0, 1.0, 1.0], "degree": 3},
    "dynamics": {"eps": eps[-1], "t_max": 1.0, "n_times": 41 if SMALL else 81},
    "flow": {"enabled": False},
    "sgd": {"enabled": False},
    "reduced": {"m": 16 if SMALL else 64, "solver": "tsit5" if SMALL else "kvaerno5"},
    "scan": {"eps": eps, "t_max": 1.0},
})

# %% [markdown]
# `risk_scan (eps, t_scan)` is the risk of every scanned $\varepsilon$ on one log-time grid,
# `t_half_scan (eps, degree)` the half-learning times, `exponent` $\pm$ its 95% interval the fit
# of $\log t_l$ on $\log\varepsilon$ (degree 1 after removing its logarithmic factor), beside
# `exponent_predicted` $= 1/(2l)$.

# %%
fig, (ax_r, ax_t) = plt.subplots(1, 2, figsize=(10, 3.9), layout="constrained")
def tex(x):
    k = np.log10(x)
    return f"10^{{{k:.0f}}}" if np.isclose(k, round(k)) else f"{x:g}"

colors = plt.cm.viridis(np.linspace(0, 0.9, len(eps)))
for e, color in zip(eps, colors):
    ax_r.semilogx(ds.t_scan, ds.risk_scan.sel(eps=e), color=color, label=rf"$\varepsilon = {tex(e)}$")
for level in ds.plateau_predicted.values:
    ax_r.axhline(level, color="0.5", ls=":", lw=1)
ax_r.plot([], [], color="0.5", ls=":", lw=1, label=r"$\frac{1}{2}\sum_{k\geq l}\varphi_k^2$")
ax_r.set(xlabel="time $t$", ylabel="risk $R(t)$", title=r"reduced dynamics ($d \to \infty$)")
ax_r.legend(fontsize=7)
for l, marker in zip([1, 2, 3], "osD"):
    th = ds.t_half_scan.sel(degree=l)
    if l == 1:   # the fitted quantity: t_1 without its logarithmic factor L(eps) ~ log(1/eps) / 2
        th = th / ds.t1_log_factor
    ax_t.loglog(ds.eps, th, marker, color=f"C{l - 1}",
                label=(r"$t_1 / L(\varepsilon)$" if l == 1 else rf"$t_{l}$") + rf": exponent {float(ds.exponent.sel(degree=l)):.3f} "
                      rf"[{float(ds.exponent_low.sel(degree=l)):.3f}, {float(ds.exponent_high.sel(degree=l)):.3f}], "
                      rf"predicted $1/{2 * l}$")
    ref = float(th.isel(eps=-1)) * (ds.eps / ds.eps[-1]) ** (1 / (2 * l))
    ax_t.loglog(ds.eps, ref, ":", color=f"C{l - 1}")
ax_t.set(xlabel=r"learning-rate ratio $\varepsilon$", ylabel=r"half-learning time $t_l$",
         title=r"dotted: slope $1/(2l)$")
ax_t.legend(fontsize=7)
fig

# %% [markdown]
# At the full sizes ($m = 64$ particles, $\varepsilon$ from $10^{-6}$ to $10^{-2}$) the figure cell
# draws:
#
# ![the figure of this notebook at full size](images/timescales.png)
#
# **Answer.** The order, yes; the time scales, only in part over this range of $\varepsilon$. At
# $\varepsilon = 10^{-6}$ the risk leaves the plateau $1.5$, rests on $1.0$ (degree 1 learned) and
# then drops to nearly 0: degrees 2 and 3 are learned almost together, and no plateau at $0.5$
# appears; at $\varepsilon \geq 10^{-4}$ all degrees fall in one sweep. The degree-1 time follows
# $\varepsilon^{1/2}$ once its logarithmic factor is removed (fitted exponent 0.484, 95% interval
# [0.470, 0.497]) and degree 2 is close to $\varepsilon^{1/4}$ (0.275 [0.251, 0.299]), but degree 3
# is not near $1/6$ here (0.267 [0.248, 0.286]), because $t_3$ still trails $t_2$ closely: at these
# $\varepsilon$ the third step is pre-asymptotic. The page *Two-layer time scales* follows the
# exponents to smaller $\varepsilon$.
