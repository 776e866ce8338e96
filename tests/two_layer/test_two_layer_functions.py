"""Functions wherever the two-layer config takes a name: ``problem.target`` and
``problem.activation`` accept a built-in name, Hermite coefficients, a JAX-traceable callable
(Python) or a ``"package.module:function"`` import string (TOML); functions are projected on the
normalised Hermite polynomials with the truncation error reported, and bad functions are refused
naming the key."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import sgdlab  # noqa: F401  (float64)
from sgdlab.core.errors import ConfigError
from sgdlab.two_layer.config import TRUNCATION_REFUSE, load_config
from sgdlab.two_layer.experiment import run
from sgdlab.two_layer.plot import table
from sgdlab.two_layer.problem import hermite_projection

MODULE = '''
import jax.numpy as jnp

def softplus(z):
    return jnp.logaddexp(z, 0.0)

def he5(z):  # He_5 / sqrt(5!): the normalised Hermite polynomial h_5
    return (z**5 - 10 * z**3 + 15 * z) / 120**0.5
'''

#: reduced dynamics only, m = 8, explicit solver: the compiled solver of tests/two_layer/test_timescales_study.py
CHEAP = {"name": "fn", "dynamics": {"eps": 1e-2, "t_max": 0.5, "t_min": 1e-4, "n_times": 20},
         "flow": {"enabled": False}, "sgd": {"enabled": False}, "reduced": {"m": 8, "solver": "tsit5"}}


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "sgdlab_test_user_fns.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import sgdlab_test_user_fns

    return sgdlab_test_user_fns


def _problem(**keys):
    return load_config({**CHEAP, "problem": keys})


def _gauss_hermite(f, degree, n=120):
    """E[f(g) h_k(g)] by n-point Gauss-Hermite quadrature (independent of the library's adaptive
    quadrature; spectrally accurate for smooth f)."""
    x, w = hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    h = [np.ones_like(x), x]
    for k in range(1, degree):
        h.append((x * h[k] - math.sqrt(k) * h[k - 1]) / math.sqrt(k + 1))
    return np.array([np.sum(w * f(x) * h[k]) for k in range(degree + 1)])


def test_callable_import_string_and_name_give_the_same_coefficients(user_module):
    ways = [_problem(activation=v, degree=5).problem.to_problem().sigma for v in ("tanh", jnp.tanh, "jax.numpy:tanh")]
    np.testing.assert_allclose(ways[1], ways[0], rtol=0, atol=1e-11)
    assert ways[2] == ways[1]
    np.testing.assert_allclose(ways[0], _gauss_hermite(np.tanh, 5), atol=1e-10)
    # a user's function: as a callable and as an import string, against Gauss-Hermite quadrature
    for v in (user_module.softplus, "sgdlab_test_user_fns:softplus"):
        cfg = _problem(target=v, degree=5)
        np.testing.assert_allclose(cfg.problem.to_problem().phi, _gauss_hermite(lambda z: np.logaddexp(z, 0.0), 5), atol=1e-10)
        # the stored config names the function by its import string, and reruns from it
        stored = json.loads(cfg.to_json())
        assert stored["problem"]["target"] == "sgdlab_test_user_fns:softplus"
        assert load_config(stored).problem.to_problem() == cfg.problem.to_problem()
    # a function that cannot be imported again is stored as <python:NAME> and refused on rerun
    lam = lambda z: jnp.tanh(z) + 0.1 * z  # noqa: E731
    stored = json.loads(_problem(activation=lam).to_json())
    assert stored["problem"]["activation"] == "<python:<lambda>>"
    with pytest.raises(ConfigError, match=r"problem\.activation: .*cannot be imported again"):
        load_config(stored)


@pytest.mark.parametrize(
    "value,match",
    [
        (lambda z: float(z) if z > 0 else 0.0, r"problem\.activation: <lambda> is not JAX-traceable"),
        (lambda z, w: z * w, r"problem\.activation: <lambda> cannot be called with 1 array argument"),
        (jnp.sum, r"problem\.activation: sum must be elementwise"),
        ("no_such_module_xyz:f", r"problem\.activation: cannot import module 'no_such_module_xyz'"),
        ("jax.numpy:no_such_function", r"problem\.activation: 'jax\.numpy' has no attribute 'no_such_function'"),
        ("softplus", r"problem\.activation: unknown function 'softplus'; use one of .*import string"),
        (jnp.log, r"problem\.activation: log: E f\(g\)\^2 .* is not finite"),
        ("jax.numpy:sign", r"problem\.activation: projected on Hermite degrees 0\.\.3 it leaves .* 50\.7% of .*raise problem\.degree"),
    ],
)
def test_bad_functions_are_refused_naming_the_key(value, match):
    with pytest.raises(ConfigError, match=match):
        _problem(activation=value)


def test_truncation_error_of_known_functions(user_module):
    # h_5 = He_5 / sqrt(5!) has unit norm and no component below degree 5: remainder 1 at degree 3
    p = hermite_projection(user_module.he5, 3)
    np.testing.assert_allclose(p.coefficients, 0.0, atol=1e-12)
    assert p.norm == pytest.approx(1.0, abs=1e-10) and p.remainder == pytest.approx(1.0, abs=1e-9)
    p5 = hermite_projection(user_module.he5, 5)
    np.testing.assert_allclose(p5.coefficients, [0, 0, 0, 0, 0, 1], atol=1e-10)
    assert p5.remainder < 1e-6  # sqrt of a difference at round-off
    # relu: ||relu||^2 = 1/2 and c = (1/sqrt(2 pi), 1/2, 1/(2 sqrt(pi)), 0, -1/sqrt(48 pi)) (closed forms)
    p = hermite_projection("relu", 4)
    assert p.remainder**2 == pytest.approx(0.5 - (1 / (2 * np.pi) + 0.25 + 1 / (4 * np.pi) + 1 / (48 * np.pi)), abs=1e-10)
    # refused above TRUNCATION_REFUSE of the norm unless the degree is raised
    assert TRUNCATION_REFUSE < 1.0
    with pytest.raises(ConfigError, match=r"problem\.target: projected on Hermite degrees 0\.\.3 .*100\.0% .*raise problem\.degree"):
        _problem(target=user_module.he5)
    assert _problem(target=user_module.he5, degree=5).problem.to_problem().phi == pytest.approx((0, 0, 0, 0, 0, 1), abs=1e-10)


def test_run_reports_the_truncation_error():
    ds = run({**CHEAP, "problem": {"target": [0.0, 1.0, 1.0, 1.0], "activation": "jax.numpy:tanh"}})
    trunc = json.loads(ds.attrs["truncation_error"])
    expect = hermite_projection(jnp.tanh, 3)
    assert set(trunc) == {"activation"} and trunc["activation"]["remainder"] == pytest.approx(expect.remainder)
    assert json.loads(ds.attrs["config"])["problem"]["activation"] == "jax.numpy:tanh"
    assert json.loads(ds.attrs["solvers"]) == {"reduced": "tsit5"}
    np.testing.assert_allclose(ds.sigma.values, expect.coefficients)
    tables = table(ds).renderables
    assert len(tables) == 3 and tables[2].row_count == 1  # the projection table: one function
    cells = [str(c) for col in tables[2].columns for c in col._cells]
    assert "problem.activation" in cells and any("raise problem.degree" in c for c in cells)
