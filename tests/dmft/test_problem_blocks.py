"""The Gaussian-mixture data matrix generated in row blocks: the same numbers as the whole-matrix
draw, bit for bit, and a peak memory of about the data itself (XLA's compiled memory plan)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.dmft import problem as gm
from sgdlab.dmft import simulation as S


def whole_matrix_inputs(key, problem, c, v):
    """The data as it was drawn before the row blocks: the whole Gaussian matrix at once."""
    d = v.shape[0]
    z = gm.standard_normal(key, (c.shape[0], d), v.dtype)
    return (c[:, None] * v[None, :]) / jnp.sqrt(d).astype(v.dtype) + jnp.sqrt(problem.delta).astype(v.dtype) * z


@pytest.mark.parametrize("n,d,row0,rows", [(37, 11, 5, 9), (64, 300, 17, 30)])
def test_normal_rows_are_the_rows_of_the_whole_draw(n, d, row0, rows):
    key = jax.random.key(11)
    whole = np.asarray(jax.random.normal(key, (n, d), jnp.float32))
    block = np.asarray(jax.jit(gm.normal_rows, static_argnums=(2, 3, 4))(key, row0, rows, n, d))
    np.testing.assert_array_equal(block, whole[row0 : row0 + rows])


def test_the_64_bit_counter_path_agrees_with_the_32_bit_one():
    """``n d >= 2^32`` switches the counters to 64 bits; an entry depends on its flat index only,
    so the first rows of a huge matrix are those of a small one."""
    key = jax.random.key(3)
    d, huge_n = 1000, 2**32 // 1000 + 10
    block = np.asarray(gm.normal_rows(key, 2, 5, huge_n, d))
    np.testing.assert_array_equal(block, np.asarray(jax.random.normal(key, (7, d), jnp.float32))[2:])


def _batched_train_x(sample_inputs, problem, d, dtype, seeds, test_samples=0):
    """The simulator's own jitted, vmapped ``init`` with ``sample_inputs`` as the data generator."""
    saved = gm.sample_inputs
    gm.sample_inputs = sample_inputs
    try:
        spec, params = S.simulation_setup(problem, "persistent_sgd", d, 0.1, 0.3, 2.0, save_every=2, dtype=dtype,
                                          test_samples=test_samples)
        init = jax.jit(jax.vmap(lambda p, k: S.init(spec, p, k)))  # not the lru-cached batched(): no stale program
        data, state = init(S.tile_params(params, seeds), S.seed_keys(range(seeds)))
        return np.asarray(data.train.x), np.asarray(data.x_test), np.asarray(state.h)
    finally:
        gm.sample_inputs = saved


@pytest.mark.parametrize(
    "problem,d,dtype",
    [
        (gm.GaussianMixture(alpha=1.3, delta=0.37), 120, jnp.float32),  # n = 156: 15 blocks of 10 rows and one of 6
        pytest.param(gm.GaussianMixture(clusters=3, rho=0.6, m0=0.3), 33, jnp.float64, marks=pytest.mark.slow),  # c in {-1, 0, 1}
    ],
)
def test_simulator_data_is_bit_for_bit_that_of_the_whole_matrix_draw(problem, d, dtype):
    """The blocks change the memory, not one bit of a run: the simulator's data (training set,
    test set, pre-activations) equal those of the whole-matrix program."""
    n = problem.n_samples(d)
    assert n % gm.block_rows(n, d) != 0  # the partial last block is exercised too
    new = _batched_train_x(gm.sample_inputs, problem, d, dtype, seeds=2, test_samples=13)
    old = _batched_train_x(whole_matrix_inputs, problem, d, dtype, seeds=2, test_samples=13)
    for a, b in zip(new, old):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)])
def test_peak_memory_of_the_data_is_within_1_2_of_the_data(dtype):
    """XLA's memory plan of the simulator's init (outputs + temporaries) against the data size:
    the whole-matrix draw planned ~2.5-4x (random bits and Gaussians at full size)."""
    problem, d, seeds = gm.GaussianMixture(), 1000, 2
    spec, params = S.simulation_setup(problem, "persistent_sgd", d, 0.1, 0.3, 2.0, save_every=2, dtype=dtype)
    init = jax.jit(jax.vmap(lambda p, k: S.init(spec, p, k)))
    plan = init.lower(S.tile_params(params, seeds), S.seed_keys(range(seeds))).compile().memory_analysis()
    if plan is None:
        pytest.skip("this backend gives no memory plan")
    data = seeds * spec.n * d * jnp.dtype(dtype).itemsize
    assert (plan.temp_size_in_bytes + plan.output_size_in_bytes) / data <= 1.2


@pytest.mark.parametrize("width", [1, 3])
def test_memory_of_the_cpu_layout_is_the_data_plus_one_entry_at_most(width):
    """Entries run one after the other (``batched(spec, "map")``): XLA copies the entry it works
    on when a call holds several, so a call of ``W`` entries plans at most the data plus one
    entry plus the generation's 0.2; a lone entry, 1.2x the data as above."""
    problem, d = gm.GaussianMixture(), 1000
    spec, params = S.simulation_setup(problem, "persistent_sgd", d, 0.1, 0.3, 2.0, save_every=2, dtype=jnp.float32)
    init, _, advance = S.batched(spec, "map")
    p, keys = S.tile_params(params, width), S.seed_keys(range(width))
    plan = init.lower(p, keys).compile().memory_analysis()
    if plan is None:
        pytest.skip("this backend gives no memory plan")
    entry = spec.n * d * 4
    bound = 1.2 + (1 / width if width > 1 else 0)
    assert (plan.temp_size_in_bytes + plan.output_size_in_bytes) / (width * entry) <= bound
    data, state = init(p, keys)
    plan = advance.lower(p, data, keys, state, 3).compile().memory_analysis()
    assert plan.temp_size_in_bytes / (width * entry) <= bound - 1
