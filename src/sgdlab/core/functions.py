"""User functions wherever a name is accepted: built-in names, Python callables, import strings.

Every config key that names a function (a loss, an activation, a target) accepts

- a built-in name (``"square"``, ``"relu"``, ...), as before;
- from Python, any JAX-traceable callable (the optax / diffrax habit);
- from TOML or ``--set``, an import string ``"package.module:function"`` (``module:attr.attr``
  for a nested attribute). The module is imported (from ``sys.path``, then the current
  directory) and the attribute looked up; nothing is ever evaluated from the text.

:func:`resolve` turns any of the three into a callable; :func:`spec_of` turns a callable back
into the text stored in a result's ``config`` attribute (the import string when the function can
be imported again, so that a stored config reruns; otherwise ``"<python:NAME>"``, which a rerun
from the store refuses with a clear message). :func:`check_traceable` and
:func:`check_continuous_derivative` are the checks the numerical cores need, each failing with
one line that names the key.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

#: ``package.module:function`` (dotted module, ``:``, dotted attribute path)
IMPORT_STRING = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
#: what :func:`spec_of` writes for a callable that cannot be imported again
UNIMPORTABLE = "<python:{}>"


class FunctionError(ValueError):
    """A function given for ``key`` cannot be used (unknown name, import failure, bad signature)."""


def is_import_string(text: str) -> bool:
    """Whether ``text`` has the form ``package.module:function``."""
    return bool(IMPORT_STRING.match(text))


def import_string(spec: str, *, key: str) -> Callable:
    """The object named by ``"package.module:attr"`` (imported, never evaluated)."""
    if not is_import_string(spec):
        raise FunctionError(f"{key} = {spec!r} is not an import string 'package.module:function'")
    module_name, attr_path = spec.split(":")
    try:
        obj: Any = _import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while importing the user module
        raise FunctionError(f"{key} = {spec!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})") from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise FunctionError(f"{key} = {spec!r}: {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FunctionError(f"{key} = {spec!r} names a {type(obj).__name__}, not a function")
    return obj


def _import_module(name: str):
    """Import ``name``; a module in the current directory is found too (as with ``python -m``),
    also from the ``sgdlab`` command, whose ``sys.path`` starts at its script's folder."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def resolve(value: str | Callable, *, key: str, builtins: Mapping[str, Callable]) -> Callable:
    """A callable from a built-in name, an import string or a callable given for ``key``."""
    if callable(value):
        return value
    if isinstance(value, str):
        if value in builtins:
            return builtins[value]
        if is_import_string(value):
            return import_string(value, key=key)
        if value.startswith("<python:"):
            raise FunctionError(
                f"{key} = {value!r} was a Python function that cannot be imported again; "
                "pass the function itself, or define it in an importable module and give 'module:function'"
            )
    allowed = ", ".join(builtins)
    raise FunctionError(f"{key} = {value!r}: allowed: {allowed}, a 'package.module:function' import string, or a callable")


def spec_of(value: str | Callable) -> str:
    """The text that stands for ``value`` in a stored config (see the module docstring)."""
    if isinstance(value, str):
        return value
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        spec = f"{module}:{qualname}"
        try:
            if import_string(spec, key="") is value:
                return spec
        except FunctionError:
            pass
    return UNIMPORTABLE.format(getattr(value, "__name__", type(value).__name__))


def check_traceable(fn: Callable, args: tuple, *, key: str) -> None:
    """``fn(*args)`` must trace under JAX and return an array of the broadcast shape of ``args``.

    ``args`` are example arrays (float64); the check uses :func:`jax.eval_shape`, so nothing is
    computed. Raises :class:`FunctionError` naming ``key`` otherwise.
    """
    shape = np.broadcast_shapes(*(np.shape(a) for a in args))
    try:
        out = jax.eval_shape(fn, *args)
    except jax.errors.JAXTypeError as exc:  # tracer misuse: concretization, tracer-to-NumPy, ...
        raise FunctionError(
            f"{key}: {_name(fn)} is not JAX-traceable ({type(exc).__name__}); "
            "write it with jax.numpy and jnp.where instead of Python if/float()"
        ) from exc
    except TypeError as exc:
        raise FunctionError(f"{key}: {_name(fn)} cannot be called with {len(args)} array argument(s) ({_first_line(exc)})") from exc
    except Exception as exc:  # a tracer error: Python control flow on values, NumPy calls on tracers, ...
        raise FunctionError(
            f"{key}: {_name(fn)} is not JAX-traceable ({type(exc).__name__}); "
            "write it with jax.numpy and jnp.where instead of Python if/float()"
        ) from exc
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(shape):
        got = getattr(out, "shape", type(out).__name__)
        raise FunctionError(f"{key}: {_name(fn)} must be elementwise: inputs of shape {shape} gave {got}")


def check_continuous_derivative(fn: Callable, *, key: str, labels=(-1.0, 1.0), lo=-8.0, hi=8.0, n=16001) -> None:
    """Refuse a loss ``fn(y, z)`` whose derivative in ``z`` jumps (a kink), or which is not finite.

    The DMFT and the simulators use ``loss'`` and ``loss''`` from automatic differentiation; a
    kink in the loss (the hinge ``max(0, 1 - y z)``) makes ``loss''`` a Dirac mass that autodiff
    silently drops. On a grid of spacing ``delta`` in ``[lo, hi]``, for each label, a derivative
    with no jump changes between neighbours by at most ``delta`` times the largest ``|loss''|``
    nearby (mean value theorem; the factor 2 covers the curvature between grid points); a jump of
    ``loss'`` by ``J`` shows as a change ``~J`` while ``loss''`` stays bounded. Piecewise-smooth
    losses with a continuous first derivative (the squared hinge) pass.
    """
    z = np.linspace(lo, hi, n)
    delta = float(z[1] - z[0])
    scalar = lambda yy, zz: jnp.sum(fn(yy, zz))  # noqa: E731  (fn is elementwise)
    first = jax.grad(scalar, argnums=1)
    second = jax.grad(lambda yy, zz: jnp.sum(first(yy, zz)), argnums=1)
    table = jax.jit(lambda yy, zz: (fn(yy, zz), first(yy, zz), second(yy, zz)))
    for y0 in labels:
        values, d1, d2 = (np.asarray(a) for a in table(np.full_like(z, y0), z))
        if not (np.all(np.isfinite(values)) and np.all(np.isfinite(d1)) and np.all(np.isfinite(d2))):
            bad = float(z[~(np.isfinite(values) & np.isfinite(d1) & np.isfinite(d2))][0])
            raise FunctionError(f"{key}: {_name(fn)} or its first two derivatives are not finite at y = {y0:g}, z = {bad:.4g}")
        jump = np.abs(np.diff(np.asarray(d1)))
        curvature = np.maximum(np.abs(np.asarray(d2))[:-1], np.abs(np.asarray(d2))[1:])
        curvature = np.maximum(curvature, np.maximum(np.roll(curvature, 1), np.roll(curvature, -1)))
        scale = 1e-9 * (1.0 + float(np.max(np.abs(d1))))
        bad = np.flatnonzero(jump > 2.0 * delta * curvature + scale)
        if bad.size:
            at = float(z[bad[0]])
            raise FunctionError(
                f"{key}: the derivative of {_name(fn)} jumps near y = {y0:g}, z = {at:.4g} "
                "(a kink); the DMFT and the simulators need a loss with a continuous first derivative "
                "(smooth it, e.g. a softplus instead of max(0, .))"
            )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__
