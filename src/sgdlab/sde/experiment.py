"""A weak-error study from a TOML config: which continuous model describes SGD, to which order.

Config sections (every key validated; errors name the key and the allowed range):

``[problem]``
    ``kind``: ``quadratic_1d`` (``a``, ``b``: per-sample ``f = a x^2/2 - b x``),
    ``least_squares`` (``features`` ``(n, d)`` and ``targets`` ``(n,)``, or random data from
    ``n_samples``, ``dim``, ``data_seed``, ``label_noise``), ``logistic`` (random data:
    ``n_samples``, ``dim``, ``data_seed``) or ``two_layer`` (random teacher data: ``n_samples``,
    ``dim`` inputs, ``width``); ``ridge`` (least squares / logistic), ``batch_size`` (SGD's ``B``),
    ``starts`` (one initial point per copy, ``(K, d)``).
``[study]``
    ``models`` (``gf, sme1, sme2, smf, smf_independent, smf_expected_gradient, svag``),
    ``observables`` (``mean, second_moment, variance, loss, inner, cross_cov, sq_distance``),
    ``horizon`` ``T``, ``etas`` (each ``T/eta`` an integer), ``svag_l``.
``[solver]``
    ``method`` (``auto``, ``exact``, ``monte_carlo``), ``paths``, ``scheme`` (``weak2``,
    ``talay_tubaro``, ``euler``), ``substeps`` (SDE steps per SGD step), ``seed``, ``chunk``,
    ``antithetic``.

:func:`run_sde_study` returns the Dataset of :func:`sgdlab.sde.weak_error_study` with
attrs ``config`` (JSON), ``config_hash``, ``sgdlab_version``; :func:`plot_weak_errors` draws it;
:func:`sde_command` is the body of ``sgdlab sde CONFIG.toml``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import xarray as xr
from pydantic import Field, model_validator
from rich.table import Table

from sgdlab import __version__
from sgdlab.dmft.config import _Section, merge_tables, read_toml, validate_config
from sgdlab.sde import problems as fs

ModelName = Literal["gf", "sme1", "sme2", "smf", "smf_independent", "smf_expected_gradient", "svag"]
ObservableName = Literal["mean", "second_moment", "variance", "loss", "inner", "cross_cov", "sq_distance"]
TWO_POINT = {"inner", "cross_cov", "sq_distance"}
QUADRATIC_OBSERVABLES = {"mean", "second_moment", "variance", "inner", "cross_cov", "sq_distance", "loss"}

_KIND_KEYS = {
    "quadratic_1d": {"a", "b"},
    "least_squares": {"features", "targets", "n_samples", "dim", "data_seed", "label_noise", "ridge"},
    "logistic": {"n_samples", "dim", "data_seed", "ridge"},
    "two_layer": {"n_samples", "dim", "data_seed", "width"},
}
_OPTIONAL_KEYS = {"a", "b", "features", "targets", "n_samples", "dim", "data_seed", "label_noise", "ridge", "width"}


class SDEProblemConfig(_Section):
    """``[problem]``: the finite-sum problem, SGD's batch size and the starting points."""

    kind: Literal["quadratic_1d", "least_squares", "logistic", "two_layer"] = "quadratic_1d"
    a: list[float] | None = Field(None, description="quadratic_1d: curvatures a_i (one per sample)")
    b: list[float] | None = Field(None, description="quadratic_1d: linear terms b_i (one per sample)")
    features: list[list[float]] | None = Field(None, description="least_squares: explicit features (n, d)")
    targets: list[float] | None = Field(None, description="least_squares: explicit targets (n,)")
    n_samples: int | None = Field(None, ge=2, le=100_000, description="random data: number of samples n, in [2, 100000]")
    dim: int | None = Field(None, ge=1, le=1000, description="random data: dimension (inputs for two_layer), in [1, 1000]")
    data_seed: int | None = Field(None, ge=0, description="random data: seed, in [0, inf)")
    label_noise: float | None = Field(None, ge=0, description="least_squares random data: label noise, in [0, inf)")
    ridge: float | None = Field(None, ge=0, description="least_squares / logistic: ridge, in [0, inf)")
    width: int | None = Field(None, ge=1, le=256, description="two_layer: hidden units, in [1, 256]")
    batch_size: int = Field(1, ge=1, le=10_000, description="SGD batch size B (with replacement), in [1, 10000]")
    starts: list[list[float]] | None = Field(None, description="initial points, one per copy, shape (K, d)")

    @model_validator(mode="after")
    def _check(self):
        allowed = _KIND_KEYS[self.kind]
        for key in sorted(_OPTIONAL_KEYS - allowed):
            if getattr(self, key) is not None:
                raise ValueError(f"{key} does not belong to kind = {self.kind!r} (its keys: {', '.join(sorted(allowed))})")
        if self.kind == "quadratic_1d":
            if self.a is None:
                self.a = [0.5, 1.0, 1.5]
                if self.b is None:
                    self.b = [0.5, 1.0, 1.0]
            if self.b is None:
                self.b = [0.0] * len(self.a)
            if len(self.a) < 2 or len(self.a) != len(self.b):
                raise ValueError(f"a and b need the same length >= 2 (one entry per sample); got {len(self.a)} and {len(self.b)}")
        if self.kind == "least_squares":
            explicit = self.features is not None or self.targets is not None
            random = self.n_samples is not None or self.dim is not None
            if explicit and random:
                raise ValueError("give either features/targets or n_samples/dim (random data), not both")
            if explicit:
                if self.features is None or self.targets is None:
                    raise ValueError("features and targets go together")
                widths = {len(r) for r in self.features}
                if len(widths) != 1 or len(self.features) != len(self.targets) or len(self.features) < 2:
                    raise ValueError("features must be a rectangular (n, d) list with n = len(targets) >= 2")
            else:
                self.n_samples = self.n_samples or 4
                self.dim = self.dim or 2
        if self.kind in ("logistic", "two_layer"):
            self.n_samples = self.n_samples or 8
            self.dim = self.dim or 2
        if self.kind == "two_layer":
            self.width = self.width or 3
        if self.starts is not None:
            if not self.starts or len({len(s) for s in self.starts}) != 1:
                raise ValueError("starts must be a non-empty rectangular (K, d) list")
            if len(self.starts[0]) != self.problem_dim:
                raise ValueError(f"starts have dimension {len(self.starts[0])}, the problem has d = {self.problem_dim}")
        return self

    @property
    def problem_dim(self) -> int:
        if self.kind == "quadratic_1d":
            return 1
        if self.kind == "least_squares" and self.features is not None:
            return len(self.features[0])
        if self.kind == "two_layer":
            return int(self.width) * (int(self.dim) + 1)
        return int(self.dim)

    @property
    def has_linear_gradient(self) -> bool:
        return self.kind in ("quadratic_1d", "least_squares")

    def to_problem(self) -> fs.FiniteSumProblem:
        """The finite-sum problem this section describes."""
        seed = self.data_seed or 0
        if self.kind == "quadratic_1d":
            return fs.quadratic_1d(self.a, self.b, batch_size=self.batch_size)
        if self.kind == "least_squares":
            if self.features is not None:
                return fs.least_squares(self.features, self.targets, ridge=self.ridge or 0.0, batch_size=self.batch_size)
            return fs.random_least_squares(seed, self.n_samples, self.dim, noise=0.5 if self.label_noise is None else self.label_noise,
                                           ridge=self.ridge or 0.0, batch_size=self.batch_size)
        if self.kind == "logistic":
            return fs.random_logistic(seed, self.n_samples, self.dim, ridge=0.1 if self.ridge is None else self.ridge, batch_size=self.batch_size)
        return fs.random_two_layer_network(seed, self.n_samples, self.dim, self.width, batch_size=self.batch_size)

    def starting_points(self, copies: int) -> np.ndarray:
        """``starts`` as ``(K, d)``; default ``(1, ..., 1)`` and ``-(1/2, ..., 1/2)``."""
        if self.starts is not None:
            return np.asarray(self.starts, dtype=np.float64)
        d = self.problem_dim
        return np.stack([np.ones(d), -0.5 * np.ones(d)])[: max(copies, 1)]


class StudyConfig(_Section):
    """``[study]``: the models, observables, horizon and learning rates."""

    models: list[ModelName] = Field(default_factory=lambda: ["gf", "sme1", "smf", "smf_expected_gradient"])
    observables: list[ObservableName] = Field(default_factory=lambda: ["mean", "second_moment"])
    horizon: float = Field(1.0, gt=0, le=1000, description="horizon T, in (0, 1000]")
    etas: list[float] = Field(default_factory=lambda: [1 / 16, 1 / 32, 1 / 64, 1 / 128], description="learning rates, each in (0, horizon] with horizon/eta an integer")
    svag_l: int = Field(4, ge=1, le=1000, description="SVAG's l, in [1, 1000]")

    @model_validator(mode="after")
    def _check(self):
        if not self.models:
            raise ValueError("models must not be empty")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct; got {self.models}")
        if not self.observables or len(set(self.observables)) != len(self.observables):
            raise ValueError(f"observables must be a non-empty list of distinct names; got {self.observables}")
        if len(self.etas) < 3 or len(set(self.etas)) != len(self.etas):
            raise ValueError(f"etas needs at least 3 distinct values (a slope with a confidence interval); got {self.etas}")
        for eta in self.etas:
            if not 0 < eta <= self.horizon:
                raise ValueError(f"etas: {eta} is outside (0, horizon = {self.horizon}]")
            steps = self.horizon / eta
            if abs(steps - round(steps)) > 1e-9 * steps:
                raise ValueError(f"etas: horizon/eta = {self.horizon}/{eta} = {steps:g} must be an integer")
            if round(steps) > 1_000_000:
                raise ValueError(f"etas: horizon/eta = {round(steps)} steps is above 1000000")
        self.etas = sorted(self.etas, reverse=True)
        return self


class SolverConfig(_Section):
    """``[solver]``: exact moments or Monte Carlo, and the Monte Carlo settings."""

    method: Literal["auto", "exact", "monte_carlo"] = "auto"
    paths: int = Field(20_000, ge=100, le=10_000_000, description="Monte Carlo paths, in [100, 10000000]")
    scheme: Literal["weak2", "talay_tubaro", "euler"] = "weak2"
    substeps: int = Field(2, ge=1, le=1000, description="SDE steps per SGD step, in [1, 1000]")
    seed: int = Field(0, ge=0, description="random seed, in [0, inf)")
    chunk: int = Field(20_000, ge=100, le=1_000_000, description="paths per compiled batch, in [100, 1000000]")
    antithetic: bool = Field(False, description="antithetic pairs for the SDE Monte Carlo")


class SDEStudyConfig(_Section):
    """A weak-error study; ``SDEStudyConfig()`` is the default one (1-d quadratic, exact moments)."""

    name: str = "sde_default"
    description: str = ""
    problem: SDEProblemConfig = Field(default_factory=SDEProblemConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)

    @model_validator(mode="after")
    def _cross(self):
        copies = 2 if set(self.study.observables) & TWO_POINT else 1
        if self.problem.starts is not None and len(self.problem.starts) < copies:
            raise ValueError(
                f"problem.starts: observables {sorted(set(self.study.observables) & TWO_POINT)} need 2 starting points; got {len(self.problem.starts)}"
            )
        if self.solver.method == "exact":
            if not self.problem.has_linear_gradient:
                raise ValueError(
                    f"solver.method = 'exact' needs a linear-gradient problem (quadratic_1d or least_squares), "
                    f"not kind = {self.problem.kind!r}; use 'auto' or 'monte_carlo'"
                )
            shared_sme = [m for m in self.study.models if m in ("sme1", "sme2")]
            closes = self.problem.kind == "quadratic_1d" and not any(self.problem.b or [])
            if shared_sme and copies > 1 and not closes:
                raise ValueError(
                    f"solver.method = 'exact': {shared_sme} with shared noise on two points have no closed moments "
                    "(only 1-d with b = 0); use 'auto' (Monte Carlo for those)"
                )
        return self

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of the resolved config."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @property
    def copies(self) -> int:
        return 2 if set(self.study.observables) & TWO_POINT else 1


def load_sde_config(source: SDEStudyConfig | dict[str, Any] | str | Path | None = None) -> SDEStudyConfig:
    """A validated :class:`SDEStudyConfig` from itself, a dict, a TOML path or ``None`` (defaults).

    Raises :class:`~sgdlab.dmft.config.ConfigError` with one line per problem, each naming the key.
    """
    return SDEStudyConfig() if source is None else validate_config(SDEStudyConfig, source)


def run_sde_study(config: SDEStudyConfig | dict[str, Any] | str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """Run the weak-error study of ``config``; the Dataset of
    :func:`~sgdlab.sde.weak_error_study` (dims ``(model, eta, observable)``) with attrs
    ``config`` (JSON), ``config_hash``, ``sgdlab_version``, ``elapsed_s``."""
    from sgdlab.sde import weak_error_study

    cfg = load_sde_config(config)
    start = time.perf_counter()
    ds = weak_error_study(
        cfg.problem.to_problem(),
        cfg.study.models,
        cfg.study.etas,
        cfg.study.observables,
        cfg.study.horizon,
        x0=cfg.problem.starting_points(cfg.copies),
        method=cfg.solver.method,
        n_paths=cfg.solver.paths,
        scheme=cfg.solver.scheme,
        substeps=cfg.solver.substeps,
        seed=cfg.solver.seed,
        chunk=cfg.solver.chunk,
        svag_l=cfg.study.svag_l,
        antithetic=cfg.solver.antithetic,
        progress=progress,
    )
    ds.attrs.update(
        config=cfg.to_json(),
        config_hash=cfg.config_hash(),
        sgdlab_version=__version__,
        name=cfg.name,
        description=cfg.description,
        elapsed_s=float(time.perf_counter() - start),
    )
    return ds


def _eta_label(eta: float) -> str:
    inv = 1 / eta
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-9 * inv else f"{eta:.3g}"


def plot_weak_errors(ds: xr.Dataset, title: str | None = None):
    """``|error|`` versus ``eta`` on log-log axes, one panel per observable, one line per model
    (error bars: 2 standard errors; hollow markers: unresolved, ``|error| <= 2 se``), with
    reference slopes 1 and 2; each panel's legend (right of it) gives the fitted slope, its 95% CI
    and the theory's order. Models with equal errors overlap; their markers differ."""
    from matplotlib.ticker import NullLocator

    from sgdlab.dmft.plot import plt

    obs = [str(o) for o in ds.observable.values]
    ncols = 1 if len(obs) == 1 else 2
    nrows = int(np.ceil(len(obs) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.4 * ncols, 3.6 * nrows), squeeze=False, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vPX<>*"
    eta = ds.eta.values
    for ax, o in zip(axes.flat, obs):
        sub = ds.sel(observable=o)
        plotted = []
        for i, m in enumerate(map(str, ds.model.values)):
            err = np.abs(sub.error.sel(model=m).values)
            se = sub.error_se.sel(model=m).values
            res = sub.resolved.sel(model=m).values
            if not np.any(err > 0):
                continue
            c, mk = colors[i % len(colors)], markers[i % len(markers)]
            s, lo, hi = (float(sub[v].sel(model=m)) for v in ("slope", "slope_low", "slope_high"))
            label = f"{m}: {s:.2f} [{lo:.2f}, {hi:.2f}] (theory {int(sub.expected_order.sel(model=m))})"
            ax.plot(eta, err, "-", color=c, lw=1.2, marker=mk, ms=5, mfc="none", label=label)
            ax.plot(eta[res], err[res], mk, color=c, ms=3)
            if np.any(se > 0):
                ax.errorbar(eta, err, yerr=np.minimum(2 * se, 0.999 * err), fmt="none", ecolor=c, lw=0.8, capsize=2)
            plotted.append(err[err > 0])
        if plotted:  # reference slopes through the geometric middle of the data
            mid = np.exp(np.mean(np.log(np.concatenate(plotted))))
            e0 = np.exp(np.mean(np.log(eta)))
            for order, ls in ((1, "--"), (2, ":")):
                ax.plot(eta, mid * (eta / e0) ** order, ls, color="0.35", lw=1.2, label=f"slope {order}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(eta)
        ax.set_xticklabels([_eta_label(e) for e in eta])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(r"learning rate $\eta$")
        ax.set_ylabel("|weak error| vs SGD")
        desc = str(sub.observable_description.values) if "observable_description" in sub.coords else o
        ax.set_title(f"{o}: {desc}")
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    for ax in list(axes.flat)[len(obs):]:
        ax.set_visible(False)
    fig.suptitle(title or f"weak errors at T = {ds.attrs.get('horizon', '?')} ({ds.attrs.get('problem', '')})")
    return fig


def results_table(ds: xr.Dataset, title: str = "measured weak orders") -> Table:
    """A rich Table: per (model, observable) the fitted slope, its 95% CI, the theory's order,
    the error at the smallest eta and the solver."""
    table = Table(title=title, title_justify="left")
    for col, just in (("model", "left"), ("observable", "left"), ("slope", "right"), ("95% CI", "right"), ("theory", "right"),
                      (f"error at eta={float(ds.eta.min()):.3g}", "right"), ("solver", "left")):
        table.add_column(col, justify=just)
    i_small = int(np.argmin(ds.eta.values))
    for m in map(str, ds.model.values):
        for o in map(str, ds.observable.values):
            s = ds.sel(model=m, observable=o)
            err, se = float(s.error.isel(eta=i_small)), float(s.error_se.isel(eta=i_small))
            e_txt = f"{err:.3e}" + (f" ± {se:.1e}" if se > 0 else "")
            table.add_row(m, o, f"{float(s.slope):.3f}", f"[{float(s.slope_low):.3f}, {float(s.slope_high):.3f}]",
                          str(int(s.expected_order)), e_txt, str(s.method.values))
    return table


def sde_command(
    config_path: str | Path,
    out_dir: str | Path = "results",
    overrides: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Table:
    """Run the study of the TOML file ``config_path``; write ``OUT_DIR/NAME.zarr`` (the Dataset)
    and ``OUT_DIR/NAME.png`` (:func:`plot_weak_errors`); return the :func:`results_table`, whose
    caption names the two files.

    ``NAME`` is the config's ``name`` (default: the file stem). ``overrides`` is a nested dict of
    keys merged over the file (e.g. ``{"solver": {"paths": 1000}}``); ``progress(done, total)`` is
    called after each (process, eta). Raises :class:`~sgdlab.dmft.config.ConfigError` for a missing,
    malformed or invalid config (the CLI should print it and exit with status 2).
    """
    from sgdlab.core import store
    from sgdlab.dmft.plot import save_figure

    path = Path(config_path)
    if overrides:
        cfg = load_sde_config(merge_tables(read_toml(path), overrides))
    else:
        cfg = load_sde_config(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = run_sde_study(cfg, progress=progress)
    store_path, fig_path = out / f"{cfg.name}.zarr", out / f"{cfg.name}.png"
    store.save(ds, store_path)
    save_figure(plot_weak_errors(ds, title=cfg.description or cfg.name), fig_path)
    table = results_table(ds, title=f"{cfg.name}: measured weak orders ({ds.attrs['elapsed_s']:.1f} s)")
    table.caption = f"store: {store_path}   figure: {fig_path}"
    return table
