"""Research with one's own model: user losses, step-size / batch-fraction schedules, momentum, and
the DMFT's Monte-Carlo standard error; each checked against an independent reference.

Agreement between the DMFT (d = infinity) and the simulation (finite d) is judged in units of the
combined standard error ``sqrt(se_sim^2 + se_dmft^2)`` (seeds: std / sqrt(n); DMFT: independent
solves), at a few well-separated times, with the bound 4: the seed error has 7 degrees of freedom
(P(|t_7| > 4) = 0.5% per time), and the finite-d bias is O(1/sqrt(d)) of the spread.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab.core.errors import ConfigError
from sgdlab.dmft.config import load_config
from sgdlab.dmft.experiment import dmft_inputs, run, simulate
from sgdlab.dmft.solver import _march_solve, _split, _draw, SolverOptions, solve_dmft

HERE = pathlib.Path(__file__).parent
Z_MAX = 4.0


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def _cfg(**sections):
    base = {
        "name": "own",
        "problem": {"alpha": 2.0, "delta": 0.5, "ridge": 0.1},
        "algorithm": {"name": "persistent_sgd", "eta": 0.1, "batch_fraction": 0.3, "persistence_time": 2.0, "horizon": 5.0},
        "simulation": {"d": 2000, "seeds": 8},
        "theory": {"methods": ["dmft"], "samples": 5000, "solves": 4},
    }
    out = copy.deepcopy(base)
    for key, value in sections.items():
        out[key].update(value)
    return out


def _z_scores(ds, names=("m", "q", "train_loss"), times=(1.0, 2.5, None)):
    """``z = (sim - dmft) / combined s.e.`` at a few times (None: the last)."""
    sim, th = ds.sel({"method": "sim"}), ds.sel({"method": "dmft"}).isel(seed=0)
    out = {}
    for name in names:
        for t in times:
            i = -1 if t is None else int(np.argmin(np.abs(ds.t.values - t)))
            x = sim[name].isel(t=i)
            se_sim = float(x.std(ddof=1)) / np.sqrt(x.sizes["seed"])
            gap = float(x.mean()) - float(th[name].isel(t=i))
            out[(name, float(ds.t[i]))] = gap / np.hypot(se_sim, float(th[f"{name}_se"].isel(t=i)))
    return out


def _assert_agree(ds):
    z = _z_scores(ds)
    worst = max(z, key=lambda k: abs(z[k]))
    assert abs(z[worst]) < Z_MAX, f"simulation and DMFT differ at {worst}: z = {z[worst]:.2f} ({z})"


# ---------------------------------------------------------------- user losses


def test_a_loss_given_as_function_or_import_string_is_the_built_in_loss_bit_for_bit():
    from sgdlab.dmft.losses import square

    small = {"simulation": {"d": 200, "seeds": 2}, "algorithm": {"horizon": 1.0}, "theory": {"samples": 400, "solves": 2}}
    runs = [run(_cfg(problem={"loss": loss}, **small)) for loss in ("square", square, "sgdlab.dmft.losses:square")]
    for other in runs[1:]:
        for name in ("m", "q", "train_loss", "C"):
            np.testing.assert_array_equal(runs[0][name].values, other[name].values)
    # the stored config names the function by its import string: a rerun from the store works
    assert '"loss": "sgdlab.dmft.losses:square"' in runs[1].attrs["config"]


def test_dmft_and_simulation_agree_for_a_loss_that_is_not_built_in():
    ds = run(_cfg(problem={"loss": "own_functions:softplus_hinge"}))
    _assert_agree(ds)


@pytest.mark.parametrize(
    "loss, words",
    [
        ("own_functions:hinge", "jumps"),  # a kink: the DMFT needs loss' continuous
        ("own_functions:nothing", "no attribute"),
        ("no_such_module:f", "cannot import"),
        ("hinge", "allowed"),
        (lambda y: y, "cannot be called with 2"),
        (lambda y, z: float(z[0]) * y, "not JAX-traceable"),
        (lambda y, z: (y * z).sum(), "elementwise"),
    ],
)
def test_a_bad_loss_is_refused_naming_the_key(loss, words):
    with pytest.raises(ConfigError) as err:
        load_config(_cfg(problem={"loss": loss}))
    assert "problem.loss" in str(err.value) and words in str(err.value)


# ---------------------------------------------------------------- schedules


def test_a_constant_per_step_schedule_reproduces_the_scalar_run():
    small = {"simulation": {"d": 300, "seeds": 2}, "algorithm": {"horizon": 1.5}, "theory": {"samples": 800, "solves": 2}}
    scalar = run(_cfg(**small))
    per_step = copy.deepcopy(small)
    per_step["algorithm"] = {**small["algorithm"], "schedule": {"eta": {"kind": "function", "function": "own_functions:constant_eta"}}}
    arrays = run(_cfg(**per_step))
    np.testing.assert_allclose(arrays.t.values, scalar.t.values, rtol=1e-14)  # sum of eta_k vs k eta
    sim = {"method": "sim"}
    for name in ("m", "q", "train_loss", "batch_occupancy"):  # the simulator: bit for bit
        np.testing.assert_array_equal(scalar[name].sel(sim).values, arrays[name].sel(sim).values)
    dmft = {"method": "dmft"}
    for name in ("m", "q", "C", "R"):  # the DMFT: the general recursion, equal to rounding
        np.testing.assert_allclose(arrays[name].sel(dmft).values, scalar[name].sel(dmft).values, rtol=1e-9, atol=1e-12)


def test_dmft_and_simulation_agree_along_a_decaying_step_size():
    ds = run(_cfg(algorithm={"eta": 0.2, "persistence_time": 2.0, "schedule": {"eta": {"kind": "inverse_time", "scale": 20}}}))
    eta = np.diff(ds.t.values)
    np.testing.assert_allclose(eta, 0.2 / (1 + np.arange(eta.size) / 20), rtol=1e-12)
    _assert_agree(ds)


def test_persistent_sgd_keeps_its_batch_fraction_equal_to_the_schedule():
    cfg = _cfg(algorithm={"horizon": 3.0, "schedule": {"batch_fraction": {"kind": "cosine", "scale": 30, "final": 0.5}}},
               simulation={"d": 1000, "seeds": 8})
    cfg["theory"]["methods"] = []
    ds = simulate(load_config(cfg))
    k = ds.step.values
    b_k = 0.3 * (0.5 + 0.5 * 0.5 * (1 + np.cos(np.pi * np.minimum(k / 30, 1))))
    occ = ds.batch_occupancy.sel({"method": "sim"})
    n = 2000  # alpha d samples, each seed
    se = np.sqrt(b_k * (1 - b_k) / (n * occ.sizes["seed"]))  # binomial error of the mean occupancy
    z = (occ.mean("seed").values - b_k) / se
    assert np.abs(z).max() < Z_MAX, z


@pytest.mark.parametrize(
    "schedule, words",
    [
        ({"eta": {"kind": "step", "every": 10}}, "needs factor"),
        ({"eta": {"kind": "constant", "scale": 3.0}}, "does not belong"),
        ({"eta": {"kind": "function", "function": "own_functions:wrong_shape"}}, "one value per step"),
        ({"eta": {"kind": "warmup"}}, "kind"),
        ({"batch_fraction": {"kind": "step", "every": 2, "factor": 0.2}}, "leaves [0, 1]"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_key(schedule, words):
    with pytest.raises(ConfigError) as err:
        load_config(_cfg(algorithm={"schedule": schedule}))
    assert "algorithm" in str(err.value) and words in str(err.value)


# ---------------------------------------------------------------- momentum


@pytest.mark.parametrize("nesterov", [False, True])
def test_dmft_and_simulation_agree_with_momentum(nesterov):
    _assert_agree(run(_cfg(algorithm={"momentum": 0.6, "nesterov": nesterov})))


def test_zero_momentum_through_the_momentum_code_is_plain_sgd():
    cfg = load_config(_cfg(simulation={"d": 300, "seeds": 2}, algorithm={"horizon": 1.0}, theory={"samples": 600}))
    # simulator: the momentum step with beta = 0 is the plain step, bit for bit
    from sgdlab.dmft import simulation as sim_mod
    from sgdlab.dmft.experiment import simulation_inputs

    spec, params = simulation_inputs(cfg)
    key = jax.random.key(3)
    runs = []
    for s in (spec, dataclasses.replace(spec, momentum=True)):
        data, state = sim_mod.init(s, params, key)
        runs.append(sim_mod.advance(s, params, data, key, state, 10)[1])
    for name in ("m", "q", "train_loss"):
        np.testing.assert_array_equal(np.asarray(runs[0][name]), np.asarray(runs[1][name]))
    # DMFT: the march with momentum switched on and beta = gamma = 0 is the plain march
    problem, dynamics, options = dmft_inputs(cfg)
    skeleton, n_steps, params = _split(problem, dynamics)
    noise = _draw(jax.random.key(0), params, skeleton=skeleton, n_steps=n_steps, samples=600, probe=True)
    outs = [_march_solve(noise, params, 1e-10, skeleton=skeleton, n_steps=n_steps, chunks=2, momentum=mom) for mom in (False, True)]
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-11, atol=1e-13)


def test_gd_with_momentum_on_the_square_loss_reaches_the_ridge_minimiser():
    """Late-time DMFT of heavy-ball GD vs the ridge estimator solved directly at d = 2000."""
    from sgdlab.dmft import problem as gm

    cfg = _cfg(algorithm={"name": "gd", "eta": 0.3, "momentum": 0.5, "horizon": 45.0, "batch_fraction": 1.0},
               theory={"samples": 2000, "solves": 2})
    del cfg["algorithm"]["persistence_time"]
    cfg = load_config(cfg)
    ds = run(cfg, simulation=False)
    late = ds.isel(t=-1)
    problem = cfg.problem.to_problem()
    d, m_star, q_star = 2000, [], []
    for seed in range(6):
        key = jax.random.key(100 + seed)
        v = gm.sample_centroid(jax.random.fold_in(key, 0), d, np.float64)
        data = gm.sample_dataset(jax.random.fold_in(key, 1), problem, v, problem.n_samples(d))
        x, y = np.asarray(data.x), np.asarray(data.y)
        w = np.linalg.solve(x.T @ x / d + problem.ridge * np.eye(d), x.T @ y / np.sqrt(d))
        m_star.append(w @ np.asarray(v) / d)
        q_star.append(w @ w / d)
    for name, ref in (("m", m_star), ("q", q_star)):
        mean, se = np.mean(ref), np.std(ref, ddof=1) / np.sqrt(len(ref))
        z = (float(late[name].values[0]) - mean) / np.hypot(se, float(late[f"{name}_se"].values[0]))
        assert abs(z) < Z_MAX, (name, float(late[name].values[0]), mean, se)


# ---------------------------------------------------------------- DMFT error bars


@pytest.mark.slow
def test_the_reported_dmft_standard_error_matches_the_spread_of_independent_solves():
    """20 independent runs of 4 solves each: the variance of their means against the mean of
    their squared standard errors, an F test at the 1% level on each of m, q at the end (the
    ratio has an F(19, 60) law under the hypothesis: 99% interval [0.333, 2.417], scipy.stats.f.ppf)."""
    from sgdlab.dmft.experiment import solve_theory

    means, ses = {"m": [], "q": []}, {"m": [], "q": []}
    for seed in range(20):
        cfg = load_config(_cfg(algorithm={"horizon": 3.0}, theory={"samples": 1000, "solves": 4, "seed": 1000 + seed}))
        ds = solve_theory(cfg, "dmft")
        for name in means:
            means[name].append(float(ds[name].isel(t=-1).squeeze()))
            ses[name].append(float(ds[f"{name}_se"].isel(t=-1).squeeze()))
    for name in means:
        ratio = np.var(means[name], ddof=1) / np.mean(np.square(ses[name]))
        assert 0.333 < ratio < 2.417, (name, ratio)


def test_every_dmft_curve_carries_its_standard_error():
    ds = run(_cfg(simulation={"d": 200, "seeds": 2}, algorithm={"horizon": 1.0}, theory={"samples": 400, "solves": 3}))
    for name in ("m", "q", "train_loss", "train_error", "test_loss", "test_error"):
        se = ds[f"{name}_se"].sel({"method": "dmft"})
        assert np.all(np.isfinite(se.values)) and np.all(se.values[..., 1:] > 0), name
    assert ds.attrs["dmft_solves"] == 3
    # the mean of the solves is the mean of replicas solved one by one
    cfg = load_config(_cfg(simulation={"d": 200, "seeds": 2}, algorithm={"horizon": 1.0}, theory={"samples": 400, "solves": 3}))
    problem, dynamics, options = dmft_inputs(cfg)
    ms = [solve_dmft(problem, dynamics, options._replace(replica=r)).m for r in range(3)]
    np.testing.assert_allclose(ds.m.sel({"method": "dmft"}).isel(seed=0).values, np.mean(ms, axis=0), rtol=1e-12)
    assert SolverOptions().replica == 0


@pytest.mark.parametrize("algorithm", ["sgd", "persistent_sgd", "sgf"])
def test_the_scheduled_chain_at_constant_values_is_the_chain_of_the_algorithm(algorithm):
    """``steps.step_plan`` builds a per-step chain from ``batch_mask.decorrelation``; with a schedule
    that keeps eta and b constant it must give the chain of ``batch_mask.mask_chain``."""
    from sgdlab.core.schedule import Schedule
    from sgdlab.dmft.batch_mask import mask_chain
    from sgdlab.dmft.steps import step_plan

    keep = Schedule(kind="function", function=lambda k: jnp.full(k.shape, 0.1))
    plan = step_plan(algorithm, 0.1, 0.3, 2.0, 2.0, keep, Schedule())
    chain = mask_chain(algorithm, 0.1, 0.3, 2.0)
    np.testing.assert_allclose(plan.p_on, chain.p_on, rtol=1e-12)
    np.testing.assert_allclose(plan.p_off, chain.p_off, rtol=1e-12)
    assert plan.n_steps == 20


@pytest.mark.parametrize(
    "section, values, words",
    [
        ("algorithm", {"momentum": 1.0}, "algorithm.momentum"),
        ("algorithm", {"momentum": -0.1}, "algorithm.momentum"),
        ("algorithm", {"nesterov": True}, "nesterov = true needs a momentum > 0"),
        ("algorithm", {"momentum": "0.5"}, "algorithm.momentum"),
        ("theory", {"solves": 1}, "theory.solves"),
        ("theory", {"solves": 1000}, "theory.solves"),
    ],
)
def test_bad_momentum_and_solves_are_refused_naming_the_key(section, values, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_config(_cfg(**{section: values}))


@pytest.mark.parametrize("extra", [{"momentum": 0.5}, {"schedule": {"eta": {"kind": "cosine", "scale": 100, "final": 0.5}}}])
def test_the_noise_study_refuses_schedules_and_momentum(extra):
    from sgdlab.dmft.noise import load_noise_config

    with pytest.raises(ConfigError, match="stationary state at a constant step"):
        load_noise_config({"algorithm": extra})
