"""The weak-error study from a config: validation errors name the key, the Dataset, the figure,
the table, ``sgdlab sde`` through the generic command runner, the store round trip, a sweep on the
core engine, a diverging problem, and the layering of the wing's modules."""

import ast
import json
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from sgdlab import ConfigError
from sgdlab.core import store
from sgdlab.core.command import CommonOptions, config_source, run_study_command
from sgdlab.core.errors import NonFiniteError
from sgdlab.sde.command import STUDY
from sgdlab.sde.config import SDEConfig, default_config_path, load_config
from sgdlab.sde.experiment import run
from sgdlab.sde.plot import figures, plot_weak_errors, table


def example_dir() -> Path:
    return Path(str(resources.files("sgdlab") / "examples" / "sde"))


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"study": {"etas": [0.1, 0.05]}}, r"study: etas needs at least 3 distinct values"),
        ({"study": {"etas": [0.3, 0.1, 0.05]}}, r"horizon/eta = 1.0/0.3 = 3.33333 must be an integer"),
        ({"study": {"etas": [2.0, 0.5, 0.25]}}, r"etas: 2.0 is outside \(0, horizon = 1.0\]"),
        ({"study": {"horizon": 0}}, r"study\.horizon: Input should be greater than 0"),
        ({"study": {"models": ["gf", "ode"]}}, r"study\.models\.1: Input should be 'gf', 'sme1'"),
        ({"study": {"models": ["gf", "gf"]}}, r"models must be distinct"),
        ({"study": {"observables": ["mean", "median"]}}, r"study\.observables\.1: Input should be 'mean'"),
        ({"study": {"svag_l": 0}}, r"study\.svag_l: Input should be greater than or equal to 1"),
        ({"solver": {"paths": 10}}, r"solver\.paths: Input should be greater than or equal to 100 \(got 10\)"),
        ({"solver": {"scheme": "milstein"}}, r"solver\.scheme: Input should be 'weak2', 'talay_tubaro' or 'euler'"),
        ({"solver": {"substeps": 0}}, r"solver\.substeps"),
        ({"solver": {"method": "exact"}, "problem": {"kind": "logistic"}}, r"solver\.method = 'exact' needs a linear-gradient problem"),
        ({"problem": {"kind": "logistic", "a": [1.0, 2.0]}}, r"problem: a does not belong to kind = 'logistic'"),
        ({"problem": {"a": [1.0]}}, r"a and b need the same length >= 2"),
        ({"problem": {"batch_size": 0}}, r"problem\.batch_size: Input should be greater than or equal to 1"),
        ({"problem": {"starts": [[1.0, 2.0]]}}, r"starts have dimension 2, the problem has d = 1"),
        ({"problem": {"starts": [[1.0]]}, "study": {"observables": ["inner"]}}, r"problem\.starts: observables \['inner'\] need 2 starting points"),
        ({"problem": {"kind": "least_squares", "features": [[1.0]], "targets": [1.0, 2.0]}}, r"rectangular \(n, d\)"),
        ({"problem": {"kind": "least_squares", "n_samples": 4, "features": [[1.0], [2.0]], "targets": [1.0, 2.0]}}, r"not both"),
        ({"solver": {"paths": 1000, "walkers": 3}}, r"solver\.walkers: unknown key"),
        ({"solver": {"method": "exact"}, "study": {"models": ["sme2"], "observables": ["inner"]},
          "problem": {"kind": "least_squares", "starts": [[1.0, 0.0], [0.0, 1.0]]}}, r"no closed moments"),
    ],
)
def test_invalid_configs_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_examples_are_valid_and_named():
    names = sorted(p.stem for p in example_dir().glob("*.toml"))
    assert "default" in names
    for name in names:
        cfg = load_config(example_dir() / f"{name}.toml")
        assert cfg.name.startswith("sde_")
        # an explicit name = "sde_<stem>" (outputs of two examples never collide) and a description
        table = tomllib.loads((example_dir() / f"{name}.toml").read_text())
        assert table["name"] == f"sde_{name}" and table["description"]


def test_default_config_defaults():
    cfg = SDEConfig()
    assert cfg.problem.kind == "quadratic_1d" and cfg.problem.a == [0.5, 1.0, 1.5]
    assert cfg.study.etas == sorted(cfg.study.etas, reverse=True)
    # no config: the built-in default example
    assert load_config(None) == load_config(default_config_path()) and load_config(None).name == "sde_default"


def test_run_study_dataset_and_figure():
    ds = run({"study": {"models": ["gf", "smf", "svag"], "observables": ["mean", "variance"], "etas": [0.125, 0.0625, 0.03125]}})
    assert dict(ds.sizes) == {"model": 3, "eta": 3, "observable": 2}
    assert json.loads(ds.attrs["config"])["study"]["models"] == ["gf", "smf", "svag"]
    assert ds.attrs["sgdlab_version"] and len(ds.attrs["config_hash"]) == 12
    assert ds.attrs["study"] == "sde" and ds.attrs["status"] == "complete" and ds.attrs["jax_version"]
    assert float(ds.slope.sel(model="smf", observable="mean")) == pytest.approx(2, abs=0.1)
    assert int(ds.expected_order.sel(model="gf", observable="variance")) == 1
    assert int(ds.expected_order.sel(model="svag", observable="variance")) == 2
    fig = plot_weak_errors(ds)
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("smf: 2.0") for label in labels) and "slope 1" in labels and "slope 2" in labels
    assert table(ds).row_count == 6


def test_sde_command_writes_store_figure_and_table(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        '[problem]\nkind = "least_squares"\nfeatures = [[1.0, 0.3], [-0.4, 1.2], [0.8, -0.9]]\ntargets = [1.0, -0.5, 0.3]\n'
        'starts = [[1.0, 1.0], [-1.0, 0.5]]\n[study]\nmodels = ["gf", "smf", "smf_independent"]\nobservables = ["inner", "cross_cov"]\n'
        "etas = [0.25, 0.125, 0.0625]\n"
    )
    opts = CommonOptions(out=tmp_path / "out", quiet=True)
    written = run_study_command(STUDY, config_source("sde", cfg, None, []), opts)
    assert tmp_path / "out" / "tiny.zarr" in written and tmp_path / "out" / "tiny.png" in written
    ds = store.load(tmp_path / "out" / "tiny.zarr")
    assert table(ds).row_count == 6
    assert set(ds.dims) == {"model", "eta", "observable"}
    assert list(ds.model.values) == ["gf", "smf", "smf_independent"]
    assert json.loads(ds.attrs["config"])["name"] == "tiny"
    assert np.all(np.isfinite(ds.slope.values))
    png = (tmp_path / "out" / "tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with pytest.raises(ConfigError):
        run_study_command(STUDY, config_source("sde", tmp_path / "missing.toml", None, []), opts)
    # overrides are validated like the file
    with pytest.raises(ConfigError, match="solver.scheme"):
        run_study_command(STUDY, config_source("sde", cfg, None, ["solver.scheme=rk4"]), opts)
    out2 = CommonOptions(out=tmp_path / "out2", quiet=True)
    run_study_command(STUDY, config_source("sde", cfg, None, ["name=renamed", 'study.models=["smf"]']), out2)
    assert table(store.load(tmp_path / "out2" / "renamed.zarr")).row_count == 2 and (tmp_path / "out2" / "renamed.png").exists()


def test_figures_and_table_from_a_store_round_trip(tmp_path):
    ds = run({"study": {"models": ["gf", "smf"], "observables": ["mean"], "etas": [0.25, 0.125, 0.0625]}})
    back = store.load(store.save(ds, tmp_path / "rt.zarr"))
    figs = figures(back)
    assert set(figs) == {""}
    axes = [a for a in figs[""].axes if a.get_visible()]
    assert len(axes) == 1 and axes[0].get_title().startswith("mean")
    assert table(back).row_count == table(ds).row_count == 2
    assert str(back.solver.sel(model="smf", observable="mean").values) == "exact"


def test_sweep_runs_on_the_core_engine_and_equals_single_runs(tmp_path):
    from sgdlab.core.sweep import load_sweep, run_sweep

    base = {"name": "sw", "study": {"models": ["gf", "smf"], "observables": ["mean", "second_moment"], "etas": [0.25, 0.125, 0.0625]},
            "problem": {"batch_size": 1}}
    summary = run_sweep(STUDY, {**base, "sweep": {"problem.batch_size": [1, 2]}}, tmp_path / "sw.zarr", workers=0)
    assert (summary.done, summary.failed) == (2, 0)
    sw = load_sweep(tmp_path / "sw.zarr")
    for i, b in enumerate([1, 2]):
        single = run({**base, "problem": {"batch_size": b}})
        point = sw.isel({"problem.batch_size": i})
        for name in ("sgd", "value", "error", "slope", "slope_low", "slope_high", "expected_order"):
            np.testing.assert_array_equal(point[name].values, single[name].values.astype(float), err_msg=name)
    assert not np.array_equal(sw.sgd.isel({"problem.batch_size": 0}).values, sw.sgd.isel({"problem.batch_size": 1}).values)


@pytest.mark.parametrize("key", ["study.etas", "study.models", "study.observables"])
def test_the_study_axes_cannot_be_swept(key):
    values = {"study.etas": [[0.5, 0.25, 0.125], [0.25, 0.125, 0.0625]], "study.models": [["gf"], ["smf"]],
              "study.observables": [["mean"], ["variance"]]}[key]
    with pytest.raises(ConfigError, match=rf"{key} cannot be a sweep axis"):
        load_config({"sweep": {key: values}})
    with pytest.raises(ConfigError, match=rf"{key} cannot be a sweep axis"):
        load_config({"sweep": {"zip": {key: values}}})


def test_a_diverging_problem_raises_naming_the_quantity_eta_and_process(tmp_path):
    """SGD with a curvature 25 at eta = 1/4 multiplies by -5.25 per step: inf after 400 steps.
    Before, this exited 0 with nonsense orders."""
    cfg = {"name": "boom", "problem": {"a": [20.0, 30.0], "b": [1.0, -1.0]},
           "study": {"models": ["gf", "smf"], "horizon": 100.0, "etas": [0.25, 0.125, 0.0625]}}
    with pytest.raises(NonFiniteError, match=r"of sgd at eta = 0\.25 \(exact\) is (nan|inf)") as info:
        run(cfg)
    assert "mean" in str(info.value) or "second_moment" in str(info.value)
    partial = info.value.partial
    assert partial.attrs["status"].startswith("failed: ") and partial.attrs["study"] == "sde"
    assert np.all(np.isnan(partial.value.values))  # nothing of the models was computed
    # the Monte Carlo route too, and the command keeps what was computed
    mc = {**cfg, "solver": {"method": "monte_carlo", "paths": 200, "chunk": 200}}
    with pytest.raises(NonFiniteError, match=r"of sgd at eta = 0\.25 \(monte_carlo\)"):
        run_study_command(STUDY, mc, CommonOptions(out=tmp_path, quiet=True))
    assert store.load(tmp_path / "boom.zarr").attrs["status"].startswith("failed: ")


THEORY = ("problems", "models", "moments", "observables", "solvers", "mean_field")
STUDY_MODULES = ("weak_error", "experiment", "command")


def _imported_sde_modules(module: str) -> set[str]:
    path = Path(str(resources.files("sgdlab") / "sde" / f"{module}.py"))
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[2] for n in names if n.startswith("sgdlab.sde.") and n.count(".") >= 2}
    return out


@pytest.mark.parametrize("module", THEORY)
def test_theory_modules_never_import_the_simulator_or_the_study(module):
    assert not _imported_sde_modules(module) & {"sgd", *STUDY_MODULES, "config", "plot"}


def test_only_the_study_puts_the_simulator_beside_the_theory():
    importers = {m for m in (*THEORY, *STUDY_MODULES, "sgd", "config", "plot") if "sgd" in _imported_sde_modules(m)}
    assert importers <= {"weak_error", "experiment"}
    assert "sgd" in _imported_sde_modules("weak_error")
