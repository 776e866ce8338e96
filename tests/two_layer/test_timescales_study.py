"""The two_layer study in the shared laboratory: the store round trip of its figures, a [sweep] on
the core engine, clear errors when the ODE step budget runs out, the layering of its modules,
its examples and its public face. Cheap configs (the reduced dynamics with the explicit solver,
a few particles) keep every test to a few seconds."""

import ast
import copy
import tomllib
from pathlib import Path

import numpy as np
import pytest

import sgdlab.two_layer as two_layer
from sgdlab.core import store
from sgdlab.core.command import example_names, example_path
from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.core.sweep import load_sweep, run_sweep
from sgdlab.two_layer.command import STUDY
from sgdlab.two_layer.config import load_config
from sgdlab.two_layer.experiment import run
from sgdlab.two_layer.plot import figures, table

WING = Path(two_layer.__file__).parent

CHEAP = {
    "name": "cheap",
    "dynamics": {"eps": 1e-2, "t_max": 0.5, "t_min": 1e-4, "n_times": 20},
    "flow": {"enabled": False},
    "sgd": {"enabled": False},
    "reduced": {"m": 8, "solver": "tsit5"},
}


def test_figures_and_table_from_the_store(tmp_path):
    cfg = copy.deepcopy(CHEAP)
    cfg["flow"] = {"m": 4, "seeds": 2, "d": 10_000, "solver": "tsit5"}  # the compiled solver of the step-budget test below
    cfg["scan"] = {"eps": [1e-2, 2e-2, 4e-2], "t_max": 0.5, "d": [100, 10_000]}
    ds = run(cfg)
    assert ds.attrs["study"] == "two_layer" and ds.attrs["config_hash"] == load_config(cfg).config_hash()
    assert list(ds.method.values) == ["flow", "reduced"]
    assert ds.risk_err.dims == ("method", "t") and np.isfinite(ds.risk_err.sel({"method": "flow"})).all()
    back = store.load(store.save(ds, tmp_path / "cheap.zarr"))
    figs = figures(back)
    assert set(figs) == {"", "eps_scaling", "d_scan"}
    assert figs[""].axes[0].get_xscale() == "log"
    levels, times = table(back).renderables
    assert levels.row_count == 5 and times.row_count == 4


def test_sweep_on_the_core_engine_equals_single_runs(tmp_path):
    cfg = copy.deepcopy(CHEAP)
    cfg["sweep"] = {"dynamics.eps": [1e-2, 2e-2]}
    summary = run_sweep(STUDY, cfg, tmp_path / "sweep.zarr", workers=0)
    assert (summary.done, summary.failed) == (2, 0), summary.errors
    sw = load_sweep(tmp_path / "sweep.zarr")
    for eps in (1e-2, 2e-2):
        point = copy.deepcopy(CHEAP)
        point["dynamics"]["eps"] = eps
        one = run(point)
        got = sw.sel({"dynamics.eps": eps})
        for name, var in one.data_vars.items():
            np.testing.assert_array_equal(got[name].values, np.asarray(var.values, float), err_msg=name)


def test_in_run_scans_cannot_be_sweep_axes():
    cfg = copy.deepcopy(CHEAP)
    cfg["sweep"] = {"scan.eps": [[1e-3, 1e-4, 1e-5], [1e-2, 1e-3, 1e-4]]}
    with pytest.raises(ConfigError, match="scan.eps cannot be a sweep axis"):
        load_config(cfg)


@pytest.mark.parametrize(
    "section,expect",
    [
        ({"reduced": {"m": 8, "solver": "tsit5"}}, r"reduced dynamics: .*dynamics\.max_steps=50000 .*raise dynamics\.max_steps.*reduced\.solver = \"auto\""),
        ({"reduced": {"enabled": False}, "flow": {"m": 4, "seeds": 2, "d": 10_000, "solver": "tsit5"}},
         r"finite-d flow \(d = 10000\) \(seed 0\): .*dynamics\.max_steps=50000"),
    ],
)
def test_exhausted_step_budget_is_a_clear_error(section, expect):
    # the explicit solver needs O(t_max / eps) steps: far more than the default budget at eps = 1e-8
    # (same shapes and static arguments as the other tests here: no new compilation)
    cfg = copy.deepcopy(CHEAP)
    cfg["dynamics"]["eps"] = 1e-8
    cfg.update(section)
    with pytest.raises(NonFiniteError, match=expect):
        run(cfg)


def _sgdlab_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sgdlab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("sgdlab"))
    return out


def test_theory_and_simulator_never_import_each_other():
    tw = "sgdlab.two_layer"
    theory = ("flow", "reduced", "committee_ode", "analysis")
    imports = {p.stem: _sgdlab_imports(p) for p in WING.glob("*.py")}
    for mod in theory:
        assert f"{tw}.sgd" not in imports[mod], mod
    assert not {f"{tw}.{m}" for m in theory} & imports["sgd"]
    assert not {f"{tw}.{m}" for m in (*theory, "sgd")} & imports["problem"]
    mixers = {mod for mod, imp in imports.items() if f"{tw}.sgd" in imp and imp & {f"{tw}.flow", f"{tw}.scans"}}
    assert mixers == {"experiment"}, mixers


def test_examples_have_unique_explicit_names():
    for stem in example_names("timescales"):
        raw = tomllib.loads(example_path("timescales", stem).read_text())
        assert raw["name"] == f"timescales_{stem}" and raw["description"], stem
        assert "dt" not in raw.get("sgd", {})
    assert "default" in example_names("timescales")


def test_public_face():
    for name in two_layer.__all__:
        assert getattr(two_layer, name) is not None, name
    assert two_layer.STUDY.ref == "sgdlab.two_layer.command:STUDY" and two_layer.STUDY.command == "timescales"
    assert two_layer.run is run
