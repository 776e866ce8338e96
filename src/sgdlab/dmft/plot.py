"""Figures from result Datasets. Functions take a Dataset and return a matplotlib Figure.

Simulation (``method = "sim"``) is drawn as the mean over seeds with a shaded band of one
standard deviation (the seed-to-seed spread) and an error bar of one standard error on the mean;
theory methods (no ``seed`` spread) are drawn as plain lines on the same axes.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never require a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

ORDER_PARAMETER_PANELS = ("m", "q", "train_loss", "test_loss", "train_error", "test_error")
TITLES = {
    "m": r"$m(t)$",
    "q": r"$C(t,t)$",
    "train_loss": "training loss",
    "test_loss": "test loss",
    "train_error": "training error",
    "test_error": "test error",
}


def plot_order_parameters(ds: xr.Dataset, variables=ORDER_PARAMETER_PANELS, title: str | None = None):
    """One panel per variable versus ``t``; every method of ``ds`` on the same axes."""
    variables = [v for v in variables if v in ds]
    ncols = 3
    nrows = int(np.ceil(len(variables) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t = ds["t"].values
    for ax, var in zip(axes.flat, variables):
        for i, method in enumerate(map(str, ds["method"].values)):
            da = ds[var].isel(method=i)
            color = colors[i % len(colors)]
            if "seed" in da.dims and np.isfinite(da.values).any() and da.sizes["seed"] > 1 and method == "sim":
                mean = da.mean("seed").values
                std = da.std("seed", ddof=1).values
                sem = std / np.sqrt(da.sizes["seed"])
                ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.2, lw=0)
                ax.plot(t, mean, color=color, lw=1.2, label=f"{method} (mean ± std, n={da.sizes['seed']})")
                step = max(1, len(t) // 15)
                ax.errorbar(t[::step], mean[::step], yerr=sem[::step], fmt="none", ecolor=color, capsize=2, lw=0.8)
            else:
                line = da.mean("seed") if "seed" in da.dims else da
                ax.plot(t, line.values, color=color, lw=1.5, ls="--" if method != "sim" else "-", label=str(method))
        ax.set_title(TITLES.get(var, var))
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(variables):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path) -> None:
    """Write a figure to ``path`` (PNG at 120 dpi) and close it."""
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(ds: xr.Dataset, variable: str = "test_error", t: float | None = None):
    """The natural figure of a sweep store.

    1-d sweep: ``variable`` versus ``t`` for every value of the swept key (mean over seeds; theory
    methods dashed). 2-d sweep: a heat map per method of ``variable`` at time ``t`` (default: the
    last saved time), averaged over seeds (a phase diagram). Pending or failed points are blank.
    """
    import json

    sweep_dims = json.loads(ds.attrs["sweep_dims"])
    if variable not in ds:
        raise ValueError(f"{variable!r} is not in the store; choose one of {sorted(ds.data_vars)}")
    methods = list(map(str, ds["method"].values))
    da = ds[variable]
    if "seed" in da.dims:
        da = da.mean("seed")
    if len(sweep_dims) == 1:
        dim = sweep_dims[0]
        fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
        cmap = plt.get_cmap("viridis")
        n = ds.sizes[dim]
        for i in range(n):
            for j, method in enumerate(methods):
                y = da.isel({dim: i, "method": j}).values
                x = ds["time"].isel({dim: i}).values if "time" in ds else ds["t"].values
                label = f"{dim} = {ds[dim].values[i]}" if j == 0 else None
                ax.plot(x, y, color=cmap(i / max(1, n - 1)), ls="-" if method == "sim" else "--", label=label)
        ax.set_xlabel("t")
        ax.set_ylabel(variable)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return fig
    if len(sweep_dims) != 2:
        raise ValueError(f"plot_sweep draws 1-d and 2-d sweeps; this store has {len(sweep_dims)} sweep dims {sweep_dims}")
    tsel = ds["t"].values[-1] if t is None else ds["t"].values[int(np.argmin(np.abs(ds["t"].values - t)))]
    da = da.isel(t=int(np.argmin(np.abs(ds["t"].values - tsel))))
    ydim, xdim = sweep_dims
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False, constrained_layout=True)
    for j, (ax, method) in enumerate(zip(axes.flat, methods)):
        grid = da.isel(method=j).transpose(ydim, xdim).values
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(ds.sizes[xdim]), [f"{v:g}" if isinstance(v, (int, float, np.floating)) else str(v) for v in ds[xdim].values])
        ax.set_yticks(range(ds.sizes[ydim]), [f"{v:g}" if isinstance(v, (int, float, np.floating)) else str(v) for v in ds[ydim].values])
        ax.set_xlabel(xdim)
        ax.set_ylabel(ydim)
        ax.set_title(f"{method}: {variable} at t = {float(tsel):g}")
        for (yi, xi), val in np.ndenumerate(grid):
            if np.isfinite(val):
                ax.text(xi, yi, f"{val:.3g}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax)
    return fig
