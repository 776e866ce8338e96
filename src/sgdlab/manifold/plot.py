"""Figure, summary table and bias statistics of a manifold Dataset, from the Dataset alone.

Everything here reads only the Dataset of :func:`sgdlab.manifold.experiment.run`, also as read
back from a zarr store (:func:`sgdlab.core.store.load`): the figure settings come from the config
JSON in its attrs. No pyplot: figures are made with :func:`sgdlab.core.plot.subplots`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from sgdlab.core.plot import Figure, band, comparison_grid, legend, param_text, residual, set_xlabel
from sgdlab.core.report import table as rich_table

__all__ = ["bias_summary", "figures", "observables", "plot_manifold", "simulation_bias", "table"]


def observables(ds: xr.Dataset) -> list[str]:
    """The observables of the Dataset (every variable along ``method``), in the model's order."""
    names = ds.attrs.get("observables")
    if names:
        return [n for n in json.loads(names) if n in ds.data_vars]
    return [str(v) for v in ds.data_vars if "method" in ds[v].dims]


def _stochastic(ds: xr.Dataset) -> bool:
    return bool(int(ds.attrs.get("limit_stochastic", 0)))


def simulation_bias(ds: xr.Dataset, var: str) -> xr.Dataset:
    """Bias of the simulation against the limit: ``bias(eta, t) = mean_seed sim - mean_seed limit``
    and its standard error ``se`` (seed-to-seed spread of both, over the number of runs)."""
    sim, lim = ds[var].sel({"method": "sim"}), ds[var].sel({"method": "limit"})
    n = ds.sizes["seed"]
    lim_var = lim.var("seed", ddof=1) if _stochastic(ds) else 0.0 * lim.isel(seed=0)
    return xr.Dataset({"bias": sim.mean("seed") - lim.mean("seed"), "se": np.sqrt(sim.var("seed", ddof=1) / n + lim_var / n)})


def bias_summary(ds: xr.Dataset, var: str) -> list[dict]:
    """Per eta: the largest ``|bias|`` over ``t > 0`` (and its t and SE) of observable ``var``
    (``t = 0`` compares ``w0`` with ``Phi(w0)``: the fast phase, instantaneous in the limit)."""
    b = simulation_bias(ds, var)
    rows = []
    for ie, eta in enumerate(ds.eta.values):
        bias, se = np.abs(b.bias.values[ie]), b.se.values[ie]
        j = 1 + int(np.nanargmax(bias[1:])) if bias.size > 1 else 0  # t > 0: after the fast phase
        rows.append({"eta": float(eta), "sigma": float(ds.sigma.values[ie]), "max_bias": float(bias[j]), "se": float(se[j]), "t": float(ds.t.values[j])})
    return rows


def _plot_settings(ds: xr.Dataset) -> tuple[list[str] | None, dict]:
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        cfg = {}
    return (cfg.get("plot") or {}).get("variables"), cfg


#: mathtext of the built-in observables (the y labels; titles are the observables' long names)
SYMBOLS = {
    "C": r"$C = x^2 - y^2$", "xy": r"$xy$", "loss": r"loss $L(w)$",
    "delta": r"$\delta = p_1 - p_2$", "p1": r"$p_1 = a_1 b_1$", "p2": r"$p_2 = a_2 b_2$",
    "c1": r"$c_1 = a_1^2 - b_1^2$", "c2": r"$c_2 = a_2^2 - b_2^2$",
    "weighted_l1": r"$\sum_l m_l |\beta_l|$", "weighted_l2": r"$\sum_l m_l \beta_l^2$",
    "off_support_l1": r"$\sum_{l \notin \mathrm{supp}\,\beta^*} |\beta_l|$", "recovery_error": r"$|\beta - \beta^*|$",
    "imbalance": r"$\frac{1}{d}\sum_l (u_l^2 - v_l^2)$", "trace_hessian": r"$\mathrm{tr}\,H$", "weight_norm2": r"$|w|^2$",
}


_SHORT = {"C": "C", "xy": "xy", "delta": r"\delta", "p1": "p_1", "p2": "p_2", "c1": "c_1", "c2": "c_2"}


def _math(text: str) -> str:
    """The time scales of a plain-text label in mathtext (a long note after ``none:`` shortened)."""
    if "(none" in text:
        return r"rescaled time $\tau$ (no slow motion on either time scale)"
    for plain, math_ in (("tau = eta^2 sigma^2 k", r"$\tau = \eta^2\sigma^2 k$"), ("tau = eta sigma^2 k", r"$\tau = \eta\sigma^2 k$"),
                         ("eta^2 sigma^2 k", r"$\eta^2\sigma^2 k$"), ("eta sigma^2 k", r"$\eta\sigma^2 k$")):
        text = text.replace(plain, math_)
    return text


def _title(ds: xr.Dataset, cfg: dict, width: int) -> str:
    """The title from the run's attrs and config (``--set`` overrides included)."""
    a = ds.attrs
    noise, model, sim = cfg.get("noise", {}), cfg.get("model", {}), cfg.get("simulation", {})
    head = (f"{a.get('model', model.get('name', ''))}, {str(a.get('noise', noise.get('name', ''))).replace('_', ' ')} "
            f"({str(a.get('noise_kind', '')).replace('_', '-')})")
    sig = np.asarray(ds.sigma.values, dtype=float)
    params = [("", f"simulation ({ds.sizes['seed']} runs per eta) vs the eta -> 0 limit"), (r"\eta", ", ".join(f"{e:g}" for e in ds.eta.values)),
              (r"\sigma", ", ".join(f"{v:.3g}" for v in sig) if np.ptp(sig) > 0 else (float(sig[0]) if np.isfinite(sig[0]) else None)),
              ("b", noise.get("batch_size")), ("n", model.get("n")), ("d", model.get("d")), ("", f"width {model['width']}" if model.get("width") else None),
              (r"w_0", "(" + ", ".join(f"{v:g}" for v in model["init"]) + ")" if model.get("init") and len(model["init"]) <= 6 else None),
              (r"\tau_{\max}", sim.get("tau_max"))]
    return param_text(head, params, width)


def plot_manifold(ds: xr.Dataset, variables: list[str] | None = None, title: str | None = None):
    """Simulation for every eta (mean over runs, band one standard error) with the limit (black,
    dashed; band one standard deviation of its paths when stochastic) against rescaled time, one
    panel per observable with a residual panel under it (``(sim - limit) / combined s.e.`` for
    ``t > 0``; at ``t = 0`` the simulation is at ``w0``, the limit at ``Phi(w0)``), and a last
    panel ``|sim - limit| / eta`` of the first observable (curves collapse when the bias is
    O(eta)) or, for a stochastic limit, its variance over runs and over the limit's paths.
    ``title`` defaults to the run's parameters. Returns a matplotlib Figure."""
    import matplotlib

    if variables is None:
        variables = [v for v in observables(ds) if v != "loss"][:5]
    panels = len(variables) + 1
    ncols = 2 if panels in (2, 4) else min(3, panels)  # full rows where possible
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(4.5 * ncols, 4.2 * nrows + 1.0), layout="constrained")
    mains, resids = comparison_grid(fig, panels, ncols=ncols, residuals=[True] * len(variables) + [False])
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    t = ds.t.values
    n = ds.sizes["seed"]
    stochastic = _stochastic(ds)
    t_label = _math(ds.t.attrs.get("long_name", "t"))
    for ax, rax, var in zip(mains, resids, variables):
        b = simulation_bias(ds, var)
        lim = ds[var].sel({"method": "limit"}).isel(eta=0)
        for ie, eta in enumerate(ds.eta.values):
            da = ds[var].sel({"method": "sim"}).isel(eta=ie)
            c = colors[ie % len(colors)]
            label = rf"simulation $\eta$ = {eta:g}, $\sigma$ = {float(ds.sigma.values[ie]):.3g}: mean ± s.e. ({n} runs)"
            band(ax, t, da.mean("seed").values, da.std("seed", ddof=1).values / np.sqrt(n), c, label=label, lw=1.3, alpha=0.25)
            residual(rax, t[1:], b.bias.values[ie, 1:], b.se.values[ie, 1:], 0.0, None, color=c, names=("sim", "limit"))
        label = "limit" + (f": mean of {n} paths ± std of the paths" if stochastic else r" ($\eta \to 0$)")
        band(ax, t, lim.mean("seed").values, lim.std("seed", ddof=1).values if stochastic else None, "k", label=label, ls="--", lw=1.5, alpha=0.08)
        ax.set_title(ds[var].attrs.get("long_name", var), fontsize=10)
        ax.set_ylabel(SYMBOLS.get(var, var.replace("_", " ")))
        set_xlabel(ax, rax, t_label)
        ax.grid(alpha=0.3)
    ax = mains[len(variables)]
    main = variables[0]
    sym = _SHORT.get(main, "o")  # o: the observable named in the panel's title
    if stochastic:  # the mean bias is noise here: compare the spread (the diffusion of the limit SDE)
        for ie, eta in enumerate(ds.eta.values):
            var_sim = ds[main].sel({"method": "sim"}).isel(eta=ie).var("seed", ddof=1).values
            ax.plot(t, var_sim, color=colors[ie % len(colors)], lw=1.3, label=rf"simulation $\eta$ = {eta:g} (over {n} runs)")
        ax.plot(t, ds[main].sel({"method": "limit"}).isel(eta=0).var("seed", ddof=1).values, "k--", lw=1.5, label=f"limit SDE (over {n} paths)")
        ax.set_title((f"o = {main}: " if sym == "o" else f"{main}: ") + "variance over runs / paths", fontsize=10)
        ax.set_ylabel(rf"$\mathrm{{Var}}\,{sym}$")
    else:
        b = simulation_bias(ds, main)
        for ie, eta in enumerate(ds.eta.values):
            c = colors[ie % len(colors)]
            bias, se = np.abs(b.bias.values[ie, 1:]), b.se.values[ie, 1:]  # t > 0 (after the fast phase)
            poly = ax.fill_between(t[1:], np.maximum(bias - 2 * se, 0) / eta, (bias + 2 * se) / eta, color=c, alpha=0.15, lw=0)
            line = ax.plot(t[1:], bias / eta, color=c, lw=1.3, label=rf"$\eta$ = {eta:g} (band: ± 2 s.e.)")[0]
            line._sgdlab_band = poly
        ax.set_title((f"o = {main}: " if sym == "o" else f"{main}: ") + "bias over eta (collapses when O(eta))", fontsize=10)
        ax.set_ylabel(rf"$|\langle {sym}\rangle_{{\rm sim}} - {{{sym}}}_{{\rm limit}}| / \eta$")
    ax.set_xlabel(t_label)
    ax.grid(alpha=0.3)
    legend(ax)
    legend(fig, axes=[mains[0], resids[0]], fontsize=8, ncols=2)
    _, cfg = _plot_settings(ds)
    fig.suptitle(title or _title(ds, cfg, int(12.5 * fig.get_figwidth())), fontsize=10)
    return fig


def figures(ds: xr.Dataset) -> dict:
    """``{"": the figure}`` (:func:`plot_manifold` with the config's ``plot.variables``; the
    title is built from the run's parameters, not from the config's ``description``)."""
    variables, _ = _plot_settings(ds)
    return {"": plot_manifold(ds, variables=variables)}


def table(ds: xr.Dataset):
    """Per observable and eta: the largest ``|sim - limit|`` over ``t > 0``, its SE and the ratio
    to the next (smaller) eta (about 2 when eta halves and the bias is O(eta))."""
    a = ds.attrs
    title = f"{a.get('noise')} on {a.get('model')}: {a.get('noise_kind')}, {a.get('time_scale')}"
    rows = []
    for var in observables(ds):
        summary = bias_summary(ds, var)
        for i, row in enumerate(summary):
            nxt = summary[i + 1]["max_bias"] if i + 1 < len(summary) else 0.0
            rows.append([
                var if i == 0 else "",
                f"{row['eta']:g}",
                f"{row['sigma']:.4g}",
                str(int(ds.steps_per_save.values[i])),
                f"{row['max_bias']:.3e}",
                f"{row['se']:.1e}",
                f"{row['t']:.3g}",
                f"{row['max_bias'] / nxt:.2f}" if nxt > 0 else "",
            ])
    return rich_table(title, ["observable", "eta", "sigma", "steps/save", "max|sim-limit|", "SE", "at t", "ratio"], rows)
