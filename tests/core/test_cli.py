"""The command line on tiny configs: writes a readable store and a PNG; clear errors."""

import json

import numpy as np
from typer.testing import CliRunner

from sgdlab.core import store
from sgdlab.cli import app, example_names

runner = CliRunner()


def test_run_example_writes_store_and_figure(tmp_path):
    result = runner.invoke(app, ["run", "--example", "tiny", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ds = store.load(tmp_path / "tiny.zarr")
    assert ds.sizes["seed"] == 2 and list(ds.method.values) == ["sim"]
    assert set(ds.dims) == {"method", "seed", "t"}
    assert json.loads(ds.attrs["config"])["simulation"]["d"] == 200
    assert np.all(np.isfinite(ds.test_error.values))
    png = (tmp_path / "tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_run_config_file_with_override(tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text('[algorithm]\nname = "gd"\neta = 0.2\nhorizon = 1.0\n[simulation]\nd = 100\nseeds = 1\n')
    result = runner.invoke(app, ["run", str(cfg), "-o", str(tmp_path), "--set", "problem.loss=logistic", "--no-plot", "-q"])
    assert result.exit_code == 0, result.output
    ds = store.load(tmp_path / "mine.zarr")
    assert json.loads(ds.attrs["config"])["problem"]["loss"] == "logistic"
    assert not (tmp_path / "mine.png").exists()


def test_bad_config_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["run", "--example", "tiny", "-o", str(tmp_path), "--set", "algorithm.batch_fraction=1.5"])
    assert result.exit_code == 2
    assert "algorithm.batch_fraction" in result.output
    result = runner.invoke(app, ["run", "--example", "nope"])
    assert result.exit_code != 0 and "available" in result.output


def test_examples_and_help():
    result = runner.invoke(app, ["examples"])
    assert result.exit_code == 0
    for name in example_names():
        assert name in result.output
    for cmd in ([], ["run"], ["theory"], ["sweep"], ["plot"], ["manifold"], ["sde"], ["noise"], ["examples"], ["info"]):
        result = runner.invoke(app, cmd + ["--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_every_example_is_a_valid_config():
    from sgdlab import load_config
    from sgdlab.cli import example_path

    for name in example_names():
        load_config(example_path(name))


def test_sub_command_examples_are_checked(tmp_path):
    result = runner.invoke(app, ["manifold", "--example", "nope", "-o", str(tmp_path)])
    assert result.exit_code != 0 and "available" in result.output
    result = runner.invoke(app, ["manifold", "-o", str(tmp_path)])
    assert result.exit_code != 0 and "CONFIG or --example" in result.output


def test_sweep_and_plot_commands(tmp_path):
    cfg = tmp_path / "sw.toml"
    cfg.write_text(
        '[algorithm]\nhorizon = 1.0\n[simulation]\nd = 60\nseeds = 2\n'
        '[sweep]\n"algorithm.batch_fraction" = [0.5, 1.0]\n'
    )
    store_path = tmp_path / "sw.zarr"
    result = runner.invoke(app, ["sweep", str(cfg), "-o", str(store_path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sweep", "--status", str(store_path)])
    assert result.exit_code == 0 and "2" in result.output
    result = runner.invoke(app, ["plot", str(store_path), "--var", "q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sw.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, ["plot", str(store_path), "--var", "nope"])
    assert result.exit_code == 2 and "not in the store" in result.output
