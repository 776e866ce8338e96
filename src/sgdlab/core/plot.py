"""Plot helpers shared by every wing: figures without pyplot, bands, legends, residual panels
(the figures of a sweep store: :mod:`sgdlab.core.sweep_plot`).

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
    "save_figure", "set_xlabel", "subplots", "zscore",
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
