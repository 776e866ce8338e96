"""The effective-noise study (``sgdlab noise``): FDT temperature, replica distance, margins.

Source: F. Mignacco, P. Urbani, "The effective noise of stochastic gradient descent",
J. Stat. Mech. (2022) 083405, arXiv:2112.10852; documentation ``docs/effective_noise.md``.

A config of the study (:class:`NoiseStudyConfig`) is a Gaussian-mixture config
(:class:`sgdlab.dmft.config.Config`) plus a ``[noise]`` table (:class:`NoiseConfig`).
:func:`run` measures, for one config, with the simulator measurements of
:mod:`sgdlab.dmft.noise_sim`:

- the replica distance ``D(t)`` of replica pairs (simulation) and of the two-replica DMFT
  (:mod:`sgdlab.dmft.replicas`, ``noise.dmft_seeds`` independent solves);
- the effective temperature ``T_eff`` from the fluctuation-dissipation relation
  (:mod:`sgdlab.dmft.fdt`): from the simulation's exact linear response and from the DMFT's
  ``(C, R)``, with the stationarity drift;
- the margins ``kappa_mu = y_mu h_mu / sqrt(q)`` of the trained weights and ``kappa_max``;

and returns one Dataset with the per-method scalar summaries (``D_inf``, ``T_eff``,
``kappa_max``, ...) over ``method = ["sim", "dmft"]`` (NaN where not measured), so that a
``[sweep]`` of the study (e.g. over ``algorithm.batch_fraction`` and
``algorithm.persistence_time``) stores the phase diagram.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, NamedTuple

import numpy as np
import xarray as xr
from pydantic import Field, model_validator

from sgdlab.core.config import Section, validate_config
from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.dmft.config import Config

__all__ = [
    "METHODS",
    "NoiseConfig",
    "NoiseMeasurement",
    "NoiseStudyConfig",
    "SUMMARY_VARIABLES",
    "fdt_windows",
    "load_noise_config",
    "measure_noise",
    "response_curve",
    "run",
]

STUDY_NAME = "noise"
METHODS = ("sim", "dmft")
#: probability levels of the stored margin quantiles (level 0 is ``kappa_max`` of the seed)
MARGIN_LEVELS = np.linspace(0.0, 1.0, 201)

#: Scalar results of one config per method (``sim``, ``dmft``); NaN where not measured.
SUMMARY_VARIABLES = {
    "D_inf": "replica distance, mean over the last noise.tail fraction of the saved times",
    "D_inf_err": "standard error of D_inf (over seeds / DMFT Monte-Carlo seeds)",
    "T_eff": "FDT effective temperature, global slope (meaningful where stationary)",
    "T_eff_err": "standard error of T_eff",
    "T_short": "FDT effective temperature, short-lag slope",
    "T_short_err": "standard error of T_short",
    "curvature": "curvature of the FDT plot: slope_late / slope_short - 1",
    "drift": "stationarity drift of C(t, t - s)",
    "drift_err": "standard error of the drift",
    "stationary": "1 if no drift is resolved (T_eff meaningful), 0 if not",
    "kappa_max": "largest margin satisfied by all training points (simulation, seed mean)",
    "kappa_max_err": "standard error of kappa_max over seeds",
    "T_heuristic": "weak-noise heuristic temperature (simulation's <loss'^2>)",
}


class NoiseConfig(Section):
    """``[noise]``: replicas, linear response and DMFT options of the study.

    Times are in the config's time units (``t = k eta``). The linear response is measured in
    ``n_windows`` consecutive windows of ``max_lag`` that end at the horizon (or start at
    ``equilibration`` if given); the DMFT's reference times cover the same span."""

    n_replicas: int = Field(2, ge=2, le=1000, description="replicas per seed (D averages over pairs), in [2, 1000]")
    equilibration: float | None = Field(None, gt=0, description="time of the first field (default: windows end at the horizon)")
    max_lag: float = Field(1.5, gt=0, description="largest lag of the FDT plot (time units), in (0, inf)")
    n_windows: int = Field(4, ge=1, le=10_000, description="consecutive response windows averaged (time-translation average), in [1, 10000]")
    short_lags: int = Field(3, ge=1, description="lags (steps) of the short-lag slope, in [1, max_lag / eta]")
    n_probes: int = Field(4, ge=1, le=10_000, description="Rademacher probes of the linear response, in [1, 10000]")
    units: Literal["field", "loss"] = Field("field", description="temperature units: field or loss")
    dmft_seeds: int = Field(2, ge=0, le=256, description="independent DMFT solves for the error bar (0: no DMFT), in [0, 256]")
    tail: float = Field(0.25, gt=0, le=1, description="fraction of the saved times averaged into D_inf, in (0, 1]")


def fdt_windows(cfg: Config, nopt: NoiseConfig | None = None) -> tuple[int, int, int]:
    """``(k0, L, span)`` in steps: first field step of the simulation, lag window, and the DMFT
    reference span (``n_ref = n_windows`` references in ``[T - span, T]``) of ``cfg`` with the
    ``[noise]`` table ``nopt`` (default ``cfg.noise``). Raises :class:`ConfigError` naming the keys
    when the windows do not fit in the horizon or ``noise.short_lags`` exceeds the lag window."""
    nopt = cfg.noise if nopt is None else nopt
    alg = cfg.algorithm
    T = alg.n_saves * alg.save_every
    if not nopt.max_lag <= alg.horizon:
        raise ConfigError(f"noise.max_lag={nopt.max_lag:g} must be <= algorithm.horizon={alg.horizon:g} (a lag inside the run)")
    if nopt.n_windows > T:
        raise ConfigError(f"noise.n_windows={nopt.n_windows} must be <= the number of steps {T} (algorithm.horizon / algorithm.eta)")
    if nopt.equilibration is not None and not nopt.equilibration <= alg.horizon:
        raise ConfigError(f"noise.equilibration={nopt.equilibration:g} must be <= algorithm.horizon={alg.horizon:g}")
    L = max(1, int(round(nopt.max_lag / alg.eta)))
    need = nopt.n_windows * (L + 1)
    if nopt.short_lags > L:
        raise ConfigError(
            f"noise.short_lags={nopt.short_lags} exceeds the lag window of noise.max_lag={nopt.max_lag:g} "
            f"(= {L} steps of algorithm.eta={alg.eta:g}); allowed: short_lags in [1, {L}]"
        )
    if nopt.equilibration is None:
        k0 = T - need
    else:
        k0 = int(round(nopt.equilibration / alg.eta))
        if k0 + need > T:
            raise ConfigError(
                f"noise.equilibration={nopt.equilibration:g}: the {nopt.n_windows} response windows of "
                f"noise.max_lag={nopt.max_lag:g} end after the horizon {alg.horizon:g}; allowed: equilibration <= "
                f"{(T - need) * alg.eta:g}"
            )
    if k0 < L:
        raise ConfigError(
            f"noise.n_windows={nopt.n_windows} x noise.max_lag={nopt.max_lag:g} leaves {max(k0, 0) * alg.eta:g} time "
            f"units of equilibration before the first field (< max_lag); raise algorithm.horizon above "
            f"{(need + L) * alg.eta:g} or lower noise.n_windows / noise.max_lag"
        )
    span = min((nopt.n_windows - 1) * (L + 1), T - L)
    return k0, L, span


class NoiseStudyConfig(Config):
    """A config of ``sgdlab noise``: the Gaussian-mixture config plus ``[noise]``.

    The study needs the simulation (``simulation.enabled = true``) and solves the DMFT itself
    when ``noise.dmft_seeds > 0`` (``theory.methods`` stays empty; ``[theory]`` sets the solver).
    """

    #: a sweep's points must have the same variables: the DMFT's presence and seeds are fixed
    fixed_keys: ClassVar[dict[str, str]] = {
        **Config.fixed_keys,
        "noise.dmft_seeds": "the DMFT replicates of a point set its error bars",
    }

    noise: NoiseConfig = Field(default_factory=NoiseConfig)

    @model_validator(mode="after")
    def _theory_fits_the_grid(self):  # replaces the run study's check of the same name
        if not self.simulation.enabled:
            raise ValueError("simulation.enabled = false: the noise study measures the simulation (replicas, response, margins)")
        if self.theory.methods:
            raise ValueError(
                f"theory.methods={self.theory.methods}: the noise study solves the DMFT when noise.dmft_seeds > 0; "
                "leave theory.methods empty"
            )
        alg = self.algorithm
        if not alg.plan.constant or alg.momentum > 0:
            raise ValueError(
                "the noise study measures a stationary state at a constant step: remove algorithm.schedule "
                "and algorithm.momentum (use sgdlab run for schedules and momentum)"
            )
        fdt_windows(self)
        self._check_sizes(dmft=self.noise.dmft_seeds > 0, replicas=self.noise.n_replicas + self.noise.n_probes)
        if self.noise.dmft_seeds > 0:
            need = 2 * (self.algorithm.n_saves * self.algorithm.save_every + 1)
            if self.theory.samples < need:
                raise ValueError(
                    f"theory.samples={self.theory.samples} must be >= 2 (n_steps + 1) = {need} for the DMFT's response "
                    "regression (noise.dmft_seeds > 0); raise it, shorten the horizon or set noise.dmft_seeds = 0"
                )
        return self


def load_noise_config(source: NoiseStudyConfig | dict[str, Any] | str | Path | None = None) -> NoiseStudyConfig:
    """A validated :class:`NoiseStudyConfig` from a config, a dict of TOML keys, a TOML path or
    ``None`` (the built-in example ``examples/noise/default.toml``)."""
    if source is None:
        from importlib import resources

        source = Path(str(resources.files("sgdlab") / "examples" / "noise" / "default.toml"))
    return validate_config(NoiseStudyConfig, source)


class NoiseMeasurement(NamedTuple):
    """Everything :func:`measure_noise` measures for one config (NumPy arrays, float64).

    ``times (n_t,)``; ``D, q (seed, n_t)`` replica distance and norm; ``margin (seed, n)``;
    ``fdt``: ``{"sim": FDTResult, "dmft": FDTResult}`` (``"dmft"`` only with ``dmft_seeds > 0``);
    ``D_dmft (dmft_seed, n_t)`` or ``None``; ``mean_sq_dloss``; ``heuristic`` (weak-noise ``T`` in
    the units of ``fdt``); ``mobility``; ``lag_time (L+1,)``."""

    times: np.ndarray
    D: np.ndarray
    q: np.ndarray
    margin: np.ndarray
    fdt: dict
    D_dmft: np.ndarray | None
    mean_sq_dloss: float
    heuristic: float
    mobility: float
    lag_time: np.ndarray


def response_curve(runs):
    """:class:`~sgdlab.dmft.fdt.FDTCurve` of seed-batched :class:`~sgdlab.dmft.noise_sim.ResponseRun`
    (leading seed axis): the windows of a seed are averaged (they are correlated), the seeds are
    the independent replicates."""
    from sgdlab.dmft.fdt import FDTCurve

    dC = np.asarray(runs.dC, np.float64).mean(axis=-2)
    chi = np.asarray(runs.chi, np.float64).mean(axis=-2)
    dcurve = np.asarray(runs.drift_curve, np.float64)
    return FDTCurve(np.arange(dC.shape[-1]), dC, chi, None if np.isnan(dcurve).all() else dcurve)


def _check_finite(quantity: str, values, times, seeds, who: str = "seed") -> None:
    """Raise :class:`NonFiniteError` at the earliest time where ``values (seed, time)`` is NaN/inf."""
    values = np.asarray(values, np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        j = int(np.nonzero(bad.any(axis=0))[0][0])
        s = int(np.nonzero(bad[:, j])[0][0])
        raise NonFiniteError(
            f"{quantity} became {values[s, j]} at t={float(times[j]):g} for {who} {seeds[s]}; "
            "the noise measurement stopped there (lower algorithm.eta or check the config)"
        )


def measure_noise(cfg: NoiseStudyConfig, progress: Callable[[int, int], None] | None = None) -> NoiseMeasurement:
    """Replica pairs, linear response (simulation) and, with ``noise.dmft_seeds > 0``, the DMFT
    ``(C, R)`` and the two-replica DMFT of one validated :class:`NoiseStudyConfig`.
    ``progress(done, total)`` is called after each of these stages. Raises
    :class:`NonFiniteError` naming the quantity, the time and the seed when ``D``, ``q``, the
    margins or the response are NaN or inf."""
    import jax

    from sgdlab.dmft.experiment import dmft_inputs, simulation_inputs
    from sgdlab.dmft.fdt import effective_temperature, fit_fdt, weak_noise_temperature
    from sgdlab.dmft.noise_sim import replica_run, response_runs, seed_keys
    from sgdlab.dmft.replicas import replica_distance
    from sgdlab.dmft.solver import solve_dmft

    nopt, alg = cfg.noise, cfg.algorithm
    stages = 4 if nopt.dmft_seeds > 0 else 2
    done = (lambda k: progress(k, stages)) if progress else (lambda k: None)
    k0, L, span = fdt_windows(cfg)
    spec, params = simulation_inputs(cfg)
    seeds = cfg.simulation.seed_list
    keys = seed_keys(seeds)
    times = np.arange(alg.n_saves + 1) * alg.save_every * alg.eta
    mobility = alg.batch_fraction if alg.normalisation == "unnormalised" else 1.0
    rr = jax.vmap(lambda k: replica_run(spec, params, k, nopt.n_replicas, alg.n_saves))(keys)
    _check_finite("q (replica self-overlap)", rr.q, times, seeds)
    _check_finite("D (replica distance)", rr.D, times, seeds)
    margin = np.asarray(rr.margins, np.float64)  # (seed, sample), at the last time
    _check_finite("margin y h / sqrt(q)", margin, np.full(margin.shape[1], times[-1]), seeds)
    done(1)
    runs = response_runs(spec, params, keys, k0, L, nopt.n_probes, nopt.n_windows)
    steps = k0 + (np.arange(nopt.n_windows)[:, None] * (L + 1) + np.arange(L + 1)[None]).ravel()
    n = len(seeds)
    _check_finite("dC (correlation drop)", np.asarray(runs.dC).reshape(n, -1), steps * alg.eta, seeds)
    _check_finite("chi (integrated response)", np.asarray(runs.chi).reshape(n, -1), steps * alg.eta, seeds)
    done(2)
    fdt = {"sim": fit_fdt(response_curve(runs), nopt.short_lags, nopt.units, mobility)}
    msq = float(np.mean(np.asarray(runs.mean_sq_dloss)))
    tau = alg.persistence_time if alg.persistence_time is not None else alg.eta
    heur = weak_noise_temperature(cfg.problem.alpha, cfg.problem.delta, msq, alg.batch_fraction, tau, alg.eta)
    if nopt.units == "loss":
        heur /= mobility
    D_dmft = None
    if nopt.dmft_seeds > 0:
        problem, dyn, opt = dmft_inputs(cfg)
        sols = [solve_dmft(problem, dyn, opt._replace(seed=int(s))) for s in range(nopt.dmft_seeds)]
        done(3)
        reps = [replica_distance(s, seed=i, time_step=alg.eta) for i, s in enumerate(sols)]
        D_dmft = np.array([r.D[:: alg.save_every] for r in reps], np.float64)
        _check_finite("D (two-replica DMFT)", D_dmft, times, list(range(nopt.dmft_seeds)), who="DMFT seed")
        fdt["dmft"] = effective_temperature(
            np.array([s.C for s in sols]), np.array([s.R for s in sols]), L, nopt.short_lags,
            n_ref=nopt.n_windows if span > 0 else 1, ref_span=span or None, units=nopt.units, mobility=mobility,
        )
        done(4)
    return NoiseMeasurement(
        times=times,
        D=np.asarray(rr.D, np.float64),
        q=np.asarray(rr.q, np.float64),
        margin=margin,
        fdt=fdt,
        D_dmft=D_dmft,
        mean_sq_dloss=msq,
        heuristic=float(heur),
        mobility=float(mobility),
        lag_time=np.arange(L + 1) * alg.eta,
    )


def _sem(x) -> float:
    """Standard error of the mean of a 1-d sample (NaN for fewer than two values)."""
    x = np.asarray(x, np.float64).ravel()
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def summaries(cfg: NoiseStudyConfig, res: NoiseMeasurement) -> dict[str, list[float]]:
    """``{variable: [sim, dmft]}`` of :data:`SUMMARY_VARIABLES` (NaN where not measured)."""
    n_tail = max(1, int(round(cfg.noise.tail * (len(res.times) - 1))))
    out = {k: [math.nan, math.nan] for k in SUMMARY_VARIABLES}
    Ds = res.D[:, -n_tail:].mean(axis=1)
    out["D_inf"][0], out["D_inf_err"][0] = float(Ds.mean()), _sem(Ds)
    km = res.margin.min(axis=1)
    out["kappa_max"][0], out["kappa_max_err"][0] = float(km.mean()), _sem(km)
    out["T_heuristic"][0] = res.heuristic
    if res.D_dmft is not None:
        Dd = res.D_dmft[:, -n_tail:].mean(axis=1)
        out["D_inf"][1], out["D_inf_err"][1] = float(Dd.mean()), _sem(Dd)
    for i, m in enumerate(METHODS):
        if m in res.fdt:
            f = res.fdt[m]
            for name in ("T_eff", "T_eff_err", "T_short", "T_short_err", "curvature", "drift", "drift_err"):
                out[name][i] = float(getattr(f, name))
            out["stationary"][i] = float(bool(f.stationary))
    return out


def to_dataset(cfg: NoiseStudyConfig, res: NoiseMeasurement) -> xr.Dataset:
    """The Dataset of one measurement (see :func:`run`)."""
    from sgdlab.core.provenance import provenance

    n_lag = len(res.lag_time)
    curve = {k: np.full((len(METHODS), n_lag), np.nan) for k in ("dC", "chi")}
    for i, m in enumerate(METHODS):
        if m in res.fdt:
            curve["dC"][i], curve["chi"][i] = res.fdt[m].curve.dC, res.fdt[m].curve.chi
    extra = {}
    if res.D_dmft is not None:
        extra["D_dmft"] = (("dmft_seed", "t"), res.D_dmft, {"long_name": "replica distance from the two-replica DMFT"})
    summary = summaries(cfg, res)
    ds = xr.Dataset(
        {
            "D": (("seed", "t"), res.D, {"long_name": "replica distance D = |w1-w2|^2/(2d)"}),
            "q": (("seed", "t"), res.q, {"long_name": "self-overlap q = |w|^2/d (mean over replicas)"}),
            **extra,
            "margin_quantile": (("seed", "quantile"), np.quantile(res.margin, MARGIN_LEVELS, axis=1).T,
                                {"long_name": "quantiles of the margins y h / sqrt(q) of replica 0 at the end"}),
            "kappa_max_seed": (("seed",), res.margin.min(axis=1), {"long_name": "largest margin satisfied by all points, per seed"}),
            "dC": (("method", "lag"), curve["dC"], {"long_name": "C(t,t) - C(t,t-s)"}),
            "chi": (("method", "lag"), curve["chi"], {"long_name": "integrated response chi(s)"}),
            **{k: (("method",), np.asarray(v, np.float64), {"long_name": SUMMARY_VARIABLES[k]}) for k, v in summary.items()},
        },
        coords={
            "method": list(METHODS),
            "seed": np.asarray(cfg.simulation.seed_list, np.int64),
            "t": ("t", res.times, {"long_name": "time t = k eta"}),
            "lag": ("lag", res.lag_time, {"long_name": "lag s (time units)"}),
            "quantile": MARGIN_LEVELS,
            **({"dmft_seed": np.arange(res.D_dmft.shape[0])} if res.D_dmft is not None else {}),
        },
        attrs={
            **provenance(cfg, study=STUDY_NAME),
            "T_units": res.fdt["sim"].convention,
            "T_weak_noise_heuristic": res.heuristic,
            "mobility": res.mobility,
        },
    )
    return ds


def run(config: NoiseStudyConfig | dict[str, Any] | str | Path | None = None,
        progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """Measure the effective noise of ``config`` (a :class:`NoiseStudyConfig`, a dict of TOML
    keys, a TOML path or ``None`` for ``examples/noise/default.toml``).

    Returns a Dataset with ``D, q (seed, t)`` (replica pairs), ``D_dmft (dmft_seed, t)`` (with
    ``noise.dmft_seeds > 0``), ``margin_quantile (seed, quantile)`` (the margins of replica 0 at
    the end; quantile 0 is ``kappa_max_seed (seed)``), the FDT curves ``dC, chi (method, lag)``
    and the summaries of :data:`SUMMARY_VARIABLES` over ``method = ["sim", "dmft"]`` (NaN where
    not measured; ``stationary`` as 0/1). Attrs: the standard provenance (``study = "noise"``),
    ``T_units`` (a sentence stating units and mobility), ``T_weak_noise_heuristic``,
    ``mobility``. ``progress(done, total)`` after each stage. Raises :class:`NonFiniteError` when
    a measured quantity is NaN or inf.
    """
    cfg = load_noise_config(config)
    return to_dataset(cfg, measure_noise(cfg, progress))
