"""The compiled key helpers give the eager calls' keys, bit for bit."""

import jax
import numpy as np

import sgdlab  # noqa: F401  (float64 mode, as every wing runs)
from sgdlab.core.keys import fold_in, root_key, run_keys, seed_keys


def _bits(key):
    return np.asarray(jax.random.key_data(key))


def test_keys_are_the_eager_keys():
    for seed in (0, 7, 2**31 - 1, 2**31, 2**32 - 1, 2**40):
        assert np.array_equal(_bits(root_key(seed)), _bits(jax.random.key(seed))), seed
        for data in (0, 3, 1000, 2**31 - 1):
            eager = jax.random.fold_in(jax.random.key(seed), data)
            assert np.array_equal(_bits(fold_in(root_key(seed), data)), _bits(eager)), (seed, data)
    seeds = [0, 5, 2**32 - 1]
    assert np.array_equal(_bits(seed_keys(seeds)), np.stack([_bits(jax.random.key(s)) for s in seeds]))


def test_run_keys_fold_the_salt_then_the_run():
    for seed, salt, n in ((0, 0, 1), (7, 1_000_003, 5), (2**31 + 5, 3, 3)):
        base = jax.random.fold_in(jax.random.key(seed), salt)
        eager = np.stack([_bits(jax.random.fold_in(base, r)) for r in range(n)])
        assert np.array_equal(_bits(run_keys(seed, n, salt)), eager), (seed, salt, n)
