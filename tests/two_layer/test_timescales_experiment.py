"""``sgdlab timescales`` from a config: validation errors name the key, the Dataset of the three
methods (finite-d flow, online SGD, reduced dynamics), their agreement, the eps scan, the figures
and the study command end to end (through ``sgdlab.core.command.run_study_command``).

The end-to-end test runs one tiny study (~20 s on 2 cores, mostly JAX compilation) and checks
everything on it, so that pytest-xdist compiles its solvers once; the other tests are cheap."""

import json
from importlib import resources
from pathlib import Path

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from sgdlab.cli import app
from sgdlab.core import store
from sgdlab.core.command import CommonOptions, config_source, run_study_command
from sgdlab.core.errors import ConfigError
from sgdlab.two_layer.command import STUDY
from sgdlab.two_layer.config import TimescalesConfig, load_config
from sgdlab.two_layer.flow import random_overlaps_wishart
from sgdlab.two_layer.plot import figures, table

runner = CliRunner()

#: eps = 1e-2 with m = 32 (m sqrt(eps) = 3.2) and d eps >> 1; explicit solvers (cheap to compile).
TINY = """name = "tiny_ts"
description = "tiny test study"
[dynamics]
eps = 1e-2
t_max = 1.0
n_times = 30
[flow]
d = 1_000_000
m = 32
seeds = 2
[sgd]
d = 400
m = 32
seeds = 2
eta = 2e-4
batch = 8
[reduced]
m = 32
solver = "tsit5"
[scan]
eps = [1e-2, 4e-3, 1.6e-3]
t_max = 0.6
d = [30, 1_000_000]
"""


def example_dir() -> Path:
    return Path(str(resources.files("sgdlab") / "examples" / "timescales"))


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"dynamics": {"eps": 0}}, r"dynamics\.eps: Input should be greater than 0 \(got 0\)"),
        ({"dynamics": {"eps": 2.0}}, r"dynamics\.eps: Input should be less than or equal to 1"),
        ({"dynamics": {"n_times": 5}}, r"dynamics\.n_times: Input should be greater than or equal to 10"),
        ({"dynamics": {"t_min": 3.0, "t_max": 1.0}}, r"dynamics\.t_min=3\.0 must be < dynamics\.t_max=1\.0"),
        ({"dynamics": {"a_law": "cauchy"}}, r"dynamics\.a_law: Input should be 'uniform' or 'gaussian'"),
        ({"dynamics": {"step": 1}}, r"dynamics\.step: unknown key"),
        ({"flow": {"m": 1000}}, r"flow\.m: Input should be less than or equal to 256"),
        ({"flow": {"m": 64, "solver": "kvaerno5"}}, r"flow\.solver='kvaerno5'.*m <= 24"),
        ({"sgd": {"eta": 0.05}}, r"sgd\.eta=0\.05 must be < dynamics\.eps=0\.01"),
        ({"sgd": {"eta": 0}}, r"sgd\.eta: Input should be greater than 0"),
        ({"sgd": {"eta": 1e-4}, "dynamics": {"eps": 0.5, "t_max": 5e-5}}, r"sgd\.eta=0\.0001 must be < dynamics\.t_max"),
        ({"sgd": {"dt": 1e-4}}, r"sgd\.dt: unknown key"),  # renamed to sgd.eta, no alias
        ({"sgd": {"batch": 0}}, r"sgd\.batch: Input should be greater than or equal to 1"),
        ({"reduced": {"solver": "euler"}}, r"reduced\.solver: Input should be 'auto', 'tsit5' or 'kvaerno5'"),
        ({"scan": {"eps": [1e-3, 1e-4]}}, r"scan\.eps: .*needs >= 3 values"),
        ({"scan": {"eps": [1e-3, 1e-4, 1.5]}}, r"scan\.eps: .*must lie in \(0, 1\)"),
        ({"scan": {"d": [1, 100]}}, r"scan\.d: .*must be >= 2"),
        ({"problem": {"target": "softplus"}}, r"problem\.target: .*unknown function 'softplus'"),
        ({"problem": {"activation": [0.0, 1.0, 1.0, 1.0, 1.0]}}, r"problem\.activation has 5 coefficients but degree=3"),
        ({"problem": {"target": [0.0, 0.0]}}, r"problem\.target coefficients are all zero"),
        ({"flow": {"enabled": False}, "sgd": {"enabled": False}, "reduced": {"enabled": False}}, r"enable at least one"),
        ({"seeds": 3}, r"seeds: unknown key"),
    ],
)
def test_invalid_configs_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[dynamics\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_examples_are_valid_and_listed():
    names = sorted(p.stem for p in example_dir().glob("*.toml"))
    assert "default" in names
    for name in names:
        cfg = load_config(example_dir() / f"{name}.toml")
        assert cfg.name.startswith("timescales_") and cfg.description
    default = load_config(None)
    assert default.problem.to_problem().plateau_levels().tolist() == [1.5, 1.5, 1.0, 0.5, 0.0]
    assert default.flow.d * default.dynamics.eps >= 100 and default.sgd.d * default.dynamics.eps >= 10  # d >> 1/eps
    result = runner.invoke(app, ["examples"])
    assert result.exit_code == 0, result.output
    assert "timescales" in result.output and "default" in result.output


def test_named_functions_are_projected():
    p = TimescalesConfig.model_validate({"problem": {"target": [0, 1, 1, 1], "activation": "relu"}}).problem.to_problem()
    assert p.sigma[1] == pytest.approx(0.5) and p.sigma[3] == 0.0  # relu: sigma_3 = 0, degree 3 unlearnable
    assert p.plateau_levels()[-1] == pytest.approx(0.5)


def test_wishart_overlaps_have_the_law_of_random_unit_vectors():
    m, d, n = 3, 1500, 4000  # d > m + 1000: the Bartlett / Wilson-Hilferty path
    keys = jax.random.split(jax.random.key(0), n)
    s, G = map(np.asarray, jax.vmap(lambda k: random_overlaps_wishart(k, m, d))(keys))
    np.testing.assert_allclose(np.diagonal(G, axis1=1, axis2=2), 1.0, atol=1e-12)
    assert np.all(np.abs(s) < 1) and np.allclose(G, np.swapaxes(G, 1, 2))
    # E s^2 = E G_ij^2 = 1/d (relative standard error 2.2% at n = 4000): the tolerance is ~3.6 se
    for x in (s[:, 0], s[:, 2], G[:, 0, 1], G[:, 1, 2]):
        assert np.mean(x**2) == pytest.approx(1 / d, rel=0.08)
    assert np.mean(s**4) == pytest.approx(3 / (d * (d + 2)), rel=0.12)  # relative se 3% (3 x 4000 draws)
    assert abs(np.mean(s[:, 0] * G[:, 0, 1])) < 4 * np.sqrt(1 / d**2 / n)  # odd moment: zero
    # huge d: overlaps ~ d^{-1/2}, unit diagonal
    s, G = random_overlaps_wishart(jax.random.key(1), 4, 10**16)
    assert np.all(np.abs(np.asarray(s)) < 1e-6) and np.all(np.abs(np.asarray(G) - np.eye(4)) < 1e-6)
    assert np.any(np.asarray(s) != 0)


def test_command_rejects_bad_overrides_and_examples(tmp_path):
    with pytest.raises(ConfigError, match=r"dynamics\.eps"):
        run_study_command(STUDY, config_source("timescales", None, "default", ["dynamics.eps=0"]), CommonOptions(out=tmp_path, quiet=True))
    with pytest.raises(ConfigError, match="default"):
        config_source("timescales", None, "nope", [])
    assert not list(tmp_path.iterdir())  # nothing written


def test_command_end_to_end_dataset_agreement_and_figures(tmp_path, capsys):
    """One tiny study through the study command (one test, so that xdist compiles its solvers once)."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace("t_max = 1.0", "t_max = 0.5"))
    out = tmp_path / "out"
    source = config_source("timescales", cfg, None, ["dynamics.t_max=1.0"])
    written = run_study_command(STUDY, source, CommonOptions(out=out))
    assert {p.name for p in written} == {"tiny_ts.zarr", "tiny_ts.png", "tiny_ts_eps_scaling.png", "tiny_ts_d_scan.png"}
    _check_outputs(out, capsys.readouterr().out)
    ds = store.load(out / "tiny_ts.zarr")
    _check_agreement(ds)
    _check_plots_and_table(ds)


def _check_outputs(out, output):
    for name in ("tiny_ts.png", "tiny_ts_eps_scaling.png", "tiny_ts_d_scan.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "plateau levels" in output and "exponent" in output
    ds = store.load(out / "tiny_ts.zarr")
    assert json.loads(ds.attrs["config"])["name"] == "tiny_ts" and float(ds.t[-1]) == pytest.approx(1.0)  # the --set override was applied
    assert ds.attrs["study"] == "two_layer" and ds.attrs["status"] == "complete" and len(ds.attrs["config_hash"]) == 12
    assert list(ds.method.values) == ["flow", "sim", "reduced"]
    assert dict(ds.M.sizes) == {"method": 3, "seed": 2, "t": 30, "degree": 4}
    assert ds.risk.dims == ("method", "seed", "t") and ds.t_half.dims == ("method", "degree")
    for v in ("plateau_predicted", "plateau_measured", "plateau_level", "carrier_fraction", "t_half_scan", "exponent"):
        assert v in ds
    assert np.isnan(ds.M.sel({"method": "reduced", "seed": 1})).all()  # deterministic: one seed, padded
    assert np.isfinite(ds.M.sel({"method": "sim"})).all()


def _check_agreement(ds):
    flow, sim, red = (ds.sel({"method": m}) for m in ("flow", "sim", "reduced"))
    # everyone starts on the predicted first plateau (finite m adds |sigma|^2 <a^2> / (2m) = 0.016)
    for m in ("flow", "sim", "reduced"):
        assert float(ds.plateau_measured.sel({"method": m, "level": 0})) == pytest.approx(1.5, abs=0.04)
    t1 = {m: float(ds.t_half.sel({"method": m, "degree": 1})) for m in ("flow", "sim", "reduced")}
    # flow vs SGD: the same drift at the same m; SGD noise (dt d / batch = 0.01) only
    assert t1["sim"] == pytest.approx(t1["flow"], rel=0.25)
    # flow vs reduced: the finite-m ridge |sigma|^2/m on a delays the flow (m sqrt(eps) = 3.2)
    assert t1["reduced"] < t1["flow"] < 1.8 * t1["reduced"]
    # the reduced dynamics learns all three degrees, in order, and reaches zero risk
    th = red.t_half.values
    assert th[1] < th[2] < th[3] < 1.0
    assert float(red.risk.isel(seed=0, t=-1)) < 0.02 and float(flow.risk.mean("seed").isel(t=-1)) < 0.05
    assert np.nanmin(sim.risk.values) >= 0  # the exact Mehler risk of the SGD weights
    # eps scan: degree-1 exponent after removing the log, near 1/2 even at these large eps
    e, lo, hi = (float(ds[v].sel(degree=1)) for v in ("exponent", "exponent_low", "exponent_high"))
    assert 0.38 < e < 0.6 and lo < e < hi
    assert np.all(ds.scan_ok.values)
    # d scan of the flow: at d = 1e6 (d eps >> 1) the same t_1 as the main flow run (other initial
    # overlaps; seed spread ~1e-4 measured); at d = 30 the initial overlaps d^{-1/2} ~ sqrt(eps)
    # start the escape early: t_1 smaller by several standard errors
    td, te = ds.t_half_dscan.sel(degree=1).values, ds.t_half_dscan_err.sel(degree=1).values
    assert td[1] == pytest.approx(t1["flow"], rel=0.02)
    assert td[1] - td[0] > 3 * np.hypot(te[0], te[1])


def _check_plots_and_table(ds):
    figs = figures(ds)
    assert set(figs) == {"", "eps_scaling", "d_scan"}
    left = figs[""].axes[0]
    assert left.get_xscale() == "log"
    ys = {round(float(line.get_ydata()[0]), 6) for line in left.get_lines() if len(set(np.asarray(line.get_ydata(), float))) == 1}
    assert {1.5, 1.0, 0.5, 0.0} <= ys  # predicted plateau levels drawn
    labels = [t.get_text() for t in figs["eps_scaling"].axes[0].get_legend().get_texts()]
    assert any("exponent" in label and "theory 1/2" in label for label in labels)
    no_scan = figures(ds.drop_vars([v for v in ds.data_vars if {"eps", "d"} & set(ds[v].dims) or v.startswith("exponent")]))
    assert set(no_scan) == {""}
    levels, times = table(ds).renderables
    assert levels.row_count == 5 and times.row_count == 4
