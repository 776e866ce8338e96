"""Schedules: a hyper-parameter that varies with the step ``k`` (step size ``eta_k``, batch
fraction ``b_k``, momentum ``beta_k``).

A schedule multiplies a base value ``v0`` (the config key it belongs to, e.g. ``algorithm.eta``)
by a factor ``f(k)``, ``k = 0, 1, ...`` the step index (``f(0) = 1`` for the built-in kinds):

================  ==============================================  ===============================
``kind``          ``v_k``                                         keys
================  ==============================================  ===============================
``constant``      ``v0``                                          (none)
``step``          ``v0 * factor ** floor(k / every)``             ``every``, ``factor``
``inverse_time``  ``v0 / (1 + k / scale)``                        ``scale``
``cosine``        ``v0 * (final + (1 - final)(1 + cos(pi k/K))/2)``  ``scale`` = ``K``, ``final``
                  for ``k < K``, ``v0 * final`` after
``function``      ``function(k)`` (the value itself, optax-like)  ``function``
================  ==============================================  ===============================

``function`` is, from TOML, an import string ``"package.module:function"``; from Python, any
callable of the integer step array (JAX-traceable, elementwise) returning the value ``v_k``
(not a factor: the habit of optax's schedules).

:meth:`Schedule.values` returns the float64 array ``v_k`` for ``k = 0 .. n - 1``; the numerical
cores take these arrays, so the simulators and the DMFT see exactly the same numbers. A
``constant`` schedule is never expanded: the cores keep their scalar path, bit for bit.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, field_serializer, field_validator, model_validator

from sgdlab.core.config import Section

KINDS = ("constant", "step", "inverse_time", "cosine", "function")


class Schedule(Section):
    """``[algorithm.schedule.<key>]``: how a hyper-parameter varies with the step (see the module)."""

    kind: Literal["constant", "step", "inverse_time", "cosine", "function"] = "constant"
    every: int | None = Field(None, ge=1, description="step decay: steps between two decays, in [1, inf)")
    factor: float | None = Field(None, gt=0, le=1, description="step decay: factor per decay, in (0, 1]")
    scale: float | None = Field(None, gt=0, description="inverse_time: K in v0/(1 + k/K); cosine: its length K in steps, in (0, inf)")
    final: float = Field(0.0, ge=0, le=1, description="cosine: final value as a fraction of v0, in [0, 1]")
    function: Any = Field(None, description="'package.module:function' (or a callable): v_k = function(k)")

    @field_validator("function")
    @classmethod
    def _resolve_function(cls, v):
        if v is None:
            return v
        from sgdlab.core.functions import resolve

        if not (callable(v) or isinstance(v, str)):
            raise ValueError(f"function = {v!r} must be a 'package.module:function' string or a callable")
        return resolve(v, key="function", builtins={})

    @field_serializer("function", when_used="json")
    def _function_text(self, v):
        from sgdlab.core.functions import spec_of

        return None if v is None else spec_of(v)

    @model_validator(mode="after")
    def _keys_of_kind(self):
        need = {"step": ("every", "factor"), "inverse_time": ("scale",), "cosine": ("scale",), "function": ("function",)}
        own = set(need.get(self.kind, ())) | ({"final"} if self.kind == "cosine" else set())
        for key in ("every", "factor", "scale", "function"):
            if key in need.get(self.kind, ()) and getattr(self, key) is None:
                raise ValueError(f"kind = {self.kind!r} needs {key}")
        defaults = {"every": None, "factor": None, "scale": None, "function": None, "final": 0.0}
        for key, default in defaults.items():  # a default value (e.g. a stored config's nulls) is no key
            if getattr(self, key) != default and key not in own:
                raise ValueError(f"{key} does not belong to kind = {self.kind!r} (its keys: {', '.join(sorted(own)) or 'none'})")
        return self

    @property
    def is_constant(self) -> bool:
        return self.kind == "constant"

    def factors(self, n: int) -> np.ndarray:
        """``f(k)`` for ``k = 0 .. n - 1`` (float64, ``(n,)``), for the built-in kinds."""
        k = np.arange(n, dtype=np.float64)
        if self.kind == "constant":
            return np.ones(n)
        if self.kind == "step":
            return self.factor ** np.floor(k / self.every)
        if self.kind == "inverse_time":
            return 1.0 / (1.0 + k / self.scale)
        if self.kind == "cosine":
            phase = np.minimum(k / self.scale, 1.0)
            return self.final + (1.0 - self.final) * 0.5 * (1.0 + np.cos(np.pi * phase))
        raise ValueError("a function schedule has values, not factors")

    def values(self, base: float, n: int, key: str = "schedule") -> np.ndarray:
        """``v_k`` for ``k = 0 .. n - 1`` as float64 ``(n,)``; a function's output is checked to be
        finite with shape ``(n,)`` (``ValueError`` naming ``key`` otherwise)."""
        if self.kind != "function":
            return base * self.factors(n)
        return call_schedule(self.function, n, key)


def call_schedule(fn: Callable, n: int, key: str) -> np.ndarray:
    """``fn(k)`` on the step array ``k = 0 .. n - 1`` (int32 JAX array), checked."""
    import jax.numpy as jnp

    from sgdlab.core.functions import FunctionError

    try:
        out = np.asarray(fn(jnp.arange(n, dtype=jnp.int32)), dtype=np.float64)
    except Exception as exc:
        raise FunctionError(f"{key}: calling the schedule function on the steps failed ({type(exc).__name__}: {exc})") from exc
    if out.shape == ():
        out = np.full(n, float(out))
    if out.shape != (n,):
        raise FunctionError(f"{key}: the schedule function must return one value per step, shape ({n},); got {out.shape}")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise FunctionError(f"{key}: the schedule function returned {out[bad[0]]} at step {bad[0]}")
    return out
