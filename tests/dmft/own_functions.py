"""User functions for the tests of user losses and schedules (importable: ``tests.dmft.own_functions``
is not a package path, so the tests add this folder to ``sys.path`` and use ``own_functions:NAME``)."""

import jax.numpy as jnp


def softplus_hinge(y, z):
    """A smooth hinge ``log(1 + exp(1 - y z))``, not built in."""
    return jnp.logaddexp(0.0, 1.0 - y * z)


def hinge(y, z):
    """The plain hinge ``max(0, 1 - y z)``: a kink at ``y z = 1`` (refused)."""
    return jnp.maximum(0.0, 1.0 - y * z)


def decay_eta(k):
    """``eta_k = 0.2 / (1 + k / 20)`` as a function of the step."""
    return 0.2 / (1.0 + k / 20.0)


def constant_eta(k):
    """``eta_k = 0.1`` for every step (a per-step array equal to the scalar default)."""
    return jnp.full(k.shape, 0.1)


def wrong_shape(k):
    return jnp.ones((3,))
