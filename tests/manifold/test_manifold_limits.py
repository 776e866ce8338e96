"""Simulation -> limit: the noisy algorithms against the generic limit solver (slow, statistical).

For each case the experiment runs three step sizes ``eta, eta/2, eta/4`` with ``R``
independent runs each. The statistic of a run is its time average over ``tau > 0`` of
``obs_sim(tau) - obs_limit(tau)`` (a linear functional, so its mean ``e(eta)`` has the expansion
``a eta + b eta^2 + ...``); its standard error ``s`` comes from the run-to-run spread.

- O(eta) bias: the halving ratios ``r12 = e1/e2``, ``r23 = e2/e3`` tend to 2 with a correction
  linear in eta, so the extrapolated ratio ``2 r23 - r12`` must be 2 within 4 standard errors
  (delta method over the three independent estimates).
- Convergence to the limit: the Richardson extrapolation ``(8 e3 - 6 e2 + e1) / 3`` (which removes
  the eta and eta^2 terms) must be 0 within 4 standard errors.

Non-degenerate noises use ``sigma^2 proportional to eta`` (``sigma_scaling = "sqrt_eta"``): at
fixed sigma their bias has an ``O(sigma^2)`` part that does not shrink with eta.
"""

import numpy as np
import pytest

import sgdlab  # noqa: F401
from sgdlab.manifold import experiment as me
from sgdlab.manifold import limit as mf

pytestmark = pytest.mark.slow

Z = 4.0  # standard errors allowed


def run_statistics(ds, var):
    """Per eta: mean and standard error of the per-run time-averaged bias of ``var``."""
    sim = ds[var].sel({"method": "sim"}).isel(t=slice(1, None)).mean("t").values  # (eta, seed)
    lim = ds[var].sel({"method": "limit"}).isel(eta=0, t=slice(1, None)).mean("t").values  # (seed,)
    if ds.attrs["limit_stochastic"]:
        raise AssertionError("use a deterministic limit here")
    x = sim - lim[None, :]
    return x.mean(1), x.std(1, ddof=1) / np.sqrt(x.shape[1])


def delta_method(fn, e, s, eps=1e-7):
    """Value and standard error of ``fn(e)`` for independent estimates ``e`` with errors ``s``."""
    e = np.asarray(e, float)
    grad = np.array([(fn(e + eps * np.eye(3)[i] * abs(e[i])) - fn(e - eps * np.eye(3)[i] * abs(e[i]))) / (2 * eps * abs(e[i])) for i in range(3)])
    return fn(e), float(np.sqrt(np.sum((grad * s) ** 2)))


def check_order_one_bias(ds, var):
    e, s = run_statistics(ds, var)
    ratio, ratio_se = delta_method(lambda v: 2 * v[1] / v[2] - v[0] / v[1], e, s)
    extrap, extrap_se = delta_method(lambda v: (8 * v[2] - 6 * v[1] + v[0]) / 3, e, s)
    report = f"{var}: e={e}, se={s}, r12={e[0] / e[1]:.3f}, r23={e[1] / e[2]:.3f}, extrapolated ratio {ratio:.3f}±{ratio_se:.3f}, e_inf {extrap:.2e}±{extrap_se:.1e}"
    print(report)
    assert np.all(np.abs(e) > Z * s), report  # the bias is resolved at every eta
    assert abs(ratio - 2) < Z * ratio_se, report
    assert abs(extrap) < Z * extrap_se, report
    return e, s


def config(model, noise, eta0, tau_max, tau_save, runs=2048, limit_substeps=10):
    return {
        "model": model,
        "noise": noise,
        "simulation": {"etas": [eta0, eta0 / 2, eta0 / 4], "runs": runs, "tau_max": tau_max, "tau_save": tau_save, "seed": 11},
        "limit": {"substeps": limit_substeps},
    }


def test_hyperbola_label_noise_c_decays_as_exp_minus_tau_with_order_one_bias():
    ds = me.run(config({"name": "hyperbola"}, {"name": "label_noise", "sigma": 1.0}, 0.05, 2.0, 0.1))
    assert ds.attrs["noise_kind"] == mf.DEGENERATE
    c_lim = ds.C.sel({"method": "limit"}).isel(eta=0, seed=0).values
    np.testing.assert_allclose(c_lim, c_lim[0] * np.exp(-ds.t.values), rtol=1e-6)  # closed form C0 e^{-tau}
    check_order_one_bias(ds, "C")


def test_hyperbola_perturbed_gd_c_decays_as_exp_minus_two_tau_with_order_one_bias():
    ds = me.run(config({"name": "hyperbola"}, {"name": "perturbed_gd", "sigma": 0.2, "sigma_scaling": "sqrt_eta"}, 0.05, 1.0, 0.05))
    assert ds.attrs["noise_kind"] == mf.NON_DEGENERATE
    c_lim = ds.C.sel({"method": "limit"}).isel(eta=0, seed=0).values
    np.testing.assert_allclose(c_lim, c_lim[0] * np.exp(-2 * ds.t.values), rtol=1e-6)
    check_order_one_bias(ds, "C")


def check_consistent_with_limit(ds, var):
    """A bias too small to resolve: every e(eta) is 0 within Z standard errors."""
    e, s = run_statistics(ds, var)
    print(f"{var}: e={e}, se={s}")
    assert np.all(np.abs(e) < Z * s), (var, e, s)


@pytest.mark.parametrize("distribution", ["bernoulli", "gaussian"])
def test_two_unit_dropout_delta_flow_with_order_one_bias(distribution):
    """Dropout, balanced start: delta follows delta' = -(1 - delta^2) delta. The O(eta) bias sits
    in the products (p1 + p2 < 1 by O(sigma^2) = O(eta)); in delta = p1 - p2 it cancels to below
    the resolution of the runs (Bernoulli masks also add tangent fluctuations of variance
    O(eta tau)), so delta is checked for consistency with the limit."""
    noise = {"name": "dropout", "sigma": 0.2, "sigma_scaling": "sqrt_eta", "distribution": distribution}
    ds = me.run(config({"name": "two_unit"}, noise, 0.05, 2.0, 0.1, runs=4096))
    assert ds.attrs["noise_kind"] == mf.NON_DEGENERATE
    d = ds.delta.sel({"method": "limit"}).isel(eta=0, seed=0).values
    k = d[0] ** 2 / (1 - d[0] ** 2) * np.exp(-2 * ds.t.values)
    np.testing.assert_allclose(d, np.sign(d[0]) * np.sqrt(k / (1 + k)), rtol=1e-6)
    assert d[0] - d[-1] > 0.3  # the flow moves delta by O(1) on this scale
    check_order_one_bias(ds, "p1")
    check_consistent_with_limit(ds, "delta")


def test_two_unit_label_noise_is_frozen_on_the_eta_sigma2_scale():
    """Forced onto tau = eta sigma^2 k, label noise has the constant limit (P_T grad Reg = 0): the
    simulated c1 moves only by O(eta) (by about -eta tau c1, its eta^2 sigma^2-scale decay)."""
    cfg = config({"name": "two_unit", "init": [1.2, 0.5, 0.3, 0.9]}, {"name": "label_noise", "sigma": 1.0}, 0.05, 2.0, 0.1)
    cfg["limit"]["kind"] = "non_degenerate"
    ds = me.run(cfg)
    lim = ds.c1.sel({"method": "limit"}).isel(eta=0, seed=0).values
    np.testing.assert_array_equal(lim, lim[0])  # the constant limit Phi(w0)
    e, _ = check_order_one_bias(ds, "c1")
    # the leading term: d c1 / d tau = -eta c1 on this scale, time-averaged over tau in (0, 2]
    assert e[-1] == pytest.approx(-0.0125 * lim[0] * np.mean(ds.t.values[1:]), rel=0.2)


def test_hyperbola_sgld_c_is_a_martingale_with_the_limit_diffusion():
    """SGLD on tau = eta^2 sigma^2 k: C is a martingale whose quadratic variation has density
    4 (x^2 + y^2) = 4 sqrt(C^2 + 4) on Gamma; the generic limit SDE has the same law of C(tau)."""
    runs = 4096
    cfg = {
        "model": {"name": "hyperbola"},
        "noise": {"name": "sgld", "sigma": 1.0},
        "simulation": {"etas": [0.02], "runs": runs, "tau_max": 1.0, "tau_save": 0.02, "seed": 5},
        "limit": {"substeps": 4},
    }
    ds = me.run(cfg)
    assert ds.attrs["noise_kind"] == mf.DEGENERATE and ds.attrs["limit_stochastic"]
    c_sim = ds.C.sel({"method": "sim"}).isel(eta=0).values  # (runs, T)
    c_lim = ds.C.sel({"method": "limit"}).isel(eta=0).values
    c0 = c_lim[0, 0]
    # martingale: E C(tau) = C0 at every saved tau
    se = c_sim.std(0, ddof=1) / np.sqrt(runs)
    assert np.all(np.abs(c_sim.mean(0) - c0)[1:] < Z * se[1:]), (c_sim.mean(0) - c0) / np.maximum(se, 1e-300)
    # diffusion: E sum_j (dC_j)^2 = E int 4 sqrt(C^2 + 4) dtau (trapezoid; exact in expectation to O(dtau^2))
    dtau = float(ds.t[1] - ds.t[0])
    g = 4 * np.sqrt(c_sim[:, 1:] ** 2 + 4)
    qv = np.sum(np.diff(c_sim[:, 1:], axis=1) ** 2, axis=1)
    integral = np.sum(0.5 * (g[:, 1:] + g[:, :-1]) * dtau, axis=1)
    diff = qv - integral
    print(f"SGLD: E QV = {qv.mean():.4f}, E int g = {integral.mean():.4f}, difference {diff.mean():.4f} ± {diff.std(ddof=1) / np.sqrt(runs):.4f}")
    assert abs(diff.mean()) < Z * diff.std(ddof=1) / np.sqrt(runs)
    assert diff.std(ddof=1) / np.sqrt(runs) < 0.02 * integral.mean()  # a 2 % test of the coefficient
    # the generic limit SDE: same mean and variance of C at the end
    a, b = c_sim[:, -1], c_lim[:, -1]
    assert abs(a.mean() - b.mean()) < Z * np.sqrt(a.var(ddof=1) / runs + b.var(ddof=1) / runs)

    def var_se(x):
        return np.sqrt(np.mean((x - x.mean()) ** 4) - x.var() ** 2) / np.sqrt(len(x))

    print(f"SGLD: Var C(1) sim {a.var():.4f} ± {var_se(a):.4f}, limit {b.var():.4f} ± {var_se(b):.4f}")
    assert abs(a.var() - b.var()) < Z * np.hypot(var_se(a), var_se(b))
    assert b.var() > 10 * np.hypot(var_se(a), var_se(b))  # a resolved variance


def test_two_unit_label_noise_balances_units_with_order_one_bias():
    ds = me.run(config({"name": "two_unit", "init": [1.2, 0.5, 0.3, 0.9]}, {"name": "label_noise", "sigma": 1.0}, 0.05, 2.0, 0.1))
    assert ds.attrs["noise_kind"] == mf.DEGENERATE
    for var in ("c1", "c2"):
        c = ds[var].sel({"method": "limit"}).isel(eta=0, seed=0).values
        np.testing.assert_allclose(c, c[0] * np.exp(-ds.t.values), rtol=1e-6)
        check_order_one_bias(ds, var)
