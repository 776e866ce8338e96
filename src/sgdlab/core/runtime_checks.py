"""Runtime checks of Equinox (and so of diffrax, lineax, optimistix) that keep a program cacheable.

Equinox's ``error_if`` raises at runtime through a host callback by default, and JAX does not
write a program with a host callback to its persistent compilation cache. diffrax checks its
``SaveAt(ts)`` and ``dt0`` that way whenever they are traced, so every diffrax solve of sgdlab was
compiled again in every process (`sgdlab timescales`: 5 of its ~20 seconds, cold or warm).

:func:`nan_checks` traces such checks in Equinox's ``"nan"`` mode instead: a failed check
fills the checked values with NaN, with no callback, and sgdlab's non-finite checks then stop the
run naming the quantity and the time. It is entered inside the body of a jitted function (so it
is active only while that body is traced), and it does not touch Equinox's shared compiled
check: the checks traced under it are traced afresh, so a user's own ``error_if`` keeps its mode.
If Equinox's internals differ from what this expects, it changes nothing (the programs then
compile as before); ``tests/core/test_runtime_checks.py`` notices that.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def nan_checks() -> Iterator[bool]:
    """Trace Equinox's runtime checks in ``"nan"`` mode while the ``with`` block runs.

    Yields whether the mode could be set (``False``: Equinox's internals are not the expected
    ones, and nothing was changed). Not thread-safe: meant for the body of a jitted function,
    which JAX traces in the calling thread.
    """
    try:
        from equinox import _errors
    except ImportError:  # no equinox: nothing to change
        yield False
        return
    impl = getattr(_errors, "branched_error_if_impl", None)
    if impl is None or not hasattr(_errors, "branched_error_if_impl_jit"):
        yield False
        return
    shared = _errors.branched_error_if_impl_jit

    def in_nan_mode(x, pred, index, msgs, *, on_error="default"):
        return impl(x, pred, index, msgs, on_error="nan" if on_error == "default" else on_error)

    _errors.branched_error_if_impl_jit = in_nan_mode
    try:
        yield True
    finally:
        _errors.branched_error_if_impl_jit = shared
