"""Effective noise of SGD (spec 02): FDT temperature, replica distance, margins."""

import jax
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.dmft import noise as en
from sgdlab.dmft import noise_sim as ns
from sgdlab.dmft import simulation as sim
from sgdlab.dmft.config import load_config
from sgdlab.dmft.experiment import dmft_inputs, simulate, simulation_inputs
from sgdlab.dmft.solver import solve_dmft
from sgdlab.dmft.fdt import effective_temperature, fit_fdt, weak_noise_temperature

# Square loss + ridge + Langevin: linear dynamics, a sum of discrete Ornstein-Uhlenbeck modes with
# curvatures a in [ridge, ridge + Delta (1 + sqrt(alpha))^2] (Marchenko-Pastur edge). Each mode has
# the exact discrete FDT ratio chi/dC = (2 - eta a) / (2 T), so T_eff lies in
# [2T / (2 - eta a_min), 2T / (2 - eta a_max)]: T up to O(eta), with an exact bracket.
LANGEVIN = {
    "problem": {"alpha": 2.0, "delta": 0.5, "loss": "square", "ridge": 0.5},
    "algorithm": {"name": "langevin", "temperature": 0.2, "eta": 0.05, "horizon": 8.0},
}


def _ou_bracket(alpha=2.0, delta=0.5, ridge=0.5, T=0.2, eta=0.05):
    a_min, a_max = ridge, ridge + delta * (1 + np.sqrt(alpha)) ** 2
    return 2 * T / (2 - eta * a_min), 2 * T / (2 - eta * a_max)


def _ou_matrices(a, T, eta, n, x0_var):
    """Exact C, R of the discrete scalar OU chain w_{k+1} = (1 - eta a) w_k + sqrt(2 T eta) xi."""
    r = 1 - eta * a
    k = np.arange(n + 1)
    V_inf = 2 * T / (a * (2 - eta * a))
    var = V_inf + (x0_var - V_inf) * r ** (2 * k)
    K, J = np.meshgrid(k, k, indexing="ij")
    lo = np.minimum(K, J)
    C = var[lo] * r ** np.abs(K - J)
    R = np.where(K > J, eta * r ** np.maximum(K - J - 1, 0), 0.0)
    return C, R


def test_fdt_exact_on_discrete_ou():
    T, eta, a = 0.3, 0.1, 1.7
    C, R = _ou_matrices(a, T, eta, 300, x0_var=T / a)
    f = effective_temperature(C, R, max_lag=40, n_ref=4, ref_span=40)
    expect = 2 * T / (2 - eta * a)
    assert f.T_eff == pytest.approx(expect, rel=1e-8)
    assert f.T_short == pytest.approx(expect, rel=1e-8)
    assert abs(f.curvature) < 1e-6 and f.stationary
    assert f.units == "field" and "field" in f.convention
    g = effective_temperature(C, R, max_lag=40, units="loss", mobility=0.5)
    assert g.T_eff == pytest.approx(2 * expect, rel=1e-8)
    # a non-stationary start is flagged
    C2, R2 = _ou_matrices(0.2, T, eta, 60, x0_var=5.0)  # relaxation time 25 steps
    assert not effective_temperature(C2, R2, max_lag=10, n_ref=3, ref_span=20, drift_tolerance=0.02).stationary


def test_fdt_bent_plot_has_curvature():
    # two OU modes at different temperatures: a time-scale-dependent T, a bent parametric plot
    C1, R1 = _ou_matrices(5.0, 0.5, 0.02, 400, 0.5 / 5.0)
    C2, R2 = _ou_matrices(0.3, 0.05, 0.02, 400, 0.05 / 0.3)
    f = effective_temperature(C1 + C2, (R1 + R2) / 2, max_lag=150)
    assert f.curvature > 0.1  # slope grows with the lag: the slow mode is colder
    assert f.T_short > f.T_eff


def test_dmft_langevin_temperature():
    cfg = load_config(LANGEVIN)
    problem, dyn, opt = dmft_inputs(cfg)
    Cs, Rs = [], []
    for seed in range(2):
        r = solve_dmft(problem, dyn, opt._replace(samples=3000, seed=seed, iterations=3))
        Cs.append(r.C)
        Rs.append(r.R)
    f = effective_temperature(np.array(Cs), np.array(Rs), max_lag=30, n_ref=5, ref_span=40)
    lo, hi = _ou_bracket()
    err = 3 * f.T_eff_err + 1e-3  # Monte-Carlo error, plus the residual transient at t = 8
    assert lo - err < f.T_eff < hi + err
    assert abs(f.T_eff - 0.2) < 0.05 * 0.2  # T within O(eta): eta a_max / 2 ~ 0.085 at most
    assert f.stationary


def _pair_cfg(name="persistent_sgd", tau=0.5, b=0.3, d=300, horizon=3.0, seeds=4):
    alg = {"name": name, "eta": 0.05, "horizon": horizon, "save_every": 5}
    if name != "gd":
        alg["batch_fraction"] = b
    if name == "persistent_sgd":
        alg["persistence_time"] = tau
    return load_config(
        {
            "problem": {"alpha": 2.0, "delta": 0.5, "loss": "logistic", "ridge": 0.05},
            "algorithm": alg,
            "simulation": {"d": d, "seeds": seeds, "dtype": "float64"},
        }
    )


def _replicas(cfg, n_replicas=2):
    spec, params = simulation_inputs(cfg)
    keys = ns.seed_keys(cfg.simulation.seed_list)
    return jax.vmap(lambda k: ns.replica_run(spec, params, k, n_replicas, cfg.algorithm.n_saves))(keys)


def test_replica_zero_is_the_plain_simulation():
    cfg = _pair_cfg(seeds=2, horizon=1.0)
    one = _replicas(cfg, 1)
    ds = simulate(cfg)
    np.testing.assert_allclose(np.asarray(one.q), ds.q.values[0], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(one.train_error), ds.train_error.values[0], rtol=1e-12)


def test_gd_replicas_coincide_and_sgd_replicas_separate():
    gd = _replicas(_pair_cfg("gd", seeds=2, horizon=1.0))
    assert np.all(np.asarray(gd.D) == 0.0)
    sgd = _replicas(_pair_cfg("sgd", seeds=2, horizon=1.0))
    assert np.asarray(sgd.D)[:, 0].max() == 0.0  # same start
    assert np.all(np.asarray(sgd.D)[:, -1] > 1e-4)


def test_distance_grows_with_persistence_time():
    late = {}
    for tau in (0.25, 2.0):
        D = np.asarray(_replicas(_pair_cfg(tau=tau, seeds=6)).D)[:, -4:].mean(axis=1)  # per seed
        late[tau] = (D.mean(), D.std(ddof=1) / np.sqrt(len(D)))
    (m1, e1), (m2, e2) = late[0.25], late[2.0]
    assert m2 - m1 > 3 * np.hypot(e1, e2)


@pytest.mark.parametrize("name,loss", [("persistent_sgd", "logistic"), ("langevin", "square")])
def test_tangent_step_is_the_jvp_of_the_trajectory(name, loss):
    # the hand-written linearised step (one X^T and one X product for state and tangents) must
    # equal forward-mode autodiff of 12 plain steps with respect to w at step 0
    raw = {"problem": {"alpha": 2.0, "delta": 0.5, "loss": loss, "ridge": 0.1},
           "algorithm": {"name": name, "eta": 0.05, "horizon": 0.6, "save_every": 1},
           "simulation": {"d": 120, "seeds": 1, "dtype": "float64"}}
    raw["algorithm"].update({"persistent_sgd": {"batch_fraction": 0.4, "persistence_time": 0.3}, "langevin": {"temperature": 0.1}}[name])
    cfg = load_config(raw)
    spec, params = simulation_inputs(cfg)
    key = ns.seed_keys([3])[0]
    data, st, mks, nks = ns.replica_init(spec, params, key, 1)
    st = jax.tree_util.tree_map(lambda a: a[0], st)
    sqd = np.sqrt(spec.d)
    probes = jax.random.normal(jax.random.key(1), (3, spec.d), st.w.dtype)

    def run(w0):
        s_ = st._replace(w=w0, h=data.train.x @ w0 / sqd)
        for _ in range(12):
            s_ = sim.step_streams(spec, params, data, mks[0], nks[0], s_)
        return s_.w

    expect = jax.vmap(lambda t: jax.jvp(run, (st.w,), (t,))[1])(probes)
    s_, tg = st, sim.Tangent(probes, probes @ data.train.x.T / sqd)
    for _ in range(12):
        s_, tg = sim.step_streams(spec, params, data, mks[0], nks[0], s_, tg)
    np.testing.assert_allclose(np.asarray(tg.w), np.asarray(expect), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(s_.w), np.asarray(run(st.w)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(tg.h), np.asarray(tg.w) @ np.asarray(data.train.x).T / sqd, rtol=1e-9, atol=1e-12)
    # the seed's plain step is the one step with the seed's own streams (replica 0), bit for bit
    one = sim.step(spec, params, data, key, st)
    for a, b in zip(one, sim.step_streams(spec, params, data, mks[0], nks[0], st)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_margins():
    cfg = _pair_cfg(seeds=1, horizon=0.5)
    spec, params = simulation_inputs(cfg)
    from sgdlab.dmft.simulation import init

    data, _ = init(spec, params, ns.seed_keys([0])[0])
    x, y = np.asarray(data.train.x), np.asarray(data.train.y)
    w = np.random.default_rng(0).normal(size=spec.d) * 3.0
    h = x @ w / np.sqrt(spec.d)
    kappa = np.asarray(ns.margins(y, h, w @ w / spec.d))
    np.testing.assert_allclose(kappa, y * (x @ w) / np.linalg.norm(w), rtol=1e-10)  # scale-free
    k = np.asarray(_replicas(cfg).margins[0])
    assert k.shape == (spec.n,) and np.isfinite(k).all()


def test_weak_noise_heuristic_limits():
    assert weak_noise_temperature(2.0, 0.5, 0.3, 1.0, 1.0, 0.1) == 0.0  # GD
    # minibatch SGD: tau = eta / b gives the gradient-variance value alpha Delta <l'^2> b (1-b) eta / 2
    assert weak_noise_temperature(2.0, 0.5, 0.3, 0.25, 0.4, 0.1) == pytest.approx(2 * 0.5 * 0.3 * 0.25 * 0.75 * 0.05)


@pytest.mark.slow
def test_simulation_langevin_temperature():
    cfg = load_config({**LANGEVIN, "simulation": {"d": 2000, "seeds": 6, "dtype": "float64"}})
    spec, params = simulation_inputs(cfg)
    runs = jax.vmap(lambda k: ns.response_run(spec, params, k, 200, 30, 4))(ns.seed_keys(range(6)))
    f = fit_fdt(en.response_curve(runs), 3)
    lo, hi = _ou_bracket()
    assert lo - 3 * f.T_eff_err < f.T_eff < hi + 3 * f.T_eff_err


# ---------------------------------------------------------------------------------------------
# Two-replica DMFT (sgdlab.dmft.replicas)
# ---------------------------------------------------------------------------------------------


def _replica_dmft(cfg, seeds=(0,), samples=None):
    from sgdlab.dmft.replicas import replica_distance_seeds

    problem, dyn, opt = dmft_inputs(cfg)
    opt = opt._replace(samples=samples or 2000, iterations=3)
    t, D, res = replica_distance_seeds(problem, dyn, opt, seeds, time_step=cfg.algorithm.eta)
    return t, D, res


def test_replica_dmft_gd_zero_sgd_positive_and_growing_with_tau():
    # one compiled shape (logistic, 20 steps) for all cases
    t, D, res = _replica_dmft(_pair_cfg("gd", horizon=1.0))
    assert np.all(D == 0.0) and res[0].converged  # identical masks, no Langevin: exactly zero
    t, D, res = _replica_dmft(_pair_cfg("sgd", horizon=1.0))
    assert D[0, 0] == 0.0 and np.all(D[0, 1:] > 0) and np.all(np.diff(D[0]) > 0)
    assert res[0].converged and res[0].residuals[-1] < 1e-8
    late = []
    for tau in (0.25, 2.0):
        t, D, _ = _replica_dmft(_pair_cfg(tau=tau, horizon=1.0), seeds=(0, 1))
        late.append(D[:, -5:].mean(axis=1))
    (m1, e1), (m2, e2) = ((x.mean(), x.std(ddof=1) / np.sqrt(len(x))) for x in late)
    assert m2 - m1 > 3 * np.hypot(e1, e2) and m2 > 1.5 * m1


@pytest.mark.slow
def test_replica_dmft_langevin_independent_noises():
    # square loss, full batch: the replicas differ only by their independent Langevin noises and
    # w1 - w2 follows the linear map (1 - eta H) plus sqrt(2 T eta)(xi1 - xi2), H = ridge + Delta X^T X / d
    # (+ a rank-one mean part, negligible). Two steps: D_2 = 2 T eta (1 + <(1 - eta H)^2>) with the
    # Marchenko-Pastur moments <H> = ridge + Delta alpha, <H^2> = ridge^2 + 2 ridge Delta alpha + Delta^2 alpha (1 + alpha).
    cfg = load_config({**LANGEVIN, "algorithm": {**LANGEVIN["algorithm"], "horizon": 1.0}})
    t, D, res = _replica_dmft(cfg)
    assert D[0, 0] == 0.0 and np.all(D[0, 1:] > 0)
    T, eta, lam, delta, alpha = 0.2, 0.05, 0.5, 0.5, 2.0
    h1, h2 = lam + delta * alpha, lam**2 + 2 * lam * delta * alpha + delta**2 * alpha * (1 + alpha)
    assert D[0, 1] == pytest.approx(2 * T * eta, rel=1e-12)
    assert D[0, 2] == pytest.approx(2 * T * eta * (2 - 2 * eta * h1 + eta**2 * h2), rel=5e-3)  # MC error of M, Q


@pytest.mark.slow
@pytest.mark.parametrize("name,tau", [("sgd", None), ("persistent_sgd", 0.5), ("persistent_sgd", 2.0)])
def test_replica_dmft_matches_simulation(name, tau):
    cfg = _pair_cfg(name, tau=tau or 0.5, d=1000, seeds=8)
    t, D, _ = _replica_dmft(cfg, seeds=(0, 1, 2, 3), samples=4000)
    Ds = np.asarray(_replicas(cfg).D)
    every = cfg.algorithm.save_every
    Dd = D[:, ::every]
    # compare the time average over t in [1, 3] (the dynamics is still moving: no stationarity needed)
    sel = slice(4, None)
    a, b = Dd[:, sel].mean(1), Ds[:, sel].mean(1)
    err = np.hypot(a.std(ddof=1) / np.sqrt(len(a)), b.std(ddof=1) / np.sqrt(len(b)))
    assert abs(a.mean() - b.mean()) < 4 * err, (a.mean(), b.mean(), err)


# ---------------------------------------------------------------------------------------------
# The [noise] table, the study's run(), the scan as a [sweep] of the study
# ---------------------------------------------------------------------------------------------


def _noise_examples():
    from importlib import resources
    from pathlib import Path

    return sorted(Path(str(resources.files("sgdlab") / "examples" / "noise")).glob("*.toml"))


def test_noise_examples_are_valid():
    from sgdlab.core.sweep import plan_sweep
    from sgdlab.dmft.command import NOISE

    names = [p.stem for p in _noise_examples()]
    assert {"default", "langevin", "scan"} <= set(names)
    for path in _noise_examples():
        cfg = en.load_noise_config(path)  # the windows fit in the horizon (config validation)
        assert cfg.name == f"noise_{path.stem}" and cfg.description
        if cfg.sweep is None:
            en.fdt_windows(cfg)
        else:
            points = plan_sweep(NOISE, cfg).points
            assert len(points) == 4 and all(p.error is None for p in points)
            for p in points:
                en.fdt_windows(p.config)


@pytest.mark.parametrize(
    "table,key",
    [
        ({"n_replicas": 1}, "noise.n_replicas"),
        ({"equilibration": 0.0}, "noise.equilibration"),
        ({"n_windows": 0}, "noise.n_windows"),
        ({"short_lags": 0}, "noise.short_lags"),
        ({"n_probes": 0}, "noise.n_probes"),
        ({"units": "kelvin"}, "noise.units"),
        ({"dmft_seeds": -1}, "noise.dmft_seeds"),
        ({"tail": 0.0}, "noise.tail"),
        ({"tail": 1.5}, "noise.tail"),
    ],
)
def test_every_noise_key_rejects_bad_values(table, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        en.load_noise_config({"noise": table})


_B, _T = "algorithm.batch_fraction", "algorithm.persistence_time"


@pytest.mark.parametrize(
    "sweep,key",
    [  # the scan keys of the former [noise.scan] table, now [sweep] axes of the study
        ({_B: [0.5], _T: [-1.0]}, "algorithm.persistence_time"),
        ({_B: [0.5], _T: [1.0], "problem.alpha": [0.0]}, "problem.alpha"),
        ({_B: [], _T: [1.0]}, "algorithm.batch_fraction"),
        ({_B: [0.5], _T: [1.0], "scheduler": 5}, "sweep.scheduler"),
        ({_B: [0.5], _T: [1.0], "bogus": 2}, "sweep.bogus"),
    ],
)
def test_every_scan_value_is_refused_naming_its_key(tmp_path, sweep, key):
    from sgdlab.core.sweep import run_sweep
    from sgdlab.dmft.command import NOISE

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_sweep(NOISE, {**_tiny_base(), "sweep": sweep}, tmp_path / "s.zarr", workers=0)
    assert not (tmp_path / "s.zarr").exists()  # refused before any computation


def test_noise_config_errors_name_the_key(tmp_path):
    from sgdlab.core.sweep import run_sweep
    from sgdlab.dmft.command import NOISE

    with pytest.raises(ConfigError, match=r"noise\.max_lag"):
        en.load_noise_config({"noise": {"max_lag": -1.0}})
    with pytest.raises(ConfigError, match=r"algorithm\.batch_fraction"):
        run_sweep(NOISE, {**_tiny_base(), "sweep": {_B: [0.0], _T: [1.0]}}, tmp_path / "s.zarr", workers=0)
    with pytest.raises(ConfigError, match=r"noise\.bogus"):
        en.load_noise_config({"noise": {"bogus": 1}})
    raw = _pair_cfg(horizon=1.0).model_dump(exclude={"sweep"})  # 20 steps
    with pytest.raises(ConfigError, match=r"noise\.n_windows"):
        en.load_noise_config({**raw, "noise": {"max_lag": 0.5, "n_windows": 4}})
    with pytest.raises(ConfigError, match=r"noise\.equilibration"):
        en.load_noise_config({**raw, "noise": {"max_lag": 0.2, "n_windows": 2, "equilibration": 0.9}})
    cfg = en.load_noise_config({**raw, "noise": {"max_lag": 0.2, "n_windows": 2}})
    k0, L, span = en.fdt_windows(cfg)
    assert (k0, L, span) == (20 - 2 * 5, 4, 5)
    assert en.fdt_windows(_pair_cfg(horizon=1.0), en.NoiseConfig(max_lag=0.2, n_windows=2)) == (k0, L, span)


def test_bad_combinations_are_refused_before_computing():
    # short_lags beyond the lag window (4 steps of eta = 0.05 in max_lag = 0.2)
    raw = _pair_cfg(horizon=1.0).model_dump(exclude={"sweep"})
    with pytest.raises(ConfigError, match=r"noise\.short_lags=5 exceeds the lag window .* short_lags in \[1, 4\]"):
        en.load_noise_config({**raw, "noise": {"max_lag": 0.2, "n_windows": 2, "short_lags": 5}})
    en.load_noise_config({**raw, "noise": {"max_lag": 0.2, "n_windows": 2, "short_lags": 4}})
    with pytest.raises(ConfigError, match=r"theory\.samples=30 must be >= 2 \(n_steps \+ 1\) = 42"):
        en.load_noise_config({**raw, "theory": {"samples": 30}, "noise": {"max_lag": 0.2, "n_windows": 2}})
    en.load_noise_config({**raw, "theory": {"samples": 30}, "noise": {"max_lag": 0.2, "n_windows": 2, "dmft_seeds": 0}})
    with pytest.raises(ConfigError, match=r"theory\.methods"):
        en.load_noise_config({**raw, "theory": {"methods": ["dmft"]}, "noise": {"max_lag": 0.2, "n_windows": 2}})
    with pytest.raises(ConfigError, match=r"simulation\.enabled"):
        en.load_noise_config({**raw, "simulation": {"enabled": False}, "noise": {"max_lag": 0.2, "n_windows": 2}})
    with pytest.raises(ConfigError, match=r"noise\.dmft_seeds cannot be a sweep axis"):
        en.load_noise_config({**raw, "noise": {"max_lag": 0.2, "n_windows": 2}, "sweep": {"noise.dmft_seeds": [0, 2]}})


def test_default_config_is_the_default_example():
    cfg = en.load_noise_config()
    assert cfg.name == "noise_default" and cfg.algorithm.name == "persistent_sgd" and cfg.noise.dmft_seeds == 4


def test_statistical_stationarity_flag():
    # C(k, j) with an independent random level per (replicate, time) -- an estimator's noise,
    # larger than the tolerance, with no systematic drift -- is stationary; the same noise plus a
    # resolved linear trend of the level is not
    rng = np.random.default_rng(0)
    C, R = _ou_matrices(1.0, 0.2, 0.05, 200, x0_var=0.2)
    e = 0.02 * rng.normal(size=(40, 201))
    Cn = C[None] * (1 + 0.5 * (e[:, :, None] + e[:, None, :]))
    Rn = np.broadcast_to(R, Cn.shape)
    f = effective_temperature(Cn, Rn, max_lag=20, n_ref=3, ref_span=40, drift_tolerance=1e-3)
    assert f.drift > 1e-3 and f.drift < 3 * f.drift_err and f.stationary
    trend = 1 + 0.1 * np.linspace(0, 1, 201)
    Cd = Cn * np.sqrt(trend[:, None] * trend[None, :])
    g = effective_temperature(Cd, Rn, max_lag=20, n_ref=3, ref_span=40, drift_tolerance=1e-3)
    assert g.drift > 3 * g.drift_err and not g.stationary


def _tiny_base():
    return {
        "name": "tiny",
        "problem": {"alpha": 2.0, "delta": 0.5, "loss": "logistic", "ridge": 0.5},
        "algorithm": {"name": "persistent_sgd", "eta": 0.05, "horizon": 1.5, "save_every": 3,
                      "batch_fraction": 0.3, "persistence_time": 0.5},
        "simulation": {"d": 80, "seeds": 2, "dtype": "float64"},
        "theory": {"samples": 400, "iterations": 2},
        "noise": {"max_lag": 0.25, "n_windows": 2, "n_probes": 2, "dmft_seeds": 2},
    }


@pytest.fixture(scope="module")
def tiny_run():
    """run() of the tiny base config (b = 0.3, tau = 0.5), shared by the tests below."""
    return en.run(_tiny_base())


def test_run_dataset(tiny_run):
    ds = tiny_run
    assert ds.attrs["study"] == "noise" and ds.attrs["status"] == "complete"
    assert ds.attrs["config_hash"] == en.load_noise_config(_tiny_base()).config_hash()
    assert list(ds.method.values) == ["sim", "dmft"] and ds.D.shape == (2, 11) and ds.D_dmft.shape == (2, 11)
    assert ds.dC.shape == (2, 6) and np.isfinite(ds.dC.values).all() and np.isfinite(ds.chi.values).all()
    for var in en.SUMMARY_VARIABLES:
        assert ds[var].dims == ("method",)
    for var in ("D_inf", "D_inf_err", "T_eff", "T_eff_err", "T_short", "drift", "stationary"):
        assert np.isfinite(ds[var].values).all(), var
    for var in ("kappa_max", "kappa_max_err", "T_heuristic"):  # simulation only
        assert np.isfinite(ds[var].sel({"method": "sim"})) and np.isnan(ds[var].sel({"method": "dmft"})), var
    assert set(np.unique(ds.stationary.values)) <= {0.0, 1.0}
    np.testing.assert_array_equal(ds.margin_quantile.values[:, 0], ds.kappa_max_seed.values)
    assert float(ds.kappa_max.sel({"method": "sim"})) == pytest.approx(ds.kappa_max_seed.values.mean(), rel=1e-14)
    assert np.all(np.diff(ds.margin_quantile.values, axis=1) >= 0)
    # D_inf = the replica distance averaged over the tail (a quarter of the 10 saves, rounded)
    n_tail = max(1, int(round(0.25 * 10)))
    np.testing.assert_allclose(float(ds.D_inf.sel({"method": "sim"})), ds.D.values[:, -n_tail:].mean(), rtol=1e-12)


def test_figures_and_table_from_the_store(tiny_run, tmp_path):
    from rich.console import Console

    from sgdlab.core.store import load, save
    from sgdlab.dmft.noise_plot import figures, table

    back = load(save(tiny_run, tmp_path / "n.zarr"))
    figs = figures(back)
    assert set(figs) == {"fdt", "distance", "margins"}
    for fig in figs.values():
        ax = fig.axes[0]
        assert "$" in ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
    console = Console(record=True, width=140)
    console.print(table(back))
    text = console.export_text()
    assert "T_eff (global)" in text and "kappa_max" in text and "dmft" in text


def test_non_finite_values_stop_with_quantity_time_and_seed():
    raw = {"algorithm": {"name": "sgd", "eta": 3.0, "batch_fraction": 0.5, "horizon": 600.0},
           "simulation": {"d": 40, "seeds": 2}, "noise": {"max_lag": 3.0, "n_windows": 2, "short_lags": 1, "dmft_seeds": 0}}
    with pytest.raises(NonFiniteError, match=r"^(q|D) \(replica .*\) became .* at t=[0-9.]+ for seed [01];"):
        en.run(raw)


class Killed(BaseException):
    """A kill of the process (not an error the engine records)."""


def test_noise_scan_resumes_and_keeps_finished_points(tmp_path, monkeypatch, tiny_run):
    from sgdlab.core.sweep_plot import plot_sweep
    from sgdlab.core.sweep import DONE, PENDING, load_sweep, run_sweep
    from sgdlab.dmft.command import NOISE

    cfg = {**_tiny_base(), "sweep": {_B: [0.3, 0.6], _T: [0.5]}}
    store = tmp_path / "scan.zarr"
    real = en.measure_noise
    calls = []

    def dying(c, progress=None):  # the second point is killed: the first must already be in the store
        calls.append(c.algorithm.batch_fraction)
        if len(calls) == 2:
            raise Killed()
        return real(c, progress)

    monkeypatch.setattr(en, "measure_noise", dying)
    with pytest.raises(Killed):
        run_sweep(NOISE, cfg, store, workers=0)
    partial = load_sweep(store)
    assert partial.status.values.tolist() == [[DONE], [PENDING]]
    assert np.isfinite(partial.D_inf.values[0, 0]).all() and np.isnan(partial.D_inf.values[1, 0]).all()
    calls.clear()
    summary = run_sweep(NOISE, cfg, store, workers=0)
    assert calls == [0.6] and (summary.done, summary.skipped, summary.failed) == (2, 1, 0)
    ds = load_sweep(store)
    assert np.all(ds.status.values == DONE)
    np.testing.assert_array_equal(ds.D_inf.values[0, 0], partial.D_inf.values[0, 0])  # not recomputed
    # the sweep's point equals the single run of the same config, every variable
    point = ds.sel({_B: 0.3, _T: 0.5})
    for name, var in tiny_run.data_vars.items():
        np.testing.assert_array_equal(point[name].values, var.values, err_msg=name)
    # D_inf from the scan = the replica run of that point, averaged over the tail
    pcfg = load_config({k: v for k, v in _tiny_base().items() if k != "noise"} | {
        "algorithm": {**_tiny_base()["algorithm"], "batch_fraction": 0.6}})
    n_tail = max(1, int(round(0.25 * pcfg.algorithm.n_saves)))
    Ds = np.asarray(_replicas(pcfg).D)[:, -n_tail:].mean(axis=1)
    assert float(ds.D_inf.sel({_B: 0.6, _T: 0.5, "method": "sim"})) == pytest.approx(Ds.mean(), rel=1e-12)
    assert np.all(ds.kappa_max.sel({"method": "sim"}).values < 10) and np.isnan(ds.kappa_max.sel({"method": "dmft"}).values).all()
    # a different scan in the same store is refused; a bad grid value names its key
    other = {**cfg, "noise": {**cfg["noise"], "tail": 0.5}}
    with pytest.raises(ConfigError, match="different sweep"):
        run_sweep(NOISE, other, store, workers=0)
    bad = {**cfg, "sweep": {_B: [1.5], _T: [0.5]}}
    with pytest.raises(ConfigError, match="batch_fraction"):
        run_sweep(NOISE, bad, tmp_path / "bad.zarr", workers=0)
    for var in ("D_inf", "T_eff", "kappa_max"):
        fig = plot_sweep(ds, var)
        assert len(fig.axes) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("b,tau", [(0.3, 0.05 / 0.3), (0.3, 1.0)])  # tau = eta / b is minibatch SGD
def test_effective_temperature_dmft_matches_simulation(b, tau):
    # stationary under-parametrised regime (logistic, alpha = 2, ridge 0.5, t in [5.8, 12]);
    # d = 2000 x 8 seeds against 4 independent DMFT solves of 16000 samples (its Monte-Carlo bias
    # measured at b = 0.3, tau = 1: T = 0.00596(44), 0.00568(14), 0.00599(11), 0.00611(11) for
    # N = 4000, 8000, 16000, 32000 -- no resolved trend). Combined standard error, 3.5 sigma.
    raw = {
        "problem": {"alpha": 2.0, "delta": 0.5, "loss": "logistic", "ridge": 0.5},
        "algorithm": {"name": "persistent_sgd", "eta": 0.05, "horizon": 12.0, "save_every": 4,
                      "batch_fraction": b, "persistence_time": tau},
        "simulation": {"d": 2000, "seeds": 8, "dtype": "float64"},
        "theory": {"samples": 16000, "iterations": 3},
    }
    res = en.measure_noise(en.load_noise_config({**raw, "noise": {"max_lag": 1.5, "n_windows": 4, "dmft_seeds": 4}}))
    sim, dmft = res.fdt["sim"], res.fdt["dmft"]
    assert sim.stationary and dmft.stationary
    z = abs(sim.T_eff - dmft.T_eff) / np.hypot(sim.T_eff_err, dmft.T_eff_err)
    assert z < 3.5, (sim.T_eff, sim.T_eff_err, dmft.T_eff, dmft.T_eff_err)
    # the replica distance of the same runs agrees too (time average over the last quarter)
    Ds, Dd = res.D[:, -15:].mean(1), res.D_dmft[:, -15:].mean(1)
    assert abs(Ds.mean() - Dd.mean()) < 3.5 * np.hypot(Ds.std(ddof=1) / np.sqrt(8), Dd.std(ddof=1) / 2)


def test_noise_cli_single_and_scan(tmp_path):
    from typer.testing import CliRunner

    from sgdlab.cli import app
    from sgdlab.core.store import load
    from sgdlab.core.sweep import DONE

    body = (
        '[problem]\nalpha = 2.0\nloss = "logistic"\nridge = 0.5\n'
        '[algorithm]\nname = "persistent_sgd"\neta = 0.05\nhorizon = 1.5\nsave_every = 3\nbatch_fraction = 0.3\npersistence_time = 0.5\n'
        '[simulation]\nd = 60\nseeds = 2\ndtype = "float64"\n[theory]\nsamples = 400\niterations = 2\n'
        '[noise]\nmax_lag = 0.25\nn_windows = 2\nn_probes = 2\ndmft_seeds = 2\n'
    )
    one = tmp_path / "one.toml"
    one.write_text(body)
    runner = CliRunner()
    res = runner.invoke(app, ["noise", str(one), "-o", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    assert "T_eff (global)" in res.output and "kappa_max" in res.output
    ds = load(tmp_path / "one" / "one.zarr")
    assert set(ds.method.values) == {"sim", "dmft"} and ds.D.shape == (2, 11) and ds.D_dmft.shape == (2, 11)
    for name in ("fdt", "distance", "margins"):
        assert (tmp_path / "one" / f"one_{name}.png").read_bytes()[:4] == b"\x89PNG"
    scan = tmp_path / "scan.toml"
    scan.write_text(body.replace("dmft_seeds = 2\n", "dmft_seeds = 0\n")
                    + '[sweep]\n"algorithm.batch_fraction" = [0.3, 0.6]\n"algorithm.persistence_time" = [0.5]\n')
    res = runner.invoke(app, ["noise", str(scan), "-o", str(tmp_path / "scan"), "--workers", "0"])
    assert res.exit_code == 0, res.output
    sds = load(tmp_path / "scan" / "scan.zarr")
    assert np.all(sds.status.values == DONE)
    assert np.all(sds.D_inf.sel({"method": "sim"}).values > 0) and np.isnan(sds.D_inf.sel({"method": "dmft"}).values).all()
    for var in ("D_inf", "T_eff", "kappa_max"):
        assert (tmp_path / "scan" / f"scan_{var}.png").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(body.replace("max_lag = 0.25", "max_lag = -1"))
    res = runner.invoke(app, ["noise", str(bad), "-o", str(tmp_path / "bad")])
    assert res.exit_code != 0 and "noise.max_lag" in res.output
    res = runner.invoke(app, ["noise", str(one), "-o", str(tmp_path / "bad"), "--set", "noise.n_windows=0"])
    assert res.exit_code != 0 and "noise.n_windows" in res.output
    res = runner.invoke(app, ["noise", str(one), "-o", str(tmp_path / "bad"), "--set", "noise.short_lags=9"])
    assert res.exit_code != 0 and "noise.short_lags" in res.output
