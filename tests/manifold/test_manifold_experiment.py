"""The manifold experiment: config validation (every error names its key), the Dataset, the
store round trip, the figure and the command; the example configs validate."""

from importlib import resources
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest

import sgdlab  # noqa: F401
from sgdlab import ConfigError
from sgdlab.core import store
from sgdlab.manifold import experiment as me


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"noise": {"name": "label_noise"}}, r"noise: noise\.sigma is required for label_noise"),
        ({"noise": {"sigma": -1.0}}, r"noise\.sigma: Input should be greater than 0 \(got -1\.0\)"),
        ({"noise": {"name": "minibatch_sgd"}}, r"noise\.batch_size is required for minibatch_sgd"),
        ({"noise": {"name": "minibatch_sgd", "batch_size": 1, "sigma": 0.3}}, r"noise\.sigma is set by noise\.batch_size"),
        ({"noise": {"name": "label_noise", "sigma": 1.0, "batch_size": 2}}, r"noise\.batch_size belongs to minibatch_sgd only"),
        ({"noise": {"name": "label_noise", "sigma": 1.0, "distribution": "bernoulli"}}, r"noise\.distribution='bernoulli' is not allowed for label_noise; allowed: gaussian, rademacher"),
        ({"noise": {"name": "minibatch_sgd", "batch_size": 1, "sigma_scaling": "sqrt_alpha"}}, r"noise\.sigma_scaling must be 'fixed' for minibatch_sgd"),
        ({"noise": {"name": "adam", "sigma": 1.0}}, r"noise\.name: Input should be 'label_noise', 'dropout'"),
        ({"noise": {"name": "dropout", "sigma": 0.2}}, r"noise\.name = 'dropout' needs hidden units; model\.name = 'hyperbola' has none"),
        ({"model": {"name": "hyperbola", "n": 3}, "noise": {"name": "minibatch_sgd", "batch_size": 4}}, r"noise\.batch_size=4 must be in \[1, n=3\]"),
        ({"model": {"name": "hyperbola", "d": 5}, "noise": {"sigma": 1.0}}, r"model\.d belongs to the diagonal model\(s\), not to model\.name = 'hyperbola'"),
        ({"model": {"name": "diagonal", "d": 10, "n": 10}, "noise": {"sigma": 1.0}}, r"model\.n=10 must be < model\.d=10"),
        ({"model": {"name": "diagonal", "d": 10, "sparsity": 11}, "noise": {"sigma": 1.0}}, r"model\.sparsity=11 must be in \[0, model\.d=10\]"),
        ({"model": {"name": "tanh", "n": 5}, "noise": {"sigma": 1.0}}, r"model\.n=5 must be <= model\.input_dim=4"),
        ({"model": {"name": "two_unit", "init": [1.0, 2.0]}, "noise": {"sigma": 1.0}}, r"model\.init must have 4 entries for model\.name = 'two_unit' \(got 2\)"),
        ({"model": {"name": "mlp"}}, r"model\.name: Input should be 'hyperbola', 'two_unit', 'diagonal' or 'tanh'"),
        ({"model": {"width": 0, "name": "tanh"}}, r"model\.width: Input should be greater than or equal to 1"),
        ({"noise": {"sigma": 1.0}, "simulation": {"alphas": []}}, r"simulation\.alphas: alphas must not be empty"),
        ({"noise": {"sigma": 1.0}, "simulation": {"alphas": [0.1, 0.1]}}, r"must be distinct"),
        ({"noise": {"sigma": 1.0}, "simulation": {"alphas": [1.5]}}, r"every alpha must be in \(0, 1\]"),
        ({"noise": {"sigma": 1.0}, "simulation": {"runs": 1}}, r"simulation\.runs: Input should be greater than or equal to 2"),
        ({"noise": {"sigma": 1.0}, "simulation": {"tau_max": 1.0, "tau_save": 0.3}}, r"simulation\.tau_save=0\.3 must divide simulation\.tau_max=1\.0"),
        ({"noise": {"sigma": 1.0}, "simulation": {"tau_max": 1.0, "tau_save": 2.0}}, r"simulation\.tau_save=2\.0 must be <= simulation\.tau_max=1\.0"),
        ({"noise": {"sigma": 1.0}, "limit": {"phi_tol": 0.1}}, r"limit\.phi_tol: Input should be less than or equal to 0\.000001 \(got 0\.1\)"),
        ({"noise": {"sigma": 1.0}, "limit": {"kind": "fast"}}, r"limit\.kind: Input should be 'auto', 'non_degenerate', 'degenerate' or 'trivial'"),
        ({"noise": {"sigma": 1.0}, "limit": {"steps": 3}}, r"limit\.steps: unknown key"),
        ({"noise": {"sigma": 1.0}, "extra": 1}, r"extra: unknown key"),
        ({"noise": {"sigma": 1.0}, "plot": {"colour": "red"}}, r"plot\.colour: unknown key"),
    ],
)
def test_bad_configs_raise_errors_naming_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        me.load_manifold_config(cfg)


def test_tau_save_must_be_a_multiple_of_the_time_unit():
    cfg = {"noise": {"sigma": 1.0}, "simulation": {"alphas": [0.04], "tau_max": 0.5, "tau_save": 0.1, "runs": 2}}
    with pytest.raises(ConfigError, match=r"simulation\.tau_save: 0\.1 must be a positive integer multiple of the time unit 0\.0016 at alpha=0\.04 \(62\.5 steps per save\)"):
        me.run_manifold_experiment(cfg)


def test_plot_variables_must_be_observables_of_the_model():
    cfg = {"noise": {"sigma": 1.0}, "plot": {"variables": ["C", "delta"]}}
    with pytest.raises(ConfigError, match=r"plot\.variables: \['delta'\] not observables of model 'hyperbola'; allowed: C, xy, loss"):
        me.run_manifold_experiment(cfg)


def example_files():
    return sorted(Path(str(resources.files("sgdlab") / "examples" / "manifold")).glob("*.toml"))


def test_example_configs_validate_and_cover_every_model():
    files = example_files()
    models = {me.load_manifold_config(f).model.name for f in files}
    assert models == {"hyperbola", "two_unit", "diagonal", "tanh"}
    for f in files:
        cfg = me.load_manifold_config(f)
        assert cfg.name == f.stem and cfg.description


def test_run_store_plot_and_command(tmp_path):
    cfg = {
        "name": "tiny",
        "model": {"name": "hyperbola"},
        "noise": {"name": "label_noise", "sigma": 1.0},
        "simulation": {"alphas": [0.1, 0.05], "runs": 8, "tau_max": 0.4, "tau_save": 0.1},
        "limit": {"substeps": 2},
    }
    ds = me.run_manifold_experiment(cfg)
    assert dict(ds.sizes) == {"method": 2, "alpha": 2, "seed": 8, "tau": 5}
    assert list(ds.method.values) == ["sim", "limit"]
    assert set(ds.data_vars) == {"C", "xy", "loss"}
    assert ds.attrs["noise_kind"] == "degenerate" and ds.attrs["time_scale"] == "tau = alpha^2 sigma^2 k"
    np.testing.assert_allclose(ds.time_unit.values, [0.01, 0.0025])
    np.testing.assert_array_equal(ds.steps_per_save.values, [10, 40])
    c0 = 2.0**2 - 0.6**2
    np.testing.assert_allclose(ds.C.sel({"method": "sim"}).isel(tau=0).values, c0)  # every run starts at w0
    np.testing.assert_allclose(ds.C.sel({"method": "limit"}).isel(alpha=0, seed=0).values, c0 * np.exp(-ds.tau.values), rtol=1e-3)
    assert me.manifold_config_of(ds).simulation.runs == 8
    path = store.save(ds, tmp_path / "tiny.zarr")
    back = store.load(path)
    np.testing.assert_array_equal(back.C.values, ds.C.values)
    assert back.attrs["config_hash"] == ds.attrs["config_hash"]
    fig = me.plot_manifold(ds)
    assert isinstance(fig, matplotlib.figure.Figure)
    rows = me.bias_summary(ds, "C")
    assert [r["alpha"] for r in rows] == [0.1, 0.05] and all(r["tau"] > 0 for r in rows)

    toml = tmp_path / "tiny.toml"
    toml.write_text(
        'description = "tiny"\n[model]\nname = "hyperbola"\n[noise]\nname = "label_noise"\nsigma = 1.0\n'
        "[simulation]\nalphas = [0.1, 0.05]\nruns = 8\ntau_max = 0.4\ntau_save = 0.1\n[limit]\nsubsteps = 2\n"
    )
    table = me.manifold_command(toml, tmp_path / "out")
    assert (tmp_path / "out" / "tiny.zarr").is_dir() and (tmp_path / "out" / "tiny.png").stat().st_size > 10_000
    assert table.row_count == 6  # 3 observables x 2 alphas
    with pytest.raises(ConfigError, match="does not exist"):
        me.manifold_command(tmp_path / "missing.toml", tmp_path / "out")
