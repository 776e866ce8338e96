"""Figures of a Gaussian-mixture run, from its Dataset alone.

The simulation (``method = "sim"``) is drawn as the mean over seeds with a shaded band of one
standard error of that mean; theories as dashed lines on the same axes, with a band of one
Monte-Carlo standard error (``<name>_se``, the spread of independent DMFT solves over
``sqrt(solves)``) where the Dataset has it. Under each panel, when a simulation is beside a
theory, the residual ``(sim - theory) / sqrt(se_sim^2 + se_theory^2)`` with its band
``|z| <= 2`` (:func:`sgdlab.core.plot.residual`). The title is built from the parameters that
were run (the config in the Dataset's attrs), never from its free-text ``description``.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import xarray as xr

from sgdlab.core.plot import Figure, band, comparison_grid, legend, param_text, residual, set_xlabel

ORDER_PARAMETER_PANELS = ("m", "q", "train_loss", "test_loss", "train_error", "test_error")
TITLES = {
    "m": "overlap with the cluster mean",
    "q": "self-overlap",
    "train_loss": "training loss",
    "test_loss": "test loss",
    "train_error": "training error",
    "test_error": "test error",
}
YLABELS = {
    "m": r"$m(t) = \mathbf{w}\cdot\mathbf{v}/d$",
    "q": r"$C(t,t) = |\mathbf{w}|^2/d$",
    "train_loss": r"$\mathcal{L}_{\rm train}(t)$",
    "test_loss": r"$\mathcal{L}_{\rm test}(t)$",
    "train_error": r"$\epsilon_{\rm train}(t)$",
    "test_error": r"$\epsilon_{\rm test}(t)$",
}
ALGORITHMS = {"gd": "full-batch GD", "sgd": "minibatch SGD", "persistent_sgd": "persistent SGD",
              "sgf": "stochastic gradient flow", "langevin": "Langevin dynamics"}
METHOD_NAMES = {"sim": "simulation", "dmft": "DMFT"}


def run_title(ds: xr.Dataset, width: int = 110) -> str:
    """The title of a run, from the config it ran (``--set`` overrides included): the algorithm,
    the mixture, the sizes of the simulation and of the theory, then every parameter."""
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        cfg = {}
    if not cfg:
        return ""
    p, a = cfg.get("problem", {}), cfg.get("algorithm", {})
    sim, th = cfg.get("simulation", {}), cfg.get("theory", {})
    name = a.get("name", "persistent_sgd")
    alg = ALGORITHMS.get(name, name)
    if a.get("momentum"):
        alg += " with Nesterov momentum" if a.get("nesterov") else " with heavy-ball momentum"
    clusters = {2: "two", 3: "three"}.get(p.get("clusters", 2), str(p.get("clusters")))
    parts = []
    if "sim" in map(str, ds["method"].values) and sim:
        seeds = sim.get("seeds", 0)
        parts.append(f"simulation (d = {sim.get('d')}, {seeds if isinstance(seeds, int) else len(seeds)} seeds)")
    for m in (str(m) for m in ds["method"].values if str(m) != "sim"):
        solves = ds.attrs.get("dmft_solves", th.get("solves"))
        size = f"{solves} solves of {th.get('samples')} trajectories" if solves else f"{th.get('samples')} trajectories"
        parts.append(f"{METHOD_NAMES.get(m, m)} ({size})" if m == "dmft" else m)
    head = f"{alg}, {clusters} clusters, {p.get('loss', 'square')} loss: " + " and ".join(parts)
    sched = a.get("schedule") or {}
    kinds = [f"{k} {v.get('kind')}" for k, v in sched.items() if isinstance(v, dict) and v.get("kind", "constant") != "constant"]
    params = [
        (r"\alpha", p.get("alpha")), (r"\Delta", p.get("delta")),
        (r"\rho", p.get("rho") if p.get("rho", 0.5) != 0.5 else None),
        (r"\lambda", p.get("ridge")),
        (r"\kappa", p.get("kappa") if p.get("loss") == "squared_hinge" else None),
        (r"m_0", p.get("m0") or None), (r"\sigma_0", p.get("sigma0") if p.get("sigma0", 1.0) != 1.0 else None),
        (r"\eta", a.get("eta")),
        ("b", a.get("batch_fraction") if name not in ("gd", "langevin") else None),
        (r"\tau", a.get("persistence_time") if name in ("persistent_sgd", "sgf") else None),
        ("T", a.get("temperature") if name == "langevin" or a.get("temperature") else None),
        (r"\beta", a.get("momentum") or None),
        ("", "normalised" if a.get("normalisation") == "normalised" else None),
        ("", ("schedule: " + ", ".join(kinds)) if kinds else None),
    ]
    return param_text(head, params, width)


def plot_order_parameters(ds: xr.Dataset, variables=ORDER_PARAMETER_PANELS, title: str | None = None):
    """One panel per variable versus ``t``, every method of ``ds`` on the same axes, each with a
    residual panel (simulation minus each theory in combined standard errors) when both are
    there; one legend for the figure. ``title`` defaults to :func:`run_title`."""
    variables = [v for v in variables if v in ds]
    methods = list(map(str, ds["method"].values))
    theories = [m for m in methods if m != "sim"]
    has_sim = "sim" in methods
    compare = has_sim and bool(theories)
    ncols = 3 if len(variables) >= 3 else len(variables)
    nrows = int(np.ceil(len(variables) / ncols))
    fig = Figure(figsize=(4.4 * ncols, (4.1 if compare else 3.2) * nrows + 1.2), layout="constrained")
    mains, resids = comparison_grid(fig, len(variables), ncols=ncols, residuals=compare)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    t = ds["t"].values
    steps = np.diff(t)
    constant = steps.size == 0 or np.allclose(steps, steps[0], rtol=1e-9)
    xlabel = r"time $t = k\eta$" if constant else r"time $t_k = \sum_{j<k}\eta_j$ (step-size schedule)"
    for ax, rax, var in zip(mains, resids, variables):
        curves = {}
        for i, method in enumerate(methods):
            da = ds[var].isel(method=i)
            color = colors[i % len(colors)]
            if method == "sim" and "seed" in da.dims:
                n = int(np.isfinite(da.values).any(axis=-1).sum()) if da.ndim > 1 else 1
                mean = da.mean("seed").values
                se = da.std("seed", ddof=1).values / np.sqrt(n) if n > 1 else None
                label = f"simulation: mean ± s.e. over {n} seeds" if se is not None else "simulation (1 seed)"
                band(ax, t, mean, se, color, label=label, lw=1.3, alpha=0.3)
            else:
                mean = (da.mean("seed") if "seed" in da.dims else da).values
                se = None
                if f"{var}_se" in ds and np.isfinite(ds[f"{var}_se"].isel(method=i).values).any():
                    s = ds[f"{var}_se"].isel(method=i)
                    se = (s.mean("seed") if "seed" in s.dims else s).values
                name = METHOD_NAMES.get(method, method)
                label = f"{name} ± Monte-Carlo s.e." if se is not None else name
                band(ax, t, mean, se, color, label=label, ls="--", lw=1.5, alpha=0.35)
            curves[method] = (mean, se, color)
        if rax is not None and curves["sim"][1] is not None:
            sim_mean, sim_se, _ = curves["sim"]
            for m in theories:
                mean, se, color = curves[m]
                residual(rax, t, sim_mean, sim_se, mean, se, color=color, names=("sim", METHOD_NAMES.get(m, m)))
        ax.set_title(TITLES.get(var, var), fontsize=10)
        ax.set_ylabel(YLABELS.get(var, var))
        set_xlabel(ax, rax, xlabel)
        ax.grid(alpha=0.3)
    legend(fig, axes=mains[:1] + [r for r in resids[:1] if r is not None], fontsize=9)
    title = run_title(ds, width=int(12.5 * fig.get_figwidth())) if title is None else title
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def figures(ds: xr.Dataset) -> dict:
    """The figures of a run: ``{"": order parameters}`` (:func:`plot_order_parameters`)."""
    return {"": plot_order_parameters(ds)}
