"""Hostile values in every config type (hypothesis): validation either accepts a value unchanged
(no silent coercion, nothing non-finite) or refuses it with a ConfigError naming the key; it never
raises anything else."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgdlab.cli import STUDIES, _study
from sgdlab.core.command import example_path
from sgdlab.core.config import ConfigError, read_toml

# TOML has no null, so None (which a Python caller may pass to mean "the default") is not drawn
HOSTILE = st.one_of(
    st.booleans(),
    st.text(max_size=4),
    st.sampled_from(["2", "1e3", "inf", "nan", "true", ""]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e308, -1e308, math.inf, -math.inf, math.nan]),
    st.lists(st.integers(-3, 3), max_size=3),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
)


def leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += leaves(value, path + ".")
        elif key not in ("name", "description"):
            out.append(path)
    return out


def get(tree, path):
    for p in path.split("."):
        tree = tree[p]
    return tree


def put(tree, path, value):
    *parents, last = path.split(".")
    for p in parents:
        tree = tree[p]
    tree[last] = value


def same(given, kept) -> bool:
    """``kept`` is ``given`` unchanged (an int may become the equal float, a list of axis values
    may be sorted, but no value may be dropped, merged or changed)."""
    if isinstance(given, bool) or isinstance(kept, bool):
        return type(given) is type(kept) and given == kept
    if isinstance(given, list):  # a list of axis values may be put in order, nothing else
        if not isinstance(kept, (list, tuple)) or len(given) != len(kept):
            return False
        return all(same(a, b) for a, b in zip(given, kept)) or all(
            any(same(a, b) for b in kept) for a in given
        )
    if isinstance(given, int) and isinstance(kept, float):
        return float(given) == kept  # an integer where a float is expected: the nearest float
    if isinstance(given, (int, float)) and isinstance(kept, (int, float)):
        return given == kept
    return type(given) is type(kept) and given == kept


def check_hostile_value(command, data):
    study = _study(command)
    base = read_toml(example_path(command, "default"))
    path = data.draw(st.sampled_from(leaves(base)), label="key")
    value = data.draw(HOSTILE, label="value")
    tree = copy.deepcopy(base)
    put(tree, path, value)
    try:
        cfg = study.load(tree)
    except ConfigError as err:
        message = str(err)
        assert path in message or path.rsplit(".", 1)[-1] in message, f"the error does not name {path}:\n{message}"
        return
    kept = get(cfg.model_dump(mode="python"), path)
    assert same(value, kept), f"{path} = {value!r} was accepted as {kept!r}"
    for x in value if isinstance(value, list) else [value]:
        assert not (isinstance(x, float) and not math.isfinite(x)), f"{path} = {value!r} accepted a non-finite value"


@pytest.mark.parametrize("command", list(STUDIES))
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_values_are_kept_or_refused_naming_the_key(command, data):
    """CI: the same 60 examples per command at every run (derandomized: CI never flakes)."""
    check_hostile_value(command, data)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(STUDIES))
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_values_are_kept_or_refused_naming_the_key_random_search(command, data):
    """The long search: new random examples at every run."""
    check_hostile_value(command, data)
