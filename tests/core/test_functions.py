"""User functions (names, callables, import strings) and schedules, the two core pieces that open
the wings to a researcher's own model."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdlab.core.functions import (
    FunctionError, check_continuous_derivative, check_traceable, import_string, resolve, spec_of,
)
from sgdlab.core.schedule import Schedule


def _square(y, z):
    return 0.5 * (y - z) ** 2


def test_resolve_takes_a_name_a_callable_or_an_import_string():
    builtins = {"sq": _square}
    assert resolve("sq", key="k", builtins=builtins) is _square
    assert resolve(_square, key="k", builtins=builtins) is _square
    assert resolve("numpy:tanh", key="k", builtins=builtins) is np.tanh
    assert resolve("jax.numpy:tanh", key="k", builtins=builtins) is jnp.tanh


def test_spec_of_round_trips_importable_functions_and_marks_the_others():
    assert spec_of(jnp.tanh) in ("jax.numpy:tanh", spec_of(jnp.tanh))
    assert import_string(spec_of(np.tanh), key="k") is np.tanh
    assert spec_of(lambda y, z: z) == "<python:<lambda>>"
    with pytest.raises(FunctionError, match="cannot be imported again"):
        resolve("<python:<lambda>>", key="problem.loss", builtins={})


def test_a_module_in_the_current_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "cwd_module_for_sgdlab_test.py").write_text("def f(y, z):\n    return z\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert resolve("cwd_module_for_sgdlab_test:f", key="k", builtins={}).__name__ == "f"


@pytest.mark.parametrize(
    "value, words",
    [
        ("nope", "allowed: sq"),
        ("os:does_not_exist", "no attribute"),
        ("no_such_package_xyz.mod:f", "cannot import module"),
        ("math:pi", "not a function"),
        (3, "allowed"),
    ],
)
def test_resolve_errors_name_the_key(value, words):
    with pytest.raises(FunctionError, match=words) as err:
        resolve(value, key="problem.loss", builtins={"sq": _square})
    assert "problem.loss" in str(err.value)


def test_traceability_and_shape_checks():
    args = (jnp.ones(3), jnp.ones(3))
    check_traceable(_square, args, key="k")
    with pytest.raises(FunctionError, match="not JAX-traceable"):
        check_traceable(lambda y, z: y if float(z[0]) > 0 else z, args, key="k")
    with pytest.raises(FunctionError, match="elementwise"):
        check_traceable(lambda y, z: jnp.sum(y * z), args, key="k")


@pytest.mark.parametrize("kink", [0.3, -2.7, 1.0])
def test_a_kink_is_found_wherever_it_is_and_smooth_losses_pass(kink):
    with pytest.raises(FunctionError, match="jumps"):
        check_continuous_derivative(lambda y, z: jnp.maximum(0.0, kink - y * z), key="k")
    check_continuous_derivative(lambda y, z: jnp.maximum(0.0, kink - y * z) ** 2, key="k")  # C1: passes
    check_continuous_derivative(lambda y, z: jnp.logaddexp(0.0, kink - y * z), key="k")


def test_schedule_kinds_follow_their_formulas():
    k = np.arange(50.0)
    np.testing.assert_allclose(Schedule(kind="step", every=10, factor=0.5).values(0.2, 50), 0.2 * 0.5 ** np.floor(k / 10))
    np.testing.assert_allclose(Schedule(kind="inverse_time", scale=7.0).values(0.2, 50), 0.2 / (1 + k / 7))
    cos = Schedule(kind="cosine", scale=20.0, final=0.1).values(1.0, 50)
    np.testing.assert_allclose(cos[[0, 10, 20, 49]], [1.0, 0.55, 0.1, 0.1])
    np.testing.assert_allclose(Schedule(kind="function", function="jax.numpy:sqrt").values(9.0, 5), np.sqrt(np.arange(5.0)))
    assert Schedule().is_constant


@settings(max_examples=60, deadline=None, derandomize=True)
@given(kind=st.sampled_from(["step", "inverse_time", "cosine"]), scale=st.floats(0.5, 1e4), factor=st.floats(0.01, 1.0),
       final=st.floats(0.0, 1.0), n=st.integers(1, 500))
def test_built_in_schedules_start_at_the_base_value_and_never_increase(kind, scale, factor, final, n):
    keys = {"step": {"every": max(1, int(scale)), "factor": factor}, "inverse_time": {"scale": scale},
            "cosine": {"scale": scale, "final": final}}[kind]
    f = Schedule(kind=kind, **keys).factors(n)
    assert f[0] == 1.0 and np.all(np.diff(f) <= 1e-15) and np.all(f > 0) | (kind == "cosine")
