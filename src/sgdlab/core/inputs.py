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
