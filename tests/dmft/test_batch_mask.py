"""Statistics of the batch-mask chains, with tolerances from the number of samples."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab.dmft.batch_mask import init_mask, mask_chain, step_mask


def run_chain(chain, n, steps, seed=0):
    """Masks s(0..steps) of n independent chains, shape (steps+1, n), as 0/1 floats."""
    key = jax.random.key(seed)
    s0 = init_mask(jax.random.fold_in(key, 0), chain, n)

    def body(s, k):
        s = step_mask(jax.random.fold_in(key, k), chain, s)
        return s, s

    _, path = jax.lax.scan(body, s0, jnp.arange(1, steps + 1))
    return np.concatenate([np.asarray(s0)[None], np.asarray(path)]).astype(np.float64)


@pytest.mark.parametrize(
    "algorithm,eta,b,tau",
    [("persistent_sgd", 0.1, 0.3, 2.0), ("persistent_sgd", 0.05, 0.5, 0.2), ("sgd", 0.1, 0.2, None), ("sgf", 0.1, 0.3, 1.0)],
)
def test_stationary_fraction_and_autocorrelation(algorithm, eta, b, tau):
    n, steps = 100_000, 30
    chain = mask_chain(algorithm, eta, b, tau)
    s = run_chain(chain, n, steps)
    # stationary fraction b at every time: binomial standard error sqrt(b(1-b)/n)
    frac = s.mean(axis=1)
    se = math.sqrt(b * (1 - b) / n)
    assert np.all(np.abs(frac - b) < 5 * se), (frac, b)
    # lag-k autocovariance b(1-b) r^k with r = 1 - eta/(b tau) (persistent) or the chain's factor
    r = {"persistent_sgd": lambda: 1 - eta / (b * tau), "sgd": lambda: 0.0, "sgf": lambda: math.exp(-eta / (b * tau))}[algorithm]()
    for lag in (1, 2, 5, 10, 20):
        prod = (s[0] - b) * (s[lag] - b)
        expected = b * (1 - b) * r**lag
        se = prod.std() / math.sqrt(n)
        assert abs(prod.mean() - expected) < 5 * se + 1e-12, (lag, prod.mean(), expected, se)


def test_persistent_with_tau_eta_over_b_is_iid_sgd():
    eta, b = 0.1, 0.25
    p = mask_chain("persistent_sgd", eta, b, eta / b)
    q = mask_chain("sgd", eta, b)
    assert p.p_on == pytest.approx(q.p_on, rel=1e-14) and p.p_off == pytest.approx(q.p_off, rel=1e-14)
    assert p.lag_factor == pytest.approx(0.0, abs=1e-14)


def test_full_batch_is_gd():
    for alg in ("persistent_sgd", "sgd", "sgf"):
        chain = mask_chain(alg, 0.1, 1.0, 1.0)
        s = run_chain(chain, 100, 5)
        assert s.min() == 1.0


def test_sgf_is_limit_of_persistent_sgd():
    """For small eta the telegraph transition and the persistent one agree to O(eta^2)."""
    b, tau = 0.3, 1.0
    for eta in (1e-2, 1e-3):
        p, q = mask_chain("persistent_sgd", eta, b, tau), mask_chain("sgf", eta, b, tau)
        assert abs(p.p_on - q.p_on) < eta**2 / (b * tau) ** 2
        assert abs(p.p_off - q.p_off) < eta**2 / (b * tau) ** 2


@pytest.mark.parametrize(
    "args,match",
    [
        (("persistent_sgd", 0.1, 0.0, 1.0), "batch_fraction"),
        (("persistent_sgd", 0.1, 1.5, 1.0), "batch_fraction"),
        (("persistent_sgd", 0.5, 0.5, 0.2), "persistence_time"),
        (("persistent_sgd", 0.1, 0.1, 0.5), r"\(1-b\) eta"),
    ],
)
def test_bad_chain_parameters(args, match):
    with pytest.raises(ValueError, match=match):
        mask_chain(*args)
