"""nan_checks: Equinox's runtime checks traced without a host callback (a program JAX can write
to its persistent cache), a failed check giving NaN, and a user's own checks left as they were."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.core.runtime_checks import nan_checks
from sgdlab.two_layer import flow as tl
from sgdlab.two_layer.problem import SingleIndex

P12 = SingleIndex(phi=(0, 1, 1), sigma=(0, 1, 1))


def _has_callback(lowered) -> bool:
    return "callback" in lowered.as_text()


def _solve(ts, checks_as_nan: bool):
    term = diffrax.ODETerm(lambda t, y, args: -y)
    if checks_as_nan:
        with nan_checks() as active:
            assert active
            return diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, ts[-1], ts[-1] * 1e-3, jnp.ones(3),
                                       saveat=diffrax.SaveAt(ts=ts), throw=False).ys
    return diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, ts[-1], ts[-1] * 1e-3, jnp.ones(3),
                               saveat=diffrax.SaveAt(ts=ts), throw=False).ys


def test_a_diffrax_solve_with_traced_times_has_no_callback_under_nan_checks():
    ts = np.linspace(0.1, 1.0, 5)
    assert _has_callback(jax.jit(lambda t: _solve(t, False)).lower(ts))  # the check can fail
    assert not _has_callback(jax.jit(lambda t: _solve(t, True)).lower(ts))
    good = jax.jit(lambda t: _solve(t, True))(ts)
    np.testing.assert_allclose(np.asarray(good)[:, 0], np.exp(-ts), rtol=1e-5)
    # decreasing save times fail diffrax's check: the times become NaN and the solution
    # non-finite (what sgdlab's non-finite checks stop on), instead of an exception
    assert not np.isfinite(np.asarray(jax.jit(lambda t: _solve(t, True))(ts[::-1].copy()))).all()


def test_a_users_own_checks_keep_raising():
    with nan_checks():
        inside = jax.jit(lambda x: eqx.error_if(x, x < 0, "negative"))(np.float64(-1.0))
    assert np.isnan(float(inside))  # traced inside the block: NaN mode
    with pytest.raises(Exception, match="negative"):  # a check traced outside it raises, as Equinox's default
        jax.block_until_ready(jax.jit(lambda x: eqx.error_if(x + 0.0, x < 0, "negative"))(np.float64(-1.0)))


def test_the_two_layer_solver_program_is_cacheable():
    """ode_kernel (the reduced dynamics and, vmapped, the finite-d flow) lowers without a callback."""
    from sgdlab.two_layer.reduced import _reduced_observables, reduced_vector_field

    m = 4
    ts, _ = tl.padded_times(np.linspace(0.5, 2.0, 3))
    lowered = tl.ode_kernel.lower(reduced_vector_field, _reduced_observables, P12, (np.ones(m), np.full(m, 0.01)),
                                  np.float64(0.01), ts, True, 1e-8, 1e-12, "tsit5", 1000)
    assert not _has_callback(lowered)


def test_the_committee_program_is_cacheable_and_its_failure_still_raises():
    from sgdlab.two_layer import committee_ode as co

    K = 2
    params = co.CommitteeParams(jnp.eye(K), jnp.ones(K), eta=0.5)
    state = co.CommitteeState(0.2 * jnp.eye(K) + 0.05, jnp.full((K, K), 1e-3) + 0.01 * jnp.eye(K), jnp.ones(K))
    alphas = np.full(co.SAVE_CHUNK, 3.0)
    lowered = co._committee_chunk.lower(state, params, np.float64(0.0), alphas, False, np.float64(1e-9), np.float64(1e-11))
    assert not _has_callback(lowered)
    with pytest.raises(RuntimeError, match=r"stopped before alpha = 100 .*max_steps = 5"):
        co.solve_committee(state, params, np.logspace(-2, 2, 9), second_order=False, max_steps=5)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=r"max_steps=.* must be an integer >= 1"):
            co.solve_committee(state, params, np.logspace(-2, 2, 9), max_steps=bad)
