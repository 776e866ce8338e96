"""The effective noise of SGD in simulation: replica pairs, linear response, decision margins.

Source: F. Mignacco, P. Urbani, "The effective noise of stochastic gradient descent",
J. Stat. Mech. (2022) 083405, arXiv:2112.10852; sgdlab spec ``02_effective_noise.md``.

Built on the pure simulator :mod:`sgdlab.simulation` (same data, init and random streams):

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
  taken in the limit ``eps -> 0`` exactly, by forward-mode differentiation (``jax.linearize`` of
  each step, the tangent of the finite difference), not by a finite difference::

      R(k0 + l, k0) = (1/d) mean_p r_p . dw_{k0+l} / d eps,      chi(l) = sum_{l'=1}^{l} R(k0+l', k0),
      dC(l) = C(k0+l, k0+l) - C(k0+l, k0),

  which equals the fixed-``k`` definition of :mod:`sgdlab.theory.fdt` in the stationary state.
  A second, unperturbed window ``[k0+L, k0+2L]`` gives the stationarity drift
  ``max_l |C(k0+L+l, k0+L) - C(k0+l, k0)| / C(k0, k0)``.
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

from sgdlab import losses
from sgdlab.algorithms.batch_mask import init_mask, step_mask
from sgdlab.algorithms.update import UpdateRule, apply_update
from sgdlab.problems import gaussian_mixture as gm
from sgdlab.simulation import STREAM_MASK, STREAM_NOISE, SimParams, SimSpec, SimState, _problem, init
from sgdlab.theory.fdt import FDTCurve

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


def _update_fn(spec: SimSpec, params: SimParams, data, noise_key, state: SimState) -> Callable:
    """``w -> w_{k+1}`` at the current mask and step (noise fixed): the map to linearise."""
    sqrt_d = np.sqrt(spec.d).astype(state.w.dtype)
    dloss = losses.derivative(gm.sample_loss(_problem(spec, params)))
    x, y = data.train.x, data.train.y
    rule = UpdateRule(*(jnp.asarray(r, state.w.dtype) for r in params.rule))
    nk = jax.random.fold_in(noise_key, state.k) if spec.langevin else None

    def update(w):
        g = x.T @ jnp.where(state.s, dloss(y, x @ w / sqrt_d), 0.0) / sqrt_d
        return apply_update(rule, w, g, nk)

    return update


def _step(spec: SimSpec, params: SimParams, data, mask_key, noise_key, state: SimState, tangent=None):
    """One step with explicit mask/noise base keys (as :func:`sgdlab.simulation.step` for the
    seed's own keys); ``tangent (P, d)`` is pushed forward by the linearised update when given."""
    update = _update_fn(spec, params, data, noise_key, state)
    if tangent is None:
        w = update(state.w)
    else:
        w, lin = jax.linearize(update, state.w)
        tangent = jax.vmap(lin)(tangent)
    s = state.s
    if not spec.full_batch:
        s = step_mask(jax.random.fold_in(mask_key, state.k + 1), params.chain, s)
    sqrt_d = np.sqrt(spec.d).astype(w.dtype)
    new = SimState(w, data.train.x @ w / sqrt_d, s, state.k + 1)
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
    """Linear-response measurement of one seed, lags ``l = 0..L`` (arrays ``(L+1,)``):
    ``dC``, ``chi`` (see the module docstring), ``drift`` (scalar), ``mean_sq_dloss`` (the
    training mean of ``loss'^2`` at ``k0``, for the weak-noise heuristic)."""

    dC: jax.Array
    chi: jax.Array
    drift: jax.Array
    mean_sq_dloss: jax.Array


@partial(jax.jit, static_argnames=("spec", "k0", "max_lag", "n_probes"))
def response_run(
    spec: SimSpec, params: SimParams, key: jax.Array, k0: int, max_lag: int, n_probes: int = 4
) -> ResponseRun:
    """Equilibrate ``k0`` steps, inject the field at step ``k0``, follow ``max_lag`` lags with the
    tangent, then ``max_lag`` more unperturbed steps for the drift. ``O((k0 + (P+2) L) n d)``."""
    data, state, mask_keys, noise_keys = _replica_init(spec, params, key, 1)
    state = jax.tree_util.tree_map(lambda a: a[0], state)
    mk, nk = mask_keys[0], noise_keys[0]
    d = spec.d
    plain = lambda st: _step(spec, params, data, mk, nk, st)  # noqa: E731
    state = jax.lax.fori_loop(0, k0, lambda i, st: plain(st), state)
    dloss = losses.derivative(gm.sample_loss(_problem(spec, params)))
    msq = jnp.mean(dloss(data.train.y, state.h) ** 2)
    w_ref, q_ref = state.w, jnp.dot(state.w, state.w) / d
    probes = jax.random.rademacher(jax.random.fold_in(key, STREAM_REPLICA + 1), (n_probes, d), state.w.dtype)
    eta = jnp.asarray(params.rule.eta, state.w.dtype)
    state = plain(state)
    tangent = eta * probes  # field inside the bracket of step k0: w_{k0+1} += eta f

    def measure(st, tg):
        return jnp.stack([jnp.dot(st.w, st.w) / d, jnp.dot(st.w, w_ref) / d, jnp.mean(jnp.sum(probes * tg, axis=1)) / d])

    def lag_step(carry, _):
        st, tg = carry
        out = measure(st, tg)
        st, tg = _step(spec, params, data, mk, nk, st, tg)
        return (st, tg), out

    (state, _), win = jax.lax.scan(lag_step, (state, tangent), None, length=max_lag)
    q, c, r = win[:, 0], win[:, 1], win[:, 2]  # lags 1..L
    dC = jnp.concatenate([jnp.zeros(1), q - c])
    chi = jnp.concatenate([jnp.zeros(1), jnp.cumsum(r)])
    # second, unperturbed window from k0 + L + 1 - 1: reference w at its start
    w_ref2 = state.w

    def plain_step(st, _):
        st = plain(st)
        return st, jnp.dot(st.w, w_ref2) / d

    _, c2 = jax.lax.scan(plain_step, state, None, length=max_lag)
    c1 = jnp.concatenate([jnp.dot(w_ref, w_ref)[None] / d, c[:-1]])  # C(k0 + l, k0), l = 0..L-1
    c2 = jnp.concatenate([jnp.dot(w_ref2, w_ref2)[None] / d, c2[:-1]])
    drift = jnp.max(jnp.abs(c2 - c1)) / q_ref
    return ResponseRun(dC, chi, drift, msq)


def response_curve(runs: ResponseRun) -> FDTCurve:
    """:class:`FDTCurve` of seed-batched :class:`ResponseRun` (leading seed axis)."""
    dC = np.asarray(runs.dC, np.float64)
    return FDTCurve(np.arange(dC.shape[-1]), dC, np.asarray(runs.chi, np.float64), np.asarray(runs.drift, np.float64))


def seed_keys(seeds) -> jax.Array:
    """Typed keys ``(n_seeds,)`` of the seeds (as :func:`sgdlab.experiment.simulate_many`)."""
    return jax.vmap(jax.random.key)(jnp.asarray(list(seeds), dtype=jnp.uint32))


# --------------------------------------------------------------------------------------------
# Orchestration: the `sgdlab noise` command
# --------------------------------------------------------------------------------------------

try:  # pydantic section of the [noise] table (extra keys forbidden, as every config section)
    from pydantic import Field

    from sgdlab.config import ConfigError, _Section

    class NoiseConfig(_Section):
        """``[noise]``: replicas, linear response and DMFT options of :func:`noise_command`.

        Times are in the config's time units (``t = k eta``)."""

        n_replicas: int = Field(2, ge=2, description="replicas per seed (D averages over pairs)")
        equilibration: float | None = Field(None, gt=0, description="time before the field (default: horizon / 2)")
        max_lag: float = Field(1.5, gt=0, description="largest lag of the FDT plot")
        short_lags: int = Field(3, ge=1, description="lags (steps) of the short-lag slope")
        n_probes: int = Field(4, ge=1, description="Rademacher probes of the linear response")
        units: str = Field("field", pattern="^(field|loss)$", description="temperature units: field or loss")
        dmft_seeds: int = Field(2, ge=0, description="independent DMFT solves for the error bar (0: no DMFT)")
except ImportError:  # pragma: no cover
    raise


def noise_command(config_path: str | Path, out_dir: str | Path, progress: Callable[[str], None] | None = None):
    """Run the effective-noise analysis of a TOML config and write the results.

    The TOML is an ordinary sgdlab config plus an optional ``[noise]`` table (:class:`NoiseConfig`).
    Writes ``out_dir/noise.zarr`` (Dataset: ``D, q`` over ``(seed, t)``; ``margin`` over
    ``(seed, sample)``; ``dC, chi`` over ``(method, lag)``; temperatures in attrs) and the figures
    ``noise_fdt.png``, ``noise_distance.png``, ``noise_margins.png``. ``progress(message)`` is
    called before each stage. Returns a ``rich.table.Table`` summary.
    """
    import json
    import tomllib

    import xarray as xr
    from rich.table import Table

    from sgdlab.config import load_config
    from sgdlab.experiment import _base_attrs, dmft_inputs, simulation_inputs
    from sgdlab.plot import save_figure
    from sgdlab.store import save
    from sgdlab.theory.fdt import effective_temperature, fit_fdt, weak_noise_temperature

    say = progress or (lambda msg: None)
    path = Path(config_path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    data = tomllib.loads(path.read_text())
    data.setdefault("name", path.stem)
    try:
        nopt = NoiseConfig.model_validate(data.pop("noise", {}))
    except Exception as err:  # pydantic ValidationError -> ConfigError naming the key
        raise ConfigError(f"invalid [noise] table: {err}") from None
    cfg = load_config(data)
    alg = cfg.algorithm
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec, params = simulation_inputs(cfg)
    seeds = cfg.simulation.seed_list
    keys = seed_keys(seeds)
    lag_steps = max(1, int(round(nopt.max_lag / alg.eta)))
    k0 = int(round((nopt.equilibration or alg.horizon / 2) / alg.eta))
    mobility = alg.batch_fraction if alg.normalisation == "unnormalised" else 1.0

    say("replica pairs")
    rr = jax.vmap(lambda k: replica_run(spec, params, k, nopt.n_replicas, alg.n_saves))(keys)
    say("linear response")
    runs = jax.vmap(lambda k: response_run(spec, params, k, k0, lag_steps, nopt.n_probes))(keys)
    fdt_sim = fit_fdt(response_curve(runs), nopt.short_lags, nopt.units, mobility)
    msq = float(np.mean(np.asarray(runs.mean_sq_dloss)))
    tau = alg.persistence_time if alg.persistence_time is not None else alg.eta
    heur = weak_noise_temperature(cfg.problem.alpha, cfg.problem.delta, msq, alg.batch_fraction, tau, alg.eta)
    if nopt.units == "loss":
        heur /= mobility
    results = {"sim": fdt_sim}
    if nopt.dmft_seeds > 0:
        say("DMFT")
        problem, dyn, opt = dmft_inputs(cfg)
        sols = [solve_dmft_seed(problem, dyn, opt, s) for s in range(nopt.dmft_seeds)]
        span = min(lag_steps, max(dyn.n_steps - 2 * lag_steps, 0))
        from sgdlab.theory.replicas import replica_distance

        say("two-replica DMFT")
        reps = [replica_distance(s, seed=i, time_step=alg.eta) for i, s in enumerate(sols)]
        D_dmft = np.array([r.D[:: alg.save_every] for r in reps])
        results["dmft"] = effective_temperature(
            np.array([s.C for s in sols]), np.array([s.R for s in sols]), lag_steps, nopt.short_lags,
            n_ref=5 if span > 0 else 1, ref_span=span or None, units=nopt.units, mobility=mobility,
        )
    times = np.arange(alg.n_saves + 1) * alg.save_every * alg.eta
    margin = np.asarray(rr.margins, np.float64)
    methods = list(results)
    extra = {}
    if nopt.dmft_seeds > 0:
        extra["D_dmft"] = (("dmft_seed", "t"), D_dmft, {"long_name": "replica distance from the two-replica DMFT"})
    ds = xr.Dataset(
        {
            **extra,
            "D": (("seed", "t"), np.asarray(rr.D, np.float64), {"long_name": "replica distance D = |w1-w2|^2/(2d)"}),
            "q": (("seed", "t"), np.asarray(rr.q, np.float64)),
            "margin": (("seed", "sample"), margin, {"long_name": "y h / sqrt(q) of replica 0 at the end"}),
            "kappa_max": (("seed",), margin.min(axis=1), {"long_name": "largest margin satisfied by all points"}),
            "dC": (("method", "lag"), np.array([results[m].curve.dC for m in methods])),
            "chi": (("method", "lag"), np.array([results[m].curve.chi for m in methods])),
            "T_eff": (("method",), [results[m].T_eff for m in methods]),
            "T_eff_err": (("method",), [results[m].T_eff_err for m in methods]),
            "T_short": (("method",), [results[m].T_short for m in methods]),
            "curvature": (("method",), [results[m].curvature for m in methods]),
            "drift": (("method",), [results[m].drift for m in methods]),
        },
        coords={"seed": seeds, "t": times, "method": methods, "lag": np.arange(lag_steps + 1) * alg.eta},
        attrs={**_base_attrs(cfg), "noise": json.dumps(nopt.model_dump()), "T_units": fdt_sim.convention,
               "T_weak_noise_heuristic": heur},
    )
    save(ds, out / "noise.zarr")
    say("figures")
    for name, fig in plot_noise(ds).items():
        save_figure(fig, out / f"noise_{name}.png")

    table = Table(title=f"effective noise: {cfg.name} ({fdt_sim.convention})")
    for col in ("quantity", "sim", "dmft"):
        table.add_column(col)
    cell = lambda m, f: (f"{f(results[m])}" if m in results else "-")  # noqa: E731
    table.add_row("T_eff (global)", *(cell(m, lambda r: f"{r.T_eff:.4g} ± {r.T_eff_err:.2g}") for m in ("sim", "dmft")))
    table.add_row("T_eff (short lags)", *(cell(m, lambda r: f"{r.T_short:.4g} ± {r.T_short_err:.2g}") for m in ("sim", "dmft")))
    table.add_row("curvature", *(cell(m, lambda r: f"{r.curvature:.3g}") for m in ("sim", "dmft")))
    table.add_row("stationarity drift", *(cell(m, lambda r: f"{r.drift:.3g}") for m in ("sim", "dmft")))
    table.add_row("T weak-noise heuristic", f"{heur:.4g}", "-")
    Dend = np.asarray(rr.D)[:, -1]
    Dcell = "-"
    if "D_dmft" in ds:
        Dd = ds.D_dmft.values[:, -1]
        Dcell = f"{Dd.mean():.4g} ± {_sem(Dd):.2g}"
    table.add_row("D(t_max)", f"{Dend.mean():.4g} ± {_sem(Dend):.2g}", Dcell)
    km = margin.min(axis=1)
    table.add_row("kappa_max (margin)", f"{km.mean():.4g} ± {km.std(ddof=1) / math.sqrt(len(km)) if len(km) > 1 else float('nan'):.2g}", "-")
    return table


def solve_dmft_seed(problem, dynamics, options, seed: int):
    """One DMFT solve with Monte-Carlo seed ``seed`` (independent replicate for error bars)."""
    from sgdlab.theory.dmft import solve_dmft

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
# Phase-diagram scan over (b, tau)
# --------------------------------------------------------------------------------------------


def noise_scan(
    base_config: dict,
    batch_fractions,
    persistence_times,
    dmft_seeds: int = 2,
    tail: float = 0.25,
    max_lag: float = 1.0,
    equilibration: float | None = None,
    short_lags: int = 3,
    n_probes: int = 4,
    fdt: bool = True,
    progress: Callable[[str], None] | None = None,
):
    """Scan persistent SGD over ``b in batch_fractions`` x ``tau in persistence_times``.

    ``base_config``: a raw config mapping (as read from TOML, without ``[noise]``); its
    ``algorithm`` is replaced by ``persistent_sgd`` with each ``(b, tau)`` (other algorithm keys
    kept). A plain loop over the grid points (each point compiles once per shape; moving it onto
    :mod:`sgdlab.sweep` is left for later).

    Per point: the *asymptotic* replica distance ``D_inf`` = mean of ``D(t)`` over the last
    ``tail`` fraction of the saved times (simulation: per seed, then mean ± s.e. over seeds; DMFT:
    per Monte-Carlo seed of the RS + two-replica solve, mean ± s.e.), and, if ``fdt``, ``T_eff``
    (field units of the config's update) from the simulation's linear response
    (:func:`response_run`, field after ``equilibration``, default ``horizon / 2``) and from the
    DMFT ``(C, R)`` (:func:`sgdlab.theory.fdt.effective_temperature`), each with its
    stationarity drift and flag. ``T_eff`` is meaningful only where ``stationary`` is true (the
    under-parametrised regime); the figure masks the other points.

    Returns an ``xarray.Dataset`` with dims ``(method, b, tau)``, ``method = ["sim", "dmft"]``,
    variables ``D_inf, D_inf_err, T_eff, T_eff_err, drift, stationary`` (``T_eff`` NaN when
    ``fdt`` is false).
    """
    import copy

    import xarray as xr

    from sgdlab.config import load_config
    from sgdlab.experiment import dmft_inputs, simulation_inputs
    from sgdlab.theory.fdt import effective_temperature, fit_fdt
    from sgdlab.theory.replicas import replica_distance

    say = progress or (lambda msg: None)
    bs, taus = [float(b) for b in batch_fractions], [float(t) for t in persistence_times]
    shape = (2, len(bs), len(taus))
    out = {k: np.full(shape, np.nan) for k in ("D_inf", "D_inf_err", "T_eff", "T_eff_err", "drift")}
    stat = np.zeros(shape, bool)
    for i, b in enumerate(bs):
        for j, tau in enumerate(taus):  # loop over grid points (not over time)
            say(f"b = {b:g}, tau = {tau:g}")
            raw = copy.deepcopy(dict(base_config))
            raw.pop("noise", None)
            raw["algorithm"] = {**raw.get("algorithm", {}), "name": "persistent_sgd", "batch_fraction": b, "persistence_time": tau}
            raw["algorithm"].pop("temperature", None)
            cfg = load_config(raw)
            alg = cfg.algorithm
            spec, params = simulation_inputs(cfg)
            keys = seed_keys(cfg.simulation.seed_list)
            n_tail = max(1, int(round(tail * alg.n_saves)))
            rr = jax.vmap(lambda k: replica_run(spec, params, k, 2, alg.n_saves))(keys)
            Dsim = np.asarray(rr.D, np.float64)[:, -n_tail:].mean(axis=1)
            out["D_inf"][0, i, j], out["D_inf_err"][0, i, j] = Dsim.mean(), _sem(Dsim)
            lag_steps = max(1, int(round(max_lag / alg.eta)))
            if fdt:
                k0 = int(round((equilibration or alg.horizon / 2) / alg.eta))
                runs = jax.vmap(lambda k: response_run(spec, params, k, k0, lag_steps, n_probes))(keys)
                f = fit_fdt(response_curve(runs), short_lags)
                out["T_eff"][0, i, j], out["T_eff_err"][0, i, j], out["drift"][0, i, j] = f.T_eff, f.T_eff_err, f.drift
                stat[0, i, j] = f.stationary
            if dmft_seeds > 0:
                problem, dyn, opt = dmft_inputs(cfg)
                sols = [solve_dmft_seed(problem, dyn, opt, s) for s in range(dmft_seeds)]
                Dd = np.array([replica_distance(s, seed=k).D[:: alg.save_every][-n_tail:].mean() for k, s in enumerate(sols)])
                out["D_inf"][1, i, j], out["D_inf_err"][1, i, j] = Dd.mean(), _sem(Dd)
                span = min(lag_steps, max(dyn.n_steps - 2 * lag_steps, 0))
                if fdt and span > 0:
                    f = effective_temperature(
                        np.array([s.C for s in sols]), np.array([s.R for s in sols]), lag_steps, short_lags,
                        n_ref=5, ref_span=span,
                    )
                    out["T_eff"][1, i, j], out["T_eff_err"][1, i, j], out["drift"][1, i, j] = f.T_eff, f.T_eff_err, f.drift
                    stat[1, i, j] = f.stationary
    dims = ("method", "b", "tau")
    ds = xr.Dataset(
        {
            "D_inf": (dims, out["D_inf"], {"long_name": f"replica distance, mean over the last {tail:g} of the saved times"}),
            "D_inf_err": (dims, out["D_inf_err"], {"long_name": "standard error over seeds"}),
            "T_eff": (dims, out["T_eff"], {"long_name": "FDT effective temperature (field units; valid where stationary)"}),
            "T_eff_err": (dims, out["T_eff_err"]),
            "drift": (dims, out["drift"], {"long_name": "stationarity drift of C(t, t - s)"}),
            "stationary": (dims, stat),
        },
        coords={"method": ["sim", "dmft"], "b": bs, "tau": taus},
        attrs={"base_config": json.dumps(base_config, default=str), "dmft_seeds": int(dmft_seeds), "tail": float(tail)},
    )
    return ds


def plot_noise_scan(ds, variable: str = "D_inf") -> Any:
    """Heat maps of ``variable`` (``"D_inf"`` or ``"T_eff"``) over ``(tau, b)`` from
    :func:`noise_scan`: one panel per method with a shared colour scale, each cell annotated
    ``value ± error``; ``T_eff`` cells of non-stationary points are blanked."""
    import matplotlib.pyplot as plt

    methods = list(ds.method.values)
    vals = ds[variable].values.copy()
    errs = ds[f"{variable}_err"].values
    if variable == "T_eff":
        vals = np.where(ds.stationary.values, vals, np.nan)
    finite = vals[np.isfinite(vals)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False)
    for ax, (k, m) in zip(axes[0], enumerate(methods)):
        im = ax.imshow(vals[k], origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis")
        for i in range(vals.shape[1]):
            for j in range(vals.shape[2]):
                if np.isfinite(vals[k, i, j]):
                    ax.text(j, i, f"{vals[k, i, j]:.3g}\n±{errs[k, i, j]:.1g}", ha="center", va="center", fontsize=6, color="w")
        ax.set_xticks(range(ds.tau.size), [f"{t:g}" for t in ds.tau.values])
        ax.set_yticks(range(ds.b.size), [f"{b:g}" for b in ds.b.values])
        ax.set_xlabel("persistence time tau")
        ax.set_ylabel("batch fraction b")
        ax.set_title(f"{variable} ({m})", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return fig
