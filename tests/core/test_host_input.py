"""host_input and device_input: arrays pass as they are, anything else becomes NumPy (host_input)
or a device copy of it (device_input); neither runs a JAX program."""

import logging

import jax
import jax.numpy as jnp
import numpy as np

import sgdlab  # noqa: F401  (float64 mode, as every wing runs)
from sgdlab.core.inputs import device_input, host_input


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


def test_device_input_copies_without_a_program(caplog):
    a = jnp.arange(3.0)
    assert device_input(a) is a and device_input(a, np.float64) is a
    values = np.arange(105.0).reshape(5, 1, 3, 7) / 13  # a shape no other test stages
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):
        caplog.clear()
        out = device_input(values)
        lst = device_input([[1, 2], [3, 4]], np.float64)
        assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
        # the check can fail: jnp.asarray of the same values stages them by a program
        jnp.asarray(values + 1)
        assert [r for r in caplog.records if "Compiling" in r.getMessage()]
    assert isinstance(out, jax.Array) and np.array_equal(np.asarray(out), values)
    assert isinstance(lst, jax.Array) and lst.dtype == np.float64 and lst.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    # traced indices work on it (they would not on a NumPy array)
    assert float(jax.jit(lambda i: out[i, 0, 0, 0])(1)) == values[1, 0, 0, 0]
