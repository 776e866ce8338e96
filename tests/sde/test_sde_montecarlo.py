"""Monte Carlo solvers against exact moments and closed forms, within their error bars.

Tolerances: 4.5 standard errors (a two-sided miss has probability < 1e-5 per comparison); the
schemes' discretisation biases at the steps used are below 1/10 of a standard error (weak order 2
at h = eta/2, checked exactly in ``test_sde_exact.py``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab.sde.problems import least_squares, linear_gradient, quadratic_1d, random_logistic
from sgdlab import sde
from sgdlab.sde.models import generic_ito_correction
from sgdlab.sde.moments import expectation_from_moments
from sgdlab.sde.observables import CROSS_COV, INNER, MEAN, SECOND_MOMENT, SQ_DISTANCE, quadratic_form

Z4 = np.array([[1.0, 0.3], [-0.4, 1.2], [0.8, -0.9], [0.2, 0.5]])
Y4 = np.array([1.0, -0.5, 0.3, 0.8])
X0_2D = np.array([[2.0, 1.0], [-1.0, -2.0]])
OBS = (MEAN, SECOND_MOMENT, INNER, CROSS_COV)
Z_TOL = 4.5


def exact_values(problem, P, observables, K):
    out = {}
    for o in observables:
        fn = lambda x, o=o: jnp.atleast_1d(o.features(x.reshape(K, problem.dim), problem))  # noqa: E731
        W = quadratic_form(fn, K * problem.dim)
        out[o.name] = float(o.combine(jnp.asarray(expectation_from_moments(W, P))))
    return out


def assert_within(mc, exact, tol=Z_TOL):
    for name, want in exact.items():
        got = mc[name]
        assert got.se > 0
        assert abs(got.value - want) < tol * got.se, f"{name}: {got.value} vs {want} ({(got.value - want) / got.se:.1f} se)"


def test_sgd_and_svag_monte_carlo_match_exact_moments():
    problem = least_squares(Z4, Y4)
    lin = linear_gradient(problem)
    eta, T = 0.125, 1.0
    mc = sde.sgd_monte_carlo(problem, eta, T, X0_2D, OBS, n_paths=20_000, seed=1)
    assert_within(mc, exact_values(problem, sde.sgd_moments(lin, eta, T, X0_2D), OBS, 2))
    svag = sde.SVAG(3)
    mc = sde.svag_monte_carlo(problem, svag, eta, T, X0_2D, OBS, n_paths=20_000, seed=1)
    assert_within(mc, exact_values(problem, sde.svag_moments(lin, svag, eta, T, X0_2D), OBS, 2))


@pytest.mark.parametrize(
    "model,scheme",
    [
        ("smf", "weak2"),
        ("smf_independent", "talay_tubaro"),
        pytest.param("smf", "talay_tubaro", marks=pytest.mark.slow),
        pytest.param("smf_independent", "weak2", marks=pytest.mark.slow),
        pytest.param("smf_expected_gradient", "weak2", marks=pytest.mark.slow),
        pytest.param("smf_expected_gradient", "talay_tubaro", marks=pytest.mark.slow),
    ],
)
def test_sde_monte_carlo_matches_exact_moments(model, scheme):
    """Two starting points (shared or independent noise), batch size 2."""
    problem = least_squares(Z4, Y4, batch_size=2)
    lin = linear_gradient(problem)
    eta, T = 0.125, 1.0
    m = sde.MODELS[model]
    mc = sde.sde_monte_carlo(problem, m, eta, T, X0_2D, OBS, n_paths=20_000, scheme=scheme, substeps=2, seed=2)
    assert_within(mc, exact_values(problem, sde.sde_moments(lin, m, eta, T, X0_2D, batch_size=2), OBS, 2))


@pytest.mark.parametrize("model", ["sme2", "sme1"])
def test_shared_sme_monte_carlo_matches_closed_form(model):
    """f = a x^2/2, a in {0.5, 1.5}, starts x = 1, y = -2, noise std(a)|X| dB shared by both copies
    (docs/sde.md): E X^2 = x^2 exp(-(2c - eta Var a) T), E[X^x X^y] = xy exp(-(2c + eta Var a) T),
    c = abar (+ eta abar^2 / 2 for SME-2). Checked on E|X^x - X^y|^2 (E[X^x X^y] alone is
    pathwise deterministic: the dB terms of d(XY) cancel)."""
    problem = quadratic_1d([0.5, 1.5])
    eta, T, x, y = 0.2, 1.0, 1.0, -2.0
    abar, var = 1.0, 0.25
    c = abar + (eta * abar**2 / 2 if model == "sme2" else 0.0)
    one, cross = math.exp(-(2 * c - eta * var) * T), math.exp(-(2 * c + eta * var) * T)
    want = (x * x + y * y) * one - 2 * x * y * cross
    mc = sde.sde_monte_carlo(problem, sde.MODELS[model], eta, T, [[x], [y]], (SQ_DISTANCE,), n_paths=20_000, substeps=4, seed=3)
    got = mc["sq_distance"]
    assert abs(got.value - want) < Z_TOL * got.se, (got, want)
    # the SMF value (cross exponent -(2c - eta Var a)) is far outside the error bars
    smf = (x * x + y * y) * one - 2 * x * y * math.exp(-(2 * c - eta * var) * T)
    assert abs(got.value - smf) > 10 * got.se


def test_monte_carlo_is_deterministic_given_the_seed():
    problem = quadratic_1d([0.5, 1.0, 1.5], [0.5, 1.0, 1.0])
    args = (problem, sde.SMF, 0.25, 1.0, [[1.0]], (MEAN,), 2_000)
    a = sde.sde_monte_carlo(*args, scheme="euler", seed=5)
    b = sde.sde_monte_carlo(*args, scheme="euler", seed=5)
    c = sde.sde_monte_carlo(*args, scheme="euler", seed=6)
    assert a == b and a != c
    assert sde.sgd_monte_carlo(problem, 0.25, 1.0, [[1.0]], (MEAN,), 2_000, seed=5) == sde.sgd_monte_carlo(
        problem, 0.25, 1.0, [[1.0]], (MEAN,), 2_000, seed=5
    )


def test_weak_error_study_monte_carlo_route_on_logistic_regression():
    """No closed moments: everything by Monte Carlo. GF's O(eta) error is resolved at eta = 1/2;
    SMF's is smaller than GF's by more than 3 of its standard errors."""
    problem = random_logistic(3, 4, 1, ridge=0.1)
    ds = sde.weak_error_study(problem, ["gf", "smf"], [0.5, 0.25], ["mean", "loss"], T=1.0, x0=[[2.0]],
                              n_paths=20_000, chunk=20_000)
    assert set(np.unique(ds.solver.values)) == {"monte_carlo"} and set(ds.sgd_solver.values) == {"monte_carlo"}
    assert np.all(ds.sgd_se.values > 0) and np.all(np.isfinite(ds.error.values)) and np.all(np.isfinite(ds.slope.values))
    e = ds.sel(observable="mean", eta=0.5)
    gf, smf = abs(float(e.error.sel(model="gf"))), abs(float(e.error.sel(model="smf")))
    assert gf > Z_TOL * float(e.error_se.sel(model="gf"))
    assert smf + 3 * float(e.error_se.sel(model="smf")) < gf


# --------------------------------------------------------------------------------------------
# slow: nonlinear scheme orders, diffrax, SME-2 multi-point order 1 by Monte Carlo
# --------------------------------------------------------------------------------------------
def sinh_ou(kappa=2.0, s=0.8):
    """Y = sinh(X), X an Ornstein-Uhlenbeck process dX = -kappa X dt + s dW: by Ito,
    dY = (s^2 Y / 2 - kappa sqrt(1 + Y^2) asinh Y) dt + s dW_1 + s Y dW_2 (two non-commuting noise
    columns whose squares add up to s^2 (1 + Y^2)). E Y_T and E Y_T^2 are known in closed form."""
    drift = lambda y: -kappa * jnp.sqrt(1 + y**2) * jnp.arcsinh(y) + 0.5 * s * s * y  # noqa: E731
    noise = lambda y, w: s * (w[0] + y * w[1])  # noqa: E731
    return sde.SDE(drift, noise, generic_ito_correction(noise, 2), 2)


@pytest.mark.slow
@pytest.mark.parametrize("scheme,order,steps", [("euler", 1, [8, 16, 32, 64]), ("weak2", 2, [4, 6, 8, 12])])
def test_scheme_weak_order_on_a_nonlinear_sde(scheme, order, steps):
    """Nonlinear drift, non-commuting multiplicative noise: Euler's measured order is 1, the
    weak-order-2 scheme's at least 2 (its errors here decay slightly faster than h^2 at these
    steps: the CI must exclude 1 and reach 2). 400k antithetic paths per step size."""
    kappa, s, y0, T = 2.0, 0.8, 1.0, 1.0
    m = math.asinh(y0) * math.exp(-kappa * T)
    v = s * s * (1 - math.exp(-2 * kappa * T)) / (2 * kappa)
    exact = math.sinh(m) * math.exp(v / 2)
    system = sinh_ou(kappa, s)
    n_paths = 400_000

    @jax.jit
    def run(key, h, n):
        return sde.simulate_features(system, jnp.array([[y0]]), h, n, key, n_paths, scheme, lambda xs: xs[0, :1], True)

    errs, ses = [], []
    for i, N in enumerate(steps):
        f = np.asarray(run(jax.random.key(100 + i), T / N, N))[:, 0]  # antithetic pair means: i.i.d.
        errs.append(f.mean() - exact)
        ses.append(f.std() / math.sqrt(f.shape[0]))
    errs, ses = np.asarray(errs), np.asarray(ses)
    assert np.all(np.abs(errs) > 4 * ses), (errs, ses)  # the bias is resolved at every step
    slope, lo, hi = sde.fit_slope(T / np.asarray(steps), errs, ses)
    assert lo > order - 0.6 and hi > order - 0.15, (slope, lo, hi, errs)
    if order == 1:
        assert abs(slope - 1) < 0.15 and hi < 1.6


@pytest.mark.slow
def test_euler_agrees_with_diffrax_euler():
    """Cross-check of the Euler-Maruyama core: the same SMF (1-d quadratic, three samples), same
    step, diffrax's Euler with an UnsafeBrownianPath: equal in law, so E X_T and E X_T^2 agree
    within the Monte Carlo errors."""
    diffrax = pytest.importorskip("diffrax")
    problem = quadratic_1d([0.5, 1.0, 1.5], [0.5, 1.0, 1.0])
    eta, T, n_steps, n_paths = 0.25, 1.0, 8, 20_000
    system = sde.sde_for(problem, sde.SMF, eta)
    ours = sde.simulate_sde(system, [[1.0]], T, n_steps, n_paths, seed=0, scheme="euler")[:, 0]

    def solve(key):
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, args: system.drift(y)),
            diffrax.ControlTerm(
                lambda t, y, args: jax.vmap(lambda e: system.noise(y, e), out_axes=1)(jnp.eye(3)),
                diffrax.UnsafeBrownianPath(shape=(3,), key=key),
            ),
        )
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, T, T / n_steps, jnp.array([1.0]),
                                  saveat=diffrax.SaveAt(t1=True), adjoint=diffrax.DirectAdjoint(), max_steps=n_steps + 1)
        return sol.ys[0, 0]

    theirs = np.asarray(jax.jit(jax.vmap(solve))(jax.random.split(jax.random.key(1), n_paths)))
    # both are Euler: equal laws, the difference is pure Monte Carlo noise
    for f in (lambda x: x, lambda x: x**2):
        a, b = f(ours), f(theirs)
        se = math.sqrt(a.var() / n_paths + b.var() / n_paths)
        assert abs(a.mean() - b.mean()) < Z_TOL * se


@pytest.mark.slow
def test_sme2_two_point_order_one_by_monte_carlo():
    """Issue check 2 for SME-2: Sigma^(1/2) noise shared by two copies has no closed moments; by
    Monte Carlo its weak order for E<X^x, X^y> and Cov(X^x_1, X^y_1) is 1 (SMF's is 2, exactly)."""
    ds = sde.weak_error_study(least_squares(Z4, Y4), ["sme2", "smf"], [1 / 8, 1 / 16, 1 / 32, 1 / 64], ["inner", "cross_cov"],
                              T=1.0, x0=X0_2D, n_paths=10_000, scheme="weak2", substeps=2, seed=0, chunk=10_000)
    assert np.all(ds.solver.sel(model="sme2").values == "monte_carlo")
    for obs in ("inner", "cross_cov"):
        s = ds.sel(model="sme2", observable=obs)
        assert bool(s.resolved.all())
        assert float(s.slope_low) <= 1 <= float(s.slope_high) and float(s.slope_high) < 1.5, (float(s.slope), float(s.slope_low), float(s.slope_high))
        f = ds.sel(model="smf", observable=obs)
        assert abs(float(f.slope) - 2) < 0.1
