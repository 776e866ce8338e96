"""The DMFT time march at long horizons: one compiled body, history segments, mixed precision.

References are independent: dense NumPy algebra for the segmented products; the damped
fixed-point iteration of ``sgdlab.dmft.solver`` (weight side by one triangular solve, effective
process by time blocks, kernels by matrix products) for the march, whose kernels are its fixed
point up to rounding; independent solves (replicas) for the Monte-Carlo error that bounds the
difference between the float32 and float64 ``N``-sized work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.dmft import march as march_mod
from sgdlab.dmft import solver as D
from sgdlab.dmft.problem import GaussianMixture
from sgdlab.dmft.solver import Dynamics, SolverOptions, solve_dmft

PSGD_SQUARE = GaussianMixture(alpha=2.0, delta=0.5, loss="square", ridge=0.1)


def psgd(steps: int) -> Dynamics:
    """Persistent SGD, eta = 0.1, b = 0.3, tau = 2 (the benchmark's dynamics)."""
    return Dynamics(0.1, steps, 0.05, 0.7 * 0.1 / (0.3 * 2.0), 0.3)


@pytest.fixture
def small_segments(monkeypatch):
    """Segments of a few times, so that short horizons exercise several of them."""
    monkeypatch.setattr(march_mod, "MIN_SEGMENT_ROWS", 7)
    monkeypatch.setattr(march_mod, "MIN_MATRIX_ROWS", 13)


# ------------------------------------------------------------------------------------------------
# Segmented products against dense algebra
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, chunks", [(23, 4), (40, 3), (9, 1)])
def test_segmented_products_equal_dense_algebra_on_the_reached_part(monkeypatch, n, chunks):
    monkeypatch.setattr(march_mod, "MIN_SEGMENT_ROWS", 4)
    monkeypatch.setattr(march_mod, "MIN_MATRIX_ROWS", 6)
    hist, seg = march_mod.Segments.pair(n, chunks)
    assert seg.size == hist.size >= n and seg.rows % hist.rows == 0
    rng = np.random.default_rng(n)
    size = seg.size
    A = np.tril(rng.normal(size=(size, size))) + 3 * np.eye(size)
    S = rng.normal(size=(size, size))
    S = np.tril(S + S.T)
    segs, sym = seg.tri(jnp.asarray(A)), seg.tri(jnp.asarray(S))
    for k in sorted(k for k in {0, 1, seg.rows - 1, seg.rows, n // 2, n - 2} if 0 <= k < n):
        up = k // seg.rows
        reach = (up + 1) * seg.rows  # rows (and columns) of the segments <= up
        v = np.where(np.arange(size) <= k, rng.normal(size=size), 0.0)
        Ar = np.where(np.arange(size)[:, None] < reach, A, 0.0)
        np.testing.assert_allclose(seg.vecmat(jnp.asarray(v), segs, up), v @ Ar, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(seg.matvec(segs, jnp.asarray(v), up), Ar @ v, rtol=1e-12, atol=1e-12)
        Sf = np.tril(S) + np.tril(S, -1).T
        full = np.where((np.arange(size)[:, None] < reach) & (np.arange(size)[None, :] < reach), Sf, 0.0)
        np.testing.assert_allclose(seg.sym_matvec(sym, jnp.asarray(np.diag(S)), jnp.asarray(v), up), full @ v, rtol=1e-12, atol=1e-11)
        c = np.where(np.arange(size) < k, rng.normal(size=size), 0.0)
        x = np.asarray(seg.solve(segs, seg.diagonal(segs), jnp.asarray(c), up))
        np.testing.assert_allclose(x[:reach], np.linalg.solve(A[:reach, :reach], c[:reach]), rtol=1e-10, atol=1e-12)
        assert np.all(x[reach:] == 0.0)
        changed = seg.set_row(segs, k, jnp.asarray(-A[k]))
        np.testing.assert_array_equal(seg.dense(changed), np.where(np.arange(size)[:, None] == k, -A, A))
    hs = hist.split(jnp.asarray(rng.normal(size=(n, 5))))
    assert len(hs) == hist.count and all(h.shape == (hist.rows, 5) for h in hs)


def test_the_march_is_one_compiled_loop_whatever_the_number_of_segments(small_segments):
    """One scan over time: a single while loop in the lowered program for 1, 3 or 8 segments."""
    problem, dynamics = PSGD_SQUARE, psgd(60)
    skeleton, _, params = D._split(problem, dynamics)
    noise = D._draw(jax.random.key(0), params, skeleton=skeleton, n_steps=60, samples=200, probe=True)
    for chunks in (1, 3, 8):
        text = D._march_solve.lower(noise, params, 1e-10, skeleton=skeleton, n_steps=60, chunks=chunks, momentum=False).as_text()
        assert text.count("stablehlo.while") == 1


# ------------------------------------------------------------------------------------------------
# The segmented march is the fixed point of the iteration (an independent algorithm)
# ------------------------------------------------------------------------------------------------

GENERAL = Dynamics(np.linspace(0.05, 0.15, 50), 50, np.full(50, 0.1), np.full(50, 0.15), 0.4, 0.01, 0.5, 0.5)


@pytest.mark.parametrize("dynamics, chunks", [(psgd(50), 8), (psgd(50), 1), (GENERAL, 8)], ids=["plain", "plain-1-segment", "schedule-nesterov-langevin"])
def test_segmented_march_is_the_fixed_point_of_the_iteration(small_segments, dynamics, chunks):
    """The kernels of the march (float64) reproduce themselves through one undamped iteration to
    rounding: the residual ``max |K_hat - K| / max |K_hat|`` is ~1e-13, an error in the march
    (a skipped segment, a shifted row) gives O(1)."""
    problem = GaussianMixture(loss="logistic", ridge=0.05)
    dynamics = Dynamics(*dynamics).validate()
    momentum = dynamics.momentum
    skeleton, n_steps, params = D._split(problem, dynamics)
    noise = D._draw(jax.random.key(5), params, skeleton=skeleton, n_steps=n_steps, samples=400, probe=True)
    kernels, order, _, _, ok, _ = D._march_solve(noise, params, 1e-10, skeleton=skeleton, n_steps=n_steps, chunks=chunks, momentum=momentum)
    assert bool(ok)
    step = D._iteration(kernels, noise, params, 0.0, 1e-10, skeleton=skeleton, n_steps=n_steps, response="probe", block=7, momentum=momentum)
    assert float(step.residual) < 1e-10
    for a, b in zip(step.order, order):  # the order parameters too
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Mixed precision against float64, within the Monte-Carlo error
# ------------------------------------------------------------------------------------------------

T_MIXED, N_MIXED, REPLICAS = 120, 2000, 4


def replica_solves(precision: str) -> dict:
    """``REPLICAS`` independent solves (replicas 0..R-1 of seed 0): ``{name: (R, T+1)}``."""
    out = {"m": [], "q": [], "train_loss": []}
    for r in range(REPLICAS):
        res = solve_dmft(PSGD_SQUARE, psgd(T_MIXED), SolverOptions(samples=N_MIXED, replica=r, precision=precision))
        assert res.converged
        for name in out:
            out[name].append(getattr(res, name))
    return {name: np.asarray(v) for name, v in out.items()}


def test_mixed_precision_agrees_with_float64_within_the_monte_carlo_error(small_segments):
    """Persistent SGD, square loss, T = 120 (several segments): the mean over four replicas of the
    mixed solves against that of the float64 solves, at every time, within three standard errors
    of the difference (from the replicas' spread). Times where the spread is zero (t = 0 for
    ``m, q``: exact) must agree to rounding. Measured: float32 is off by at most 1e-5 standard
    errors (paired, the common random numbers rounded: 3e-8 absolute). A wrong variant fails: the
    float32 probes lost after the draw (``Q`` without its off-diagonal) is off by 20 standard
    errors. (bfloat16 / float16 for the ``N``-sized work stay within 0.6 / 0.07 standard errors at
    this ``N``: rounding of the trajectories is far below the Monte-Carlo error.)"""
    ref, mixed = replica_solves("float64"), replica_solves("mixed")
    for name in ref:
        diff = mixed[name].mean(0) - ref[name].mean(0)
        se = np.sqrt((ref[name].var(0, ddof=1) + mixed[name].var(0, ddof=1)) / REPLICAS)
        exact = se == 0.0
        assert np.all(np.abs(diff[exact]) < 1e-12), name
        worst = np.max(np.abs(diff[~exact]) / se[~exact])
        assert worst < 3.0, f"{name}: |mixed - float64| reaches {worst:.2f} standard errors"


def test_precision_option_is_validated_and_auto_follows_the_tolerance():
    with pytest.raises(ValueError, match="precision='half'; allowed: auto, mixed, float64"):
        SolverOptions(precision="half").validate()
    with pytest.raises(ValueError, match="tolerance=1e-08 must be >= 1e-05 with precision='mixed'"):
        SolverOptions(precision="mixed", tolerance=1e-8).validate()
    assert SolverOptions().resolved_precision == "mixed"
    assert SolverOptions(tolerance=1e-8).resolved_precision == "float64"
    assert SolverOptions(precision="float64").resolved_precision == "float64"


def test_auto_precision_is_float64_when_c_is_nearly_singular():
    """Converging GD (square loss) drives the variance of w_k given its past to ~1e-10 of its own:
    float32 rounding of C breaks its factorisation. ``auto`` takes float64 for noiseless full-batch
    GD from the start, and marches again in float64 when a mixed march finds C nearly singular
    (here: GD with a tiny Langevin temperature, which the a-priori rule leaves to mixed); persistent
    SGD keeps the mixed march (smallest innovation ~2e-4)."""
    gd_problem, gd = GaussianMixture(alpha=2.0, delta=0.5, ridge=0.5, loss="square"), Dynamics(eta=0.25, n_steps=120)
    auto = solve_dmft(gd_problem, gd, SolverOptions(samples=600))
    exact = solve_dmft(gd_problem, gd, SolverOptions(samples=600, precision="float64"))
    assert auto.options.precision == "float64" and auto.converged
    np.testing.assert_array_equal(auto.C, exact.C)
    with pytest.raises(D.DMFTError, match="precision='float64'"):
        solve_dmft(gd_problem, gd, SolverOptions(samples=600, precision="mixed"))
    warm = gd._replace(temperature=1e-12)  # still (nearly) singular, not caught by the a-priori rule
    fallback = solve_dmft(gd_problem, warm, SolverOptions(samples=600))
    assert fallback.options.precision == "float64" and fallback.converged
    np.testing.assert_allclose(fallback.C, solve_dmft(gd_problem, warm, SolverOptions(samples=600, precision="float64")).C, rtol=0, atol=0)
    assert solve_dmft(PSGD_SQUARE, psgd(40), SolverOptions(samples=600)).options.precision == "mixed"
    with pytest.warns(D.DMFTConvergenceWarning):
        zero = solve_dmft(PSGD_SQUARE, psgd(40), SolverOptions(samples=600, start="zero", iterations=2))
    assert zero.options.precision == "float64"
