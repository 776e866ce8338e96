"""The figures of a sweep store (``sgdlab plot STORE``): one curve per method over a 1-d sweep
with a residual panel, or heat maps (value +- s.e. per cell, and a z map when a simulation and a
theory are both present) over a 2-d sweep; the conventions of :mod:`sgdlab.core.plot`."""

from __future__ import annotations

import numpy as np

from sgdlab.core.plot import Figure, band, comparison_axes, legend, residual, set_xlabel, subplots, zscore

__all__ = ["SYMBOLS", "plot_sweep", "sweep_variable", "symbol"]


#: readable names (with symbols) of common config keys and variables; anything else is shown as is
SYMBOLS = {
    "algorithm.batch_fraction": "batch fraction $b$",
    "algorithm.persistence_time": r"persistence time $\tau$", "algorithm.eta": r"learning rate $\eta$",
    "algorithm.temperature": "temperature $T$", "algorithm.momentum": r"momentum $\beta$",
    "problem.alpha": r"sample ratio $\alpha = n/d$", "problem.delta": r"cluster variance $\Delta$",
    "problem.ridge": r"ridge $\lambda$", "simulation.d": "dimension $d$", "dynamics.eps": r"$\varepsilon$",
    "test_error": r"test error $\epsilon_{\rm test}$",
    "train_error": r"training error $\epsilon_{\rm train}$",
    "test_loss": r"test loss $\mathcal{L}_{\rm test}$",
    "train_loss": r"training loss $\mathcal{L}_{\rm train}$", "m": "overlap $m$",
    "q": "self-overlap $C(t,t)$", "T_eff": r"effective temperature $T_{\rm eff}$",
    "T_short": r"short-lag temperature $T_{\rm short}$", "D_inf": r"replica distance $D_\infty$",
    "kappa_max": r"largest margin $\kappa_{\max}$", "risk_mean": "population risk $R(t)$",
}


def symbol(name: str) -> str:
    """The readable name of a config key or variable (:data:`SYMBOLS`), else ``name``."""
    return SYMBOLS.get(name, name)


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


def _sweep_error(ds, variable: str, da):
    """The standard error of ``da`` (``ds[variable]`` averaged over ``seed``) per point and
    method: the seed-to-seed spread over ``sqrt(seeds)`` and the stored ``<variable>_se`` or
    ``<variable>_err`` combined in quadrature; ``None`` where neither exists."""
    parts = []
    raw = ds[variable]
    if "seed" in raw.dims and raw.sizes["seed"] > 1:
        parts.append((raw.std("seed", ddof=1) / np.sqrt(raw.sizes["seed"])).fillna(0.0))
    for name in (f"{variable}_se", f"{variable}_err"):
        if name in ds:
            e = ds[name].mean("seed") if "seed" in ds[name].dims else ds[name]
            parts.append(e.fillna(0.0))
    if not parts:
        return None
    total = sum(p**2 for p in parts) ** 0.5
    return total.broadcast_like(da).transpose(*da.dims)


def _text_colour(cmap, norm, value) -> str:
    r, g, b, _ = cmap(norm(value))
    return "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"


def _heat_map(fig, ax, grid, err, xdim, ydim, ds, cmap, title, cbar_label, norm=None, fmt=None):
    """One heat map of ``grid (y, x)`` with its colour bar and the value (± ``err``) in each cell,
    in black or white after the cell's luminance."""
    import matplotlib.colors as mcolors
    from matplotlib import colormaps

    cmap = colormaps[cmap]
    finite = grid[np.isfinite(grid)]
    if norm is None:
        norm = mcolors.Normalize(finite.min(), finite.max()) if finite.size else mcolors.Normalize(0, 1)
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(ds.sizes[xdim]), [_label(v) for v in ds[xdim].values])
    ax.set_yticks(range(ds.sizes[ydim]), [_label(v) for v in ds[ydim].values])
    ax.set_xlabel(symbol(xdim))
    ax.set_ylabel(symbol(ydim))
    ax.set_title(title, fontsize=9)
    size = max(6.0, min(9.0, 36.0 / max(grid.shape)))
    for (yi, xi), val in np.ndenumerate(grid):
        if not np.isfinite(val):
            continue
        text = fmt(val) if fmt else f"{val:.3g}"
        if err is not None and np.isfinite(err[yi, xi]) and err[yi, xi] > 0 and grid.size <= 49:
            text += f"\n± {err[yi, xi]:.1g}"
        bold = fmt is not None and abs(val) > 2
        ax.text(xi, yi, text, ha="center", va="center", fontsize=size, color=_text_colour(cmap, norm, val),
                fontweight="bold" if bold else "normal")
    fig.colorbar(im, ax=ax, label=cbar_label)


def plot_sweep(ds, variable: str | None = None, t: float | None = None) -> Figure:
    """The natural figure of a sweep store (from the store alone, for any study).

    The variable is averaged over ``seed`` (its standard error: the seed spread over
    ``sqrt(seeds)``, with a stored ``<var>_se`` / ``<var>_err`` in quadrature), taken at time
    ``t`` (default: the last saved time) when the figure is a map, and shown per ``method``; any
    further dim of the point is taken at its first value (named in the title). 1-d sweep: the
    variable versus ``t`` for every swept value (a point without a time axis: versus the swept
    value), with a residual panel per theory when a simulation is beside it; 2-d sweep: a heat
    map per method (a phase diagram) and, when ``sim`` and a theory both carry errors, a map of
    ``(sim - theory) / combined s.e.`` (cells beyond 2 in bold). Pending or failed points are
    blank.
    """
    import json

    import matplotlib.colors as mcolors

    sweep_dims = json.loads(ds.attrs["sweep_dims"])
    variable = sweep_variable(ds, variable)
    da = ds[variable]
    if "seed" in da.dims:
        da = da.mean("seed")
    err = _sweep_error(ds, variable, da)
    methods = list(map(str, ds["method"].values)) if "method" in da.dims else [""]
    when = ""
    if len(sweep_dims) == 2 and "t" in da.dims:
        times = ds["t"].values
        it = int(np.argmin(np.abs(times - (times[-1] if t is None else t))))
        da = da.isel(t=it)
        err = err.isel(t=it) if err is not None else None
        when = f" at $t$ = {_label(float(times[it]))}"
    extra = [d for d in da.dims if d not in sweep_dims and d not in ("method", "t")]
    note = ", ".join(f"{d} = {_label(ds[d].values[0]) if d in ds.coords else 0}" for d in extra)
    da = da.isel({d: 0 for d in extra})
    err = err.isel({d: 0 for d in extra}) if err is not None else None
    theories = [m for m in methods if m not in ("sim", "")] if "sim" in methods else []

    def pick(a, m):  # the method m of a (a sweep without a method dim: a itself)
        return None if a is None else a.isel(method=methods.index(m)) if m else a

    name = symbol(variable)
    if len(sweep_dims) == 1:
        return _sweep_curves(ds, da, err, sweep_dims[0], methods, theories, name, note, pick)
    if len(sweep_dims) != 2:
        raise ValueError(f"sweep figures are drawn for 1-d and 2-d sweeps; this store has {len(sweep_dims)} sweep dims {sweep_dims}")
    ydim, xdim = sweep_dims
    has_err = [m for m in methods if err is not None and (pick(err, m).values > 0).any()]
    compared = [m for m in theories if {"sim", m} <= set(has_err)]
    panels = len(methods) + len(compared)
    fig, axes = subplots(1, panels, figsize=(4.9 * panels, 4.3), squeeze=False)
    finite = da.values[np.isfinite(da.values)]
    norm = mcolors.Normalize(finite.min(), finite.max()) if finite.size else None  # one scale: methods compare
    suffix = f"{when}" + (f" ({note})" if note else "")
    grid = lambda a: a.transpose(ydim, xdim).values  # noqa: E731
    for ax, m in zip(axes.flat, methods):
        e = grid(pick(err, m)) if err is not None else None
        _heat_map(fig, ax, grid(pick(da, m)), e, xdim, ydim, ds, "viridis",
                  f"{m + ': ' if m else ''}{name}{suffix}" + (" (± s.e.)" if e is not None else ""), name, norm=norm)
    for ax, m in zip(list(axes.flat)[len(methods):], compared):
        z = pick(da, "sim").copy(data=zscore(pick(da, "sim").values, pick(err, "sim").values, pick(da, m).values, pick(err, m).values))
        lim = max(3.0, float(np.nanmax(np.abs(z.values))) if np.isfinite(z.values).any() else 0.0)
        _heat_map(fig, ax, grid(z), None, xdim, ydim, ds, "RdBu_r", f"{name}: sim vs {m} (bold: |z| > 2)",
                  f"(sim $-$ {m}) / combined s.e.", norm=mcolors.Normalize(-lim, lim), fmt=lambda v: f"{v:+.1f}")
    return fig


def _sweep_curves(ds, da, err, dim, methods, theories, name, note, pick):
    """The 1-d sweep figure (see :func:`plot_sweep`)."""
    from matplotlib import colormaps

    n, cmap, timed = ds.sizes[dim], colormaps["viridis"], "t" in da.dims
    res_ok = timed and bool(theories) and err is not None
    fig = Figure(figsize=(6.6, 5.4 if res_ok else 4.4), layout="constrained")
    ax, rax = comparison_axes(fig) if res_ok else (fig.add_subplot(), None)
    for m in methods:
        sel, esel = pick(da, m), pick(err, m)
        if not timed:
            e = esel.values if esel is not None else None
            ax.errorbar(np.arange(n), sel.values, yerr=e, marker="o", capsize=3, label=(m or name) + (" (± s.e.)" if e is not None else ""))
            ax.set_xticks(range(n), [_label(v) for v in ds[dim].values])
            continue
        for i in range(n):
            x = ds["time"].isel({dim: i}).values if "time" in ds else ds["t"].values
            c, one = cmap(i / max(1, n - 1)), {dim: i}
            band(ax, x, sel.isel(one).values, esel.isel(one).values if esel is not None else None, c,
                 label=f"{symbol(dim)} = {_label(ds[dim].values[i])}" + (f", {m}" if m else ""), ls="-" if m in ("sim", "") else "--", lw=1.3)
            if rax is not None and m in theories:
                residual(rax, x, pick(da, "sim").isel(one).values, pick(err, "sim").isel(one).values, sel.isel(one).values,
                         esel.isel(one).values, color=c, names=("sim", m), ls=["--", ":", "-."][theories.index(m) % 3])
    if timed and ds["t"].size > 2 and ds["t"].values.min() > 0 and ds["t"].values.max() / ds["t"].values.min() > 100:
        ax.set_xscale("log")  # dynamics over decades (e.g. the two_layer wing's log-spaced times)
    set_xlabel(ax, rax, r"time $t$" if timed else symbol(dim))
    ax.set_ylabel(name)
    ax.set_title(f"{name}" + (f" ({note})" if note else ""), fontsize=10)
    ax.grid(alpha=0.3)
    legend(fig if res_ok else ax, axes=[ax] + ([rax] if rax is not None else []),
           **({} if res_ok else {"ncols": 2 if len(ax.get_lines()) > 8 else 1}))
    return fig
