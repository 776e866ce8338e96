"""The rules of every sgdlab figure, checked on the structure of the figures drawn from small
synthetic Datasets (no simulation runs): a residual panel under each comparison whose y label
names the combined error, every labelled line / band / patch in a legend, no visible axis
without data, non-empty axis labels, colour-bar labels, readable cell text on heat maps, no
overlapping title / label / legend boxes, and run titles built from the parameters run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from sgdlab.core.plot import Figure, comparison_axes, residual, zscore
from sgdlab.core.sweep_plot import plot_sweep

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- the checks


def _is_colorbar(ax) -> bool:
    return hasattr(ax, "_colorbar")


def _legend_texts(fig) -> set[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return {t.get_text() for lg in legends for t in lg.get_texts()}


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.images or ax.patches)


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


def check_figure(fig, residuals: int | None = None) -> list:
    """Assert the rules on ``fig``; return its residual axes (``residuals``: how many expected)."""
    fig.set_dpi(50)  # layout is resolution-independent; a coarse raster keeps the test fast
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    in_legend = _legend_texts(fig)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    resid = [ax for ax in visible if ax.get_gid() == "residual"]
    if residuals is not None:
        assert len(resid) == residuals
    for ax in visible:
        if _is_colorbar(ax):
            assert ax.get_ylabel().strip() or ax.get_xlabel().strip(), "a colour bar without a label"
            continue
        assert _has_data(ax), f"visible axis {ax.get_title()!r} has no data"
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"axis {ax.get_title()!r} lacks a label"
        for artist in [*ax.lines, *ax.collections, *ax.patches]:
            label = artist.get_label()
            if isinstance(artist, (Line2D, PolyCollection, Patch)) and label and not label.startswith("_"):
                assert label in in_legend, f"{label!r} is drawn but not in a legend"
    for ax in resid:
        assert "combined" in ax.get_ylabel()
        band = [p for p in ax.patches if p.get_label().startswith("$|z|")]
        assert band and np.allclose(sorted(band[0].get_bbox().get_points()[:, 1]), [-2, 2]), "the |z| <= 2 band"
    # no collisions: titles, visible axis labels, the suptitle and figure legends are disjoint
    boxes = []
    for ax in visible:
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
            if text.get_visible() and text.get_text():
                boxes.append((text.get_text(), text.get_window_extent(renderer)))
    for ax in visible:  # a legend placed outside its axis takes part too
        lg = ax.get_legend()
        if lg is not None and not ax.get_window_extent(renderer).contains(*lg.get_window_extent(renderer).get_points().mean(0)):
            boxes.append(("axis legend", lg.get_window_extent(renderer)))
    if fig._suptitle is not None:
        boxes.append(("suptitle", fig._suptitle.get_window_extent(renderer)))
    for lg in fig.legends:
        boxes.append(("figure legend", lg.get_window_extent(renderer)))
        for ax in visible:
            assert not _boxes_overlap(lg.get_window_extent(renderer), ax.get_window_extent(renderer)), "legend over an axis"
    for i, (na, a) in enumerate(boxes):
        for nb, b in boxes[i + 1:]:
            assert not _boxes_overlap(a, b), f"{na!r} collides with {nb!r}"
    return resid


# ---------------------------------------------------------------- the residual helper


def test_zscore_and_residual_line_are_the_difference_over_the_combined_error():
    sim, se_sim = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.3, 0.4, 0.0, 0.5])
    th, se_th = np.array([1.0, 1.0, 3.0, 5.0]), np.array([0.4, 0.3, 0.0, 1.2])
    z = zscore(sim, se_sim, th, se_th)
    assert z[0] == 0.0 and z[1] == pytest.approx(1 / 0.5) and z[2] == 0.0 and z[3] == pytest.approx(-1 / 1.3)
    # runs on one point to round-off: the combined error is floored at ROUNDOFF x the series' scale
    assert zscore([1.0 + 1e-13], [0.0], [1.0], [0.0])[0] == pytest.approx(1e-13 / 1e-9, rel=1e-3)
    assert np.isnan(zscore([0.0], [0.0], [0.0], [0.0])[0]) and np.isnan(zscore([1.0], [np.nan], [1.0])[0])
    fig = Figure()
    ax, rax = comparison_axes(fig)
    ax.plot([0, 1, 2, 3], sim, label="sim")
    residual(rax, [0, 1, 2, 3], sim, se_sim, th, se_th, names=("sim", "theory"))
    line = [ln for ln in rax.lines if len(ln.get_xdata()) == 4][0]
    np.testing.assert_allclose(line.get_ydata(), z)
    assert rax.get_shared_x_axes().joined(ax, rax) and rax.get_ylim()[0] <= -3 and rax.get_ylim()[1] >= 3


# ---------------------------------------------------------------- dmft run


def _dmft_dataset(batch_fraction=0.5, momentum=0.6) -> xr.Dataset:
    t = np.arange(31) * 0.1
    seeds = 4
    curve = {"m": 0.5 * (1 - np.exp(-t)), "q": 0.5 + 0.5 * np.exp(-t), "test_error": 0.15 + 0.35 * np.exp(-t)}
    data = {}
    for name, c in curve.items():
        sim = c + 0.01 * RNG.standard_normal((seeds, t.size))
        data[name] = (("method", "seed", "t"), np.stack([sim, np.broadcast_to(c, (seeds, t.size))]))
        data[f"{name}_se"] = (("method", "seed", "t"), np.stack([np.full((seeds, t.size), np.nan), np.full((seeds, t.size), 0.003)]))
    cfg = {"name": "default", "description": "persistent SGD (b=0.3, no momentum): simulation and DMFT",
           "problem": {"clusters": 2, "alpha": 2.0, "delta": 0.5, "loss": "square", "ridge": 0.1, "rho": 0.5, "m0": 0.0, "sigma0": 1.0},
           "algorithm": {"name": "persistent_sgd", "eta": 0.1, "batch_fraction": batch_fraction, "persistence_time": 2.0,
                         "momentum": momentum, "nesterov": True, "temperature": 0.0, "normalisation": "unnormalised"},
           "simulation": {"d": 2000, "seeds": seeds}, "theory": {"methods": ["dmft"], "samples": 10000, "solves": 4}}
    return xr.Dataset(data, coords={"method": ["sim", "dmft"], "seed": np.arange(seeds), "t": t},
                      attrs={"config": json.dumps(cfg), "dmft_solves": 4})


def test_dmft_run_figure_has_residuals_legend_and_a_title_of_the_parameters_run():
    from sgdlab.dmft.plot import figures

    fig = figures(_dmft_dataset())[""]
    check_figure(fig, residuals=3)
    title = fig._suptitle.get_text()
    # the config's description says b = 0.3 and no momentum: the title is built from what ran
    assert "$b$ = 0.5" in title and r"$\beta$ = 0.6" in title and "Nesterov" in title
    assert "b=0.3" not in title and "no momentum" not in title
    assert any("Monte-Carlo" in t for t in _legend_texts(fig))


def test_dmft_run_without_theory_has_no_residual_panels():
    from sgdlab.dmft.plot import figures

    ds = _dmft_dataset().isel(method=[0])
    check_figure(figures(ds)[""], residuals=0)


# ---------------------------------------------------------------- sweeps


def _sweep_dataset(dims: dict, seeds: int = 3, with_theory: bool = True) -> xr.Dataset:
    methods = ["sim", "dmft"] if with_theory else ["sim"]
    t = np.arange(6) * 2.0
    shape = [len(v) for v in dims.values()]
    base = RNG.uniform(0.1, 0.2, size=shape)[..., None, None, None] * np.ones((len(methods), seeds, t.size))
    noise = 0.005 * RNG.standard_normal(base.shape)
    noise[..., 1:, :, :] = 0.0  # the theory is the same on every seed
    names = [*dims, "method", "seed", "t"]
    ds = xr.Dataset({"test_error": (names, base + noise),
                     "test_error_se": (names, np.where(np.arange(len(methods))[:, None, None] > 0, 0.002, np.nan) * np.ones(base.shape)),
                     "status": (list(dims), np.ones(shape))},
                    coords={**dims, "method": methods, "seed": np.arange(seeds), "t": t})
    ds.attrs = {"kind": "sweep", "sweep_dims": json.dumps(list(dims)), "config": "{}"}
    return ds


def test_sweep_heat_maps_have_colour_bar_labels_a_residual_map_and_readable_cells():
    from matplotlib import colormaps

    ds = _sweep_dataset({"algorithm.batch_fraction": [0.2, 0.4, 0.6], "algorithm.persistence_time": [0.5, 1.0, 2.0, 4.0]})
    fig = plot_sweep(ds)
    check_figure(fig)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 3  # sim, dmft, and the residual map
    assert "combined" in [ax for ax in fig.axes if _is_colorbar(ax)][-1].get_ylabel()
    assert maps[0].get_ylabel() == r"batch fraction $b$" and maps[0].get_xlabel() == r"persistence time $\tau$"
    for ax in maps:  # cell text contrasts with its cell
        im = ax.images[0]
        grid = im.get_array()
        for text in ax.texts:
            x, y = (int(round(v)) for v in text.get_position())
            r, g, b, _ = colormaps[im.get_cmap().name](im.norm(grid[y, x]))
            luminance = 0.299 * r + 0.587 * g + 0.114 * b
            assert (text.get_color() == "k") == (luminance > 0.5)
    z = maps[2].images[0].get_array()
    sim, th = ds.test_error.isel(t=-1, method=0), ds.test_error.isel(t=-1, method=1).mean("seed")
    se = np.hypot(ds.test_error.isel(t=-1, method=0).std("seed", ddof=1) / np.sqrt(3), 0.002)
    np.testing.assert_allclose(z, ((sim.mean("seed") - th) / se).values, rtol=1e-10)


def test_one_dimensional_sweep_with_a_theory_has_a_residual_panel():
    ds = _sweep_dataset({"algorithm.batch_fraction": [0.2, 0.5]})
    check_figure(plot_sweep(ds), residuals=1)
    check_figure(plot_sweep(_sweep_dataset({"algorithm.batch_fraction": [0.2, 0.5]}, with_theory=False)), residuals=0)


# ---------------------------------------------------------------- sde


def test_sde_weak_order_figure_has_residuals_only_where_there_is_monte_carlo_error():
    from sgdlab.sde.plot import figures

    eta = np.array([1 / 8, 1 / 16, 1 / 32])
    models, obs = ["gf", "sme2", "smf"], ["mean", "inner"]
    order = np.array([[1, 1], [2, 1], [2, 2]])
    err = np.stack([[0.3 * eta**o for o in row] for row in order], axis=0).transpose(0, 2, 1)  # (model, eta, observable)
    se = np.zeros_like(err)
    se[1, :, 1] = 0.1 * err[1, :, 1]  # sme2 on the two-point observable by Monte Carlo
    ds = xr.Dataset(
        {"error": (("model", "eta", "observable"), err), "error_se": (("model", "eta", "observable"), se),
         "resolved": (("model", "eta", "observable"), np.ones_like(err, dtype=bool)),
         "expected_order": (("model", "observable"), order),
         "slope": (("model", "observable"), order.astype(float)), "slope_low": (("model", "observable"), order - 0.1),
         "slope_high": (("model", "observable"), order + 0.1)},
        coords={"model": models, "eta": eta, "observable": obs, "observable_description": ("observable", ["E X_1", "E <X^x, X^y>"])},
        attrs={"config": json.dumps({"name": "t", "description": "WRONG", "problem": {"kind": "least_squares", "features": [[1.0, 0.0]] * 4,
                                                                                    "starts": [[1.0, 0.0], [0.0, 1.0]], "batch_size": 2},
                                     "study": {"horizon": 1.0}, "solver": {"paths": 1000, "scheme": "weak2", "substeps": 2}})},
    )
    fig = figures(ds)[""]
    (rax,) = check_figure(fig, residuals=1)
    np.testing.assert_allclose([ln for ln in rax.lines if len(ln.get_xdata()) == 3][0].get_ydata(), -10.0)
    assert "WRONG" not in fig._suptitle.get_text() and "$B$ = 2" in fig._suptitle.get_text()


# ---------------------------------------------------------------- manifold


def _manifold_dataset(stochastic: bool) -> xr.Dataset:
    t = np.arange(6) * 0.2
    eta = np.array([0.05, 0.025])
    n = 16
    c = 3.0 * np.exp(-t)
    sim = c + 2 * eta[:, None, None] + 0.05 * RNG.standard_normal((2, n, t.size))
    lim = np.broadcast_to(c, (2, n, t.size)) + (0.1 * RNG.standard_normal((2, n, t.size)) if stochastic else 0.0)
    C = np.stack([sim, lim])
    xy = 1.0 + 0.01 * RNG.standard_normal(C.shape)
    ds = xr.Dataset({"C": (("method", "eta", "seed", "t"), C, {"long_name": "C = x^2 - y^2"}),
                     "xy": (("method", "eta", "seed", "t"), xy, {"long_name": "product xy"}),
                     "sigma": ("eta", [1.0, 1.0]), "steps_per_save": ("eta", [10, 40])},
                    coords={"method": ["sim", "limit"], "eta": eta, "seed": np.arange(n), "t": t})
    ds.t.attrs["long_name"] = "rescaled time (tau = eta^2 sigma^2 k)"
    ds.attrs = {"model": "hyperbola (xy - 1)^2 / 2", "noise": "label_noise", "noise_kind": "degenerate",
                "time_scale": "tau = eta^2 sigma^2 k", "limit_stochastic": int(stochastic), "observables": json.dumps(["C", "xy"]),
                "config": json.dumps({"description": "WRONG", "model": {"name": "hyperbola", "init": [2.0, 0.6]},
                                      "noise": {"name": "label_noise", "sigma": 1.0}, "simulation": {"tau_max": 1.0}})}
    return ds


@pytest.mark.parametrize("stochastic", [False, True])
def test_manifold_figure_has_a_residual_per_observable(stochastic):
    from sgdlab.manifold.plot import figures

    fig = figures(_manifold_dataset(stochastic))[""]
    check_figure(fig, residuals=2)
    assert "WRONG" not in fig._suptitle.get_text() and r"$\eta$ = 0.05, 0.025" in fig._suptitle.get_text()


# ---------------------------------------------------------------- two_layer


def _two_layer_dataset() -> xr.Dataset:
    t = np.logspace(-3, 0, 30)
    methods = ["flow", "sim", "reduced"]
    risk = 1.5 / (1 + (t / 0.2) ** 4)
    mean = np.stack([risk, risk + 0.01 * RNG.standard_normal(t.size), 0.98 * risk])
    err = np.stack([np.full(t.size, 0.002), np.full(t.size, 0.005), np.full(t.size, np.nan)])
    eps = np.array([1e-4, 1e-3, 1e-2])
    th_scan = np.stack([[np.nan, 0.5 * e**0.5, 0.6 * e**0.25, 0.7 * e ** (1 / 6)] for e in eps])
    d = np.array([100, 10_000])
    cfg = {"name": "x", "description": "WRONG", "problem": {"target": [0, 1, 1, 1], "activation": [0, 1, 1, 1], "degree": 3},
           "dynamics": {"eps": 0.01, "t_max": 1.0}, "flow": {"d": 1_000_000, "m": 8, "seeds": 2},
           "sgd": {"d": 100, "m": 8, "eta": 1e-4, "batch": 8, "seeds": 2}, "reduced": {"m": 8}}
    nan_plateau = np.full((3, 2), np.nan)
    return xr.Dataset(
        {"risk_mean": (("method", "t"), mean), "risk_err": (("method", "t"), err),
         "plateau_level": (("method", "plateau"), nan_plateau), "plateau_start": (("method", "plateau"), nan_plateau),
         "plateau_end": (("method", "plateau"), nan_plateau), "plateau_predicted": ("level", [1.5, 1.5, 1.0, 0.5, 0.0]),
         "t_half": (("method", "degree"), np.array([[np.nan, 0.2, 0.22, 0.24]] * 3)),
         "risk_scan": (("eps", "t_scan"), np.stack([1.5 / (1 + (t / (0.2 * e**0.25)) ** 4) for e in eps])),
         "t_half_scan": (("eps", "degree"), th_scan), "t1_log_factor": ("eps", np.log(1 / eps)),
         "t1_closed_form": ("eps", th_scan[:, 1]),
         "exponent": ("degree", [np.nan, 0.5, 0.25, 0.2]), "exponent_low": ("degree", [np.nan, 0.45, 0.2, 0.18]),
         "exponent_high": ("degree", [np.nan, 0.55, 0.3, 0.22]),
         "t_half_dscan": (("d", "degree"), np.array([[np.nan, 0.1, 0.12, 0.13], [np.nan, 0.2, 0.22, 0.24]])),
         "t_half_dscan_err": (("d", "degree"), np.full((2, 4), 0.005))},
        coords={"method": methods, "t": t, "t_scan": t, "eps": eps, "degree": np.arange(4), "level": np.arange(5),
                "plateau": np.arange(2), "d": d},
        attrs={"config": json.dumps(cfg), "eps": 0.01},
    )


def test_two_layer_figures_residual_reference_slopes_and_log_time():
    from sgdlab.two_layer.plot import figures

    figs = figures(_two_layer_dataset())
    assert set(figs) == {"", "eps_scaling", "d_scan"}
    check_figure(figs[""], residuals=1)
    assert figs[""].axes[0].get_xscale() == "log" and "WRONG" not in figs[""]._suptitle.get_text()
    check_figure(figs["eps_scaling"], residuals=0)
    texts = _legend_texts(figs["eps_scaling"])
    assert {"slope $1/2$ (theory) through $t_1 / L(\\varepsilon)$", "slope $1/4$ (theory) through $t_2$"} <= texts
    assert any("the CI excludes 1/6" in t for t in texts)  # 1/6 = 0.167 is outside [0.18, 0.22]
    check_figure(figs["d_scan"], residuals=0)


# ---------------------------------------------------------------- effective noise


def test_noise_figures_distance_has_a_residual():
    from sgdlab.dmft.noise_plot import figures

    t = np.arange(20) * 0.5
    lag = np.arange(5) * 0.1
    D = 0.01 * (1 - np.exp(-t)) + 0.0005 * RNG.standard_normal((4, t.size))
    ds = xr.Dataset(
        {"D": (("seed", "t"), D), "D_dmft": (("dmft_seed", "t"), 0.01 * (1 - np.exp(-t)) + 0.0002 * RNG.standard_normal((3, t.size))),
         "dC": (("method", "lag"), np.stack([lag * 0.01, lag * 0.011])), "chi": (("method", "lag"), np.stack([lag, lag * 1.1])),
         "T_eff": ("method", [0.01, 0.011]), "T_eff_err": ("method", [0.001, 0.0005]),
         "kappa_max": ("method", [-0.1, np.nan]), "kappa_max_err": ("method", [0.02, np.nan]),
         "margin_quantile": (("seed", "quantile"), RNG.standard_normal((4, 101)))},
        coords={"method": ["sim", "dmft"], "t": t, "lag": lag, "seed": np.arange(4), "dmft_seed": np.arange(3),
                "quantile": np.linspace(0, 1, 101)},
        attrs={"T_units": "T in field units", "T_weak_noise_heuristic": 0.012},
    )
    figs = figures(ds)
    check_figure(figs["distance"], residuals=1)
    check_figure(figs["fdt"], residuals=0)
    check_figure(figs["margins"], residuals=0)
