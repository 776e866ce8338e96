"""The manifold experiment: config validation (every error names its key), the Dataset, the
store round trip, the figure, the command through the generic runner, non-finite runs, a sweep
through the core engine, the layering of the wing; the example configs validate."""

import ast
import tomllib
from importlib import resources
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest

import sgdlab  # noqa: F401
from sgdlab.core import store
from sgdlab.core.command import CommonOptions, config_source, run_study_command
from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.core.sweep import load_sweep, run_sweep
from sgdlab.manifold import experiment as me
from sgdlab.manifold import limit as mf
from sgdlab.manifold import plot as mp
from sgdlab.manifold.command import STUDY
from sgdlab.manifold.config import DEFAULT_PHI_TOL, DEFAULT_RANK_RTOL, load_config

TINY = {
    "name": "tiny",
    "model": {"name": "hyperbola"},
    "noise": {"name": "label_noise", "sigma": 1.0},
    "simulation": {"etas": [0.1, 0.05], "runs": 8, "tau_max": 0.4, "tau_save": 0.1},
    "limit": {"substeps": 2},
}


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"noise": {"name": "label_noise"}}, r"noise: noise\.sigma is required for label_noise"),
        ({"noise": {"sigma": -1.0}}, r"noise\.sigma: Input should be greater than 0 \(got -1\.0\)"),
        ({"noise": {"name": "minibatch_sgd"}}, r"noise\.batch_size is required for minibatch_sgd"),
        ({"noise": {"name": "minibatch_sgd", "batch_size": 1, "sigma": 0.3}}, r"noise\.sigma is set by noise\.batch_size"),
        ({"noise": {"name": "label_noise", "sigma": 1.0, "batch_size": 2}}, r"noise\.batch_size belongs to minibatch_sgd only"),
        ({"noise": {"name": "label_noise", "sigma": 1.0, "distribution": "bernoulli"}}, r"noise\.distribution='bernoulli' is not allowed for label_noise; allowed: gaussian, rademacher"),
        ({"noise": {"name": "minibatch_sgd", "batch_size": 1, "sigma_scaling": "sqrt_eta"}}, r"noise\.sigma_scaling must be 'fixed' for minibatch_sgd"),
        ({"noise": {"name": "label_noise", "sigma": 1.0, "sigma_scaling": "sqrt_alpha"}}, r"noise\.sigma_scaling: Input should be 'fixed' or 'sqrt_eta'"),
        ({"noise": {"name": "adam", "sigma": 1.0}}, r"noise\.name: .adam.; allowed: label_noise, dropout"),
        ({"noise": {"name": "dropout", "sigma": 0.2}}, r"noise\.name = 'dropout' needs hidden units; model\.name = 'hyperbola' has none"),
        ({"model": {"name": "hyperbola", "n": 3}, "noise": {"name": "minibatch_sgd", "batch_size": 4}}, r"noise\.batch_size=4 must be in \[1, n - 1 = 2\]"),
        ({"model": {"name": "hyperbola", "d": 5}, "noise": {"sigma": 1.0}}, r"model\.d belongs to the diagonal model\(s\), not to model\.name = 'hyperbola'"),
        ({"model": {"name": "diagonal", "d": 10, "n": 10}, "noise": {"sigma": 1.0}}, r"model\.n=10 must be < model\.d=10"),
        ({"model": {"name": "diagonal", "d": 10, "sparsity": 11}, "noise": {"sigma": 1.0}}, r"model\.sparsity=11 must be in \[0, model\.d=10\]"),
        ({"model": {"name": "tanh", "n": 5}, "noise": {"sigma": 1.0}}, r"model\.n=5 must be <= model\.input_dim=4"),
        ({"model": {"name": "two_unit", "init": [1.0, 2.0]}, "noise": {"sigma": 1.0}}, r"model\.init must have 4 entries for model\.name = 'two_unit' \(got 2\)"),
        ({"model": {"name": "mlp"}}, r"model\.name: Input should be 'hyperbola', 'two_unit', 'diagonal' or 'tanh'"),
        ({"model": {"width": 0, "name": "tanh"}}, r"model\.width: Input should be greater than or equal to 1"),
        ({"noise": {"sigma": 1.0}, "simulation": {"etas": []}}, r"simulation\.etas: etas must not be empty"),
        ({"noise": {"sigma": 1.0}, "simulation": {"etas": [0.1, 0.1]}}, r"simulation\.etas: .*must be distinct"),
        ({"noise": {"sigma": 1.0}, "simulation": {"etas": [1.5]}}, r"simulation\.etas: .*every eta must be in \(0, 1\]"),
        ({"noise": {"sigma": 1.0}, "simulation": {"etas": [0.0]}}, r"simulation\.etas: .*every eta must be in \(0, 1\]"),
        ({"noise": {"sigma": 1.0}, "simulation": {"alphas": [0.1]}}, r"simulation\.alphas: unknown key"),
        ({"noise": {"sigma": 1.0}, "simulation": {"runs": 1}}, r"simulation\.runs: Input should be greater than or equal to 2"),
        ({"noise": {"sigma": 1.0}, "simulation": {"tau_max": 1.0, "tau_save": 0.3}}, r"simulation\.tau_save=0\.3 must divide simulation\.tau_max=1\.0"),
        ({"noise": {"sigma": 1.0}, "simulation": {"tau_max": 1.0, "tau_save": 2.0}}, r"simulation\.tau_save=2\.0 must be <= simulation\.tau_max=1\.0"),
        ({"noise": {"sigma": 1.0}, "limit": {"phi_tol": 0.1}}, r"limit\.phi_tol: Input should be less than or equal to 0\.000001 \(got 0\.1\)"),
        ({"noise": {"sigma": 1.0}, "limit": {"kind": "fast"}}, r"limit\.kind: Input should be 'auto', 'non_degenerate', 'degenerate' or 'trivial'"),
        ({"noise": {"sigma": 1.0}, "limit": {"steps": 3}}, r"limit\.steps: unknown key"),
        ({"noise": {"sigma": 1.0}, "extra": 1}, r"extra: unknown key"),
        ({"noise": {"sigma": 1.0}, "plot": {"colour": "red"}}, r"plot\.colour: unknown key"),
        ({"noise": {"sigma": 1.0}, "sweep": {"simulation.etas": [[0.1], [0.2]]}}, r"simulation\.etas cannot be a sweep axis"),
        ({"noise": {"sigma": 1.0}, "sweep": {"noise.strength": [0.1, 0.2]}}, r"sweep axis 'noise\.strength' is not a config key"),
    ],
)
def test_bad_configs_raise_errors_naming_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


def test_solver_defaults_in_the_config_are_the_solver_s():
    assert (DEFAULT_PHI_TOL, DEFAULT_RANK_RTOL) == (mf.PHI_TOL, mf.RANK_RTOL)


def test_tau_save_must_be_a_multiple_of_the_time_unit():
    cfg = {"noise": {"sigma": 1.0}, "simulation": {"etas": [0.04], "tau_max": 0.5, "tau_save": 0.1, "runs": 2}}
    with pytest.raises(ConfigError, match=r"simulation\.tau_save: 0\.1 must be a positive integer multiple of the time unit 0\.0016 at eta=0\.04 \(62\.5 steps per save\)"):
        me.run(cfg)


def test_plot_variables_must_be_observables_of_the_model():
    cfg = {"noise": {"sigma": 1.0}, "plot": {"variables": ["C", "delta"]}}
    with pytest.raises(ConfigError, match=r"plot\.variables: \['delta'\] not observables of model 'hyperbola'; allowed: C, xy, loss"):
        me.run(cfg)


def example_files():
    return sorted(Path(str(resources.files("sgdlab") / "examples" / "manifold")).glob("*.toml"))


def test_example_configs_validate_and_cover_every_model():
    files = example_files()
    assert "default" in {f.stem for f in files}
    models = {load_config(f).model.name for f in files}
    assert models == {"hyperbola", "two_unit", "diagonal", "tanh"}
    for f in files:
        cfg = load_config(f)
        assert cfg.name == f"manifold_{f.stem}" and cfg.description
        assert "name" in tomllib.loads(f.read_text())  # explicit, not the file stem
    assert load_config(None).name == "manifold_default"


def test_run_store_plot_and_command(tmp_path):
    ds = me.run(TINY)
    assert dict(ds.sizes) == {"method": 2, "eta": 2, "seed": 8, "t": 5}
    assert list(ds.method.values) == ["sim", "limit"]
    assert set(mp.observables(ds)) == {"C", "xy", "loss"}
    assert set(ds.data_vars) == {"C", "xy", "loss", "sigma", "time_unit", "steps_per_save"}
    assert ds.attrs["noise_kind"] == "degenerate" and ds.attrs["time_scale"] == "tau = eta^2 sigma^2 k"
    assert ds.attrs["study"] == "manifold" and ds.attrs["status"] == "complete"
    assert ds.attrs["config_hash"] == load_config(TINY).config_hash() and "jax_version" in ds.attrs
    np.testing.assert_allclose(ds.time_unit.values, [0.01, 0.0025])
    np.testing.assert_array_equal(ds.steps_per_save.values, [10, 40])
    c0 = 2.0**2 - 0.6**2
    np.testing.assert_allclose(ds.C.sel({"method": "sim"}).isel(t=0).values, c0)  # every run starts at w0
    np.testing.assert_allclose(ds.C.sel({"method": "limit"}).isel(eta=0, seed=0).values, c0 * np.exp(-ds.t.values), rtol=1e-3)
    assert me.config_of(ds).simulation.runs == 8
    path = store.save(ds, tmp_path / "tiny.zarr")
    back = store.load(path)
    np.testing.assert_array_equal(back.C.values, ds.C.values)
    assert back.attrs["config_hash"] == ds.attrs["config_hash"]
    fig = mp.plot_manifold(ds)
    assert isinstance(fig, matplotlib.figure.Figure)
    rows = mp.bias_summary(ds, "C")
    assert [r["eta"] for r in rows] == [0.1, 0.05] and all(r["t"] > 0 for r in rows)

    toml = tmp_path / "tiny.toml"
    toml.write_text(
        'description = "tiny"\n[model]\nname = "hyperbola"\n[noise]\nname = "label_noise"\nsigma = 1.0\n'
        "[simulation]\netas = [0.1, 0.05]\nruns = 8\ntau_max = 0.4\ntau_save = 0.1\n[limit]\nsubsteps = 2\n"
    )
    written = run_study_command(STUDY, config_source("manifold", toml, None, []), CommonOptions(out=tmp_path / "out", quiet=True))
    assert (tmp_path / "out" / "tiny.zarr").is_dir() and (tmp_path / "out" / "tiny.png").stat().st_size > 10_000
    assert set(written) == {tmp_path / "out" / "tiny.zarr", tmp_path / "out" / "tiny.png"}
    np.testing.assert_array_equal(store.load(tmp_path / "out" / "tiny.zarr").C.values, ds.C.values)
    assert STUDY.table(ds).row_count == 6  # 3 observables x 2 etas
    with pytest.raises(ConfigError, match="does not exist"):
        config_source("manifold", tmp_path / "missing.toml", None, [])


def test_set_overrides_reach_the_run(tmp_path):
    src = config_source("manifold", None, "default", ["simulation.runs=4", "simulation.etas=[0.1]", "simulation.tau_max=0.2", "name=overridden"])
    run_study_command(STUDY, src, CommonOptions(out=tmp_path, quiet=True, plot=False))
    back = store.load(tmp_path / "overridden.zarr")
    assert dict(back.sizes) == {"method": 2, "eta": 1, "seed": 4, "t": 3}
    assert not (tmp_path / "overridden.png").exists()


def test_figures_work_on_a_store_round_trip(tmp_path):
    ds = me.run({**TINY, "plot": {"variables": ["xy", "C"]}})
    back = store.load(store.save(ds, tmp_path / "rt.zarr"))
    figs = mp.figures(back)
    assert list(figs) == [""] and isinstance(figs[""], matplotlib.figure.Figure)
    assert [ax.get_title() for ax in figs[""].axes[:2]] == [ds.xy.attrs["long_name"], ds.C.attrs["long_name"]]
    assert STUDY.table(back).row_count == 6


def test_divergence_names_quantity_time_eta_and_run_and_keeps_the_partial_result(tmp_path):
    # eta = 1 on the hyperbola: GD is unstable (eta lambda_max > 2); the first eta is stable
    cfg = {"name": "blowup", "noise": {"sigma": 1.0}, "simulation": {"etas": [0.1, 1.0], "runs": 4, "tau_max": 50.0, "tau_save": 1.0},
           "limit": {"substeps": 1}}
    with pytest.raises(NonFiniteError, match=r"simulation diverged: (C|xy|loss) is not finite at t=\d+ \(step \d+\) for eta=1 .*run \d of 4 \(simulation\.seed=0\)") as err:
        me.run(cfg)
    partial = err.value.partial
    assert partial.attrs["status"].startswith("failed: simulation diverged")
    assert np.isfinite(partial.C.sel({"method": "sim"}).isel(eta=0).values).all()  # the stable eta was computed
    assert np.isfinite(partial.C.sel({"method": "limit"}).values).all()
    with pytest.raises(NonFiniteError, match="what was computed before is kept in"):
        run_study_command(STUDY, cfg, CommonOptions(out=tmp_path, quiet=True))
    kept = store.load(tmp_path / "blowup.zarr")
    assert kept.attrs["status"].startswith("failed") and kept.sizes["eta"] == 2


def test_a_sweep_over_the_noise_scale_runs_through_the_core_engine(tmp_path):
    base = {**TINY, "simulation": {**TINY["simulation"], "runs": 4}}
    cfg = {**base, "sweep": {"noise.sigma": [1.0, 0.5]}}
    summary = run_sweep(STUDY, cfg, tmp_path / "s.zarr", workers=0)
    assert (summary.done, summary.failed) == (2, 0), summary.errors
    sw = load_sweep(tmp_path / "s.zarr")
    for i, sigma in enumerate([1.0, 0.5]):
        single = me.run({**base, "noise": {**base["noise"], "sigma": sigma}})
        point = sw.isel({"noise.sigma": i})
        for var in ("C", "xy", "loss", "sigma", "time_unit", "steps_per_save"):
            np.testing.assert_array_equal(point[var].values, single[var].values, err_msg=f"{var} at sigma={sigma}")


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods |= {f"{node.module}.{a.name}" for a in node.names} | {node.module or ""}
    return mods


def test_layering_theory_and_simulator_meet_only_in_the_experiment():
    folder = Path(me.__file__).parent
    touches = {name: {m for m in _imports(folder / f"{name}.py") if m.startswith("sgdlab.manifold")} for name in ("limit", "noise", "models")}
    assert not any("noise" in m for m in touches["limit"]), touches
    assert not any("limit" in m for m in touches["noise"]), touches
    assert not touches["models"], touches
    both = [f.stem for f in folder.glob("*.py") if {"sgdlab.manifold.limit", "sgdlab.manifold.noise"} <= _imports(f)]
    assert both == ["experiment"], both
