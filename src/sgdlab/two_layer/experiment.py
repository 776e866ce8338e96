"""``run``: the ``two_layer`` study (``sgdlab timescales``), simulated and predicted side by side.

Spec 05 (Berthier, Montanari & Zhou, FoCM 2024: BMZ). One config puts side by side, on one
log-spaced time grid ``t``:

- ``method="flow"``: the exact finite-``d`` population gradient flow on the overlaps
  (:func:`sgdlab.two_layer.flow.flow_from_random_starts`), vmapped over seeds. Its initial
  overlaps ``s = U theta*`` and ``G = U U^T`` of ``m`` uniform unit vectors in ``R^d`` are drawn
  in law at a cost ``O(m^2)`` independent of ``d`` (:func:`sgdlab.two_layer.flow.random_overlaps_wishart`),
  so ``d >> 1/eps`` costs nothing;
- ``method="sim"``: online SGD with fresh Gaussian samples
  (:func:`sgdlab.two_layer.sgd.online_sgd`), vmapped over seeds, step ``eta``, time ``t = k eta``;
- ``method="reduced"``: the reduced ``(a, s)`` particle dynamics (``d = inf``, ``m`` particles at
  the deterministic quantiles of the initial law of ``a``; :func:`sgdlab.two_layer.reduced.solve_reduced`).

and analyses the risk curves with :mod:`sgdlab.two_layer.analysis` (plateau detection, half-learning
times, carrier fraction). The ``[scan]`` axes (:mod:`sgdlab.two_layer.scans`) feed the study's own
fit and check and stay inside the run.

This is the one module that puts the simulator (:mod:`~sgdlab.two_layer.sgd`) beside the theory
(:mod:`~sgdlab.two_layer.flow`); the two never import each other.

Finite-``m`` correction (why flow/SGD lag the reduced dynamics): at finite ``m`` the second layer
feels the self-interaction ``a_i U(1) / m`` (the ``j = i`` term of the Mehler risk), a ridge of
strength ``|sigma|^2 / m`` on ``a`` which the reduced dynamics (``m = inf`` first) does not have.
Against the degree-1 instability rate ``|sigma_1 phi_1| / sqrt(eps)`` it is negligible only for
``m >> |sigma|^2 / sqrt(eps)``; flow and SGD at the same ``m`` share it, so they agree with each
other at any ``m`` and with the reduced dynamics as ``m sqrt(eps)`` grows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import xarray as xr

from sgdlab.core.inputs import host_input
from sgdlab.core.keys import fold_in, root_key
from sgdlab.core.provenance import provenance
from sgdlab.two_layer import flow as tl
from sgdlab.two_layer.analysis import carrier_fraction, detect_plateaus, half_learning_times, match_plateaus
from sgdlab.two_layer.config import TimescalesConfig, load_config
from sgdlab.two_layer.problem import SingleIndex
from sgdlab.two_layer.reduced import solve_reduced
from sgdlab.two_layer.scans import check_finite, check_solved, d_scan, eps_scan
from sgdlab.two_layer.sgd import online_sgd_seeds

__all__ = ["METHODS", "STUDY_NAME", "run", "sgd_on_grid"]

METHODS = ("flow", "sim", "reduced")
STUDY_NAME = "two_layer"


def sgd_on_grid(prob: SingleIndex, key: jax.Array, a0, d: int, eps: float, eta: float, t: np.ndarray, seeds: int,
                batch: int = 1, train_second_layer: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Online SGD (``seeds`` runs, vmapped) with step ``eta`` observed at the step nearest to each
    ``t`` (time ``k eta``, so the snapping error is at most ``eta/2``; ``t < eta/2`` reads the
    initial state). Returns ``M``, ``risk_degree`` ``(seeds, n_t, K+1)``. Times that snap to the
    same step observe it twice (a block of no step), so the program's shapes depend on ``n_t`` only."""
    steps = np.rint(np.asarray(t) / eta).astype(np.int64)
    M, risk = online_sgd_seeds(prob, key, host_input(a0), d, eps, eta, steps, seeds, batch, train_second_layer)
    return np.asarray(M), np.asarray(risk)


def run(config: TimescalesConfig | dict[str, Any] | str | Path | None = None,
        progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """Run the study (``config``: a dict of TOML keys, a TOML path, a validated
    :class:`~sgdlab.two_layer.config.TimescalesConfig` or ``None`` = the built-in default
    example); returns a Dataset with

    - ``M`` (moments ``M_k``), ``risk_degree`` ``(method, seed, t, degree)`` and ``risk``
      ``(method, seed, t)``; ``method`` in ``flow``, ``sim``, ``reduced`` (the enabled ones); a
      method with fewer seeds is NaN-padded (the reduced dynamics is deterministic: seed 0);
      ``risk_mean``, ``risk_err`` ``(method, t)``: mean and standard error over the seeds;
    - ``phi``, ``sigma`` ``(degree)``; ``plateau_predicted (level)``: entry ``l`` is
      ``(1/2) sum_{k >= l} phi_k^2`` (plus unlearnable degrees), ``level = 0..K+1``;
    - detected plateaus of the seed-mean risk (:func:`sgdlab.two_layer.analysis.detect_plateaus`):
      ``plateau_level``, ``plateau_start``, ``plateau_end`` ``(method, plateau)`` (the first
      ``2 (K + 2)`` in time order, NaN-padded), ``plateau_count (method)``, and
      ``plateau_measured (method, level)``: the detected level matched to each prediction
      (:func:`~sgdlab.two_layer.analysis.match_plateaus`, within 10% of the initial level), NaN if none;
    - ``t_half (method, degree)``: first time ``sigma_l M_l / phi_l`` reaches 1/2 (seed-mean
      ``M``), ``t_half_seed (method, seed, degree)`` per seed and ``t_half_err (method, degree)``
      the standard error of the per-seed times;
    - ``carrier_fraction (degree)`` (reduced): the fraction of particles carrying half of the
      change of ``M_l`` between ``t_l/2`` and ``2 t_l`` (intermittency);
    - with ``scan.eps``: the variables of :func:`~sgdlab.two_layer.scans.eps_scan`; with
      ``scan.d``: those of :func:`~sgdlab.two_layer.scans.d_scan`.

    Attrs: the standard ones (:func:`sgdlab.core.provenance.provenance`, study ``two_layer``),
    ``eps``, ``elapsed_s``, ``elapsed_by_method`` (JSON), ``solvers`` (JSON: the ODE solver that
    ``solver = "auto"`` chose for the flow and the reduced dynamics) and ``truncation_error``
    (JSON: for ``problem.target`` / ``problem.activation`` given as functions, the Hermite
    projection's ``norm`` ``||f||``, ``remainder`` ``||f - P_K f||`` and ``relative``).
    ``progress(done, total)`` is called after each method and each scan run. Raises :class:`~sgdlab.core.errors.NonFiniteError` naming the
    key to change if the flow or the reduced dynamics fails (step budget ``dynamics.max_steps`` or
    non-finite values) or online SGD's risk becomes non-finite (seed and time named).
    """
    cfg = load_config(config)
    start = time.perf_counter()
    prob = cfg.problem.to_problem()
    dyn = cfg.dynamics
    t = dyn.grid
    K = prob.degree
    key = root_key(cfg.seed)
    methods = [m for m, on in zip(METHODS, (cfg.flow.enabled, cfg.sgd.enabled, cfg.reduced.enabled)) if on]
    total = len(methods) + len(cfg.scan.eps) + (1 if cfg.scan.d else 0)
    done = 0
    seeds = max([cfg.flow.seeds if cfg.flow.enabled else 1, cfg.sgd.seeds if cfg.sgd.enabled else 1, 1])
    M = np.full((len(methods), seeds, len(t), K + 1), np.nan)
    Rk = np.full_like(M, np.nan)
    elapsed: dict[str, float] = {}
    solvers: dict[str, str] = {}
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
            a0 = tl.initial_second_layer(f.m, dyn.a_scale, dyn.a_law)
            sol = tl.flow_from_random_starts(prob, fold_in(key, 1), a0, f.m, f.d, f.seeds, dyn.eps, t,
                                             dyn.train_second_layer, dyn.rtol, dyn.atol, f.solver, dyn.max_steps)
            check_solved(f"finite-d flow (d = {f.d})", sol.obs.risk, sol.success, sol.num_steps, t, dyn.max_steps,
                         "lower dynamics.t_max or flow.m")
            M[i, : f.seeds], Rk[i, : f.seeds] = np.asarray(sol.obs.M), np.asarray(sol.obs.risk)
            solvers[method] = sol.solver
        elif method == "sim":
            g = cfg.sgd
            a0 = tl.initial_second_layer(g.m, dyn.a_scale, dyn.a_law)
            Ms, Rs = sgd_on_grid(prob, fold_in(key, 2), a0, g.d, dyn.eps, g.eta, t, g.seeds, g.batch, dyn.train_second_layer)
            check_finite(f"online SGD (d = {g.d})", Rs, t, "lower sgd.eta (the second-layer step is sgd.eta / dynamics.eps) or raise sgd.batch")
            M[i, : g.seeds], Rk[i, : g.seeds] = Ms, Rs
        else:
            r = cfg.reduced
            a0 = tl.initial_second_layer(r.m, dyn.a_scale, dyn.a_law)
            sol = solve_reduced(prob, a0, np.zeros(r.m), dyn.eps, t, dyn.train_second_layer,
                                dyn.rtol, dyn.atol, r.solver, dyn.max_steps)
            fix = "lower dynamics.t_max" + (", or use reduced.solver = \"auto\" (stiff at small eps)" if r.solver == "tsit5" else "")
            check_solved("reduced dynamics", sol.obs.risk, sol.success, sol.num_steps, t, dyn.max_steps, fix)
            reduced_obs = sol.obs
            M[i, 0], Rk[i, 0] = np.asarray(sol.obs.M), np.asarray(sol.obs.risk)
            solvers[method] = sol.solver
        elapsed[method] = time.perf_counter() - t0
        tick()

    risk = Rk.sum(-1)
    risk_mean, risk_err = _mean_and_err(risk)
    ds = xr.Dataset(
        {
            "M": (("method", "seed", "t", "degree"), M),
            "risk_degree": (("method", "seed", "t", "degree"), Rk),
            "risk": (("method", "seed", "t"), risk),
            "risk_mean": (("method", "t"), risk_mean),
            "risk_err": (("method", "t"), risk_err),
            "phi": ("degree", np.asarray(prob.phi)),
            "sigma": ("degree", np.asarray(prob.sigma)),
            "plateau_predicted": ("level", prob.plateau_levels()),
        },
        coords={"method": methods, "seed": np.arange(seeds), "t": t, "degree": np.arange(K + 1), "level": np.arange(K + 2)},
    )
    _analyse(ds, prob)
    if reduced_obs is not None:
        ds["carrier_fraction"] = ("degree", _carriers(t, ds.t_half.sel({"method": "reduced"}).values, reduced_obs, K))

    if cfg.scan.eps:
        t0 = time.perf_counter()
        ds = ds.merge(eps_scan(prob, cfg.scan.eps, cfg.reduced.m, dyn.a_scale, dyn.a_law, cfg.scan.t_max, cfg.scan.n_times or dyn.n_times,
                               dyn.rtol, dyn.atol, dyn.max_steps, dyn.train_second_layer, cfg.reduced.solver, progress=tick))
        elapsed["scan"] = time.perf_counter() - t0
    if cfg.scan.d:
        t0 = time.perf_counter()
        f = cfg.flow
        ds = ds.merge(d_scan(prob, cfg.scan.d, f.m, f.seeds, dyn.eps, t, fold_in(key, 3), dyn.a_scale, dyn.a_law,
                             dyn.rtol, dyn.atol, f.solver, dyn.max_steps, dyn.train_second_layer))
        elapsed["d_scan"] = time.perf_counter() - t0
        tick()

    ds.attrs = {
        **provenance(cfg, study=STUDY_NAME),
        "eps": float(dyn.eps),
        "elapsed_s": float(time.perf_counter() - start),
        "elapsed_by_method": json.dumps({k: round(v, 2) for k, v in elapsed.items()}),
        "solvers": json.dumps(solvers),
        "truncation_error": json.dumps({k: {"norm": p.norm, "remainder": p.remainder, "relative": p.relative}
                                        for k, p in cfg.problem.projections().items()}),
    }
    return ds


def _mean_and_err(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over axis 1 of the finite entries (NaN: no entry / one entry)."""
    ok = np.isfinite(x)
    n = ok.sum(1)
    mean = np.where(n > 0, np.where(ok, x, 0.0).sum(1) / np.maximum(n, 1), np.nan)
    dev2 = np.where(ok, x - np.expand_dims(mean, 1), 0.0) ** 2
    err = np.where(n > 1, np.sqrt(dev2.sum(1) / np.maximum(n - 1, 1) / np.maximum(n, 1)), np.nan)
    return mean, err


def _analyse(ds: xr.Dataset, prob: SingleIndex) -> None:
    """Adds ``t_half``, ``t_half_seed``, ``t_half_err``, the detected plateaus, ``plateau_count`` and
    ``plateau_measured`` (in place). The ``plateau`` dim has the fixed size ``2 (K + 2)``, so runs
    of one structure have equal shapes (a sweep stores them side by side)."""
    t = ds.t.values
    phi, sig = np.asarray(prob.phi), np.asarray(prob.sigma)
    pred = ds.plateau_predicted.values
    nm, ns = ds.sizes["method"], ds.sizes["seed"]
    th = np.stack([half_learning_times(t, ds.M.isel(method=i).mean("seed").values, phi, sig) for i in range(nm)])
    th_seed = np.full((nm, ns, len(phi)), np.nan)
    n_pl = 2 * (prob.degree + 2)
    arr = np.full((3, nm, n_pl), np.nan)
    count = np.zeros(nm, np.int64)
    measured = np.full((nm, len(pred)), np.nan)
    for i in range(nm):
        for j in range(ns):
            Mj = ds.M.isel(method=i, seed=j).values
            if np.all(np.isfinite(Mj)):
                th_seed[i, j] = half_learning_times(t, Mj, phi, sig)
        pl = detect_plateaus(t, ds.risk_mean.isel(method=i).values)
        count[i] = len(pl)
        for k, p in enumerate(pl[:n_pl]):
            arr[:, i, k] = (p.level, p.start, p.end)
        for l, p in match_plateaus(pl, pred, rel_tol=0.1):
            if p is not None:
                measured[i, l] = p.level
    err = np.full((nm, len(phi)), np.nan)
    for i in range(nm):
        for l in range(len(phi)):
            x = th_seed[i, :, l][np.isfinite(th_seed[i, :, l])]
            if len(x) > 1:
                err[i, l] = x.std(ddof=1) / np.sqrt(len(x))
    ds["t_half"] = (("method", "degree"), th)
    ds["t_half_seed"] = (("method", "seed", "degree"), th_seed)
    ds["t_half_err"] = (("method", "degree"), err)
    ds["plateau_level"] = (("method", "plateau"), arr[0])
    ds["plateau_start"] = (("method", "plateau"), arr[1])
    ds["plateau_end"] = (("method", "plateau"), arr[2])
    ds["plateau_count"] = ("method", count)
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
