"""Inputs of compiled programs without an eager program.

``jnp.asarray(x)`` outside a jitted function is a program of its own: JAX traces, lowers and
compiles it (or finds it in the compilation cache) at its first use, tens of milliseconds of a
user's first result. A jitted function takes NumPy arrays (and Python lists made NumPy) just as
well, so a value that enters a program is passed as NumPy unless it already is an array.
"""

from __future__ import annotations

import jax
import numpy as np


def host_input(x, dtype=None):
    """``x`` as a jitted function takes it without an eager program.

    A JAX array (or tracer) or NumPy array is returned as it is when ``dtype`` is ``None`` or its
    dtype; anything else (a list, a scalar, an array of another dtype) becomes
    ``np.asarray(x, dtype)``. Shapes and values are unchanged.
    """
    if isinstance(x, (np.ndarray, jax.Array)) and (dtype is None or x.dtype == np.dtype(dtype)):
        return x
    return np.asarray(x, dtype)


def device_input(x, dtype=None) -> jax.Array:
    """``x`` as a JAX array, copied to the default device by ``jax.device_put`` (no program).

    For arrays that programs index with traced indices (a NumPy array cannot be), e.g. a
    problem's samples or a model's data. A JAX array (or tracer) of ``dtype`` (or of any dtype
    when ``dtype`` is ``None``) is returned as it is; anything else becomes
    ``np.asarray(x, dtype)`` on the device.
    """
    if isinstance(x, jax.Array) and (dtype is None or x.dtype == np.dtype(dtype)):
        return x
    return jax.device_put(np.asarray(x, dtype))
