"""Checks of the two-layer time-scale machinery (spec 05; BMZ FoCM 2024; SS95; G19)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import erf

import sgdlab  # noqa: F401
from sgdlab.two_layer.problem import SingleIndex, hermite_coefficients, mehler_risk_per_degree, sampled_risk
from sgdlab.two_layer import committee_ode as co
from sgdlab.two_layer import flow as tl
from sgdlab.two_layer import reduced as rd
from sgdlab.two_layer.analysis import detect_plateaus, fit_power_law, half_learning_times


def test_relu_hermite_coefficients_closed_form():
    # E relu(g) = 1/sqrt(2 pi); E relu(g) g = 1/2; c_2 = 1/(2 sqrt(pi)); c_3 = 0 (BMZ: relu cannot learn degree 3)
    c = hermite_coefficients("relu", 4)
    expect = [1 / np.sqrt(2 * np.pi), 0.5, 1 / (2 * np.sqrt(np.pi)), 0.0, -1 / np.sqrt(48 * np.pi)]
    np.testing.assert_allclose(c, expect, atol=1e-9)


def test_mehler_risk_equals_monte_carlo():
    p = SingleIndex(phi=(0.3, 1.0, 0.7, 0.5), sigma=(0.2, 0.9, 0.6, 0.4))
    m, d, n = 5, 7, 400_000
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    a = jax.random.normal(k1, (m,)) * 2
    u = jax.random.normal(k2, (m, d))
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    exact = float(mehler_risk_per_degree(p, a, u[:, 0], u @ u.T).sum())
    mc, se = sampled_risk(p, a, u, k3, n)
    assert abs(exact - float(mc)) < 4 * float(se), (exact, float(mc), float(se))  # 4 standard errors


def _expect(C, idx, f, npts=None):
    """Gauss-Hermite tensor quadrature of E f(z_idx) for z ~ N(0, C), in the len(set(idx))-dim marginal."""
    uniq = sorted(set(idx))
    k = len(uniq)
    npts = npts or {1: 300, 2: 200, 3: 60, 4: 36}[k]
    x, w = hermegauss(npts)
    w = w / np.sqrt(2 * np.pi)
    X = np.stack(np.meshgrid(*([x] * k), indexing="ij"), -1).reshape(-1, k)
    W = np.prod(np.stack(np.meshgrid(*([w] * k), indexing="ij"), -1).reshape(-1, k), 1)
    Z = X @ np.linalg.cholesky(C[np.ix_(uniq, uniq)]).T
    cols = [Z[:, uniq.index(i)] for i in idx]
    return np.sum(W * f(*cols))


@pytest.mark.slow  # 4-d quadrature: ~40 s on 2 cores
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_erf_closed_forms_equal_quadrature(seed):
    rng = np.random.default_rng(seed)
    n = 4
    A = rng.normal(size=(n, n)) * 0.7
    C = A @ A.T + 0.2 * np.eye(n)
    g = lambda z: erf(z / np.sqrt(2))  # noqa: E731
    gp = lambda z: np.sqrt(2 / np.pi) * np.exp(-z * z / 2)  # noqa: E731
    Cj = jnp.asarray(C)
    I2, I3, I4, J2 = (np.asarray(f(Cj)) for f in (co.erf_I2, co.erf_I3, co.erf_I4, co.erf_J2))
    for a, b in itertools.product(range(n), repeat=2):
        assert abs(I2[a, b] - _expect(C, (a, b), lambda x, y: g(x) * g(y))) < 1e-8
        assert abs(J2[a, b] - _expect(C, (a, b), lambda x, y: gp(x) * gp(y))) < 1e-8
    for a, b, c in itertools.product(range(n), repeat=3):
        assert abs(I3[a, b, c] - _expect(C, (a, b, c), lambda x, y, z: gp(x) * y * g(z))) < 1e-8
    for a, b, c, d in [(0, 1, 2, 3), (0, 0, 1, 1), (1, 2, 2, 3), (3, 3, 3, 3), (0, 1, 0, 1), (2, 0, 3, 1)]:
        assert abs(I4[a, b, c, d] - _expect(C, (a, b, c, d), lambda x, y, z, v: gp(x) * gp(y) * g(z) * g(v))) < 1e-8


@pytest.mark.parametrize("K", [2, 3])
def test_committee_symmetric_plateau(K):
    pl = co.symmetric_plateau(K)
    params = co.CommitteeParams(jnp.eye(K), jnp.ones(K), eta=1.0)
    fixed = co.CommitteeState(jnp.full((K, K), pl["Q"]), jnp.full((K, K), pl["R"]), jnp.ones(K))
    f = co.committee_vector_field(fixed, params, second_order=False)
    # the closed form is an exact fixed point of the eta -> 0 ODE: residual at round-off
    assert np.abs(np.asarray(f.Q)).max() < 1e-12 and np.abs(np.asarray(f.R)).max() < 1e-12
    assert abs(float(co.generalisation_error(fixed, params)) - pl["eps_g"]) < 1e-13


def test_degree_one_closed_form_matches_reduced_dynamics():
    p = SingleIndex(phi=(0, 1, 1, 1), sigma=(0, 1, 1, 1))
    m = 32
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
    errs = []
    for eps in (1e-4, 1e-6):
        t = np.logspace(np.log10(eps) - 2, np.log10(30 * np.sqrt(eps)), 241)
        obs, _, ok, _ = rd.solve_reduced(p, a0, jnp.zeros(m), eps, jnp.asarray(t))
        assert bool(ok)
        t1 = half_learning_times(t, np.asarray(obs.M), np.array(p.phi), np.array(p.sigma))[1]
        errs.append(abs(t1 / rd.degree_one_time(p, np.asarray(a0), np.zeros(m), eps) - 1))
    # corrections are O(eps^{1/4}) relative: measured error must shrink by ~10^{1/2} from 1e-4 to 1e-6
    assert errs[1] < 0.1 and errs[1] < errs[0] / 2, errs


def test_information_exponent_two_escape_time_grows_like_log_d():
    p = SingleIndex(phi=(0, 0, 1, 0.5), sigma=(0, 0, 1, 0.5))  # phi_1 = 0: information exponent 2
    a = 1.0
    ds = np.array([1e4, 1e5, 1e6, 1e7, 1e8])
    times = []
    for d in ds:
        s0 = d**-0.5
        t = np.concatenate([[0.0], np.logspace(-2, 2, 400)])
        obs, _, ok, _ = tl.solve_population_flow(p, jnp.ones(1) * a, jnp.asarray([s0]), jnp.ones((1, 1)), 1.0, jnp.asarray(t), train_second_layer=False)
        s = np.asarray(obs.s)[:, 0]
        times.append(np.interp(0.5, s, t))
        assert abs(times[-1] - tl.overlap_escape_time(p, a, s0)) < 1e-2 * times[-1]
    slope = np.polyfit(np.log(ds), times, 1)[0]
    # t = log d / (4 a phi_2 sigma_2) + O(1) + O(d^{-1/2}): slope 1/4 up to O(1e-2)
    assert abs(slope - 1 / (4 * a * 1.0)) < 0.01, slope


def test_plateau_detection_and_power_fit():
    t = np.logspace(-6, 2, 400)
    # synthetic staircase 1.5 -> 1 -> 0.5 -> 0.05 with logistic drops at 1e-4, 1e-2, 1 (log time)
    R = 0.05 + sum(0.5 / (1 + (t / tc) ** 6) for tc in (1e-4, 1e-2, 1.0))
    pl = detect_plateaus(t, R)
    np.testing.assert_allclose([p.level for p in pl], [1.55, 1.05, 0.55, 0.05], rtol=0.02)
    x = np.logspace(-8, -2, 7)
    f = fit_power_law(x, 3 * x**0.25 * np.exp(np.random.default_rng(0).normal(0, 0.01, 7)))
    assert f.contains(0.25) and f.high - f.low < 0.02
