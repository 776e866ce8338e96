"""The ODE solvers of the two-layer wing: the ``solver = "auto"`` policy (explicit Tsit5 unless the
problem is stiff, then implicit Kvaerno5) gives the implicit solver's half-learning times over the
eps range of the docs, the grids are padded so that neighbouring sizes share one compiled solver,
and the committee ODE compiles once for any number of save points."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.two_layer import committee_ode as co
from sgdlab.two_layer import flow as tl
from sgdlab.two_layer import reduced as rd
from sgdlab.two_layer.analysis import half_learning_times
from sgdlab.two_layer.problem import SingleIndex

P123 = SingleIndex(phi=(0, 1, 1, 1), sigma=(0, 1, 1, 1))
#: m, grid size and implicit budget of test_staircase_levels_and_eps_exponents: the compiled solvers are shared
M, N_T, MAX_STEPS = 32, 300, 30_000


def _t_half(problem, sol, t):
    return half_learning_times(t, np.asarray(sol.obs.M), np.array(problem.phi), np.array(problem.sigma))


def _grid(eps, n=N_T, t_max=None):
    return np.logspace(np.log10(eps) - 1, np.log10(t_max or 2.5 * eps**0.25), n)


def test_auto_policy_switches_only_when_the_explicit_budget_runs_out():
    calls = []

    def run(ok_if):
        def f(name, steps):
            calls.append((name, steps))
            return ("obs", steps, np.array([name in ok_if, True]))
        return f

    sol = tl.solve_ode(run({"tsit5"}), "auto", max_steps=500, budget=7000)
    assert sol.solver == "tsit5" and calls == [("tsit5", 7000)]
    calls.clear()
    sol = tl.solve_ode(run({"kvaerno5"}), "auto", max_steps=500, budget=7000)  # one seed failed: stiff
    assert sol.solver == "kvaerno5" and calls == [("tsit5", 7000), ("kvaerno5", 500)]
    calls.clear()
    sol = tl.solve_ode(run(set()), "auto", max_steps=500, budget=7000, implicit_ok=False)  # no implicit solver for this size
    assert sol.solver == "tsit5" and calls == [("tsit5", 500)] and not sol.success.all()
    calls.clear()
    for name in ("tsit5", "kvaerno5"):
        assert tl.solve_ode(run(set()), name, max_steps=500, budget=7000).solver == name
    assert calls == [("tsit5", 500), ("kvaerno5", 500)]
    with pytest.raises(ValueError, match="unknown solver 'euler'"):
        tl.solve_ode(run(set()), "euler", 500, 7000)
    # "auto" decides on computed values: under a transformation it says what to do instead
    with pytest.raises(ValueError, match="solver='auto'.*outside jit / vmap"):
        jax.jit(lambda x: tl.solve_ode(lambda name, steps: (x, steps, x > 0), "auto", 500, 7000).obs)(1.0)
    # the budget grows with the cost of an implicit step (a dense LU of the 2m state): ~m^2 at large m
    budgets = [tl.explicit_budget(2 * m, rd.reduced_field_flops(m, 3)) for m in (8, 32, 128, 400)]
    assert budgets == sorted(budgets) and budgets[-1] > 50 * budgets[1]


def test_auto_gives_the_implicit_half_learning_times():
    """P123 over eps = 1e-3 ... 1e-8 (the docs' scans), m = 32: "auto" stays explicit and its t_l
    equal Kvaerno5's; run to t = 1 at eps = 1e-8 the late phase is stiff (Tsit5 needs 5.1e5 steps,
    Kvaerno5 2.6e3: measured) and "auto" switches to the implicit solver."""
    a0 = jnp.asarray(tl.initial_second_layer(M, 1.0))
    for eps in (1e-3, 1e-5, 1e-7, 1e-8):
        t = _grid(eps)
        auto = rd.solve_reduced(P123, a0, jnp.zeros(M), eps, jnp.asarray(t), max_steps=MAX_STEPS)
        implicit = rd.solve_reduced(P123, a0, jnp.zeros(M), eps, jnp.asarray(t), max_steps=MAX_STEPS, solver="kvaerno5")
        assert bool(auto.success) and bool(implicit.success) and auto.solver == "tsit5", (eps, auto.solver)
        th_a, th_i = _t_half(P123, auto, t), _t_half(P123, implicit, t)
        assert np.isfinite(th_a[1:]).all(), (eps, th_a)
        # both meet rtol = 1e-8 (the default): t_l agree far below the grid spacing (1.4% here)
        np.testing.assert_allclose(th_a, th_i, rtol=1e-5, err_msg=f"eps = {eps}")
    # a grid of another size in the same bucket (257..512 times) reuses the compiled solver
    before = tl.ode_kernel._cache_size()
    rd.solve_reduced(P123, a0, jnp.zeros(M), 1e-5, jnp.asarray(_grid(1e-5, 260)), max_steps=MAX_STEPS)
    assert tl.ode_kernel._cache_size() == before
    # stiff: to t = 1 at eps = 1e-8 the explicit budget (50 000 steps at m = 32) runs out
    t = _grid(1e-8, t_max=1.0)
    auto = rd.solve_reduced(P123, a0, jnp.zeros(M), 1e-8, jnp.asarray(t), max_steps=MAX_STEPS)
    assert auto.solver == "kvaerno5" and bool(auto.success)
    assert tl.explicit_budget(2 * M, rd.reduced_field_flops(M, 3)) < 510_000
    assert np.isfinite(_t_half(P123, auto, t)[1:]).all()


@pytest.mark.slow  # ~3-6 min on 2 shared cores: 22 solves, Kvaerno5 at m = 64
@pytest.mark.parametrize("problem", [P123, SingleIndex(phi=(0, 1, 1, 1), sigma=(0.39894228, 0.5, 0.28209479, 0))], ids=["P123", "relu"])
def test_auto_gives_the_implicit_half_learning_times_full_range(problem):
    """eps = 1e-3 ... 1e-12 at m = 64 for P123 and for the relu activation, whose sigma_0 != 0 makes
    the second layer stiff from t = 0 (rate sigma_0^2 / eps): there "auto" must switch at small eps."""
    m = 64
    a0 = jnp.asarray(tl.initial_second_layer(m, 1.0))
    chosen = {}
    for eps in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-12):
        t = _grid(eps, 200, t_max=1.0 if problem is not P123 else None)
        auto = rd.solve_reduced(problem, a0, jnp.zeros(m), eps, jnp.asarray(t), max_steps=200_000)
        implicit = rd.solve_reduced(problem, a0, jnp.zeros(m), eps, jnp.asarray(t), max_steps=200_000, solver="kvaerno5")
        assert bool(auto.success) and bool(implicit.success), eps
        chosen[eps] = auto.solver
        np.testing.assert_allclose(_t_half(problem, auto, t), _t_half(problem, implicit, t), rtol=1e-5, err_msg=f"eps = {eps}")
    if problem is P123:
        assert set(chosen.values()) == {"tsit5"}, chosen
    else:
        assert chosen[1e-3] == "tsit5" and chosen[1e-12] == "kvaerno5", chosen


K_C = 2
PARAMS = co.CommitteeParams(jnp.eye(K_C), jnp.ones(K_C), eta=0.5)
ST0 = co.CommitteeState(0.2 * jnp.eye(K_C) + 0.05, jnp.full((K_C, K_C), 1e-3) + 0.01 * jnp.eye(K_C), jnp.ones(K_C))
N_LONG = 2 * co.SAVE_CHUNK + 3  # three chunks


def test_committee_ode_compiles_once_for_any_number_of_save_points():
    before = co._committee_chunk._cache_size()
    out = {}
    for n in (7, 50, N_LONG):
        alphas = np.logspace(-2, 2.5, n)
        ys, eg = co.solve_committee(ST0, PARAMS, alphas, second_order=False)
        assert ys.Q.shape == (n, K_C, K_C) and eg.shape == (n,) and np.isfinite(np.asarray(eg)).all()
        out[n] = np.asarray(eg)
        if n == 7:
            first = co._committee_chunk._cache_size()
    assert first - before <= 1 and co._committee_chunk._cache_size() == first  # one program for every n
    # the same end point through one chunk and through three (restarts within the tolerance; the
    # escape from the plateau before alpha = 10^2.5 amplifies the local errors: 1e-6 relative)
    np.testing.assert_allclose(out[7][-1], out[N_LONG][-1], rtol=1e-6)
    np.testing.assert_allclose(out[50][-1], out[N_LONG][-1], rtol=1e-6)


@pytest.mark.slow  # three more compilations of the committee ODE (~20-60 s on 2 shared cores)
def test_chunked_committee_ode_is_as_accurate_as_one_solve():
    """The chunked solve and one direct diffrax solve on the same grid, both against a reference at a
    1000x tighter tolerance: the escape from the plateau amplifies the local errors, so the two
    rtol = 1e-9 solves differ by up to ~2e-7 relative there (measured); chunking must not be worse."""
    alphas = np.logspace(-2, 2.5, N_LONG)
    eg = np.asarray(co.solve_committee(ST0, PARAMS, alphas, second_order=False)[1])

    @jax.jit
    def direct(rtol, atol):
        term = diffrax.ODETerm(lambda t, y, args: co.committee_vector_field(y, PARAMS, False))
        sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), 0.0, alphas[-1], None, ST0, saveat=diffrax.SaveAt(ts=jnp.asarray(alphas)),
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=1_000_000)
        return jax.vmap(lambda Q, R, v: co.generalisation_error(co.CommitteeState(Q, R, v), PARAMS))(*sol.ys)

    ref, one = np.asarray(direct(1e-12, 1e-14)), np.asarray(direct(1e-9, 1e-11))
    err_chunked, err_one = np.abs(eg - ref).max(), np.abs(one - ref).max()
    assert err_chunked < 3 * err_one + 1e-11, (err_chunked, err_one)
