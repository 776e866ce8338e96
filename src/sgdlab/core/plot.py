"""Plot helpers shared by every wing: figures that never need a display or pyplot, saving, bands.

sgdlab never changes the user's matplotlib backend: figures are made with the object API
(:func:`figure`, :func:`subplots`), which needs no display and works under any backend, and
written with :func:`save_figure`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["Figure", "band", "save_figure", "subplots"]


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """``(fig, axes)`` like :func:`matplotlib.pyplot.subplots`, without pyplot's global state:
    the figure has its own Agg canvas, so no backend is selected and nothing needs a display."""
    kwargs.setdefault("layout", "constrained")
    fig = Figure(figsize=kwargs.pop("figsize", None))
    fig.set_layout_engine(kwargs.pop("layout"))
    axes = fig.subplots(nrows, ncols, **kwargs)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG at ``dpi``) beside its final path, then rename it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    tmp.replace(path)
    return path


def band(ax, x, mean, err, color, label: str | None = None, ls: str = "-", lw: float = 1.4, alpha: float = 0.2):
    """A line with a shaded band ``mean +- err`` (``err`` may be ``None``: line only)."""
    mean = np.asarray(mean, dtype=float)
    if err is not None:
        err = np.asarray(err, dtype=float)
        ax.fill_between(x, mean - err, mean + err, color=color, alpha=alpha, lw=0)
    return ax.plot(x, mean, color=color, ls=ls, lw=lw, label=label)[0]


def _label(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.integer, np.floating)) else str(v)


def sweep_variable(ds, variable: str | None) -> str:
    """The variable a sweep figure shows: ``variable``, else ``test_error`` if present, else the
    first data variable (not ``status`` or ``time``)."""
    names = [v for v in ds.data_vars if v not in ("status", "time") and ds[v].dtype.kind in "biuf"]
    if variable is None:
        variable = "test_error" if "test_error" in names else (names[0] if names else None)
    if variable not in names:
        from sgdlab.core.errors import ConfigError

        raise ConfigError(f"--var {variable!r} is not in the store; choose one of {sorted(names)}")
    return variable


def plot_sweep(ds, variable: str | None = None, t: float | None = None) -> Figure:
    """The natural figure of a sweep store (from the store alone, for any study).

    The variable is averaged over ``seed``, taken at time ``t`` (default: the last saved time)
    when the figure is a map, and shown per ``method``; any further dim of the point is taken
    at its first value (named in the title). 1-d sweep: the variable versus ``t`` for every
    swept value (a point without a time axis: versus the swept value); 2-d sweep: a heat map
    per method (a phase diagram). Pending or failed points are blank.
    """
    import json

    sweep_dims = json.loads(ds.attrs["sweep_dims"])
    variable = sweep_variable(ds, variable)
    da = ds[variable]
    if "seed" in da.dims:
        da = da.mean("seed")
    methods = list(map(str, ds["method"].values)) if "method" in da.dims else [""]
    if len(sweep_dims) == 2 and "t" in da.dims:
        times = ds["t"].values
        da = da.isel(t=int(np.argmin(np.abs(times - (times[-1] if t is None else t)))))
    extra = [d for d in da.dims if d not in sweep_dims and d not in ("method", "t")]
    note = ", ".join(f"{d} = {_label(ds[d].values[0]) if d in ds.coords else 0}" for d in extra)
    da = da.isel({d: 0 for d in extra})
    if len(sweep_dims) == 1:
        dim = sweep_dims[0]
        fig, ax = subplots(figsize=(6.4, 4.2))
        import matplotlib

        n = ds.sizes[dim]
        cmap = matplotlib.colormaps["viridis"]
        for j, method in enumerate(methods):
            sel = da.isel(method=j) if method else da
            if "t" in sel.dims:
                for i in range(n):
                    x = ds["time"].isel({dim: i}).values if "time" in ds else ds["t"].values
                    ax.plot(x, sel.isel({dim: i}).values, color=cmap(i / max(1, n - 1)), ls="-" if method in ("sim", "") else "--",
                            label=f"{dim} = {_label(ds[dim].values[i])}" + (f" ({method})" if method else ""))
                ax.set_xlabel(r"time $t$")
            else:
                ax.plot(np.arange(n), sel.values, marker="o", label=method or variable)
                ax.set_xticks(range(n), [_label(v) for v in ds[dim].values])
                ax.set_xlabel(dim)
        ax.set_ylabel(variable)
        ax.set_title(f"{variable}" + (f" ({note})" if note else ""), fontsize=10)
        ax.legend(fontsize=7, ncol=2 if len(ax.get_lines()) > 8 else 1)
        ax.grid(alpha=0.3)
        return fig
    if len(sweep_dims) != 2:
        raise ValueError(f"sweep figures are drawn for 1-d and 2-d sweeps; this store has {len(sweep_dims)} sweep dims {sweep_dims}")
    ydim, xdim = sweep_dims
    fig, axes = subplots(1, len(methods), figsize=(5.2 * len(methods), 4.2), squeeze=False)
    finite = da.values[np.isfinite(da.values)]
    scale = dict(vmin=finite.min(), vmax=finite.max()) if finite.size else {}  # one scale: methods compare
    for j, (ax, method) in enumerate(zip(axes.flat, methods)):
        sel = da.isel(method=j) if method else da
        grid = sel.transpose(ydim, xdim).values
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", **scale)
        ax.set_xticks(range(ds.sizes[xdim]), [_label(v) for v in ds[xdim].values])
        ax.set_yticks(range(ds.sizes[ydim]), [_label(v) for v in ds[ydim].values])
        ax.set_xlabel(xdim)
        ax.set_ylabel(ydim)
        when = f" at t = {_label(float(sel['t']))}" if "t" in sel.coords and sel["t"].ndim == 0 else ""
        ax.set_title(f"{method + ': ' if method else ''}{variable}{when}" + (f" ({note})" if note else ""), fontsize=10)
        for (yi, xi), val in np.ndenumerate(grid):
            if np.isfinite(val):
                ax.text(xi, yi, f"{val:.3g}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax, label=variable)
    return fig
