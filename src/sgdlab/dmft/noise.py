"""The effective noise of SGD in simulation: replica pairs, linear response, decision margins.

Source: F. Mignacco, P. Urbani, "The effective noise of stochastic gradient descent",
J. Stat. Mech. (2022) 083405, arXiv:2112.10852; sgdlab spec ``02_effective_noise.md``.

Built on the pure simulator :mod:`sgdlab.dmft.simulation` (same data, init and random streams):

- **Replicas** (:func:`replica_run`): ``n_replicas`` copies share the data and ``w(0)``
  (streams ``CENTROID, DATA, INIT`` of the seed key) and have independent batch masks and
  Langevin noise. Replica 0 uses the seed's own ``MASK``/``NOISE`` streams, so it *is* the plain
  simulation of that seed; replica ``r >= 1`` uses ``fold_in(fold_in(key, STREAM_REPLICA), r)`` as
  the base of its ``MASK``/``NOISE`` streams. Replicas are vmapped (data broadcast), seeds vmapped.
  Replica distance ``D(t) = (1/2d) |w1 - w2|^2`` (mean over pairs if ``n_replicas > 2``);
  GD has no noise, so ``D = 0`` exactly.
- **Linear response** (:func:`response_run`): after ``k0`` steps, a field ``f = eps r_p`` (Rademacher
  probes ``r_p``, ``p < n_probes``) is added inside the bracket of step ``k0`` (so
  ``w_{k0+1} += eta f``), with the same masks and noise (common random numbers). The response is
  taken in the limit ``eps -> 0`` exactly, by forward-mode differentiation (the tangent of the
  finite difference, pushed by the linearised step :func:`_step`; tested against ``jax.jvp``)::

      R(k0 + l, k0) = (1/d) mean_p r_p . dw_{k0+l} / d eps,      chi(l) = sum_{l'=1}^{l} R(k0+l', k0),
      dC(l) = C(k0+l, k0+l) - C(k0+l, k0),

  which equals the fixed-``k`` definition of :mod:`sgdlab.dmft.fdt` in the stationary state.
  ``n_windows`` consecutive windows (fresh probes each) are averaged; the first and last give
  the stationarity drift ``max_l |C(k_last+l, k_last) - C(k0+l, k0)| / C(k0, k0)``.
- **Margins** (:func:`margins`): ``kappa_mu = y_mu h_mu / sqrt(q) = y_mu w.x_mu / |w|`` for the
  two-cluster model (sign classifier); the largest margin satisfied by every training point is
  ``min_mu kappa_mu`` (the constraint-satisfaction view ``y_mu h_mu >= kappa |w| / sqrt(d)``).

Units: the field enters the *configured* update's bracket. For a normalised config the bracket is
``eta [lambda w + g / b - f]``; the temperature is then in the config's own field units (the
mobility of the normalised update is 1).
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.dmft import losses
from sgdlab.dmft.batch_mask import init_mask, step_mask
from sgdlab.dmft.update import UpdateRule, apply_update
from sgdlab.dmft import problem as gm
from sgdlab.dmft.simulation import STREAM_MASK, STREAM_NOISE, SimParams, SimSpec, SimState, _problem, init, seed_keys
from sgdlab.dmft.fdt import FDTCurve

__all__ = [
    "STREAM_REPLICA",
    "ReplicaRun",
    "ResponseRun",
    "margins",
    "noise_command",
    "noise_scan",
    "plot_noise_scan",
    "replica_keys",
    "replica_run",
    "response_run",
]

#: Stream of the replicas' own mask/noise keys (replica r >= 1): fold_in(fold_in(key, 16), r).
STREAM_REPLICA = 16


def replica_keys(key: jax.Array, n_replicas: int) -> tuple[jax.Array, jax.Array]:
    """``(mask_keys, noise_keys)``, each ``(n_replicas,)`` typed keys; replica 0 = the seed's own."""
    masks, noises = [jax.random.fold_in(key, STREAM_MASK)], [jax.random.fold_in(key, STREAM_NOISE)]
    for r in range(1, n_replicas):  # static loop over replicas (not over time)
        base = jax.random.fold_in(jax.random.fold_in(key, STREAM_REPLICA), r)
        masks.append(jax.random.fold_in(base, STREAM_MASK))
        noises.append(jax.random.fold_in(base, STREAM_NOISE))
    return jnp.stack(masks), jnp.stack(noises)


class Tangent(NamedTuple):
    """Tangent vectors pushed forward by the linearised dynamics: ``w (P, d)`` and their
    pre-activations ``h = x w / sqrt(d)`` ``(P, n)`` (carried, like :class:`SimState.h`, so that a
    step reads the data twice for the state and all tangents together)."""

    w: jax.Array
    h: jax.Array


def _step(spec: SimSpec, params: SimParams, data, mask_key, noise_key, state: SimState, tangent: Tangent | None = None):
    """One step with explicit mask/noise base keys (the same update as :func:`sgdlab.dmft.simulation.step`
    for the seed's own keys). With ``tangent``, also its image under the linearised step (masks and
    noise fixed): ``h_t <- loss''(y, h) s h_t`` enters the data gradient, the update is affine in
    ``(w, g)``. The state and the ``P`` tangents share one ``X^T [.]`` and one ``X [.]`` product."""
    sqrt_d = np.sqrt(spec.d).astype(state.w.dtype)
    loss = gm.sample_loss(_problem(spec, params))
    x, y = data.train.x, data.train.y
    rule = UpdateRule(*(jnp.asarray(r, state.w.dtype) for r in params.rule))
    nk = jax.random.fold_in(noise_key, state.k) if spec.langevin else None
    r = jnp.where(state.s, losses.derivative(loss)(y, state.h), 0.0)
    if tangent is None:
        w = apply_update(rule, state.w, x.T @ r / sqrt_d, nk)
        h = x @ w / sqrt_d
    else:
        rt = jnp.where(state.s, losses.derivative(loss, 2)(y, state.h), 0.0) * tangent.h  # (P, n)
        g = jnp.concatenate([r[None], rt]) @ x / sqrt_d  # (P+1, d)
        w = apply_update(rule, state.w, g[0], nk)
        wt = apply_update(rule, tangent.w, g[1:], None)  # the linear part of the affine update
        hh = jnp.concatenate([w[None], wt]) @ x.T / sqrt_d  # (P+1, n)
        h, tangent = hh[0], Tangent(wt, hh[1:])
    s = state.s
    if not spec.full_batch:
        s = step_mask(jax.random.fold_in(mask_key, state.k + 1), params.chain, s)
    new = SimState(w, h, s, state.k + 1)
    return new if tangent is None else (new, tangent)


def _replica_init(spec, params, key, n_replicas):
    data, st = init(spec, params, key)
    mask_keys, noise_keys = replica_keys(key, n_replicas)
    if spec.full_batch:
        s = jnp.broadcast_to(st.s, (n_replicas,) + st.s.shape)
    else:
        s = jax.vmap(lambda mk: init_mask(jax.random.fold_in(mk, 0), params.chain, spec.n))(mask_keys)
    rep = lambda a: jnp.broadcast_to(a, (n_replicas,) + a.shape)  # noqa: E731
    return data, SimState(rep(st.w), rep(st.h), s, rep(st.k)), mask_keys, noise_keys


class ReplicaRun(NamedTuple):
    """Replica observables of one seed at the saved times (``(n_saves+1,)`` each):
    ``D`` replica distance, ``q`` and ``m`` (mean over replicas), ``train_error`` (mean over
    replicas); ``margins (n,)`` of replica 0 at the end; ``t`` not included (``k * save_every * eta``)."""

    D: jax.Array
    q: jax.Array
    m: jax.Array
    train_error: jax.Array
    margins: jax.Array


def margins(y: jax.Array, h: jax.Array, q: jax.Array) -> jax.Array:
    """Normalised margins ``kappa_mu = y_mu h_mu / sqrt(q)`` (``= y_mu w.x_mu / |w|``), shape
    ``(n,)``; ``min`` of it is the largest ``kappa`` with ``y_mu h_mu >= kappa sqrt(q)`` for all mu."""
    return y * h / jnp.sqrt(q)


@partial(jax.jit, static_argnames=("spec", "n_replicas", "n_saves"))
def replica_run(spec: SimSpec, params: SimParams, key: jax.Array, n_replicas: int = 2, n_saves: int = 1) -> ReplicaRun:
    """``n_replicas`` replicas of one seed for ``n_saves * spec.save_every`` steps (nested
    ``lax.scan``); vmap over ``key`` (and ``params``) for seeds. Two-cluster model only for the
    margins (for three clusters they are returned but mean ``y h / sqrt(q)``, not a margin)."""
    data, state, mask_keys, noise_keys = _replica_init(spec, params, key, n_replicas)
    d = spec.d
    iu = np.triu_indices(n_replicas, 1)
    problem = _problem(spec, params)

    def obs(st):
        w = st.w
        gram = w @ w.T / d
        sq = jnp.diag(gram)
        dist = 0.5 * (sq[:, None] + sq[None, :]) - gram  # (1/2d)|wa - wb|^2
        err = jax.vmap(lambda h: gm.training_observables(problem, data.train.y, h)[1])(st.h)
        return jnp.stack([jnp.mean(dist[iu]), jnp.mean(sq), jnp.mean(w @ data.train.v) / d, jnp.mean(err)])

    one = jax.vmap(lambda mk, nk, st: _step(spec, params, data, mk, nk, st))

    def block(st, _):
        st = jax.lax.fori_loop(0, spec.save_every, lambda i, s_: one(mask_keys, noise_keys, s_), st)
        return st, obs(st)

    final, out = jax.lax.scan(block, state, None, length=n_saves)
    out = jnp.concatenate([obs(state)[None], out], axis=0)
    q0 = jnp.dot(final.w[0], final.w[0]) / d
    return ReplicaRun(out[:, 0], out[:, 1], out[:, 2], out[:, 3], margins(data.train.y, final.h[0], q0))


class ResponseRun(NamedTuple):
    """Linear-response measurement of one seed over ``n_windows`` consecutive windows of lags
    ``l = 0..L``: ``dC``, ``chi`` ``(n_windows, L+1)`` (see the module docstring), the signed
    stationarity ``drift_curve (L,)`` (NaN with one window) and ``mean_sq_dloss`` (the training
    mean of ``loss'^2`` at ``k0``, for the weak-noise heuristic)."""

    dC: jax.Array
    chi: jax.Array
    drift_curve: jax.Array
    mean_sq_dloss: jax.Array


@partial(jax.jit, static_argnames=("spec", "k0", "max_lag", "n_probes", "n_windows"))
def response_run(
    spec: SimSpec, params: SimParams, key: jax.Array, k0: int, max_lag: int, n_probes: int = 4, n_windows: int = 2
) -> ResponseRun:
    """Equilibrate ``k0`` steps, then ``n_windows`` consecutive windows of ``max_lag`` steps: at
    the start ``k_w = k0 + w (L + 1)`` of window ``w`` fresh probes are injected and followed with
    the tangent for ``L`` lags (the plain trajectory is never perturbed; the response is exact,
    forward mode). Averaging the windows is the time-translation average of the stationary state
    (as ``n_ref`` for the DMFT); the drift compares the first and last windows' ``C(k_w + l, k_w)``:
    ``max_l |C_last - C_first| / C(k_0, k_0)``. Cost ``O((k0 + n_windows (P+1) L) n d)``."""
    if n_windows < 1:
        raise ValueError(f"n_windows={n_windows} must be >= 1")
    data, state, mask_keys, noise_keys = _replica_init(spec, params, key, 1)
    state = jax.tree_util.tree_map(lambda a: a[0], state)
    mk, nk = mask_keys[0], noise_keys[0]
    d = spec.d
    plain = lambda st: _step(spec, params, data, mk, nk, st)  # noqa: E731
    state = jax.lax.fori_loop(0, k0, lambda i, st: plain(st), state)
    dloss = losses.derivative(gm.sample_loss(_problem(spec, params)))
    msq = jnp.mean(dloss(data.train.y, state.h) ** 2)
    q0 = jnp.dot(state.w, state.w) / d
    eta = jnp.asarray(params.rule.eta, state.w.dtype)
    probe_key = jax.random.fold_in(key, STREAM_REPLICA + 1)

    def window(st, w_index):
        w_ref = st.w
        probes = jax.random.rademacher(jax.random.fold_in(probe_key, w_index), (n_probes, d), st.w.dtype)
        st = plain(st)
        tw = eta * probes  # field inside the bracket of step k_w: w_{k_w+1} += eta f
        tangent = Tangent(tw, tw @ data.train.x.T / np.sqrt(d).astype(tw.dtype))

        def lag_step(carry, _):
            s_, tg = carry
            out = jnp.stack([jnp.dot(s_.w, s_.w) / d, jnp.dot(s_.w, w_ref) / d, jnp.mean(jnp.sum(probes * tg.w, axis=1)) / d])
            s_, tg = _step(spec, params, data, mk, nk, s_, tg)
            return (s_, tg), out

        (st, _), win = jax.lax.scan(lag_step, (st, tangent), None, length=max_lag)
        q, c, r = win[:, 0], win[:, 1], win[:, 2]  # lags 1..L (the last step is taken plain)
        dC = jnp.concatenate([jnp.zeros(1, q.dtype), q - c])
        chi = jnp.concatenate([jnp.zeros(1, r.dtype), jnp.cumsum(r)])
        corr = jnp.concatenate([jnp.dot(w_ref, w_ref)[None] / d, c[:-1]])  # C(k_w + l, k_w), l = 0..L-1
        return st, (dC, chi, corr)

    # window w starts at step k_w = k0 + w (L + 1) (one plain step, then L tangent steps)
    _, (dC, chi, corr) = jax.lax.scan(window, state, jnp.arange(n_windows))
    dcurve = (corr[-1] - corr[0]) / q0 if n_windows > 1 else jnp.full(corr.shape[-1], jnp.nan, q0.dtype)
    return ResponseRun(dC, chi, dcurve, msq)


def response_curve(runs: ResponseRun) -> FDTCurve:
    """:class:`FDTCurve` of seed-batched :class:`ResponseRun` (leading seed axis): the windows of a
    seed are averaged (they are correlated), the seeds are the independent replicates."""
    dC = np.asarray(runs.dC, np.float64).mean(axis=-2)
    chi = np.asarray(runs.chi, np.float64).mean(axis=-2)
    dcurve = np.asarray(runs.drift_curve, np.float64)
    return FDTCurve(np.arange(dC.shape[-1]), dC, chi, None if np.isnan(dcurve).all() else dcurve)


# --------------------------------------------------------------------------------------------
# Orchestration: measurement of one config, the `sgdlab noise` command, the (alpha, b, tau) scan
# --------------------------------------------------------------------------------------------

from pydantic import Field, field_validator  # noqa: E402

from sgdlab.dmft.config import ConfigError, _Section  # noqa: E402


class NoiseScanConfig(_Section):
    """``[noise.scan]``: a grid of persistent SGD over ``alpha x batch_fraction x persistence_time``
    (the config's algorithm is replaced by ``persistent_sgd``; ``persistence_time = eta / b`` is
    plain minibatch SGD). Each point is validated as a full config (a bad value names its key)."""

    batch_fraction: list[float] = Field(min_length=1, description="batch fractions b in (0, 1]")
    persistence_time: list[float] = Field(min_length=1, description="persistence times tau >= eta")
    alpha: list[float] | None = Field(None, min_length=1, description="sample ratios (default: the config's)")
    scheduler: str | None = Field(None, description="dask scheduler address (default: run the points in this process)")

    @field_validator("batch_fraction", "persistence_time", "alpha")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(not x > 0 for x in v):
            raise ValueError("every value must be > 0")
        return v


class NoiseConfig(_Section):
    """``[noise]``: replicas, linear response, DMFT and scan options of :func:`noise_command`.

    Times are in the config's time units (``t = k eta``). The linear response is measured in
    ``n_windows`` consecutive windows of ``max_lag`` that end at the horizon (or start at
    ``equilibration`` if given); the DMFT's reference times cover the same span."""

    n_replicas: int = Field(2, ge=2, description="replicas per seed (D averages over pairs)")
    equilibration: float | None = Field(None, gt=0, description="time of the first field (default: windows end at the horizon)")
    max_lag: float = Field(1.5, gt=0, description="largest lag of the FDT plot")
    n_windows: int = Field(4, ge=1, description="consecutive response windows averaged (time-translation average)")
    short_lags: int = Field(3, ge=1, description="lags (steps) of the short-lag slope")
    n_probes: int = Field(4, ge=1, description="Rademacher probes of the linear response")
    units: str = Field("field", pattern="^(field|loss)$", description="temperature units: field or loss")
    dmft_seeds: int = Field(2, ge=0, description="independent DMFT solves for the error bar (0: no DMFT)")
    tail: float = Field(0.25, gt=0, le=1, description="fraction of the saved times averaged into D_inf")
    scan: NoiseScanConfig | None = None


def split_noise_config(data: dict) -> tuple[dict, NoiseConfig]:
    """``(config mapping without [noise], NoiseConfig)`` of a raw TOML mapping."""
    from sgdlab.dmft.config import validate_config

    data = dict(data)
    try:
        return data, validate_config(NoiseConfig, data.pop("noise", {}) or {})
    except ConfigError as err:  # name the keys by their full dotted path
        raise ConfigError(str(err).replace("\n  ", "\n  noise.")) from None


def fdt_windows(cfg, nopt: NoiseConfig) -> tuple[int, int, int]:
    """``(k0, L, span)`` in steps: first field step of the simulation, lag window, and the DMFT
    reference span (``n_ref = n_windows`` references in ``[T - span, T]``); raises ConfigError
    naming the keys when the windows do not fit in the horizon."""
    alg = cfg.algorithm
    T = alg.n_saves * alg.save_every
    L = max(1, int(round(nopt.max_lag / alg.eta)))
    need = nopt.n_windows * (L + 1)
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


def measure_noise(cfg, nopt: NoiseConfig, progress: Callable[[int, int], None] | None = None) -> NoiseMeasurement:
    """Replica pairs, linear response (simulation) and, with ``nopt.dmft_seeds > 0``, the DMFT
    ``(C, R)`` and the two-replica DMFT of one validated :class:`sgdlab.dmft.config.Config`.
    ``progress(done, total)`` is called after each of these stages."""
    from sgdlab.dmft.experiment import dmft_inputs, simulation_inputs
    from sgdlab.dmft.fdt import effective_temperature, fit_fdt, weak_noise_temperature
    from sgdlab.dmft.replicas import replica_distance

    stages = 4 if nopt.dmft_seeds > 0 else 2
    done = (lambda k: progress(k, stages)) if progress else (lambda k: None)
    alg = cfg.algorithm
    k0, L, span = fdt_windows(cfg, nopt)
    spec, params = simulation_inputs(cfg)
    keys = seed_keys(cfg.simulation.seed_list)
    mobility = alg.batch_fraction if alg.normalisation == "unnormalised" else 1.0
    rr = jax.vmap(lambda k: replica_run(spec, params, k, nopt.n_replicas, alg.n_saves))(keys)
    done(1)
    runs = jax.vmap(lambda k: response_run(spec, params, k, k0, L, nopt.n_probes, nopt.n_windows))(keys)
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
        sols = [solve_dmft_seed(problem, dyn, opt, s) for s in range(nopt.dmft_seeds)]
        done(3)
        reps = [replica_distance(s, seed=i, time_step=alg.eta) for i, s in enumerate(sols)]
        D_dmft = np.array([r.D[:: alg.save_every] for r in reps], np.float64)
        fdt["dmft"] = effective_temperature(
            np.array([s.C for s in sols]), np.array([s.R for s in sols]), L, nopt.short_lags,
            n_ref=nopt.n_windows if span > 0 else 1, ref_span=span or None, units=nopt.units, mobility=mobility,
        )
        done(4)
    return NoiseMeasurement(
        times=np.arange(alg.n_saves + 1) * alg.save_every * alg.eta,
        D=np.asarray(rr.D, np.float64),
        q=np.asarray(rr.q, np.float64),
        margin=np.asarray(rr.margins, np.float64),
        fdt=fdt,
        D_dmft=D_dmft,
        mean_sq_dloss=msq,
        heuristic=float(heur),
        mobility=float(mobility),
        lag_time=np.arange(L + 1) * alg.eta,
    )


def noise_command(config_path: str | Path, out_dir: str | Path, overrides: dict[str, Any] | None = None,
                  progress: Callable[[int, int], None] | None = None):
    """Run the effective-noise analysis of a TOML config and write the results.

    The TOML is an ordinary sgdlab config plus an optional ``[noise]`` table (:class:`NoiseConfig`).
    Writes ``out_dir/noise.zarr`` (Dataset: ``D, q`` over ``(seed, t)``; ``margin`` over
    ``(seed, sample)``; ``dC, chi`` over ``(method, lag)``; temperatures in attrs) and the figures
    ``noise_fdt.png``, ``noise_distance.png``, ``noise_margins.png``. With a ``[noise.scan]``
    table it runs :func:`noise_scan` instead and writes ``out_dir/noise_scan.zarr`` (written
    after every point; a rerun resumes) and the heat maps ``noise_scan_{D_inf,T_eff,kappa_max}.png``.
    ``overrides``: a nested dict merged over the file (``sgdlab noise --set noise.max_lag=1.0``).
    ``progress(done, total)`` counts stages (or scan points). Returns a ``rich.table.Table`` summary.
    """
    import xarray as xr

    from sgdlab.dmft.config import load_config, merge_tables, read_toml
    from sgdlab.dmft.experiment import _base_attrs
    from sgdlab.dmft.plot import save_figure
    from sgdlab.core.store import save

    path = Path(config_path)
    data = merge_tables(read_toml(path), overrides) if overrides else read_toml(path)
    data.setdefault("name", path.stem)
    raw, nopt = split_noise_config(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if nopt.scan is not None:
        ds = noise_scan(raw, nopt, progress=progress, store=out / "noise_scan.zarr")
        for var in ("D_inf", "T_eff", "kappa_max"):
            save_figure(plot_noise_scan(ds, var), out / f"noise_scan_{var}.png")
        return scan_table(ds, title=f"effective-noise scan: {raw.get('name', '')}")
    cfg = load_config(raw)
    res = measure_noise(cfg, nopt, progress)
    methods = list(res.fdt)
    extra = {}
    if res.D_dmft is not None:
        extra["D_dmft"] = (("dmft_seed", "t"), res.D_dmft, {"long_name": "replica distance from the two-replica DMFT"})
    ds = xr.Dataset(
        {
            **extra,
            "D": (("seed", "t"), res.D, {"long_name": "replica distance D = |w1-w2|^2/(2d)"}),
            "q": (("seed", "t"), res.q),
            "margin": (("seed", "sample"), res.margin, {"long_name": "y h / sqrt(q) of replica 0 at the end"}),
            "kappa_max": (("seed",), res.margin.min(axis=1), {"long_name": "largest margin satisfied by all points"}),
            "dC": (("method", "lag"), np.array([res.fdt[m].curve.dC for m in methods])),
            "chi": (("method", "lag"), np.array([res.fdt[m].curve.chi for m in methods])),
            **{
                name: (("method",), [getattr(res.fdt[m], name) for m in methods])
                for name in ("T_eff", "T_eff_err", "T_short", "T_short_err", "curvature", "drift")
            },
        },
        coords={"seed": cfg.simulation.seed_list, "t": res.times, "method": methods, "lag": res.lag_time},
        attrs={**_base_attrs(cfg), "noise": json.dumps(nopt.model_dump()), "T_units": res.fdt["sim"].convention,
               "T_weak_noise_heuristic": res.heuristic},
    )
    save(ds, out / "noise.zarr")
    for name, fig in plot_noise(ds).items():
        save_figure(fig, out / f"noise_{name}.png")
    return _summary_table(cfg.name, res)


def _pm(x, e, fmt=".4g") -> str:
    return f"{x:{fmt}} ± {e:.2g}"


def _summary_table(name: str, res: NoiseMeasurement):
    from rich.table import Table

    table = Table(title=f"effective noise: {name} ({res.fdt['sim'].convention})")
    for col in ("quantity", "sim", "dmft"):
        table.add_column(col)
    cell = lambda m, f: (f(res.fdt[m]) if m in res.fdt else "-")  # noqa: E731
    rows = {
        "T_eff (global)": lambda r: _pm(r.T_eff, r.T_eff_err),
        "T_eff (short lags)": lambda r: _pm(r.T_short, r.T_short_err),
        "curvature": lambda r: f"{r.curvature:.3g}",
        "stationarity drift": lambda r: f"{r.drift:.3g}" + ("" if r.stationary else " (not stationary)"),
    }
    for label, f in rows.items():
        table.add_row(label, cell("sim", f), cell("dmft", f))
    table.add_row("T weak-noise heuristic", f"{res.heuristic:.4g}", "-")
    Dend = res.D[:, -1]
    Dcell = "-" if res.D_dmft is None else _pm(res.D_dmft[:, -1].mean(), _sem(res.D_dmft[:, -1]))
    table.add_row("D(t_max)", _pm(Dend.mean(), _sem(Dend)), Dcell)
    km = res.margin.min(axis=1)
    table.add_row("kappa_max (margin)", _pm(km.mean(), _sem(km)), "-")
    return table


def solve_dmft_seed(problem, dynamics, options, seed: int):
    """One DMFT solve with Monte-Carlo seed ``seed`` (independent replicate for error bars)."""
    from sgdlab.dmft.solver import solve_dmft

    return solve_dmft(problem, dynamics, options._replace(seed=int(seed)))


def plot_noise(ds) -> dict[str, Any]:
    """The three figures of a :func:`noise_command` Dataset: ``fdt`` (parametric plot with the
    lines of slope ``1/T_eff`` and the weak-noise heuristic), ``distance`` (D(t), mean ± s.e. over
    seeds) and ``margins`` (histogram of ``y h / sqrt(q)`` with ``kappa_max``)."""
    import matplotlib.pyplot as plt

    figs = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, m in enumerate(ds.method.values):
        x, y = ds.dC.values[i], ds.chi.values[i]
        T, e = float(np.ravel(ds.T_eff.values)[i]), float(np.ravel(ds.T_eff_err.values)[i])
        ax.plot(x, y, "o-" if m == "sim" else "-", ms=3, label=f"{m}: T_eff = {T:.3g} ± {e:.1g}")
        ax.plot(x, x / T, ":", color=ax.lines[-1].get_color())
    heur = float(ds.attrs["T_weak_noise_heuristic"])
    if heur > 0:
        x = ds.dC.values.max()
        ax.plot([0, x], [0, x / heur], "k--", lw=0.8, label=f"weak-noise heuristic T = {heur:.3g}")
    ax.set_xlabel("C(t,t) - C(t,t-s)")
    ax.set_ylabel("chi(s) (integrated response)")
    ax.set_title(ds.attrs["T_units"], fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["fdt"] = fig
    fig, ax = plt.subplots(figsize=(5, 4))
    D = ds.D.values
    mean, se = D.mean(0), D.std(0, ddof=1) / np.sqrt(D.shape[0]) if D.shape[0] > 1 else 0 * D[0]
    ax.plot(ds.t.values, mean, label="simulation (replica pairs)")
    ax.fill_between(ds.t.values, mean - se, mean + se, alpha=0.3)
    if "D_dmft" in ds:
        Dd = ds.D_dmft.values
        md, sd = Dd.mean(0), np.array([_sem(col) for col in Dd.T])
        ax.plot(ds.t.values, md, "k--", label="two-replica DMFT")
        ax.fill_between(ds.t.values, md - sd, md + sd, color="k", alpha=0.15)
    ax.set_xlabel("t")
    ax.set_ylabel("D(t) = |w1 - w2|^2 / 2d")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["distance"] = fig
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(ds.margin.values.ravel(), bins=60, density=True)
    km = float(ds.kappa_max.mean())
    ax.axvline(km, color="k", ls="--", label=f"kappa_max = {km:.3g} (seed mean)")
    ax.set_xlabel("margin y h / sqrt(q)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["margins"] = fig
    return figs


def _sem(x) -> float:
    """Standard error of the mean of a 1-d sample (NaN for fewer than two values)."""
    x = np.asarray(x, np.float64).ravel()
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


# --------------------------------------------------------------------------------------------
# Phase-diagram scan over (alpha, b, tau)
# --------------------------------------------------------------------------------------------

#: Scalar results of one scan point, per method (``sim``, ``dmft``); NaN where not measured.
SCAN_VARIABLES = {
    "D_inf": "replica distance, mean over the last `tail` fraction of the saved times",
    "D_inf_err": "standard error of D_inf (over seeds / DMFT Monte-Carlo seeds)",
    "T_eff": "FDT effective temperature, global slope (valid where stationary)",
    "T_eff_err": "standard error of T_eff",
    "T_short": "FDT effective temperature, short-lag slope",
    "drift": "stationarity drift of C(t, t - s)",
    "kappa_max": "largest margin satisfied by all training points (simulation, seed mean)",
    "kappa_max_err": "standard error of kappa_max over seeds",
    "T_heuristic": "weak-noise heuristic temperature (simulation's <loss'^2>)",
}


def scan_point_config(base: dict, alpha: float | None, b: float, tau: float) -> dict:
    """The raw config of one scan point: ``base`` with persistent SGD at ``(b, tau)`` (and ``alpha``)."""
    import copy

    raw = copy.deepcopy(dict(base))
    raw.pop("noise", None)
    alg = {k: v for k, v in raw.get("algorithm", {}).items() if k != "temperature"}
    raw["algorithm"] = {**alg, "name": "persistent_sgd", "batch_fraction": b, "persistence_time": tau}
    if alpha is not None:
        raw["problem"] = {**raw.get("problem", {}), "alpha": alpha}
    return raw


def scan_point(raw: dict, nopt_json: str) -> dict:
    """Measure one scan point (a raw config mapping) -> ``{variable: [sim, dmft]}`` plus
    ``stationary: [bool, bool]``; invalid values raise :class:`~sgdlab.dmft.config.ConfigError`.
    Pure function of JSON-able inputs (runs on a dask worker)."""
    from sgdlab.dmft.config import load_config

    nopt = NoiseConfig.model_validate_json(nopt_json)
    cfg = load_config(raw)
    res = measure_noise(cfg, nopt)
    n_tail = max(1, int(round(nopt.tail * (len(res.times) - 1))))
    out = {k: [math.nan, math.nan] for k in SCAN_VARIABLES}
    out["stationary"] = [False, False]
    Ds = res.D[:, -n_tail:].mean(axis=1)
    out["D_inf"][0], out["D_inf_err"][0] = float(Ds.mean()), _sem(Ds)
    km = res.margin.min(axis=1)
    out["kappa_max"][0], out["kappa_max_err"][0] = float(km.mean()), _sem(km)
    out["T_heuristic"][0] = res.heuristic
    if res.D_dmft is not None:
        Dd = res.D_dmft[:, -n_tail:].mean(axis=1)
        out["D_inf"][1], out["D_inf_err"][1] = float(Dd.mean()), _sem(Dd)
    for i, m in enumerate(("sim", "dmft")):
        if m in res.fdt:
            f = res.fdt[m]
            out["T_eff"][i], out["T_eff_err"][i], out["T_short"][i], out["drift"][i] = f.T_eff, f.T_eff_err, f.T_short, f.drift
            out["stationary"][i] = bool(f.stationary)
    return out


def noise_scan(
    base_config: dict,
    noise: NoiseConfig | dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    store: str | Path | None = None,
    client=None,
):
    """Scan persistent SGD over the grid ``noise.scan`` (``alpha x b x tau``).

    ``base_config``: a raw config mapping (as read from TOML; a ``[noise]`` table in it is
    ignored: pass it as ``noise``). Per point (:func:`scan_point`): the asymptotic replica
    distance ``D_inf`` (mean of ``D(t)`` over the last ``tail`` of the saved times; simulation:
    mean ± s.e. over seeds; DMFT: over Monte-Carlo seeds of the RS + two-replica solves),
    ``T_eff`` from the simulation's linear response and from the DMFT ``(C, R)`` with the
    stationarity drift and flag (``T_eff`` is meaningful only where ``stationary``: the
    under-parametrised regime; the figures mask the other points), ``kappa_max`` (simulation)
    and the weak-noise heuristic.

    Points run in this process, or on the dask ``client`` (or ``noise.scan.scheduler``) as
    independent tasks. With ``store``, the Dataset is written (atomically) after every finished
    point, and points already in a store of the same scan are not recomputed (resume).

    Returns an ``xarray.Dataset`` with dims ``(method, alpha, b, tau)``, ``method = ["sim",
    "dmft"]``, the variables of :data:`SCAN_VARIABLES`, ``stationary`` and ``done (alpha, b, tau)``.
    """
    import itertools

    import xarray as xr

    from sgdlab.dmft.config import load_config
    from sgdlab.core.store import load, save

    nopt = noise if isinstance(noise, NoiseConfig) else NoiseConfig.model_validate(noise or {})
    if nopt.scan is None:
        raise ConfigError("noise.scan: missing; give [noise.scan] batch_fraction = [...] and persistence_time = [...]")
    sc = nopt.scan
    base = {k: v for k, v in dict(base_config).items() if k != "noise"}
    alphas = [float(a) for a in sc.alpha] if sc.alpha else [float(base.get("problem", {}).get("alpha", 2.0))]
    bs, taus = [float(b) for b in sc.batch_fraction], [float(t) for t in sc.persistence_time]
    grid = list(itertools.product(range(len(alphas)), range(len(bs)), range(len(taus))))
    raws = {ijk: scan_point_config(base, alphas[ijk[0]] if sc.alpha else None, bs[ijk[1]], taus[ijk[2]]) for ijk in grid}
    for raw in raws.values():  # validate every point before computing any
        load_config(raw)
    ident = json.dumps({"base": base, "noise": nopt.model_dump()}, sort_keys=True, default=str)
    shape = (2, len(alphas), len(bs), len(taus))
    dims = ("method", "alpha", "b", "tau")
    ds = xr.Dataset(
        {
            **{k: (dims, np.full(shape, np.nan), {"long_name": v}) for k, v in SCAN_VARIABLES.items()},
            "stationary": (dims, np.zeros(shape, bool)),
            "done": (dims[1:], np.zeros(shape[1:], bool)),
        },
        coords={"method": ["sim", "dmft"], "alpha": alphas, "b": bs, "tau": taus},
        attrs={"scan": ident, "units": nopt.units, "tail": nopt.tail},
    )
    if store is not None and Path(store).exists():
        old = load(store)
        if old.attrs.get("scan") != ident:
            raise ConfigError(f"{store}: holds a different scan; remove it or choose another output folder")
        ds = old
    todo = [ijk for ijk in grid if not bool(ds.done.values[ijk])]
    report = progress or (lambda done, total: None)
    report(len(grid) - len(todo), len(grid))

    def record(ijk, out):
        for k, v in out.items():
            ds[k].values[(slice(None),) + ijk] = v
        ds["done"].values[ijk] = True
        if store is not None:
            save(ds, store)
        report(int(ds.done.values.sum()), len(grid))

    njs = nopt.model_dump_json()
    made = client is None and bool(sc.scheduler)
    if made:
        from sgdlab.core.sweep import _make_client

        client, _ = _make_client(sc.scheduler, None, False)
    try:
        if client is None:
            for ijk in todo:
                record(ijk, scan_point(raws[ijk], njs))
        else:
            from dask.distributed import as_completed

            futures = {client.submit(scan_point, raws[ijk], njs, pure=False): ijk for ijk in todo}
            for fut in as_completed(futures):
                record(futures[fut], fut.result())
    finally:
        if made:
            client.close()
    return ds


def scan_table(ds, title: str = "effective-noise scan"):
    """A ``rich`` table of a :func:`noise_scan` Dataset: one row per point, sim beside DMFT."""
    from rich.table import Table

    table = Table(title=f"{title} (T in {ds.attrs.get('units', 'field')} units)")
    for col in ("alpha", "b", "tau", "T_eff sim", "T_eff dmft", "stationary", "D_inf sim", "D_inf dmft", "kappa_max"):
        table.add_column(col)
    for ia, a in enumerate(ds.alpha.values):
        for ib, b in enumerate(ds.b.values):
            for it, t in enumerate(ds.tau.values):
                v = lambda k, m: float(ds[k].values[m, ia, ib, it])  # noqa: E731
                table.add_row(
                    f"{a:g}", f"{b:g}", f"{t:g}", _pm(v("T_eff", 0), v("T_eff_err", 0)), _pm(v("T_eff", 1), v("T_eff_err", 1)),
                    "/".join("yes" if ds.stationary.values[m, ia, ib, it] else "no" for m in (0, 1)),
                    _pm(v("D_inf", 0), v("D_inf_err", 0)), _pm(v("D_inf", 1), v("D_inf_err", 1)),
                    _pm(v("kappa_max", 0), v("kappa_max_err", 0)),
                )
    return table


def plot_noise_scan(ds, variable: str = "D_inf", alpha: float | None = None) -> Any:
    """Heat maps of ``variable`` (``"D_inf"``, ``"T_eff"`` or ``"kappa_max"``) over ``(tau, b)``
    from :func:`noise_scan` at one ``alpha`` (default: the first): one panel per method that has
    values, a shared colour scale, each cell annotated ``value ± error``; ``T_eff`` cells of
    non-stationary points are blanked (hatched)."""
    import matplotlib.pyplot as plt

    if variable not in ("D_inf", "T_eff", "kappa_max"):
        raise ValueError(f"variable={variable!r}; allowed: D_inf, T_eff, kappa_max")
    sub = ds.sel(alpha=alpha) if alpha is not None else ds.isel(alpha=0)
    vals = sub[variable].values.copy()
    errs = sub[f"{variable}_err"].values
    if variable == "T_eff":
        vals = np.where(sub.stationary.values, vals, np.nan)
    keep = [k for k in range(vals.shape[0]) if np.isfinite(sub[variable].values[k]).any()] or [0]
    finite = vals[keep][np.isfinite(vals[keep])]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(keep), figsize=(4.4 * len(keep) + 0.8, 3.6), squeeze=False, layout="constrained")
    for ax, k in zip(axes[0], keep):
        im = ax.imshow(vals[k], origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis")
        for i in range(vals.shape[1]):
            for j in range(vals.shape[2]):
                if np.isfinite(vals[k, i, j]):
                    ax.text(j, i, f"{vals[k, i, j]:.3g}\n±{errs[k, i, j]:.1g}", ha="center", va="center", fontsize=6, color="w")
                elif variable == "T_eff":
                    ax.text(j, i, "not\nstationary", ha="center", va="center", fontsize=5, color="0.4")
        ax.set_xticks(range(sub.tau.size), [f"{t:g}" for t in sub.tau.values])
        ax.set_yticks(range(sub.b.size), [f"{b:g}" for b in sub.b.values])
        ax.set_xlabel("persistence time tau")
        ax.set_ylabel("batch fraction b")
        ax.set_title(f"{variable} ({sub.method.values[k]}), alpha = {float(sub.alpha):g}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return fig
