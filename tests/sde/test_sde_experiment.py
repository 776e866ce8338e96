"""The weak-error study from a config: validation errors name the key, the Dataset, the figure and
the command body of ``sgdlab sde CONFIG.toml``."""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from sgdlab import ConfigError
from sgdlab.core import store
from sgdlab.sde.experiment import (
    SDEStudyConfig,
    load_sde_config,
    plot_weak_errors,
    results_table,
    run_sde_study,
    sde_command,
)


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
        load_sde_config(cfg)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sde_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sde_config(bad)


def test_examples_are_valid_and_named():
    names = sorted(p.stem for p in example_dir().glob("*.toml"))
    assert "default" in names
    for name in names:
        cfg = load_sde_config(example_dir() / f"{name}.toml")
        assert cfg.name.startswith("sde_")


def test_default_config_defaults():
    cfg = SDEStudyConfig()
    assert cfg.problem.kind == "quadratic_1d" and cfg.problem.a == [0.5, 1.0, 1.5]
    assert cfg.study.etas == sorted(cfg.study.etas, reverse=True)
    assert load_sde_config(None) == cfg


def test_run_study_dataset_and_figure():
    ds = run_sde_study({"study": {"models": ["gf", "smf", "svag"], "observables": ["mean", "variance"], "etas": [0.125, 0.0625, 0.03125]}})
    assert dict(ds.sizes) == {"model": 3, "eta": 3, "observable": 2}
    assert json.loads(ds.attrs["config"])["study"]["models"] == ["gf", "smf", "svag"]
    assert ds.attrs["sgdlab_version"] and len(ds.attrs["config_hash"]) == 12
    assert float(ds.slope.sel(model="smf", observable="mean")) == pytest.approx(2, abs=0.1)
    assert int(ds.expected_order.sel(model="gf", observable="variance")) == 1
    assert int(ds.expected_order.sel(model="svag", observable="variance")) == 2
    fig = plot_weak_errors(ds)
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("smf: 2.0") for label in labels) and "slope 1" in labels and "slope 2" in labels
    table = results_table(ds)
    assert table.row_count == 6


def test_sde_command_writes_store_figure_and_table(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        '[problem]\nkind = "least_squares"\nfeatures = [[1.0, 0.3], [-0.4, 1.2], [0.8, -0.9]]\ntargets = [1.0, -0.5, 0.3]\n'
        'starts = [[1.0, 1.0], [-1.0, 0.5]]\n[study]\nmodels = ["gf", "smf", "smf_independent"]\nobservables = ["inner", "cross_cov"]\n'
        "etas = [0.25, 0.125, 0.0625]\n"
    )
    table = sde_command(cfg, tmp_path / "out")
    assert table.row_count == 6 and "tiny.zarr" in table.caption
    ds = store.load(tmp_path / "out" / "tiny.zarr")
    assert set(ds.dims) == {"model", "eta", "observable"}
    assert list(ds.model.values) == ["gf", "smf", "smf_independent"]
    assert json.loads(ds.attrs["config"])["name"] == "tiny"
    assert np.all(np.isfinite(ds.slope.values))
    png = (tmp_path / "out" / "tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with pytest.raises(ConfigError):
        sde_command(tmp_path / "missing.toml", tmp_path / "out")
    # overrides are validated like the file
    with pytest.raises(ConfigError, match="solver.scheme"):
        sde_command(cfg, tmp_path / "out", overrides={"solver": {"scheme": "rk4"}})
    table = sde_command(cfg, tmp_path / "out2", overrides={"name": "renamed", "study": {"models": ["smf"]}})
    assert table.row_count == 2 and (tmp_path / "out2" / "renamed.png").exists()
