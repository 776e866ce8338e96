"""Plot helpers shared by every wing: figures without pyplot, bands, legends, residual panels, sweeps.

sgdlab never changes the user's matplotlib backend: figures are made with the object API
(:func:`figure`, :func:`subplots`), which needs no display and works under any backend, and
written with :func:`save_figure`.

Conventions of every sgdlab figure (issue "figures fit for a paper"):

- a simulation is drawn as its mean with a band of one standard error (:func:`band`), a theory
  with a band of its Monte-Carlo standard error where it has one; :func:`legend` puts every line
  and band in the legend (a band and its line share one entry);
- a comparison of a simulation with a theory has a residual panel under it
  (:func:`comparison_axes`, :func:`comparison_grid`, :func:`residual`): the difference in units
  of the combined standard error, ``z = (sim - theory) / sqrt(se_sim^2 + se_theory^2)``, with
  the band ``|z| <= 2`` drawn (where 95% of the points fall when the two agree);
- titles are built from the parameters actually run (:func:`param_text`), never from a
  config's free-text ``description`` alone, which ``--set`` overrides do not update.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "Figure", "band", "comparison_axes", "comparison_grid", "legend", "param_text", "residual",
    "save_figure", "set_xlabel", "subplots", "symbol", "zscore",
]

#: the y-label of every residual panel (``{sim}`` and ``{theory}`` filled in)
RESIDUAL_LABEL = "({sim} $-$ {theory})\n/ combined s.e."
#: the legend entry of the residual panels' band
BAND_LABEL = r"$|z| \leq 2$ (residual panels)"


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
    """A line with a shaded band ``mean +- err`` (``err`` may be ``None``: line only). The band
    is attached to the line, so that :func:`legend` draws both in one entry; returns the line."""
    mean = np.asarray(mean, dtype=float)
    poly = None
    if err is not None:
        err = np.asarray(err, dtype=float)
        poly = ax.fill_between(x, mean - err, mean + err, color=color, alpha=alpha, lw=0)
    line = ax.plot(x, mean, color=color, ls=ls, lw=lw, label=label)[0]
    line._sgdlab_band = poly
    return line


def legend(target, axes=None, **kwargs):
    """A legend of every labelled line, band and patch of ``axes`` (default: ``target``'s), one
    entry per label; a :func:`band`'s line and band are drawn together. ``target`` is an Axes or
    a Figure (then a figure legend, ``loc="outside lower center"`` by default)."""
    from matplotlib.axes import Axes

    if axes is None:
        axes = [target] if isinstance(target, Axes) else [a for a in target.axes if a.get_visible()]
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab in labels:
                continue
            poly = getattr(h, "_sgdlab_band", None)
            handles.append((poly, h) if poly is not None else h)
            labels.append(lab)
    if not handles:
        return None
    kwargs.setdefault("fontsize", 7)
    if isinstance(target, Axes):
        return target.legend(handles, labels, **kwargs)
    kwargs.setdefault("loc", "outside lower center")
    kwargs.setdefault("ncols", min(len(handles), 4))
    kwargs.setdefault("frameon", False)
    return target.legend(handles, labels, **kwargs)


#: differences below this fraction of a series' largest value are round-off, not signal
ROUNDOFF = 1e-9


def zscore(sim, sim_se, theory, theory_se=None) -> np.ndarray:
    """``(sim - theory) / sqrt(sim_se^2 + theory_se^2)``, the combined error floored at
    :data:`ROUNDOFF` times the largest ``|sim|, |theory|`` of the series (runs that all sit on
    the same point to round-off have no spread, and their z would be round-off over round-off);
    NaN where the combined error is not finite, or 0 with nothing to floor it."""
    sim, theory, sim_se = (np.asarray(a, dtype=float) for a in (sim, theory, sim_se))
    var = sim_se**2 + (0.0 if theory_se is None else np.asarray(theory_se, dtype=float) ** 2)
    values = np.abs(np.concatenate([np.ravel(sim), np.ravel(np.broadcast_to(theory, sim.shape))]))
    scale = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    var = np.maximum(var, (ROUNDOFF * scale) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (sim - theory) / np.sqrt(var)
    return np.where(np.isfinite(var) & (var > 0), z, np.nan)


def comparison_axes(where, height_ratios=(3, 1)):
    """``(main, residual)``: a main axis and, under it with the same x axis, a residual panel.
    ``where`` is a Figure (or SubFigure) to fill or a SubplotSpec of a grid."""
    from matplotlib.gridspec import SubplotSpec

    if isinstance(where, SubplotSpec):
        fig = where.get_gridspec().figure
        gs = where.subgridspec(2, 1, height_ratios=height_ratios, hspace=0.0)
    else:
        fig = where
        gs = fig.add_gridspec(2, 1, height_ratios=height_ratios, hspace=0.0)
    main = fig.add_subplot(gs[0])
    res = fig.add_subplot(gs[1], sharex=main)
    _pair(main, res)
    return main, res


def comparison_grid(fig: Figure, n: int, ncols: int = 3, height_ratios=(3, 1), residuals=True):
    """``(mains, residuals)`` for ``n`` panels in rows of ``ncols``, each with a residual panel
    under it (``residuals``: one bool for all, or one per panel; a panel without one gets the
    whole cell and ``None`` in the list). A short last row is centred, so that no slot is left
    empty. The main axes are created first (``fig.axes[:n]`` are them, in order), then the
    residual axes."""
    flags = [bool(residuals)] * n if isinstance(residuals, (bool, np.bool_)) else [bool(r) for r in residuals]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    gs = fig.add_gridspec(nrows, 2 * ncols)
    specs = []
    for i in range(n):
        r, c = divmod(i, ncols)
        offset = ncols - (n - r * ncols) if r == nrows - 1 else 0  # centre a short last row
        cell = gs[r, offset + 2 * c: offset + 2 * c + 2]
        specs.append(cell.subgridspec(2, 1, height_ratios=height_ratios, hspace=0.0) if flags[i] else cell)
    mains = [fig.add_subplot(s[0] if f else s) for s, f in zip(specs, flags)]
    res = [fig.add_subplot(s[1], sharex=m) if f else None for s, m, f in zip(specs, mains, flags)]
    for m, r in zip(mains, res):
        if r is not None:
            _pair(m, r)
    return mains, res


def _pair(main, res) -> None:
    main.tick_params(labelbottom=False)
    res._sgdlab_residual = True
    res.set_gid("residual")


def set_xlabel(main, res, text: str) -> None:
    """The x label of a comparison: on the residual panel (the bottom), and kept on the main
    axis for readers of the figure object, hidden there (the two share the x axis)."""
    main.set_xlabel(text)
    main.xaxis.label.set_visible(res is None)
    if res is not None:
        res.set_xlabel(text)


def residual(ax, x, sim, sim_se, theory, theory_se=None, color="C0", label: str | None = None,
             names: tuple[str, str] = ("sim", "theory"), **kwargs):
    """Draw ``z = (sim - theory) / combined s.e.`` (:func:`zscore`) against ``x`` on the residual
    panel ``ax`` (the band ``|z| <= 2``, the zero line and the y label ``names`` on the first
    call); the linear y axis always shows ``[-3, 3]`` and follows the data beyond. Returns the
    array ``z``."""
    z = zscore(sim, sim_se, theory, theory_se)
    if not getattr(ax, "_sgdlab_framed", False):
        ax.axhspan(-2, 2, color="0.88", lw=0, zorder=0, label=BAND_LABEL)
        ax.axhline(0, color="0.45", lw=0.8, zorder=1)
        ax.set_ylabel(RESIDUAL_LABEL.format(sim=names[0], theory=names[1]), fontsize=8)
        ax.grid(alpha=0.3)
        ax._sgdlab_framed = True
        ax._sgdlab_z = []
    kwargs.setdefault("lw", 1.1)
    ax.plot(x, z, color=color, label=label, **kwargs)
    ax._sgdlab_z.append(z)
    zs = np.concatenate([np.ravel(a) for a in ax._sgdlab_z])
    zs = zs[np.isfinite(zs)]
    lo, hi = (float(zs.min()), float(zs.max())) if zs.size else (0.0, 0.0)
    if max(-lo, hi) <= 2.8:
        ax.set_ylim(-3.2, 3.2)
        ax.set_yticks([-2, 0, 2])
    else:  # a linear axis that follows the data (the band stays |z| <= 2 at its true size)
        from matplotlib.ticker import MaxNLocator

        pad = 0.08 * (max(hi, 3.0) - min(lo, -3.0))
        ax.set_ylim(min(lo, -3.0) - pad, max(hi, 3.0) + pad)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True, min_n_ticks=2))
    return z


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, np.integer)):
        return f"{v:,}".replace(",", r"\,") if abs(v) >= 10_000 else str(v)
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def _visible_len(text: str) -> int:
    """About how many characters ``text`` shows (a mathtext command counts as one)."""
    import re

    return len(re.sub(r"[${}^_]", "", re.sub(r"\\[A-Za-z]+", "x", text)))


def param_text(head: str, params, width: int = 110) -> str:
    """A title of the parameters actually run: ``head`` then ``symbol = value`` pairs (mathtext
    symbols, e.g. ``(r"\\eta", 0.1)``; ``None`` values skipped), wrapped at ``width`` characters
    of plain text (wrapping never breaks a pair)."""
    pairs = [f"${s}$ = {_fmt(v)}" if s else str(v) for s, v in params if v is not None]
    lines = textwrap.wrap(head, width) if head else []
    line = ""
    for p in pairs:
        if line and _visible_len(line) + _visible_len(p) + 2 > width:
            lines.append(line)
            line = ""
        line = f"{line}, {p}" if line else p
    if line:
        lines.append(line)
    return "\n".join(lines)


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
