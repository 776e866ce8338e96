"""``sgdlab timescales``: learning time-scales of two-layer networks, simulated and predicted.

Orchestration for spec 05 (Berthier, Montanari & Zhou, FoCM 2024: BMZ). One config puts side by
side, on one log-spaced time grid ``t``:

- ``method="flow"``: the exact finite-``d`` population gradient flow on the overlaps
  (:func:`sgdlab.two_layer.flow.solve_population_flow`), vmapped over seeds. Its initial
  overlaps ``s = U theta*`` and ``G = U U^T`` of ``m`` uniform unit vectors in ``R^d`` are drawn
  in law at a cost ``O(m^2)`` independent of ``d`` (:func:`sgdlab.two_layer.flow.random_overlaps_wishart`),
  so ``d >> 1/eps`` costs nothing;
- ``method="sim"``: online SGD with fresh Gaussian samples
  (:func:`sgdlab.two_layer.sgd.online_sgd`), vmapped over seeds, time ``t = k dt``;
- ``method="reduced"``: the reduced ``(a, s)`` particle dynamics (``d = inf``, ``m`` particles at
  the deterministic quantiles of the initial law of ``a``; :func:`sgdlab.two_layer.flow.solve_reduced`).

and analyses the risk curves with :mod:`sgdlab.two_layer.analysis` (plateau detection, half-learning
times, carrier fraction). An optional ``[scan]`` over ``eps`` of the reduced dynamics measures the
half-learning times ``t_l`` and fits ``t_l ~ eps^{1/(2l)}`` with 95% confidence intervals (degree 1
after removing its logarithm with the closed form :func:`sgdlab.two_layer.flow.degree_one_time`).

Finite-``m`` correction (why flow/SGD lag the reduced dynamics): at finite ``m`` the second layer
feels the self-interaction ``a_i U(1) / m`` (the ``j = i`` term of the Mehler risk), a ridge of
strength ``|sigma|^2 / m`` on ``a`` which the reduced dynamics (``m = inf`` first) does not have.
Against the degree-1 instability rate ``|sigma_1 phi_1| / sqrt(eps)`` it is negligible only for
``m >> |sigma|^2 / sqrt(eps)``; flow and SGD at the same ``m`` share it, so they agree with each
other at any ``m`` and with the reduced dynamics as ``m sqrt(eps)`` grows.

TOML layout (``sgdlab timescales CONFIG.toml``)::

    name, description, seed
    [problem]   target, activation (names or Hermite coefficients), degree
    [dynamics]  eps, train_second_layer, a_scale, a_law, t_min, t_max, n_times, rtol, atol, max_steps
    [flow]      enabled, d, m, seeds, solver
    [sgd]       enabled, d, m, seeds, dt, batch
    [reduced]   enabled, m
    [scan]      eps (list), t_max, n_times, d (list: the d scan of the flow)

Dataset (:func:`run_timescales`): dims ``(method, seed, t, degree)`` plus ``level`` (predicted
plateaus), ``plateau`` (detected ones), ``eps`` and ``t_scan`` (scan).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from pydantic import Field, field_validator, model_validator
from rich.console import Group
from rich.table import Table

from sgdlab import __version__
from sgdlab.two_layer.sgd import online_sgd
from sgdlab.dmft.config import _Section, merge_tables, read_toml, validate_config
from sgdlab.two_layer.problem import NAMED_FUNCTIONS, SingleIndex, hermite_coefficients
from sgdlab.two_layer import flow as tl
from sgdlab.two_layer.analysis import carrier_fraction, detect_plateaus, fit_power_law, half_learning_times, match_plateaus

METHODS = ("flow", "sim", "reduced")


# ----------------------------------------------------------------------------------------- config
class TSProblem(_Section):
    """``[problem]``: target ``phi`` and activation ``sigma`` (a name or Hermite coefficients)."""

    target: str | list[float] = Field([0.0, 1.0, 1.0, 1.0], description="name (relu, tanh, erf, ...) or coefficients phi_0..phi_K")
    activation: str | list[float] = Field([0.0, 1.0, 1.0, 1.0], description="name or coefficients sigma_0..sigma_K")
    degree: int = Field(3, ge=1, le=8, description="Hermite truncation K (named functions are projected on 0..K), in [1, 8]")

    @field_validator("target", "activation")
    @classmethod
    def _known(cls, v):
        if isinstance(v, str) and v not in NAMED_FUNCTIONS:
            raise ValueError(f"unknown function {v!r}; use one of {sorted(NAMED_FUNCTIONS)} or a list of Hermite coefficients")
        return v

    @model_validator(mode="after")
    def _check(self):
        for key in ("target", "activation"):
            v = getattr(self, key)
            if isinstance(v, list) and len(v) > self.degree + 1:
                raise ValueError(f"problem.{key} has {len(v)} coefficients but degree={self.degree} (at most degree + 1)")
            if isinstance(v, list) and not any(v):
                raise ValueError(f"problem.{key} coefficients are all zero")
        return self

    def to_problem(self) -> SingleIndex:
        """The hashable :class:`~sgdlab.two_layer.problem.SingleIndex` (named functions
        projected on degrees ``0..degree`` by quadrature)."""
        def coef(x):
            if isinstance(x, str):
                return tuple(float(c) for c in hermite_coefficients(x, self.degree))
            return tuple(float(c) for c in x) + (0.0,) * (self.degree + 1 - len(x))
        return SingleIndex(phi=coef(self.target), sigma=coef(self.activation))


class TSDynamics(_Section):
    """``[dynamics]``: learning-rate ratio, second layer, initialisation and the log time grid."""

    eps: float = Field(1e-2, gt=0, le=1, description="ratio eps of first- to second-layer learning rate, in (0, 1]")
    train_second_layer: bool = True
    a_scale: float = Field(1.0, gt=0, description="initial second layer: uniform on [-a_scale, a_scale] or N(0, a_scale^2), in (0, inf)")
    a_law: Literal["uniform", "gaussian"] = "uniform"
    t_max: float = Field(2.0, gt=0, description="final time, in (0, inf)")
    t_min: float | None = Field(None, gt=0, description="first saved time, in (0, t_max) (default eps / 100)")
    n_times: int = Field(81, ge=10, le=2000, description="log-spaced saved times, in [10, 2000]")
    rtol: float = Field(1e-7, gt=0, lt=1e-2, description="ODE solver relative tolerance, in (0, 0.01)")
    atol: float = Field(1e-12, gt=0, lt=1e-3, description="ODE solver absolute tolerance, in (0, 0.001)")
    max_steps: int = Field(50_000, ge=100, le=10_000_000, description="ODE solver step budget, in [100, 1e7]")

    @model_validator(mode="after")
    def _check(self):
        if self.t_min is not None and self.t_min >= self.t_max:
            raise ValueError(f"dynamics.t_min={self.t_min} must be < dynamics.t_max={self.t_max}")
        return self

    @property
    def grid(self) -> np.ndarray:
        """The log-spaced save times ``(n_times,)``."""
        return _grid(self.t_min or self.eps / 100, self.t_max, self.n_times)


class TSFlow(_Section):
    """``[flow]``: the exact finite-``d`` population flow (cost ``O(m^3)`` per step, independent of ``d``)."""

    enabled: bool = True
    d: int = Field(100_000, ge=2, le=10**18, description="dimension, in [2, 1e18] (its cost does not depend on d)")
    m: int = Field(64, ge=1, le=256, description="neurons, in [1, 256]")
    seeds: int = Field(2, ge=1, le=64, description="random first-layer initialisations, in [1, 64]")
    solver: Literal["tsit5", "kvaerno5"] = Field("tsit5", description="tsit5 (explicit, O(t_max/eps) steps) or kvaerno5 (implicit, dense (m^2)-Jacobian: m <= 16)")

    @model_validator(mode="after")
    def _check(self):
        if self.solver == "kvaerno5" and self.m > 24:
            raise ValueError(f"flow.solver='kvaerno5' factorises an (m^2 + 2m)-square Jacobian: use m <= 24 (got m={self.m}) or solver='tsit5'")
        return self


class TSSGD(_Section):
    """``[sgd]``: online SGD, fresh samples each step; time ``t = k dt``."""

    enabled: bool = True
    d: int = Field(2000, ge=2, le=200_000, description="dimension, in [2, 200000]")
    m: int = Field(64, ge=1, le=4096, description="neurons, in [1, 4096]")
    seeds: int = Field(4, ge=1, le=256, description="seeds, in [1, 256]")
    dt: float = Field(2e-4, gt=0, description="first-layer step (second layer: dt/eps), in (0, eps); needs dt d / batch << 1")
    batch: int = Field(8, ge=1, le=4096, description="fresh samples per step, in [1, 4096]")


class TSReduced(_Section):
    """``[reduced]``: the reduced ``(a, s)`` dynamics with ``m`` particles (deterministic quantiles)."""

    enabled: bool = True
    m: int = Field(64, ge=2, le=512, description="particles, in [2, 512] (implicit solver: cost ~ m^3 per step)")
    solver: Literal["kvaerno5", "tsit5"] = Field("kvaerno5", description="kvaerno5 (implicit, stiff: any eps) or tsit5 (explicit: O(t_max/eps) steps, eps >~ 1e-3)")


class TSScan(_Section):
    """``[scan]``: ``eps`` values for the time-scale fit of the reduced dynamics (empty: no scan)."""

    eps: list[float] = Field(default_factory=list, description="eps values, each in (0, 1), at least 3 (empty: no scan)")
    t_max: float = Field(0.3, gt=0, description="final time of every scan run, in (0, inf)")
    n_times: int | None = Field(None, ge=10, le=4000, description="log-spaced saved times from min(eps)/100 to t_max, in [10, 4000] (default: dynamics.n_times, which reuses the compiled solver of the main run)")
    d: list[int] = Field(default_factory=list, description="dimensions of a d-scan of the finite-d flow at dynamics.eps (flow.m, flow.seeds), each >= 2 (empty: no d-scan)")

    @field_validator("d")
    @classmethod
    def _dims(cls, v):
        if any(x < 2 for x in v):
            raise ValueError(f"every scan.d value must be >= 2 (got {v})")
        return sorted(set(v))

    @field_validator("eps")
    @classmethod
    def _eps(cls, v):
        if any(not 0 < e < 1 for e in v):
            raise ValueError(f"every scan.eps value must lie in (0, 1) (got {v})")
        if v and len(v) < 3:
            raise ValueError("scan.eps needs >= 3 values for an exponent with a confidence interval")
        if len(set(v)) != len(v):
            raise ValueError(f"scan.eps lists a value twice (got {v})")
        return sorted(v)


class TimescalesConfig(_Section):
    """A full ``sgdlab timescales`` study; ``TimescalesConfig()`` are the model defaults."""

    name: str = "timescales"
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**32, description="root random seed, in [0, 2^32)")
    problem: TSProblem = Field(default_factory=TSProblem)
    dynamics: TSDynamics = Field(default_factory=TSDynamics)
    flow: TSFlow = Field(default_factory=TSFlow)
    sgd: TSSGD = Field(default_factory=TSSGD)
    reduced: TSReduced = Field(default_factory=TSReduced)
    scan: TSScan = Field(default_factory=TSScan)

    @model_validator(mode="after")
    def _cross(self):
        if self.sgd.enabled and self.sgd.dt >= self.dynamics.eps:
            raise ValueError(f"sgd.dt={self.sgd.dt} must be < dynamics.eps={self.dynamics.eps} (the second-layer step is dt/eps)")
        if self.sgd.enabled and self.sgd.dt >= self.dynamics.t_max:
            raise ValueError(f"sgd.dt={self.sgd.dt} must be < dynamics.t_max={self.dynamics.t_max}")
        if not (self.flow.enabled or self.sgd.enabled or self.reduced.enabled):
            raise ValueError("enable at least one of flow, sgd, reduced")
        return self

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of the resolved config."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        """Short hash of the canonical JSON: identifies a study."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def default_config_path() -> Path:
    """The built-in default example ``examples/timescales/default.toml``."""
    from importlib import resources

    return Path(str(resources.files("sgdlab") / "examples" / "timescales" / "default.toml"))


def load_timescales_config(source: TimescalesConfig | dict[str, Any] | str | Path | None = None) -> TimescalesConfig:
    """A validated config from itself, a dict, a TOML path or ``None`` (the default example).

    Raises :class:`~sgdlab.dmft.config.ConfigError` with one line per problem, each naming the key."""
    return validate_config(TimescalesConfig, default_config_path() if source is None else source)


# ------------------------------------------------------------------------------------ simulators
def _grid(t_min: float, t_max: float, n: int) -> np.ndarray:
    return np.logspace(np.log10(t_min), np.log10(t_max), n)


def flow_from_random_starts(prob: SingleIndex, key: jax.Array, a0, m: int, d: int, seeds: int, eps: float, t: np.ndarray,
                            train_second_layer: bool, rtol: float, atol: float, solver: str, max_steps: int):
    """The exact finite-``d`` flow from ``seeds`` random first layers in ``R^d`` (overlaps by
    :func:`~sgdlab.two_layer.flow.random_overlaps_wishart`), vmapped; ``FlowObservables`` with a
    leading seed axis. Raises :class:`FloatingPointError` naming ``dynamics.max_steps`` if a solve
    fails or is non-finite."""
    keys = jax.random.split(key, seeds)
    s0, G0 = jax.vmap(lambda k: tl.random_overlaps_wishart(k, m, d))(keys)
    a0 = jnp.asarray(a0)
    obs, _, ok = jax.vmap(lambda s, G: tl.solve_population_flow(prob, a0, s, G, eps, jnp.asarray(t), train_second_layer,
                                                                  rtol, atol, solver, max_steps))(s0, G0)
    if not bool(np.all(ok)) or not np.all(np.isfinite(np.asarray(obs.risk))):
        raise FloatingPointError(f"population flow failed at d = {d} (step budget dynamics.max_steps={max_steps} or non-finite "
                                 "values); raise dynamics.max_steps, lower dynamics.t_max or flow.m")
    return obs


def sgd_on_grid(prob: SingleIndex, key: jax.Array, a0, d: int, eps: float, dt: float, t: np.ndarray, seeds: int,
                batch: int = 1, train_second_layer: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Online SGD (``seeds`` runs, vmapped) observed at the step nearest to each ``t`` (time
    ``k dt``, so the snapping error is at most ``dt/2``; ``t < dt/2`` reads the initial state).
    Returns ``M``, ``risk_degree`` ``(seeds, n_t, K+1)``."""
    want = np.rint(np.asarray(t) / dt).astype(np.int64)
    steps, idx = np.unique(want, return_inverse=True)
    keys = jax.random.split(key, seeds)
    run = jax.vmap(lambda k: online_sgd(prob, k, jnp.asarray(a0), d, eps, dt, jnp.asarray(steps), batch, train_second_layer))
    M, risk = run(keys)
    return np.asarray(M)[:, idx], np.asarray(risk)[:, idx]


def eps_scan(prob: SingleIndex, eps_values, m: int, a_scale: float = 1.0, a_law: str = "uniform", t_max: float = 0.3,
             n_times: int = 161, rtol: float = 1e-7, atol: float = 1e-12, max_steps: int = 50_000,
             train_second_layer: bool = True, solver: str = "kvaerno5", progress: Callable[[], None] | None = None) -> xr.Dataset:
    """Reduced dynamics for every ``eps`` on one log grid ``t_scan`` from ``min(eps)/100`` to
    ``t_max`` (one compilation); half-learning times and fitted exponents.

    Returns a Dataset with ``risk_scan (eps, t_scan)``, ``t_half_scan (eps, degree)``,
    ``scan_ok (eps)``, ``t1_closed_form (eps)`` (:func:`~sgdlab.two_layer.flow.degree_one_time`),
    ``t1_log_factor (eps)`` ``= logit(1/2) - logit(kappa_0)`` and the fits ``exponent``,
    ``exponent_low``, ``exponent_high``, ``exponent_predicted`` ``(degree)``. Degree 1: fit of
    ``t_1 / t1_log_factor``, expected 1/2; degree ``l >= 2``: fit of ``t_l``, expected ``1/(2l)``.
    A run that fails (step budget) gives ``nan`` and ``scan_ok = False``."""
    eps_values = np.sort(np.asarray(eps_values, float))
    K = prob.degree
    phi, sig = np.asarray(prob.phi), np.asarray(prob.sigma)
    a0 = jnp.asarray(tl.initial_second_layer(m, a_scale, a_law))
    t = _grid(eps_values.min() / 100, t_max, n_times)
    th = np.full((len(eps_values), K + 1), np.nan)
    risk = np.full((len(eps_values), len(t)), np.nan)
    ok = np.zeros(len(eps_values), bool)
    t1c, logfac = np.full(len(eps_values), np.nan), np.full(len(eps_values), np.nan)
    for i, e in enumerate(eps_values):
        obs, _, good = tl.solve_reduced(prob, a0, jnp.zeros(m), float(e), jnp.asarray(t), train_second_layer, rtol, atol, solver, max_steps)
        R = np.asarray(obs.risk).sum(-1)
        ok[i] = bool(good) and np.all(np.isfinite(R))
        if ok[i]:
            risk[i] = R
            th[i] = half_learning_times(t, np.asarray(obs.M), phi, sig)
        if phi[1] * sig[1] != 0:
            try:
                t1c[i] = tl.degree_one_time(prob, np.asarray(a0), np.zeros(m), float(e))
                logfac[i] = t1c[i] / (np.sqrt(e) / (2 * abs(phi[1] * sig[1])))
            except ValueError:  # eps outside the singular-perturbation regime
                pass
        if progress is not None:
            progress()
    expo = np.full((3, K + 1), np.nan)
    for l in range(1, K + 1):
        y = th[:, l] / logfac if l == 1 else th[:, l]
        if np.sum(np.isfinite(y)) >= 3:
            f = fit_power_law(eps_values, y)
            expo[:, l] = (f.exponent, f.low, f.high)
    return xr.Dataset(
        {
            "risk_scan": (("eps", "t_scan"), risk),
            "t_half_scan": (("eps", "degree"), th),
            "scan_ok": ("eps", ok),
            "t1_closed_form": ("eps", t1c),
            "t1_log_factor": ("eps", logfac),
            "exponent": ("degree", expo[0]),
            "exponent_low": ("degree", expo[1]),
            "exponent_high": ("degree", expo[2]),
            "exponent_predicted": ("degree", np.array([np.nan] + [1 / (2 * l) for l in range(1, K + 1)])),
        },
        coords={"eps": eps_values, "t_scan": t, "degree": np.arange(K + 1)},
    )


def d_scan(prob: SingleIndex, d_values, m: int, seeds: int, eps: float, t: np.ndarray, key: jax.Array, a_scale: float = 1.0,
           a_law: str = "uniform", rtol: float = 1e-7, atol: float = 1e-12, solver: str = "tsit5", max_steps: int = 50_000,
           train_second_layer: bool = True) -> xr.Dataset:
    """The exact finite-``d`` flow at every ``d`` (``seeds`` initial conditions each, one compilation:
    ``d`` enters only through the initial overlaps): half-learning times per seed.

    Returns ``t_half_dscan``, ``t_half_dscan_err`` ``(d, degree)`` (mean and standard error over
    seeds of the per-seed ``t_l``; NaN where a degree is not learned by ``t[-1]``). As ``d`` grows
    the initial overlaps ``~ d^{-1/2}`` become negligible against ``sqrt(eps)`` and ``t_l``
    converges to its ``d = inf`` value: BMZ's time scales are powers of ``eps``, not of ``d``, once
    ``d >> 1/eps``."""
    d_values = np.asarray(sorted(d_values), np.int64)
    phi, sig = np.asarray(prob.phi), np.asarray(prob.sigma)
    a0 = tl.initial_second_layer(m, a_scale, a_law)
    K = prob.degree
    mean, err = np.full((len(d_values), K + 1), np.nan), np.full((len(d_values), K + 1), np.nan)
    for i, d in enumerate(d_values):  # one compilation: d enters only through the initial overlaps
        obs = flow_from_random_starts(prob, jax.random.fold_in(key, int(d)), a0, m, int(d), seeds, eps, t, train_second_layer,
                                      rtol, atol, solver, max_steps)
        th = np.stack([half_learning_times(t, np.asarray(obs.M)[j], phi, sig) for j in range(seeds)])
        mean[i] = th.mean(0)
        if seeds > 1:
            err[i] = th.std(0, ddof=1) / np.sqrt(seeds)
    return xr.Dataset(
        {"t_half_dscan": (("d", "degree"), mean), "t_half_dscan_err": (("d", "degree"), err)},
        coords={"d": d_values, "degree": np.arange(K + 1)},
    )


# ------------------------------------------------------------------------------------ orchestration
def run_timescales(config: TimescalesConfig | dict[str, Any] | str | Path | None = None,
                   progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """Run the study; returns a Dataset with

    - ``M`` (moments ``M_k``), ``risk_degree`` ``(method, seed, t, degree)`` and ``risk``
      ``(method, seed, t)``; ``method`` in ``flow``, ``sim``, ``reduced`` (the enabled ones); a
      method with fewer seeds is NaN-padded (the reduced dynamics is deterministic: seed 0);
    - ``phi``, ``sigma`` ``(degree)``; ``plateau_predicted (level)``: entry ``l`` is
      ``(1/2) sum_{k >= l} phi_k^2`` (plus unlearnable degrees), ``level = 0..K+1``;
    - detected plateaus of the seed-mean risk (:func:`sgdlab.two_layer.analysis.detect_plateaus`):
      ``plateau_level``, ``plateau_start``, ``plateau_end`` ``(method, plateau)`` (NaN-padded), and
      ``plateau_measured (method, level)``: the detected level matched to each prediction
      (:func:`~sgdlab.two_layer.analysis.match_plateaus`, within 10% of the initial level), NaN if none;
    - ``t_half (method, degree)``: first time ``sigma_l M_l / phi_l`` reaches 1/2 (seed-mean
      ``M``), and ``t_half_seed (method, seed, degree)`` per seed;
    - ``carrier_fraction (degree)`` (reduced): the fraction of particles carrying half of the
      change of ``M_l`` between ``t_l/2`` and ``2 t_l`` (intermittency);
    - with ``scan.eps``: the variables of :func:`eps_scan`; with ``scan.d``: those of :func:`d_scan`.

    Attrs: ``config`` (JSON), ``config_hash``, ``sgdlab_version``, ``name``, ``description``,
    ``eps``, ``elapsed_s``, ``elapsed_by_method`` (JSON). ``progress(done, total)`` is called after
    each method and each scan run. Raises :class:`FloatingPointError` if the flow or the reduced
    dynamics fails (step budget ``dynamics.max_steps`` or non-finite values).
    """
    cfg = load_timescales_config(config)
    start = time.perf_counter()
    prob = cfg.problem.to_problem()
    dyn = cfg.dynamics
    t = dyn.grid
    K = prob.degree
    phi, sig = np.asarray(prob.phi), np.asarray(prob.sigma)
    key = jax.random.key(cfg.seed)
    methods = [m for m, on in zip(METHODS, (cfg.flow.enabled, cfg.sgd.enabled, cfg.reduced.enabled)) if on]
    total = len(methods) + len(cfg.scan.eps) + (1 if cfg.scan.d else 0)
    done = 0
    seeds = max([cfg.flow.seeds if cfg.flow.enabled else 1, cfg.sgd.seeds if cfg.sgd.enabled else 1, 1])
    M = np.full((len(methods), seeds, len(t), K + 1), np.nan)
    Rk = np.full_like(M, np.nan)
    elapsed: dict[str, float] = {}
    reduced_obs = None

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for i, method in enumerate(methods):
        t0 = time.perf_counter()
        if method == "flow":
            f = cfg.flow
            obs = flow_from_random_starts(prob, jax.random.fold_in(key, 1), tl.initial_second_layer(f.m, dyn.a_scale, dyn.a_law), f.m,
                                          f.d, f.seeds, dyn.eps, t, dyn.train_second_layer, dyn.rtol, dyn.atol, f.solver,
                                          dyn.max_steps)
            M[i, : f.seeds], Rk[i, : f.seeds] = np.asarray(obs.M), np.asarray(obs.risk)
        elif method == "sim":
            g = cfg.sgd
            a0 = tl.initial_second_layer(g.m, dyn.a_scale, dyn.a_law)
            Ms, Rs = sgd_on_grid(prob, jax.random.fold_in(key, 2), a0, g.d, dyn.eps, g.dt, t, g.seeds, g.batch, dyn.train_second_layer)
            M[i, : g.seeds], Rk[i, : g.seeds] = Ms, Rs
        else:
            a0 = jnp.asarray(tl.initial_second_layer(cfg.reduced.m, dyn.a_scale, dyn.a_law))
            obs, _, ok = tl.solve_reduced(prob, a0, jnp.zeros(cfg.reduced.m), dyn.eps, jnp.asarray(t), dyn.train_second_layer,
                                          dyn.rtol, dyn.atol, cfg.reduced.solver, dyn.max_steps)
            if not bool(ok) or not np.all(np.isfinite(np.asarray(obs.risk))):
                raise FloatingPointError(f"reduced dynamics failed (step budget dynamics.max_steps={dyn.max_steps} or non-finite "
                                         "values); raise dynamics.max_steps or lower dynamics.t_max")
            reduced_obs = obs
            M[i, 0], Rk[i, 0] = np.asarray(obs.M), np.asarray(obs.risk)
        elapsed[method] = time.perf_counter() - t0
        tick()

    risk = Rk.sum(-1)
    ds = xr.Dataset(
        {
            "M": (("method", "seed", "t", "degree"), M),
            "risk_degree": (("method", "seed", "t", "degree"), Rk),
            "risk": (("method", "seed", "t"), risk),
            "phi": ("degree", phi),
            "sigma": ("degree", sig),
            "plateau_predicted": ("level", prob.plateau_levels()),
        },
        coords={"method": methods, "seed": np.arange(seeds), "t": t, "degree": np.arange(K + 1), "level": np.arange(K + 2)},
    )
    _analyse(ds, prob)
    if reduced_obs is not None:
        ds["carrier_fraction"] = ("degree", _carriers(t, ds.t_half.sel({"method": "reduced"}).values, reduced_obs, K))

    if cfg.scan.eps:
        t0 = time.perf_counter()
        scan = eps_scan(prob, cfg.scan.eps, cfg.reduced.m, dyn.a_scale, dyn.a_law, cfg.scan.t_max, cfg.scan.n_times or dyn.n_times,
                        dyn.rtol, dyn.atol, dyn.max_steps, dyn.train_second_layer, cfg.reduced.solver, progress=tick)
        ds = ds.merge(scan)
        elapsed["scan"] = time.perf_counter() - t0
    if cfg.scan.d:
        t0 = time.perf_counter()
        f = cfg.flow
        ds = ds.merge(d_scan(prob, cfg.scan.d, f.m, f.seeds, dyn.eps, t, jax.random.fold_in(key, 3), dyn.a_scale, dyn.a_law,
                             dyn.rtol, dyn.atol, f.solver, dyn.max_steps, dyn.train_second_layer))
        elapsed["d_scan"] = time.perf_counter() - t0
        tick()

    ds.attrs = {
        "config": cfg.to_json(),
        "config_hash": cfg.config_hash(),
        "sgdlab_version": __version__,
        "name": cfg.name,
        "description": cfg.description,
        "eps": float(dyn.eps),
        "elapsed_s": float(time.perf_counter() - start),
        "elapsed_by_method": json.dumps({k: round(v, 2) for k, v in elapsed.items()}),
    }
    return ds


def _analyse(ds: xr.Dataset, prob: SingleIndex) -> None:
    """Adds ``t_half``, ``t_half_seed``, the detected plateaus and ``plateau_measured`` (in place)."""
    t = ds.t.values
    phi, sig = np.asarray(prob.phi), np.asarray(prob.sigma)
    pred = ds.plateau_predicted.values
    nm, ns = ds.sizes["method"], ds.sizes["seed"]
    th = np.stack([half_learning_times(t, ds.M.isel(method=i).mean("seed").values, phi, sig) for i in range(nm)])
    th_seed = np.full((nm, ns, len(phi)), np.nan)
    found, measured = [], np.full((nm, len(pred)), np.nan)
    for i in range(nm):
        for j in range(ns):
            Mj = ds.M.isel(method=i, seed=j).values
            if np.all(np.isfinite(Mj)):
                th_seed[i, j] = half_learning_times(t, Mj, phi, sig)
        r = ds.risk.isel(method=i).mean("seed").values
        pl = detect_plateaus(t, r)
        found.append(pl)
        for l, p in match_plateaus(pl, pred, rel_tol=0.1):
            if p is not None:
                measured[i, l] = p.level
    n_pl = max([len(p) for p in found] + [1])
    arr = np.full((3, nm, n_pl), np.nan)
    for i, pl in enumerate(found):
        for k, p in enumerate(pl):
            arr[:, i, k] = (p.level, p.start, p.end)
    ds["t_half"] = (("method", "degree"), th)
    ds["t_half_seed"] = (("method", "seed", "degree"), th_seed)
    ds["plateau_level"] = (("method", "plateau"), arr[0])
    ds["plateau_start"] = (("method", "plateau"), arr[1])
    ds["plateau_end"] = (("method", "plateau"), arr[2])
    ds["plateau_measured"] = (("method", "level"), measured)
    ds.coords["plateau"] = np.arange(n_pl)


def _carriers(t: np.ndarray, t_half: np.ndarray, obs, K: int) -> np.ndarray:
    fr = np.full(K + 1, np.nan)
    a, s = np.asarray(obs.a), np.asarray(obs.s)
    for l in range(1, K + 1):
        if np.isfinite(t_half[l]):
            lo = int(np.clip(np.searchsorted(t, t_half[l] / 2), 0, len(t) - 1))
            hi = int(np.clip(np.searchsorted(t, t_half[l] * 2), 0, len(t) - 1))
            if hi > lo:
                fr[l] = carrier_fraction(a[lo], s[lo], a[hi], s[hi], l)
    return fr


# ------------------------------------------------------------------------------------------ plots
_COLORS = {"flow": "C0", "sim": "C1", "reduced": "k"}
_LABELS = {"flow": "finite-d flow", "sim": "online SGD", "reduced": "reduced (d = inf)"}


def _config(ds: xr.Dataset) -> dict:
    return json.loads(ds.attrs.get("config", "{}"))


def _method_label(ds: xr.Dataset, m: str) -> str:
    cfg = _config(ds)
    if m == "flow" and "flow" in cfg:
        return f"{_LABELS[m]} (d={cfg['flow']['d']:.0e}, m={cfg['flow']['m']}, {cfg['flow']['seeds']} seeds)"
    if m == "sim" and "sgd" in cfg:
        g = cfg["sgd"]
        return f"{_LABELS[m]} (d={g['d']}, m={g['m']}, dt={g['dt']:g}, B={g['batch']}, {g['seeds']} seeds)"
    if m == "reduced" and "reduced" in cfg:
        return f"{_LABELS[m]} ({cfg['reduced']['m']} particles)"
    return m


def _predicted_lines(ax, ds: xr.Dataset) -> None:
    for lev in np.unique(np.round(ds.plateau_predicted.values, 12)):
        ax.axhline(lev, color="0.45", ls=":", lw=0.9, zorder=0)


def plot_timescales(ds: xr.Dataset) -> dict[str, Any]:
    """The figures of a study, as ``{"staircase": fig, "eps_scaling": fig, "d_scan": fig}`` (the
    second only with ``scan.eps``, the third only with ``scan.d``).

    ``staircase``: left, the risk on log time for every method at ``eps`` (seed mean; online SGD
    with a band of one standard deviation over seeds), the predicted plateau levels
    ``(1/2) sum_{k>=l} phi_k^2`` (dotted), the detected plateaus (thick translucent bars) and the
    half-learning times ``t_l`` of the reduced dynamics (ticks); right (with a scan), the reduced
    dynamics for every scanned ``eps``: the staircase sharpening as ``eps -> 0``.
    ``eps_scaling``: ``t_l`` versus ``eps`` (log-log) with the fitted power laws, their exponents
    and 95% CIs in the legend beside ``1/(2l)``; degree 1 also divided by its log factor (the
    fitted quantity) and the closed-form ``t_1``."""
    from sgdlab.dmft.plot import plt

    figs: dict[str, Any] = {}
    has_scan = "t_half_scan" in ds
    fig, axes = plt.subplots(1, 2 if has_scan else 1, figsize=(12.5 if has_scan else 6.5, 4.4), squeeze=False, constrained_layout=True)
    ax = axes[0, 0]
    t = ds.t.values
    for i, m in enumerate(map(str, ds.method.values)):
        r = ds.risk.isel(method=i)
        n = int(np.isfinite(r).all("t").sum())
        mean = r.mean("seed", skipna=True).values
        c = _COLORS.get(m, f"C{i}")
        ax.plot(t, mean, "--" if m == "reduced" else "-", color=c, lw=1.6, label=_method_label(ds, m))
        if m == "sim" and n > 1:
            sd = r.std("seed", skipna=True, ddof=1).values
            ax.fill_between(t, mean - sd, mean + sd, color=c, alpha=0.2, lw=0)
        for k in range(ds.sizes["plateau"]):
            lev = float(ds.plateau_level.isel(method=i, plateau=k))
            if np.isfinite(lev):
                ax.plot([float(ds.plateau_start.isel(method=i, plateau=k)), float(ds.plateau_end.isel(method=i, plateau=k))],
                        [lev, lev], color=c, lw=7, alpha=0.18, solid_capstyle="butt")
    _predicted_lines(ax, ds)
    if "reduced" in ds.method.values:
        for l in ds.degree.values:
            th = float(ds.t_half.sel({"method": "reduced", "degree": l}))
            if np.isfinite(th):
                ax.axvline(th, color="k", lw=0.6, alpha=0.4)
                ax.text(th, 0.55 - 0.06 * (int(l) % 3), f"$t_{l}$", transform=ax.get_xaxis_transform(), ha="right", fontsize=8,
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_xscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("population risk R(t)")
    ax.set_title(f"eps = {ds.attrs.get('eps', float('nan')):.0e}: dotted = predicted plateaus, bars = detected")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="lower left")
    if has_scan:
        ax = axes[0, 1]
        ts = ds.t_scan.values
        cmap = plt.get_cmap("viridis")
        eps = ds.eps.values
        for j, e in enumerate(eps):
            r = ds.risk_scan.isel(eps=j).values
            if not np.isfinite(r).any():
                continue
            col = cmap(j / max(len(eps) - 1, 1))
            ax.plot(ts, r, color=col, lw=1.4, label=f"eps = {e:.0e}")
            for p in detect_plateaus(ts[np.isfinite(r)], r[np.isfinite(r)]):
                ax.plot([p.start, p.end], [p.level, p.level], color=col, lw=7, alpha=0.18, solid_capstyle="butt")
        _predicted_lines(ax, ds)
        ax.set_xscale("log")
        ax.set_xlabel("t")
        ax.set_title("reduced dynamics as eps -> 0 (bars: detected plateaus)")
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(ds.attrs.get("description") or ds.attrs.get("name", "time scales"), fontsize=10)
    figs["staircase"] = fig

    if has_scan:
        fig, ax = plt.subplots(figsize=(6.8, 4.6), constrained_layout=True)
        eps = ds.eps.values
        for l in ds.degree.values[1:]:
            y = ds.t_half_scan.sel(degree=l).values
            if not np.isfinite(y).any():
                continue
            c = f"C{int(l) - 1}"
            e, lo, hi = (float(ds[v].sel(degree=l)) for v in ("exponent", "exponent_low", "exponent_high"))
            fitted = y / ds.t1_log_factor.values if l == 1 else y
            what = "t_1 / L(eps)" if l == 1 else f"t_{l}"
            ax.plot(eps, y, "o" if l > 1 else "s", color=c, mfc="none" if l == 1 else c, label=f"t_{l}" + (" (raw)" if l == 1 else ""))
            if np.isfinite(e):
                ok = np.isfinite(fitted)
                pre = np.exp(np.mean(np.log(fitted[ok]) - e * np.log(eps[ok])))
                if l == 1:
                    ax.plot(eps, fitted, "o", color=c)
                ax.plot(eps, pre * eps**e, "--", color=c, lw=1.1,
                        label=f"{what}: exponent {e:.3f} [{lo:.3f}, {hi:.3f}] (theory 1/{2 * int(l)})")
        if np.isfinite(ds.t1_closed_form.values).any():
            ax.plot(eps, ds.t1_closed_form.values, ":", color="C0", lw=1.2, label="t_1 closed form")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eps")
        ax.set_ylabel("half-learning time t_l")
        ax.set_title("time scales of the reduced dynamics (95% CIs)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        figs["eps_scaling"] = fig
    if "t_half_dscan" in ds:
        fig, ax = plt.subplots(figsize=(6.2, 4.2), constrained_layout=True)
        dv = ds.d.values
        for l in range(1, ds.sizes["degree"]):
            y, e = ds.t_half_dscan.values[:, l], ds.t_half_dscan_err.values[:, l]
            if not np.isfinite(y).any():
                continue
            ax.errorbar(dv, y, yerr=np.nan_to_num(e), fmt="o-", ms=4, capsize=2, color=f"C{l - 1}", label=f"t_{l}, finite-d flow")
            if "reduced" in ds.method.values:
                ax.axhline(float(ds.t_half.sel({"method": "reduced", "degree": l})), color=f"C{l - 1}", ls=":", lw=1,
                           label=f"t_{l}, reduced (d = inf)")
        ax.axvline(1 / float(ds.attrs["eps"]), color="0.5", lw=0.8, ls="--", label="d = 1/eps")
        ax.set_xscale("log")
        ax.set_xlabel("d")
        ax.set_ylabel("half-learning time t_l")
        ax.set_title(f"finite-d flow at eps = {float(ds.attrs['eps']):.0e} (mean ± s.e. over seeds)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        figs["d_scan"] = fig
    return figs


# ------------------------------------------------------------------------------------------ tables
def _f(x: float, fmt: str = ".3g") -> str:
    return "-" if not np.isfinite(x) else format(x, fmt)


def results_table(ds: xr.Dataset, title: str = "time scales") -> Group:
    """Rich renderables: per level, the predicted and measured (per method) plateau; per degree,
    ``t_l`` per method and, with a scan, the fitted exponent with its 95% CI beside ``1/(2l)``."""
    methods = list(map(str, ds.method.values))
    lev = Table(title=title + ": plateau levels", title_justify="left")
    for c in ["level l", "predicted (1/2) sum_{k>=l} phi_k^2"] + [f"measured {m}" for m in methods]:
        lev.add_column(c, justify="right")
    for l in map(int, ds.level.values):
        lev.add_row(str(l), f"{float(ds.plateau_predicted[l]):.4f}", *[_f(float(ds.plateau_measured.sel({"method": m, "level": l})), ".4f") for m in methods])
    tt = Table(title=f"half-learning times t_l (eps = {ds.attrs.get('eps', float('nan')):.0e})" + (" and eps-scan exponents" if "exponent" in ds else ""), title_justify="left")
    cols = ["l", "phi_l", "sigma_l"] + [f"t_l {m}" for m in methods]
    if "carrier_fraction" in ds:
        cols.append("carriers")
    if "exponent" in ds:
        cols += ["exponent [95% CI]", "1/(2l)"]
        tt.caption = "l = 1: exponent of t_1 / L(eps), the log factor of the closed form removed"
    for c in cols:
        tt.add_column(c, justify="right", no_wrap=c.startswith("exponent"))
    for l in map(int, ds.degree.values):
        row = [str(l), f"{float(ds.phi[l]):.3g}", f"{float(ds.sigma[l]):.3g}"]
        row += [_f(float(ds.t_half.sel({"method": m, "degree": l}))) for m in methods]
        if "carrier_fraction" in ds:
            row.append(_f(float(ds.carrier_fraction[l]), ".2f"))
        if "exponent" in ds:
            e = float(ds.exponent[l])
            row += ["-" if not np.isfinite(e) else f"{e:.3f} [{float(ds.exponent_low[l]):.3f}, {float(ds.exponent_high[l]):.3f}]",
                    "-" if l == 0 else f"{1 / (2 * l):.3f}"]
        tt.add_row(*row)
    return Group(lev, tt)


def timescales_command(config_path: str | Path, out_dir: str | Path = "results", overrides: dict[str, Any] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> Group:
    """Run the TOML study ``config_path`` (with ``overrides``, a nested dict merged over the file);
    write ``OUT_DIR/NAME.zarr`` (:func:`sgdlab.core.store.save`), ``OUT_DIR/NAME_staircase.png`` and,
    with a scan, ``OUT_DIR/NAME_eps_scaling.png``; return :func:`results_table` (with the paths
    in a caption). Raises :class:`~sgdlab.dmft.config.ConfigError` for an invalid or missing config."""
    from sgdlab.core import store
    from sgdlab.dmft.plot import save_figure

    path = Path(config_path)
    cfg = load_timescales_config(merge_tables(read_toml(path), overrides) if overrides else path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = run_timescales(cfg, progress=progress)
    store_path = out / f"{cfg.name}.zarr"
    store.save(ds, store_path)
    paths = [str(store_path)]
    for kind, fig in plot_timescales(ds).items():
        p = out / f"{cfg.name}_{kind}.png"
        save_figure(fig, p)
        paths.append(str(p))
    group = results_table(ds, title=f"{cfg.name} ({ds.attrs['elapsed_s']:.1f} s; {ds.attrs['elapsed_by_method']})")
    cap = group.renderables[-1].caption
    group.renderables[-1].caption = (cap + "\n" if cap else "") + "written: " + "   ".join(paths)
    return group
