"""Tests of the discrete-time DMFT solver (``sgdlab.dmft.solver``).

Every tolerance is statistical: it comes from the Monte-Carlo error of the DMFT (measured as the
spread over independent solver seeds), the standard error of the simulation over seeds, an exact
concentration bound (Hoeffding), or rounding. Thresholds are Student-t quantiles at a family-wise
level ``FAMILY_P`` with a Bonferroni correction over the points compared, so that a correct solver
fails a test with probability below ``FAMILY_P`` and a wrong one (a missing Onsager term, a wrong
sign, an O(1) bias) fails by tens of standard errors.

Fast tests (unmarked) run in about a minute on two cores; ``-m slow`` runs the full grid.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import sgdlab
from sgdlab.dmft import losses
from sgdlab.dmft.batch_mask import mask_chain
from sgdlab.dmft.config import load_config
from sgdlab.dmft import problem as gm
from sgdlab.dmft.problem import GaussianMixture
from sgdlab.dmft import solver as D
from sgdlab.dmft.solver import DMFTConvergenceWarning, DMFTError, Dynamics, Kernels, SolverOptions, solve_dmft

FAMILY_P = 0.01  # family-wise false-alarm probability of each statistical test


def t_threshold(dof: float, n_tests: int, family_p: float = FAMILY_P) -> float:
    """Two-sided Student-t quantile with a Bonferroni correction over ``n_tests`` comparisons."""
    return float(st.t.ppf(1.0 - family_p / (2.0 * n_tests), dof))


def seed_stats(values: np.ndarray):
    """Mean, standard error and degrees of freedom over the first axis (independent seeds)."""
    values = np.asarray(values, dtype=np.float64)
    k = values.shape[0]
    return values.mean(0), values.std(0, ddof=1) / math.sqrt(k), k - 1


def solve_seeds(problem, dynamics, samples, seeds, **kw):
    """Independent DMFT solves (one per solver seed)."""
    return [solve_dmft(problem, dynamics, SolverOptions(samples=samples, seed=s, **kw)) for s in seeds]


# ------------------------------------------------------------------------------------------------
# Closed forms used as independent references
# ------------------------------------------------------------------------------------------------


def ridge_closed_form(alpha: float, delta: float, lam: float):
    """Large-d overlaps of the ridge minimiser ``w = (X^T X/d + lam I)^{-1} X^T y / sqrt(d)`` for two
    clusters with ``y = c`` (any rho): ``(m, q, chi, train_loss)``.

    Derived from the static cavity (replica-symmetric) equations of the square loss: with the
    susceptibility ``chi = (1/d) Tr (Delta Z^T Z/d + lam)^{-1}`` (Marchenko-Pastur), a training
    sample has ``h = (c m + sqrt(Delta q) xi + Delta chi y) / (1 + Delta chi)``, and
    ``chi = 1/(lam + alpha Delta/(1 + Delta chi))``, ``m = alpha chi (1 - m)/(1 + Delta chi)``,
    ``q = m^2 + alpha Delta chi^2 ((1 - m)^2 + Delta q)/(1 + Delta chi)^2``. Checked against exact
    linear algebra in :func:`test_ridge_closed_form_matches_linear_algebra`.
    """
    bq = lam + alpha * delta - delta
    chi = (-bq + math.sqrt(bq * bq + 4.0 * lam * delta)) / (2.0 * lam * delta)
    m = alpha * chi / (1.0 + delta * chi + alpha * chi)
    kappa = alpha * delta * chi**2 / (1.0 + delta * chi) ** 2
    q = (m * m + kappa * (1.0 - m) ** 2) / (1.0 - kappa * delta)
    train_loss = 0.5 * ((1.0 - m) ** 2 + delta * q) / (1.0 + delta * chi) ** 2
    return m, q, chi, train_loss


def ridge_linear_algebra(alpha, delta, lam, d, seed):
    """``(m, q)`` of the exact ridge minimiser at dimension ``d`` (numpy, float64)."""
    rng = np.random.default_rng(seed)
    n = int(round(alpha * d))
    v = rng.standard_normal(d)
    c = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    x = np.outer(c, v) / math.sqrt(d) + math.sqrt(delta) * rng.standard_normal((n, d))
    w = np.linalg.solve(x.T @ x / d + lam * np.eye(d), x.T @ c / math.sqrt(d))
    return w @ v / d, w @ w / d


# ------------------------------------------------------------------------------------------------
# Options and errors
# ------------------------------------------------------------------------------------------------

# Tests share a few (loss, T, N) shapes: the float parameters are traced, so they reuse one
# compilation of the solver per shape.
SMALL_PROBLEM = GaussianMixture()
SMALL_DYNAMICS = Dynamics(eta=0.1, n_steps=40, p_on=0.05, p_off=0.05 * 0.7 / 0.3, b=0.3)
SMALL_N = 1000
LOGISTIC_N = 2000


@pytest.mark.parametrize(
    "field, value",
    [
        ("samples", -5), ("samples", 0), ("samples", 1), ("samples", 100.0), ("samples", True),
        ("damping", -0.1), ("damping", 1.0), ("damping", 1.5), ("damping", float("nan")),
        ("iterations", 0), ("iterations", 2.5),
        ("tolerance", 0.0), ("tolerance", -1e-3), ("tolerance", float("inf")),
        ("seed", -1), ("seed", 1.5),
        ("response", "exact"), ("start", "ones"),
        ("jitter", -1e-10), ("jitter", 0.5),
        ("block", 0), ("chunks", 0),
    ],
)
def test_invalid_solver_options_raise(field, value):
    with pytest.raises(ValueError, match=field):
        solve_dmft(SMALL_PROBLEM, SMALL_DYNAMICS, SolverOptions()._replace(**{field: value}))


@pytest.mark.parametrize(
    "field, value",
    [("eta", 0.0), ("eta", -0.1), ("n_steps", 0), ("n_steps", 3.5), ("p_on", 1.5), ("p_off", -0.1),
     ("b", 0.0), ("b", 1.2), ("temperature", -1.0)],
)
def test_invalid_dynamics_raise(field, value):
    with pytest.raises(ValueError, match=field):
        solve_dmft(SMALL_PROBLEM, SMALL_DYNAMICS._replace(**{field: value}), SolverOptions(samples=100))


def test_invalid_problem_raises():
    with pytest.raises(TypeError, match="GaussianMixture"):
        solve_dmft({"alpha": 2.0}, SMALL_DYNAMICS)
    with pytest.raises(ValueError, match="delta"):
        solve_dmft(GaussianMixture(delta=0.0), SMALL_DYNAMICS)


@pytest.mark.parametrize("start", ["march", "zero"])
def test_divergence_is_a_clear_error(start):
    # GD far beyond its stability limit (eta lambda_max ~ 240 >> 2): the kernels overflow.
    dyn = Dynamics(eta=50.0, n_steps=SMALL_DYNAMICS.n_steps)
    with pytest.raises(DMFTError, match="march" if start == "march" else "iteration"):
        solve_dmft(GaussianMixture(), dyn, SolverOptions(samples=SMALL_N, start=start, damping=0.0))


# ------------------------------------------------------------------------------------------------
# Pure pieces
# ------------------------------------------------------------------------------------------------


def _recursions_by_loop(problem, dyn, kern):
    """The spec's weight-side recursions, written out as plain loops (reference)."""
    eta, lam = dyn.eta, problem.ridge
    tp = dyn.n_steps + 1
    Q, M, mu = (np.asarray(x) for x in (kern.Q, kern.M, kern.mu))
    R = np.zeros((tp, tp))
    P = np.zeros(tp)
    m = np.zeros(tp)
    P[0], m[0] = 1.0, problem.m0
    for k in range(tp - 1):
        for j in range(k + 1):
            R[k + 1, j] = (1 - eta * lam) * R[k, j] - eta * sum(Q[k, l] * R[l, j] for l in range(j, k + 1)) + eta * (k == j)
        P[k + 1] = (1 - eta * lam) * P[k] - eta * sum(Q[k, l] * P[l] for l in range(k + 1))
        m[k + 1] = (1 - eta * lam) * m[k] - eta * (mu[k] + sum(Q[k, l] * m[l] for l in range(k + 1)))
    C = np.outer(m, m) + problem.sigma0**2 * np.outer(P, P) + R @ M @ R.T + (2 * dyn.temperature / eta) * R @ R.T
    return m, P, R, C


def test_weight_side_matches_the_recursions():
    rng = np.random.default_rng(0)
    problem = GaussianMixture(ridge=0.3, m0=0.2, sigma0=0.7)
    dyn = Dynamics(eta=0.15, n_steps=7, temperature=0.4)
    tp = dyn.n_steps + 1
    a = rng.standard_normal((tp, tp))
    kern = Kernels(rng.standard_normal(tp), a @ a.T / tp, np.tril(rng.standard_normal((tp, tp))))
    order = D.weight_side(problem, dyn, Kernels(*(jnp.asarray(x) for x in kern)))
    ref = _recursions_by_loop(problem, dyn, kern)
    for got, want in zip(order, ref):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-13)
    R = np.asarray(order.R)
    assert np.all(np.triu(R) == 0.0)
    np.testing.assert_allclose(np.diag(R, k=-1), dyn.eta, rtol=1e-14)


def test_weight_side_free_ridge_dynamics():
    # Zero kernels: w_k = (1 - eta lam)^k w_0, R_kj = eta (1 - eta lam)^(k-j-1).
    problem = GaussianMixture(ridge=0.2, m0=0.4, sigma0=1.3)
    dyn = Dynamics(eta=0.1, n_steps=30)
    order = D.weight_side(problem, dyn, D.zero_kernels(30))
    r = 1 - dyn.eta * problem.ridge
    k = np.arange(31)
    np.testing.assert_allclose(order.m, problem.m0 * r**k, rtol=1e-13)
    np.testing.assert_allclose(np.diag(order.C), (problem.m0**2 + problem.sigma0**2) * r ** (2 * k), rtol=1e-12)
    lag = k[:, None] - k[None, :]
    np.testing.assert_allclose(order.R, np.where(lag > 0, dyn.eta * r ** np.maximum(lag - 1, 0), 0.0), rtol=1e-12, atol=1e-300)


def test_mask_chain_statistics():
    # Stationary fraction b and lag-k autocovariance b (1 - b)(1 - p_on - p_off)^k, within 5 SE.
    eta, b, tau = 0.1, 0.3, 0.5
    dyn = Dynamics(eta, 60, eta / tau, (1 - b) * eta / (b * tau), b)
    n = 20000
    s = np.asarray(D.draw_noise(GaussianMixture(), dyn, jax.random.key(3), n).s)
    frac = s.mean(1)
    se_frac = math.sqrt(b * (1 - b) / n)
    assert np.max(np.abs(frac - b)) < t_threshold(np.inf, 61) * se_frac
    rho = 1 - dyn.p_on - dyn.p_off
    for lag in (1, 3, 10):
        prod = (s[40] - b) * (s[40 - lag] - b)
        se = prod.std(ddof=1) / math.sqrt(n)
        assert abs(prod.mean() - b * (1 - b) * rho**lag) < t_threshold(np.inf, 3) * se


# ------------------------------------------------------------------------------------------------
# The effective process and the memory-kernel estimator
# ------------------------------------------------------------------------------------------------


def _reference_trajectory(problem, m, R, c, y, s, g0):
    """One effective trajectory written as a plain Python loop over time (independent reference)."""
    dl = losses.derivative(gm.sample_loss(problem), 1)
    lams = []
    for k in range(m.shape[0]):
        mem = sum((R[k, j] * lams[j] for j in range(k)), start=jnp.zeros(()))
        h = c * m[k] + jnp.sqrt(problem.delta) * g0[k] - problem.delta * mem
        lams.append(s[k] * dl(y, h))
    return jnp.stack(lams)


def test_tangent_matches_exact_jacobian():
    """The forward-mode tangent of the scan is J eps with J the exact Jacobian dLam/dg0 of an
    independent per-trajectory reference: the raw (Hutchinson) correlation E_N[dLam_off_k eps_j]
    equals E_N[J_kj] over the same trajectories up to the probe noise, which given J is a Rademacher
    sum and is bounded exactly by Hoeffding's inequality."""
    problem = GaussianMixture(loss="logistic", ridge=0.05)
    dyn = Dynamics(eta=0.2, n_steps=12, p_on=0.2, p_off=0.2, b=0.5)
    n = 600
    # Any consistent (m, C, R) will do: those of made-up kernels (memory, noise and drift).
    tp = dyn.n_steps + 1
    lag = np.arange(tp)[:, None] - np.arange(tp)[None, :]
    kern = Kernels(jnp.asarray(-0.3 * np.ones(tp)), jnp.asarray(0.2 * np.exp(-np.abs(lag) / 3.0)),
                   jnp.asarray(np.where(lag >= 0, 0.4 * 0.7**lag, 0.0)))
    order = D.weight_side(problem, dyn, kern)
    noise = D.draw_noise(problem, dyn, jax.random.key(11), n)
    chol = D.regularised_cholesky(order.C, 1e-10)
    g0 = chol @ noise.z
    lam, dlam_off, stats = D.effective_scan(problem, noise, order.m, g0, order.R, block=5)

    def ref(c, y, s, g):
        return _reference_trajectory(problem, order.m, order.R, c, y, s, g)

    lam_ref = jax.vmap(ref, in_axes=(0, 0, 1, 1))(noise.c, noise.y, noise.s, g0)  # (n, T+1)
    np.testing.assert_allclose(np.asarray(lam), np.asarray(lam_ref).T, rtol=1e-11, atol=1e-13)
    jac = np.asarray(jax.vmap(jax.jacfwd(ref, argnums=3), in_axes=(0, 0, 1, 1))(noise.c, noise.y, noise.s, g0))
    eps = np.asarray(noise.eps)
    # Full tangent = J eps, trajectory by trajectory (to rounding).
    np.testing.assert_allclose(
        np.asarray(dlam_off), np.einsum("nkj,jn->kn", np.tril(jac, -1), eps), rtol=1e-10, atol=1e-13
    )
    np.testing.assert_allclose(np.asarray(stats[:, 2]) * math.sqrt(problem.delta), np.diagonal(jac, axis1=1, axis2=2).mean(0), rtol=1e-11)
    raw = np.asarray(dlam_off) @ eps.T / n
    exact = jac.mean(0)
    n_entries = tp * (tp - 1) // 2
    for k in range(1, tp):
        for j in range(k):
            others = np.delete(jac[:, k, :k], j, axis=1)  # J_kj' for j' < k, j' != j
            bound = math.sqrt(2.0 * np.sum(others**2) * math.log(2.0 * n_entries / FAMILY_P)) / n
            assert abs(raw[k, j] - exact[k, j]) <= bound + 1e-14, (k, j, raw[k, j], exact[k, j], bound)


def test_probe_regression_is_exact_for_a_deterministic_jacobian():
    """GD + square loss: a = 1, so J = sqrt(Delta) (I + Delta R)^{-1} is the same for every
    trajectory and the regression recovers Q = alpha Delta (I + Delta R)^{-1} to rounding."""
    problem = GaussianMixture(loss="square", ridge=0.3)
    dyn = Dynamics(eta=0.2, n_steps=SMALL_DYNAMICS.n_steps)
    sol = solve_dmft(problem, dyn, SolverOptions(samples=SMALL_N, seed=1))
    tp = dyn.n_steps + 1
    want = problem.alpha * problem.delta * np.linalg.inv(np.eye(tp) + problem.delta * sol.R)
    np.testing.assert_allclose(sol.kernels.Q, want, rtol=1e-9, atol=1e-12)
    # The regression residual is orthogonal to the probes of the past (least-squares property).
    rng = np.random.default_rng(0)
    eps = rng.choice([-1.0, 1.0], size=(tp, 300))
    y = rng.standard_normal((tp, 300))
    x = np.asarray(D.probe_regression(jnp.asarray(y @ eps.T / 300), jnp.linalg.cholesky(jnp.asarray(eps @ eps.T / 300))))
    assert np.all(np.triu(x) == 0.0)
    for k in range(1, tp):
        resid = y[k] - x[k, :k] @ eps[:k]
        np.testing.assert_allclose(eps[:k] @ resid / 300, 0.0, atol=1e-12)


def test_block_size_does_not_change_the_numbers():
    problem = GaussianMixture(loss="logistic", ridge=0.05)
    dyn = SMALL_DYNAMICS
    sol = solve_dmft(problem, dyn, SolverOptions(samples=LOGISTIC_N, seed=4))
    order = D.OrderParameters(*(jnp.asarray(x) for x in (sol.m, sol.P, sol.R, sol.C)))
    noise = D.draw_noise(problem, dyn, jax.random.key(0), 500)
    outs = [D.effective_process(problem, order, noise, "probe", 1e-10, block) for block in (1, 7, 64)]
    for out in outs[1:]:
        for a, b in zip(out.kernels, outs[0].kernels):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# Solver: march vs iteration, determinism, dataset
# ------------------------------------------------------------------------------------------------


def test_march_is_the_fixed_point_of_the_iteration():
    problem = GaussianMixture(loss="logistic", ridge=0.05)
    opts = SolverOptions(samples=LOGISTIC_N, seed=4, tolerance=1e-11, iterations=200)
    marched = solve_dmft(problem, SMALL_DYNAMICS, opts)
    iterated = solve_dmft(problem, SMALL_DYNAMICS, opts._replace(start="zero"))
    assert marched.converged and iterated.converged
    assert marched.iterations == 1 and marched.residuals[0] < 1e-11
    assert iterated.iterations > 5
    for name in ("m", "C", "R", "train_loss", "train_error"):
        np.testing.assert_allclose(getattr(marched, name), getattr(iterated, name), rtol=1e-8, atol=1e-10)


def test_fixed_seed_is_bit_identical_and_seeds_differ():
    opts = SolverOptions(samples=SMALL_N, seed=7)
    a = solve_dmft(SMALL_PROBLEM, SMALL_DYNAMICS, opts)
    b = solve_dmft(SMALL_PROBLEM, SMALL_DYNAMICS, opts)
    for name in ("m", "q", "C", "R", "train_loss", "train_error", "residuals"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = solve_dmft(SMALL_PROBLEM, SMALL_DYNAMICS, opts._replace(seed=8))
    assert not np.array_equal(a.C, c.C)


def test_not_converged_warns_and_dataset_records_it():
    with pytest.warns(DMFTConvergenceWarning):
        res = solve_dmft(SMALL_PROBLEM, SMALL_DYNAMICS, SolverOptions(samples=SMALL_N, start="zero", iterations=2))
    assert not res.converged and res.iterations == 2
    ds = D.dmft_dataset(res, save_every=4)
    assert ds.attrs["converged"] == 0
    assert ds.sizes["iteration"] == 2


def test_dataset_layout_matches_the_simulation():
    cfg = {"algorithm": {"horizon": 4.0, "save_every": 4}, "simulation": {"d": 50, "seeds": 2}}
    sim = sgdlab.run(cfg)
    a = load_config(cfg).algorithm
    chain = mask_chain(a.name, a.eta, a.batch_fraction, a.persistence_time)
    res = solve_dmft(SMALL_PROBLEM, Dynamics.from_chain(chain, a.eta, a.n_steps), SolverOptions(samples=SMALL_N))
    ds = D.dmft_dataset(res, save_every=a.save_every)
    np.testing.assert_allclose(ds["t"].values, sim["t"].values, rtol=1e-12)
    np.testing.assert_array_equal(ds["step"].values, sim["step"].values)
    assert list(ds["method"].values) == ["dmft"]
    for v in ("m", "q", "train_loss", "train_error", "test_loss", "test_error"):
        assert ds[v].dims == ("method", "t")
    assert ds["C"].dims == ("method", "t", "t_prime") and ds["R"].dims == ("method", "t", "t_prime")
    assert ds.attrs["converged"] == 1
    np.testing.assert_allclose(ds["q"].values[0], np.diagonal(ds["C"].values[0]))
    both = __import__("xarray").concat([sim[["m", "q"]].mean("seed"), ds[["m", "q"]]], dim="method")
    assert list(both["method"].values) == ["sim", "dmft"]
    # Normalised convention: the solve used eta / b, the t axis shows the configured eta.
    relabelled = D.dmft_dataset(res, save_every=a.save_every, time_step=0.05)
    np.testing.assert_allclose(relabelled["t"].values, relabelled["step"].values * 0.05)
    with pytest.raises(ValueError, match="save_every"):
        D.dmft_dataset(res, save_every=0)


# ------------------------------------------------------------------------------------------------
# GD + square loss: the ridge minimiser
# ------------------------------------------------------------------------------------------------

RIDGE = dict(alpha=2.0, delta=0.5, lam=0.5)
# Slowest rate lam + Delta (1 - sqrt(alpha))^2 = 0.59: at t = 30 the distance to the minimiser is
# ~e^{-17}; eta = 0.25 is well inside the stability limit 2 / lambda_max ~ 0.45.
GD_RIDGE_DYNAMICS = Dynamics(eta=0.25, n_steps=120)
LATE = dict(samples=6000, seeds=range(8))


def test_gd_square_late_time_equals_ridge_minimiser():
    problem = GaussianMixture(alpha=RIDGE["alpha"], delta=RIDGE["delta"], ridge=RIDGE["lam"], loss="square")
    sols = solve_seeds(problem, GD_RIDGE_DYNAMICS, LATE["samples"], LATE["seeds"])
    m, q, chi, train_loss = ridge_closed_form(**RIDGE)
    # For the square loss the memory kernel is deterministic (a = 1) and the probe regression makes it
    # exact, so R and its integral, the static susceptibility, carry no Monte-Carlo error at all;
    # what remains is the transient ~ e^{-0.59 t} ~ 1e-8 at t = 30.
    for s in sols:
        assert abs(s.R[-1].sum() - chi) < 1e-6, (s.R[-1].sum(), chi)
    stats = {
        "m": [s.m[-1] for s in sols],
        "q": [s.q[-1] for s in sols],
        "train_loss": [s.train_loss[-1] for s in sols],
    }
    want = {"m": m, "q": q, "train_loss": train_loss}
    for name, vals in stats.items():
        mean, se, dof = seed_stats(vals)
        z = (mean - want[name]) / se
        print(f"GD ridge {name}: dmft {mean:.5f} +- {se:.5f}, closed form {want[name]:.5f}, z = {z:+.2f}")
        assert abs(z) < t_threshold(dof, len(stats)), (name, mean, se, want[name])
    # ... and the dynamics has stopped: the last 5 time units move by less than the MC error.
    for s in sols:
        assert abs(s.m[-1] - s.m[-21]) < 1e-6 and abs(s.q[-1] - s.q[-21]) < 1e-6


def test_ridge_closed_form_matches_linear_algebra():
    """The closed form used above, against exact linear algebra at d = 1000 (independent check).
    Tolerance: t-quantile times the SE over seeds, plus 2/d for the O(1/d) finite-size bias."""
    d, seeds = 1000, range(6)
    vals = np.array([ridge_linear_algebra(RIDGE["alpha"], RIDGE["delta"], RIDGE["lam"], d, s) for s in seeds])
    m, q, _, _ = ridge_closed_form(**RIDGE)
    mean, se, dof = seed_stats(vals)
    for i, want in enumerate((m, q)):
        assert abs(mean[i] - want) < t_threshold(dof, 2) * se[i] + 2.0 / d, (i, mean[i], se[i], want)


@pytest.mark.slow
def test_ridge_closed_form_extrapolated_in_one_over_d():
    """Linear algebra at d = 250 .. 2000, weighted least squares in 1/d, intercept vs closed form."""
    dims = (250, 500, 1000, 2000)
    seeds = {250: 32, 500: 16, 1000: 8, 2000: 6}
    m, q, _, _ = ridge_closed_form(**RIDGE)
    xs, ys, ws = [], [], []
    for d in dims:
        vals = np.array([ridge_linear_algebra(RIDGE["alpha"], RIDGE["delta"], RIDGE["lam"], d, 100 + s) for s in range(seeds[d])])
        mean, se, _ = seed_stats(vals)
        xs.append(1.0 / d), ys.append(mean), ws.append(1.0 / se**2)
    xs, ys, ws = np.array(xs), np.array(ys), np.array(ws)
    for i, want in enumerate((m, q)):
        a = np.stack([np.ones_like(xs), xs], axis=1)
        w = ws[:, i]
        cov = np.linalg.inv(a.T @ (w[:, None] * a))
        coef = cov @ a.T @ (w * ys[:, i])
        se0 = math.sqrt(cov[0, 0])
        dof = sum(seeds.values()) - len(dims)
        assert abs(coef[0] - want) < t_threshold(dof, 2) * se0, (i, coef, se0, want)


# ------------------------------------------------------------------------------------------------
# DMFT vs direct simulation
# ------------------------------------------------------------------------------------------------

COMPARED = ("m", "q", "train_loss", "test_error")


def compare_with_simulation(config: dict, samples: int, dmft_seeds: int, n_times: int = 8):
    """Solve the DMFT and simulate ``config``; return the z-scores and thresholds.

    Combined error at each compared time: ``sigma^2 = SE_sim^2 + SE_dmft^2 + (1/d)^2`` where
    ``SE_sim`` is the standard error over the simulation seeds, ``SE_dmft`` the standard error over
    ``dmft_seeds`` independent DMFT solves of ``samples / dmft_seeds`` trajectories each (their mean
    is the DMFT estimate), and ``1/d`` an allowance for the O(1/d) finite-size bias (the order
    parameters are O(1)). The threshold is the Student-t quantile with the Welch-Satterthwaite
    degrees of freedom, Bonferroni-corrected over all compared (time, quantity) pairs.
    """
    cfg = load_config(config)
    a, d = cfg.algorithm, cfg.simulation.d
    if a.normalisation != "unnormalised":
        raise NotImplementedError
    chain = mask_chain(a.name, a.eta, a.batch_fraction, a.persistence_time)
    dyn = Dynamics.from_chain(chain, a.eta, a.n_steps, a.temperature)
    problem = cfg.problem.to_problem()
    sols = solve_seeds(problem, dyn, samples // dmft_seeds, range(dmft_seeds))
    sim = sgdlab.run(cfg)
    n_saves = sim.sizes["t"]
    pick = np.unique(np.linspace(1, n_saves - 1, n_times).round().astype(int))
    steps = sim["step"].values[pick]
    n_tests = len(pick) * len(COMPARED)
    rows = []
    for name in COMPARED:
        sim_vals = sim[name].isel(method=0).values[:, pick]
        s_mean, s_se, s_dof = seed_stats(sim_vals)
        d_mean, d_se, d_dof = seed_stats(np.array([getattr(s, name)[steps] for s in sols]))
        var = s_se**2 + d_se**2 + (1.0 / d) ** 2
        dof = var**2 / (s_se**4 / s_dof + d_se**4 / d_dof + 1e-300)
        z = (d_mean - s_mean) / np.sqrt(var)
        thr = np.array([t_threshold(nu, n_tests) for nu in dof])
        rows.append((name, z, thr, d_mean, s_mean, np.sqrt(var)))
    worst = max(float(np.max(np.abs(r[1]))) for r in rows)
    print(f"\n{cfg.name}: max |z| = {worst:.2f} over {n_tests} comparisons")
    for name, z, thr, dm, sm, sig in rows:
        i = int(np.argmax(np.abs(z)))
        print(f"  {name:11s} max|z| {abs(z[i]):.2f} (thr {thr[i]:.1f}) at t={sim['t'].values[pick][i]:.2f}: "
              f"dmft {dm[i]:.4f} sim {sm[i]:.4f} sigma {sig[i]:.4f}")
    return rows


def assert_agree(rows):
    for name, z, thr, dm, sm, sig in rows:
        assert np.all(np.abs(z) < thr), (name, z, thr, dm, sm, sig)


def _case(name, problem, algorithm, seeds=8, d=2000):
    return {"name": name, "problem": problem, "algorithm": algorithm, "simulation": {"d": d, "seeds": seeds}}


FAST_CASE = _case(
    "psgd_square",
    {"alpha": 2.0, "delta": 0.5, "loss": "square", "ridge": 0.1},
    {"name": "persistent_sgd", "eta": 0.1, "batch_fraction": 0.3, "persistence_time": 2.0, "horizon": 6.0, "save_every": 5},
)


def test_dmft_matches_simulation_persistent_sgd_square():
    assert_agree(compare_with_simulation(FAST_CASE, samples=24000, dmft_seeds=8))


SLOW_CASES = [
    _case("gd_square", {"loss": "square", "ridge": 0.1},
          {"name": "gd", "eta": 0.2, "horizon": 10.0, "save_every": 5}),
    _case("gd_logistic", {"loss": "logistic", "ridge": 0.05},
          {"name": "gd", "eta": 0.2, "horizon": 10.0, "save_every": 5}),
    _case("sgd_square", {"loss": "square", "ridge": 0.1},
          {"name": "sgd", "eta": 0.1, "batch_fraction": 0.3, "horizon": 10.0, "save_every": 5}),
    _case("sgd_logistic", {"loss": "logistic", "ridge": 0.05},
          {"name": "sgd", "eta": 0.1, "batch_fraction": 0.2, "horizon": 10.0, "save_every": 5}),
    _case("psgd_logistic", {"loss": "logistic", "ridge": 0.05},
          {"name": "persistent_sgd", "eta": 0.1, "batch_fraction": 0.3, "persistence_time": 1.0, "horizon": 10.0, "save_every": 5}),
    _case("three_clusters_psgd", {"clusters": 3, "alpha": 3.0, "delta": 0.1, "rho": 0.6, "loss": "square",
                                  "ridge": 0.01, "m0": 0.5, "sigma0": 0.3},
          {"name": "persistent_sgd", "eta": 0.05, "batch_fraction": 0.5, "persistence_time": 1.0, "horizon": 5.0, "save_every": 4}),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=[c["name"] for c in SLOW_CASES])
def test_dmft_matches_simulation(case):
    assert_agree(compare_with_simulation(case, samples=32000, dmft_seeds=8))


# ------------------------------------------------------------------------------------------------
# Langevin: fluctuation-dissipation
# ------------------------------------------------------------------------------------------------
#
# For w_{k+1} = w_k - eta grad H(w_k) + sqrt(2 T eta) xi_k, a field f_j inside the bracket of step
# j is a shift of xi_j by eta f_j / sqrt(2 T eta), so Novikov's identity gives exactly
#     R(k, j) = sqrt(eta / 2T) E[w_k . xi_j]/d = [C(k, j+1) - C(k, j) + eta E[w_k . grad H(w_j)]/d] / 2T.
# For a quadratic H (square loss, b = 1) every eigenmode a of the Hessian is a discrete
# Ornstein-Uhlenbeck process, c(l) = v r^l with r = 1 - eta a, v = 2 T eta / (1 - r^2), R(l) = eta r^(l-1),
# and the stationary state satisfies the *central* form exactly, for any stable eta:
#     R(k, j) = [C(k, j+1) - C(k, j-1)] / (2T).
# The one-sided forms are off by a factor per mode: backward (the brief's)
#     (1/T)[C(k, j) - C(k, j-1)] = R(k, j) 2 r / (1 + r) = R (1 - eta a / (2 - eta a)),
# forward (1/T)[C(k, j+1) - C(k, j)] = R 2 / (1 + r): an O(eta) bias. Summed over a window of lags
# j = k-L .. k-1, each form gives an effective temperature (a positive-weight average over modes).
def fdt_temperatures(res, lags):
    """``(T_central, T_backward)`` from the integrated response over lags ``1..L`` at the last time."""
    C, R = res.C, res.R
    k = C.shape[0] - 1
    out = []
    for L in lags:
        resp = R[k, k - L:k].sum()
        central = 0.5 * (C[k, k] + C[k, k - 1] - C[k, k - L] - C[k, k - L - 1])
        backward = C[k, k - 1] - C[k, k - L - 1]
        out.append((central / resp, backward / resp))
    return np.array(out)


LANGEVIN = GaussianMixture(alpha=2.0, delta=0.5, loss="square", ridge=1.0)
TEMPERATURE = 0.2
FDT_LAGS_TIME = (0.5, 1.0, 2.0)
# Spectrum of the Hessian X^T X/d + lambda at d -> infinity: bulk edges lambda + Delta (1 -+ sqrt(alpha))^2
# and the centroid spike lambda + alpha (1 + Delta)(1 + Delta / (alpha (1 + Delta - Delta)))
# = lambda + 3.75 here (BBP; 3.79 at d = 2000).
A_MIN = 1.0 + 0.5 * (1 - math.sqrt(2.0)) ** 2
A_MAX = 1.0 + 3.75


def one_sided_bias_bounds(eta):
    """Per-mode relative bias of the backward form, -eta a / (2 - eta a), at the spectrum edges
    ``(lower, upper)``: the integrated T_eff is a positive-weight average over modes, so its
    relative bias lies between these."""
    f = lambda a: -eta * a / (2.0 - eta * a)  # noqa: E731
    return f(A_MAX), f(A_MIN)


def _fdt_solves(eta, n_steps, samples, seeds):
    dyn = Dynamics(eta=eta, n_steps=n_steps, temperature=TEMPERATURE)
    sols = solve_seeds(LANGEVIN, dyn, samples, seeds)
    lags = [int(round(x / eta)) for x in FDT_LAGS_TIME]
    return np.array([fdt_temperatures(s, lags) for s in sols])  # (seeds, lags, 2)


def test_langevin_fdt_central_form_is_exact_for_square_loss():
    # t = 12, window from t >= 9.9: the transient (slowest rate 1.09) is ~e^{-10.7}.
    eta = 0.1
    temps = _fdt_solves(eta=eta, n_steps=120, samples=6000, seeds=range(8))
    mean, se, dof = seed_stats(temps)
    thr = t_threshold(dof, 2 * len(FDT_LAGS_TIME))
    print("T_eff central", mean[:, 0], "+-", se[:, 0], "backward", mean[:, 1], "+-", se[:, 1])
    assert np.all(np.abs(mean[:, 0] - TEMPERATURE) < thr * se[:, 0])
    # The one-sided (backward) form is biased downwards by O(eta), within the spectral bounds.
    lo, hi = one_sided_bias_bounds(eta)
    rel = mean[:, 1] / TEMPERATURE - 1.0
    rel_se = se[:, 1] / TEMPERATURE
    assert np.all(rel > lo - thr * rel_se) and np.all(rel < hi + thr * rel_se), (rel, lo, hi)


@pytest.mark.slow
def test_langevin_fdt_one_sided_bias_is_first_order_in_eta():
    out = {}
    for eta, n_steps in ((0.1, 120), (0.05, 240)):
        temps = _fdt_solves(eta=eta, n_steps=n_steps, samples=8000, seeds=range(8))
        mean, se, dof = seed_stats(temps)
        thr = t_threshold(dof, 4 * len(FDT_LAGS_TIME))
        assert np.all(np.abs(mean[:, 0] - TEMPERATURE) < thr * se[:, 0])
        lo, hi = one_sided_bias_bounds(eta)
        rel, rel_se = mean[:, 1] / TEMPERATURE - 1.0, se[:, 1] / TEMPERATURE
        assert np.all(rel > lo - thr * rel_se) and np.all(rel < hi + thr * rel_se), (eta, rel, lo, hi)
        out[eta] = (rel, rel_se)
    (b1, s1), (b2, s2) = out[0.1], out[0.05]
    print("one-sided FDT relative bias at eta = 0.1, 0.05:", b1, b2, "ratio", b1 / b2)
    # First order: |bias| / eta lies in [a_min / 2, a_max / (2 - eta a_max)] at both steps (the
    # per-mode ratio bias(eta) / bias(eta/2) = 2 (2 - eta a/2) / (2 - eta a) is 2.06 .. 2.31 here).
    for eta, (b, se) in ((0.1, (b1, s1)), (0.05, (b2, s2))):
        lo, hi = A_MIN / 2.0, A_MAX / (2.0 - eta * A_MAX)
        thr = t_threshold(7, 4 * len(FDT_LAGS_TIME))
        assert np.all(-b / eta > lo - thr * se / eta) and np.all(-b / eta < hi + thr * se / eta)


# ------------------------------------------------------------------------------------------------
# Monte-Carlo statistics of the solver
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_doubling_samples_halves_the_variance():
    """Across independent solver seeds, var(N) / var(2N) = 2; F-test at the family level."""
    problem = GaussianMixture(loss="logistic", ridge=0.05)
    eta, b, tau = 0.1, 0.3, 1.0
    dyn = Dynamics(eta, 30, eta / tau, (1 - b) * eta / (b * tau), b)
    k = 80
    stats = {}
    for n in (1500, 3000):
        sols = solve_seeds(problem, dyn, n, range(1000, 1000 + k))
        stats[n] = np.array([[s.q[-1], s.m[-1]] for s in sols])
    ratio = stats[1500].var(0, ddof=1) / stats[3000].var(0, ddof=1)
    lo, hi = st.f.ppf([FAMILY_P / 4, 1 - FAMILY_P / 4], k - 1, k - 1)
    print("variance ratio var(N)/var(2N) for (q, m):", ratio, "allowed", 2 * lo, 2 * hi)
    assert np.all((ratio / 2 > lo) & (ratio / 2 < hi)), ratio


@pytest.mark.slow
def test_stein_and_probe_estimators_agree():
    """Stein (started from the march solution) and probe solutions agree within the combined
    spread over solver seeds; Stein's spread is the larger (noise amplified by C^{-1})."""
    problem = GaussianMixture(loss="logistic", ridge=0.05)
    dyn = Dynamics(eta=0.2, n_steps=25, p_on=0.5, p_off=0.5, b=0.5)
    seeds = range(8)
    probe = solve_seeds(problem, dyn, 8000, seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DMFTConvergenceWarning)
        stein = solve_seeds(problem, dyn, 8000, seeds, response="stein", iterations=100)
    a = np.array([[s.m[-1], s.q[-1]] for s in probe])
    b = np.array([[s.m[-1], s.q[-1]] for s in stein])
    ma, sa, _ = seed_stats(a)
    mb, sb, _ = seed_stats(b)
    z = (ma - mb) / np.sqrt(sa**2 + sb**2)
    print("probe", ma, sa, "stein", mb, sb, "z", z)
    assert np.all(np.abs(z) < t_threshold(7, 2))
