"""host_input: arrays pass as they are, anything else becomes NumPy (never an eager JAX program)."""

import jax
import jax.numpy as jnp
import numpy as np

import sgdlab  # noqa: F401  (float64 mode, as every wing runs)
from sgdlab.core.inputs import host_input


def test_arrays_pass_and_the_rest_becomes_numpy():
    a = jnp.arange(3.0)
    assert host_input(a) is a and host_input(a, np.float64) is a
    n = np.arange(3.0)
    assert host_input(n) is n and host_input(n, np.float64) is n
    out = host_input([1, 2, 3], np.float64)
    assert type(out) is np.ndarray and out.dtype == np.float64 and out.tolist() == [1.0, 2.0, 3.0]
    assert type(host_input(2.5)) is np.ndarray
    # another dtype is converted (to NumPy: no program), values unchanged
    f32 = jnp.asarray([0.5, 1.5], jnp.float32)
    conv = host_input(f32, np.float64)
    assert type(conv) is np.ndarray and conv.dtype == np.float64 and conv.tolist() == [0.5, 1.5]


def test_tracers_pass_through_inside_a_program():
    @jax.jit
    def f(x):
        y = host_input(x, np.float64)
        assert y is x  # a tracer of the asked dtype is not converted
        return 2 * y

    assert f(np.ones(2)).tolist() == [2.0, 2.0]
