"""Scientific checks of issue 6 not covered by tests/two_layer/test_timescales.py (spec 05; BMZ FoCM 2024;
SS95; G19): finite-d flow vs reduced dynamics vs online SGD, the BMZ staircase and its eps
exponents, the eta^2 rise of the committee plateau, finite-data GD and the unconstrained first
layer. Numbers in comments were measured on the 2-core dev machine (float64)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.two_layer.sgd import finite_data_sgd, online_sgd, sgd_init
from sgdlab.two_layer.problem import SingleIndex
from sgdlab.two_layer import committee_ode as co
from sgdlab.two_layer import flow as tl
from sgdlab.two_layer import reduced as rd
from sgdlab.two_layer.analysis import detect_plateaus, fit_power_law, half_learning_times

P123 = SingleIndex(phi=(0, 1, 1, 1), sigma=(0, 1, 1, 1))  # phi = sigma = h1 + h2 + h3
PHI, SIG = np.array(P123.phi), np.array(P123.sigma)


def _t1(t, M):
    return half_learning_times(t, np.asarray(M), PHI, SIG)[1]


# ---------------------------------------------------------------------------------------------
# (a) exact finite-d flow -> d = inf flow -> reduced dynamics; online SGD -> flow
# ---------------------------------------------------------------------------------------------
# The gap between the finite-d flow and the reduced dynamics has two parts, measured separately:
#  * finite d: initial overlaps s_i, G_ij ~ d^{-1/2} (vs s = 0, G = I at d = inf): the gap between
#    flow(d) and flow(d = inf, same m) must shrink like d^{-1/2};
#  * finite m: the self-interaction -(a_i/m) (U(1) - U(s_i^2)) / eps in eps a_i' (a ridge of rate
#    |sigma|^2/(m eps), absent from the reduced dynamics) shifts t_1 by a relative O(t_1/(m eps)):
#    the gap between flow(d = inf, m) and the reduced dynamics must shrink like 1/m.
# Measured (eps = 0.02, P123, t in [0.01, 0.6], 8 inits, max_t |R_flow(d) - R_flow(inf)|):
#   m = 32: d = 1e2, 1e3, 1e4 -> 1.06 +- 0.07, 0.38 +- 0.07, 0.124 +- 0.022 (ratio per decade ~3 =
#   10^{1/2}); t_1: reduced 0.2568, flow(inf) m = 32: 0.3510, m = 64: 0.3002 (gap 0.094 -> 0.044:
#   ratio 2.2 ~ 2 = 64/32). So at eps = 0.02 the reduced dynamics is reached only for m >> 100.
EPS_A = 0.02
T_A = np.linspace(0.01, 0.6, 41)


def _flow(m, s0, G0, eps=EPS_A, t=T_A):
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
    return tl.solve_population_flow(P123, a0, s0, G0, eps, jnp.asarray(t), solver="tsit5")[:3]  # vmappable: no solver name


@pytest.mark.slow  # 9-45 s on 2 loaded cores (12 vmapped flow solves + compile; 9 s measured last)
def test_finite_d_flow_gap_shrinks_like_inverse_sqrt_d():
    m, n_init = 32, 6
    inf, _, ok = _flow(m, jnp.zeros(m), jnp.eye(m))
    assert bool(ok)
    R_inf = np.asarray(inf.risk).sum(1)
    gaps = {}
    for d in (1000, 10000):
        keys = jax.random.split(jax.random.key(1), n_init)
        s0, G0 = jax.vmap(lambda k: tl.random_overlaps(k, m, d))(keys)
        fl, _, ok = jax.vmap(lambda s, G: _flow(m, s, G))(s0, G0)
        assert bool(np.all(ok))
        g = np.abs(np.asarray(fl.risk).sum(-1) - R_inf).max(1)
        gaps[d] = (g.mean(), g.std() / np.sqrt(n_init))
    ratio = gaps[1000][0] / gaps[10000][0]
    # d^{-1/2} predicts a ratio of 10^{1/2} = 3.16; measured 3.07. The propagated standard error of
    # the ratio is ~0.8 (relative SEs ~0.18 each): accept 3.16 +- 3 SE, and in any case > 1.5.
    se = ratio * np.hypot(gaps[1000][1] / gaps[1000][0], gaps[10000][1] / gaps[10000][0])
    assert abs(ratio - np.sqrt(10)) < 3 * se and ratio > 1.5, (gaps, ratio, se)


@partial(jax.jit, static_argnames=("problem", "reduced", "n_sub"))
def _rk4(problem, reduced, y0, eps, ts, n_sub=10):
    """Fixed-step RK4 (n_sub steps per save interval, integration from t = 0) of the library's
    flow (reduced=False; y0 = (a, s, G)) or reduced (y0 = (a, s)) vector field; returns the
    library's FlowObservables at ts. A cheap-to-compile reference for the fast tests (~1 s vs
    2-5 s for a diffrax solve on this machine) where the system is not stiff (eps >= 0.02 here);
    it agrees with solve_population_flow(..., solver="tsit5") to 2e-8 in M (m = 32, 64, T_A)."""
    if reduced:
        vf, obs = (lambda y: rd.reduced_vector_field(problem, eps, y)), (lambda y: rd._reduced_observables(problem, y))  # noqa: E731
    else:
        vf, obs = (lambda y: tl.population_flow_vector_field(problem, eps, y)), (lambda y: tl._flow_observables(problem, y))  # noqa: E731

    def block(y, dt):
        h = dt / n_sub

        def step(y, _):
            k1 = vf(y)
            k2 = vf(jax.tree.map(lambda a, k: a + h / 2 * k, y, k1))
            k3 = vf(jax.tree.map(lambda a, k: a + h / 2 * k, y, k2))
            k4 = vf(jax.tree.map(lambda a, k: a + h * k, y, k3))
            return jax.tree.map(lambda a, p, q, r, s: a + h / 6 * (p + 2 * q + 2 * r + s), y, k1, k2, k3, k4), None

        y = jax.lax.scan(step, y, None, length=n_sub)[0]
        return y, obs(y)

    return jax.lax.scan(block, y0, jnp.diff(jnp.concatenate([jnp.zeros(1), ts])))[1]


def test_infinite_d_flow_approaches_reduced_dynamics_like_inverse_m():
    # fast: the library vector fields integrated by _rk4 (3 cheap compiles); the same comparison
    # with the library's diffrax solvers is in the slow test below.
    a0 = jnp.asarray(tl.initial_second_layer(32, 1.0))
    red_t1 = _t1(T_A, _rk4(P123, True, (a0, jnp.zeros(32)), EPS_A, jnp.asarray(T_A)).M)
    gaps = []
    for m in (32, 64):
        a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
        fl = _rk4(P123, False, (a0, jnp.zeros(m), jnp.eye(m)), EPS_A, jnp.asarray(T_A))
        gaps.append(_t1(T_A, fl.M) - red_t1)
    # finite-m correction: positive (the ridge slows the instability) and O(1/m): ratio 2.2 measured
    # (2 predicted; the next order O(1/m^2) with relative size ~ gap/t_1 ~ 0.3 at m = 32 allows 1.5-3).
    assert gaps[0] > gaps[1] > 0
    assert 1.5 < gaps[0] / gaps[1] < 3.0, gaps


@pytest.mark.slow  # ~10 s (measured 9.4 s): four diffrax compiles
def test_flow_vs_reduced_with_library_solvers():
    # The same with solve_population_flow / solve_reduced (tsit5); and the reduced dynamics with
    # quantile particles is m-converged (t_1 = 0.25679 at m = 32 and 0.25672 at m = 64: the law is
    # sampled deterministically), so its t_1 is the m = inf value used above.
    t1_red, t1_flow = [], []
    for m in (32, 64):
        a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
        red, _, ok, _ = rd.solve_reduced(P123, a0, jnp.zeros(m), EPS_A, jnp.asarray(T_A), solver="tsit5")
        fl, _, ok2 = _flow(m, jnp.zeros(m), jnp.eye(m))
        assert bool(ok) and bool(ok2)
        t1_red.append(_t1(T_A, red.M))
        t1_flow.append(_t1(T_A, fl.M))
        ref = _rk4(P123, False, (a0, jnp.zeros(m), jnp.eye(m)), EPS_A, jnp.asarray(T_A))
        np.testing.assert_allclose(np.asarray(fl.M), np.asarray(ref.M), atol=1e-6)
    assert abs(t1_red[0] - t1_red[1]) < 1e-3 * t1_red[1], t1_red
    gaps = np.array(t1_flow) - t1_red[0]
    assert gaps[0] > gaps[1] > 0 and 1.5 < gaps[0] / gaps[1] < 3.0, gaps


@pytest.mark.slow  # ~45 s (measured 43 s): online SGD at d = 500, 8 seeds, two step sizes
def test_online_sgd_approaches_population_flow_as_step_shrinks():
    # Paired comparison: each SGD seed against the exact flow from the SAME initial (a, u).
    # Measured (eps = 0.02, m = 32, d = 500, 8 seeds), R_sgd - R_flow at t = 0.11, 0.21, 0.31:
    #   eta = 1e-4:   -0.002 +- 0.005, 0.017 +- 0.015, 0.46 +- 0.09
    #   eta = 2.5e-5: -0.001 +- 0.002, -0.001 +- 0.014, 0.28 +- 0.07
    # Before the degree-1 drop (t <= 0.2) SGD equals the flow within 2 SE; during the drop SGD lags.
    # What the lag is (same seeds, R_sgd - R_flow at t = 0.305, eta = 1e-4 unless said):
    #   d = 250, 500, 1000, 2000:       0.73 +- 0.08, 0.46 +- 0.09, 0.43 +- 0.09, 0.40 +- 0.05
    #   d = 500, eta = 5e-5, 2.5e-5:     0.39 +- 0.08, 0.28 +- 0.07
    #   d = 500, batch 8:               0.19 +- 0.07
    # It does not grow with d at fixed eta, so it is NOT the O(eta d) bias of the sphere retraction
    # (u <- (u - eta g)/|u - eta g| contracts s by (eta/2)|g|^2 ~ eta d a^2 E[err^2 sigma'^2] per unit
    # time: 8x larger at d = 2000 than at 250), nor a finite-d effect (the flow is exact at each d
    # and the lag is flat from d = 500 to 2000). It falls when the gradient NOISE falls at the same
    # drift (batch 8: 0.46 -> 0.19; eta / 4: 0.46 -> 0.28, slower than linear in eta): a d-independent
    # noise-induced (second order in the noise) delay of the instability. The likely carrier is the
    # second layer: its step is eta/eps with an O(1) per-sample gradient and only the 1/(m eps)
    # self-restoring force, so each a_i fluctuates with variance ~ eta m Var(ga) / (2 eps U(1)) ~ 0.25
    # at eta = 1e-4 (std 0.5 against |a0| <= 1). Not resolved further. What is checked: agreement
    # before the drop, and the lag shrinking with eta (paired over seeds).
    m, d, n_seed = 32, 500, 8
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
    keys = jax.random.split(jax.random.key(2), n_seed)
    u = jax.vmap(lambda k: sgd_init(jax.random.split(k)[0], a0, d)[1])(keys)
    fl, _, _ = jax.vmap(lambda uu: _flow(m, uu[:, 0], uu @ uu.T))(u)
    Rf = np.asarray(fl.risk).sum(-1)
    lag = []
    for eta in (1e-4, 2.5e-5):
        steps = jnp.asarray(np.round(T_A / eta).astype(np.int64))
        _, R = jax.vmap(lambda k: online_sgd(P123, k, a0, d, EPS_A, eta, steps))(keys)
        diff = np.asarray(R).sum(-1) - Rf
        j_early = np.searchsorted(T_A, 0.2)
        mean, se = diff[:, :j_early].mean(0), diff[:, :j_early].std(0) / np.sqrt(n_seed) + 1e-12
        assert np.all(np.abs(mean) < 4 * se + 0.01), (eta, mean, se)
        lag.append(diff[:, np.searchsorted(T_A, 0.3)])
    paired = lag[0] - lag[1]
    z = paired.mean() / (paired.std(ddof=1) / np.sqrt(n_seed))
    assert paired.mean() > 0, (paired, z)


# ---------------------------------------------------------------------------------------------
# (b) BMZ staircase and eps exponents of the reduced dynamics
# ---------------------------------------------------------------------------------------------
# Measured with m = 32 quantile particles (a0 uniform on [-1, 1], s0 = 0), P123, Kvaerno5 (the default
# solver "auto" runs Tsit5 here and gives the same t_l to 1e-5: tests/two_layer/test_solvers.py):
#   eps     t_1        t_1 closed form  t_2        plateau after degree 1 (pred 1.0)
#   1e-6    4.687e-3   4.697e-3         2.016e-2   none (merged with the degree-2 drop)
#   1e-8    5.844e-4   5.848e-4         6.881e-3   0.9895
#   1e-10   6.992e-5   6.999e-5         2.259e-3   0.9973
#   1e-12   8.157e-6   8.151e-6         7.423e-4   0.9994
#   1e-14   9.306e-7   9.302e-7         2.326e-4   0.9999   and 0.4724 after degree 2 (pred 0.5)
# Local slopes of log t_2 per decade of eps: 0.232 (1e-6..1e-7), 0.239, 0.245, 0.240, 0.244,
# 0.247 (1e-12..1e-13), 0.256: t_2 ~ eps^{1/4} is approached from below (slopes 0.23 -> 0.25), a
# slow (log-type) correction at eps >= 1e-9. The plateau after degree 1 sits O(eps^{1/4}) below
# its predicted level (degree-2 moment M_2 ~ a s^2 ~ eps^{1/4} is built during the plateau).
# The plateau after degree 2 needs eps <~ 1e-14 (t_3/t_2 ~ eps^{-1/12} only): slow test.
M_B = 32


def _reduced_scan(eps_list, t_of_eps, n_t=300, max_steps=30_000, require_success=True):
    a0 = jnp.asarray(tl.initial_second_layer(M_B, 1.0))
    out = []
    for eps in eps_list:
        t = t_of_eps(eps, n_t)
        obs, _, ok, _ = rd.solve_reduced(P123, a0, jnp.zeros(M_B), eps, jnp.asarray(t), max_steps=max_steps)
        assert bool(ok) or not require_success, eps
        out.append((eps, t, obs, rd.degree_one_time(P123, np.asarray(a0), np.zeros(M_B), eps)))
    return out


@pytest.mark.parametrize(
    "eps_list",
    [
        [1e-7, 1e-8, 1e-9, 1e-10],  # fast: ~15 s warm
        pytest.param([1e-8, 1e-9, 1e-10, 1e-11, 1e-12], marks=pytest.mark.slow),
    ],
)
def test_staircase_levels_and_eps_exponents(eps_list):
    runs = _reduced_scan(eps_list, lambda e, n: np.logspace(np.log10(e) - 1, np.log10(2.5 * e**0.25), n))
    t1 = np.array([_t1(t, o.M) for _, t, o, _ in runs])
    t2 = np.array([half_learning_times(t, np.asarray(o.M), PHI, SIG)[2] for _, t, o, _ in runs])
    t1c = np.array([r[3] for r in runs])
    # t_1 equals the closed form to its O(eps^{1/4}) + grid accuracy (measured <= 0.1 %).
    np.testing.assert_allclose(t1, t1c, rtol=5e-3)
    # remove the log factor with the closed form's own: t_1 / [logit(1/2) - logit(kappa_0)] ~ sqrt(eps)
    log_factor = t1c / np.sqrt(eps_list)
    f1 = fit_power_law(eps_list, t1 / log_factor)
    assert f1.contains(0.5), f1
    assert f1.high - f1.low < 0.01, f1
    # t_2 ~ eps^{1/4} up to a slowly decaying correction: the fitted exponent over 1e-8..1e-12 is
    # 0.24 (CI excludes 1/4 at this precision: said honestly); test the trend instead: the local
    # slope on the smaller-eps half is closer to 1/4 than on the larger-eps half, both within 0.03.
    f2 = fit_power_law(eps_list, t2)
    assert abs(f2.exponent - 0.25) < 0.02, f2
    half = max(3, (len(eps_list) + 1) // 2)
    hi = fit_power_law(eps_list[:half], t2[:half]).exponent
    lo = fit_power_law(eps_list[-half:], t2[-half:]).exponent
    assert abs(lo - 0.25) < 0.03 and abs(hi - 0.25) < 0.03 and abs(lo - 0.25) <= abs(hi - 0.25) + 0.005, (hi, lo)
    # separation of time scales: t_2 / t_1 grows as eps decreases
    assert np.all(np.diff(t2 / t1) > 0)
    # plateau levels at the smallest eps: initial 1.5 (exact) and after degree 1 the predicted 1.0
    # within the O(eps^{1/4}) shift (measured deficit 0.95, 1.05, 0.93, 0.81, 0.6 x eps^{1/4} at
    # 1e-7, 1e-8, 1e-9, 1e-10, 1e-12: 2 eps^{1/4} allowed)
    eps, t, obs, _ = runs[-1]
    R = np.asarray(obs.risk).sum(1)
    levels = [p.level for p in detect_plateaus(t, R)]
    pred = P123.plateau_levels()  # [1.5, 1.5, 1.0, 0.5, 0]: entry l = risk once degrees < l are learned (phi_0 = 0)
    assert abs(levels[0] - pred[0]) < 1e-6, levels
    assert any(abs(lv - pred[2]) < 2 * eps**0.25 for lv in levels[1:]), levels


@pytest.mark.slow  # ~2.5 min on 2 loaded cores (measured 138 s)
def test_staircase_degree_two_plateau_at_tiny_eps():
    # eps = 1e-16 exhausts max_steps = 4e5 at t = 5.0e-3 (of 6.5e-3; measured), during the degree-3
    # drop, i.e. after the degree-2 plateau: the saved curve is used up to there (nan after), and
    # the test requires the plateau near 1/2 to end before the last finite time.
    runs = _reduced_scan([1e-14, 1e-16], lambda e, n: np.logspace(np.log10(e) - 1, np.log10(3 * e ** (1 / 6)), n), n_t=400,
                         max_steps=400_000, require_success=False)
    pred = P123.plateau_levels()
    devs = []
    for eps, t, obs, _ in runs:
        R = np.asarray(obs.risk).sum(1)
        good = np.isfinite(R)
        assert good[: len(good) // 2].all(), eps
        plats = detect_plateaus(t[good], R[good])
        levels = [p.level for p in plats]
        near = [p for p in plats if abs(p.level - pred[3]) < 0.1]
        assert near and near[-1].end < t[good][-1], (eps, levels)
        # after degree 1: the predicted 1.0 up to the O(eps^{1/4}) deficit (measured coefficient
        # 0.6-1.05 over eps = 1e-12..1e-7; 2 eps^{1/4} allowed)
        assert any(abs(lv - pred[2]) < 2 * eps**0.25 for lv in levels), (eps, levels)
        devs.append(min(abs(p.level - pred[3]) for p in near))
    # measured deviation from 1/2: 0.028 at 1e-14, 0.0135 at 1e-16; it must shrink as eps decreases
    assert devs[1] < devs[0], devs


# ---------------------------------------------------------------------------------------------
# (c) committee machine: the eta^2 terms raise the symmetric plateau
# ---------------------------------------------------------------------------------------------
# Measured symmetric-plateau eps_g (ODE from a symmetric start to alpha = 3000/eta, K = M, T = I):
#   K = 2: eta -> 0: 0.011611; eta = 0.1: 0.012085, 0.3: 0.013210, 0.6: 0.015518, 1.0: 0.020657
#   K = 3: eta -> 0: 0.020297; eta = 0.1: 0.021882, 0.3: 0.026017, 0.6: 0.036247, 1.0: 0.066077
# With eta > 0 the plateau has Q_ii > Q_ik (eta = 1, K = 2: 0.435, 0.310); its approach along
# Q_ii - Q_ik is slow (eigenvalue ~ -1.3e-3 eta per unit alpha at eta = 0.1, K = 2, from the
# Jacobian of the symmetric-subspace ODE at the fixed point found by scipy fsolve, eps_g =
# 0.0120852): at alpha = 300/eta eps_g is within 6e-6 of it, at 3000/eta within 1e-7. (The
# branch Q_ii = Q_ik, where all students coincide, is invariant too but unstable in that
# direction for eta < ~0.5.) With an asymmetric start, detect_plateaus finds the plateau within
# 2 % of these (slow test).
def _symmetrise(st):
    """Project (Q, R) on the S_K x S_M-invariant subspace (Q_ii = q, Q_ik = c, R_in = r)."""
    K = st.Q.shape[0]
    eye = jnp.eye(K)
    q, c = jnp.trace(st.Q) / K, (st.Q.sum() - jnp.trace(st.Q)) / max(K * (K - 1), 1)
    return co.CommitteeState(q * eye + c * (1 - eye), jnp.full_like(st.R, st.R.mean()), st.v)


@partial(jax.jit, static_argnames=("n",))
def _relax_committee(st, params, h, n):
    """n explicit Euler steps of size h of the full committee ODE, each followed by the projection
    on the symmetric subspace (invariant under the exact flow; the projection removes the
    round-off that otherwise seeds the escape from the plateau after alpha ~ 1000/eta). Only the
    fixed point is wanted, and it is the same for any consistent one-step scheme: Euler (one
    vector-field evaluation per step) keeps the compile short. params (eta included) traced: one
    compile per K for all eta."""

    def step(st, _):
        st = _symmetrise(st)
        return jax.tree.map(lambda y, k: y + h * k, st, co.committee_vector_field(st, params)), None

    return _symmetrise(jax.lax.scan(step, st, None, length=n)[0])


# jitted once (eager evaluation of the I4 terms dispatches ~100 primitives: seconds on first use)
_committee_field = jax.jit(co.committee_vector_field, static_argnames=("second_order",))
_committee_eg = jax.jit(co.generalisation_error)


def _symmetric_plateau_state(K, eta, alpha_end=3000.0, n=6000):
    # Euler step h = 0.5/eta in alpha: |h lambda| <= 1.5 for the fastest mode (lambda ~ -2.9 eta,
    # real, at K = 3), inside Euler's stability interval (2).
    params = co.CommitteeParams(jnp.eye(K), jnp.ones(K), eta=jnp.asarray(float(eta)))
    st = _relax_committee(co.CommitteeState(0.2 * jnp.eye(K) + 0.05, jnp.full((K, K), 1e-3), jnp.ones(K)), params, alpha_end / eta / n, n)
    return st, params


@pytest.mark.parametrize("K", [2, 3])
def test_committee_plateau_rises_with_eta(K):
    closed = co.symmetric_plateau(K)["eps_g"]
    egs = []
    for eta in (0.1, 0.3, 1.0):
        st, params = _symmetric_plateau_state(K, eta)
        f = _committee_field(st, params)
        # converged to the fixed point of the full (eta^2-on) ODE: residual small against eta
        # (measured <= 3e-7 eta at alpha = 3000/eta)
        assert float(jnp.abs(f.Q).max()) < 1e-5 * eta and float(jnp.abs(f.R).max()) < 1e-5 * eta
        # the eta > 0 plateau of the symmetric start: students not all equal (Q_ii > Q_ik)
        assert float(st.Q[0, 0] - st.Q[0, 1]) > 0
        egs.append(float(_committee_eg(st, params)))
    # above the eta -> 0 closed form and increasing with eta; the rise is far above the residual
    # error of the fixed point (<~1e-7): measured K = 2: +0.00047, +0.0016, +0.0090
    assert closed + 1e-4 < egs[0] < egs[1] < egs[2], (closed, egs)
    # eta -> 0 continuity: the rise at eta = 0.1 is small against the one at eta = 1
    assert egs[0] - closed < 0.2 * (egs[2] - closed)


@pytest.mark.slow  # 5-12 s per K (measured 4.4-12.5 s; Dopri5 through the plateau and the escape)
@pytest.mark.parametrize("K", [2, 3])
def test_committee_detected_plateau_matches_fixed_point(K):
    rng = np.random.default_rng(0)
    for eta in (0.3, 1.0):
        params = co.CommitteeParams(jnp.eye(K), jnp.ones(K), eta=eta)
        st0 = co.CommitteeState(jnp.asarray(0.2 * np.eye(K) + 0.05), jnp.asarray(1e-3 * (1 + 0.1 * rng.normal(size=(K, K)))), jnp.ones(K))
        al = np.logspace(-2, np.log10(3000 / eta), 300)
        _, eg = co.solve_committee(st0, params, jnp.asarray(al))
        plats = detect_plateaus(al, np.asarray(eg))
        fixed = float(_committee_eg(*_symmetric_plateau_state(K, eta)))
        # the plateau's median sits within 2 % of the fixed point: the run passes near the saddle
        # while still relaxing along its slow stable direction (eigenvalue ~ -1e-3 eta), so the
        # median is off by a little, mostly above. Measured (level - fixed)/fixed: K = 2: +1.5 %
        # (eta = 0.3), +0.7 % (1.0); K = 3: +1.4 %, -0.09 %. The run then learns (eg -> 0).
        assert any(abs(p.level - fixed) < 0.02 * fixed for p in plats), (plats, fixed)
        assert float(eg[-1]) < 1e-6


# ---------------------------------------------------------------------------------------------
# (d) finite-data GD and the unconstrained first layer
# ---------------------------------------------------------------------------------------------
# GD on n = alpha d samples, from the same (a0, u0) as the exact finite-d flow, over S independent
# data sets: M(t) deviates from the flow by a random part of size O(n^{-1/2}) (the sampling noise
# of the empirical gradient, in the linear-response regime) plus an O(1/n) + O(eta) bias.
# Measured (m = 8, d = 10, eps = 0.05, eta = 5e-3, S = 16; the degree-1 drop of the flow is at
# t ~ 0.15-0.25): the data-set sd of M_k(t), pooled over k, per quadrupling of alpha:
#   t = 0.05, 0.1, 0.15, 0.2, 0.3:  alpha 100 -> 400: 1.78 1.53 1.23 1.18 1.26 (not yet linear:
#   the drop amplifies the deviations non-linearly); 400 -> 1600: 1.6 1.8 1.9 2.1 2.4;
#   1600 -> 6400: 2.4 2.3 2.1 2.1 2.0 (-> 2 = 4^{1/2}). halving eta changes the mean by ~0.003.
GD_M, GD_D, GD_EPS, GD_ETA = 8, 10, 0.05, 5e-3


def _gd_deviation(alphas, n_sets, t, key=7):
    """(M_gd - M_flow) of shape (len(alphas), n_sets, n_t, K+1) from one fixed (a0, u0)."""
    a0 = jnp.asarray(tl.initial_second_layer(GD_M, 1.0))
    u0 = sgd_init(jax.random.key(5), a0, GD_D)[1]
    fl = _rk4(P123, False, (a0, u0[:, 0], u0 @ u0.T), GD_EPS, jnp.asarray(t), n_sub=50)
    steps = jnp.asarray(np.round(t / GD_ETA).astype(np.int64))
    keys = jax.random.split(jax.random.key(key), n_sets)
    out = []
    for alpha in alphas:
        o = jax.vmap(lambda k: finite_data_sgd(P123, k, a0, GD_D, alpha * GD_D, GD_EPS, GD_ETA, steps, u0=u0))(keys)
        out.append(np.asarray(o.M) - np.asarray(fl.M))
    return np.stack(out)


def _sd_ratio_jackknife(dev):
    """Ratio of the pooled data-set sd of dev[0] to that of dev[1] ((S, ...) each) and its
    jackknife standard error over the S (paired) data-set indices."""
    sd = lambda x: np.sqrt(x.var(0, ddof=1).mean())  # noqa: E731
    S = dev.shape[1]
    r = sd(dev[0]) / sd(dev[1])
    jk = np.array([sd(np.delete(dev[0], i, 0)) / sd(np.delete(dev[1], i, 0)) for i in range(S)])
    return r, np.sqrt((S - 1) / S * np.sum((jk - jk.mean()) ** 2))


@pytest.mark.parametrize(
    "n_sets, t_end, alphas",
    [
        # fast (~10 s: flow + 2 GD compiles, 5e6 sample-steps), before the drop (linear regime)
        (8, 0.1, (400, 3200)),
        # slow: more data sets, 16x in alpha, through the degree-1 drop
        pytest.param(32, 0.3, (400, 6400), marks=pytest.mark.slow),
    ],
)
def test_finite_data_gd_approaches_population_flow(n_sets, t_end, alphas):
    t = np.arange(0.05, t_end + 1e-9, 0.05)
    dev = _gd_deviation(alphas, n_sets, t)
    # (1) the random part shrinks like n^{-1/2}: sd ratio (alpha_2/alpha_1)^{1/2} (measured chain
    # above: 400 -> 3200 ~ 1.7 x 1.65 = 2.8 vs 8^{1/2} = 2.83 at t <= 0.1; 400 -> 6400 ~ 3.8 vs 4
    # through the drop); accept the prediction +- 3 jackknife SE, and in any case a clear decrease
    pred = np.sqrt(alphas[1] / alphas[0])
    ratio, se = _sd_ratio_jackknife(dev)
    assert abs(ratio - pred) < 3 * se and ratio > 0.5 * pred, (ratio, se, pred)
    # (2) no bias beyond the sampling noise at the larger alpha: |mean over data sets| within 3.5
    # SE (a max over <= 24 entries) plus the Euler bias bound 0.01 (halving eta moves it by 0.003)
    d2 = dev[1]
    mean, sem = d2.mean(0), d2.std(0, ddof=1) / np.sqrt(n_sets)
    assert np.all(np.abs(mean) < 3.5 * sem + 0.01), (mean, sem)


@pytest.mark.slow  # ~4 s (measured 3.6 s; its own compile): kept out of the fast budget
def test_finite_data_unconstrained_first_layer():
    # unconstrained first layer (same data, GD): runs, learns, and the norms drift away from 1,
    # while on the sphere they stay at 1; the training risk is below the population risk.
    m, d, eps, eta = GD_M, GD_D, GD_EPS, 4e-3
    t = np.array([0.1, 0.3, 0.6, 1.0])
    steps = jnp.asarray(np.round(t / eta).astype(np.int64))
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
    u0 = sgd_init(jax.random.key(5), a0, d)[1]
    o_free = finite_data_sgd(P123, jax.random.key(100), a0, d, 80 * d, eps, eta, steps, u0=u0, sphere=False)
    o_sph = finite_data_sgd(P123, jax.random.key(100), a0, d, 80 * d, eps, eta, steps, u0=u0)
    norms = np.asarray(o_free.norm)
    assert np.all(np.isfinite(np.asarray(o_free.risk)))
    assert np.max(np.abs(norms - 1)) > 1e-2, norms
    np.testing.assert_allclose(np.asarray(o_sph.norm), 1.0)
    Rfree = np.asarray(o_free.risk).sum(1)
    assert Rfree[-1] < 0.5 * Rfree[0], Rfree
    assert np.asarray(o_free.train_risk)[-1] < Rfree[-1]
