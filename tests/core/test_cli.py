"""The command line on tiny configs: writes a readable store and a PNG; clear errors."""

import json

import numpy as np
from typer.testing import CliRunner

from sgdlab.core import store
from sgdlab.cli import STUDIES, app
from sgdlab.core.command import example_names, example_path

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
    for command in STUDIES:
        for name in example_names(command):
            assert f"--example {name} " in result.output
    for cmd in ([], ["run"], ["theory"], ["sweep"], ["plot"], ["manifold"], ["sde"], ["noise"], ["timescales"], ["examples"], ["info"]):
        result = runner.invoke(app, cmd + ["--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_every_example_is_a_valid_config():
    from sgdlab import load_config

    for name in example_names("run"):
        load_config(example_path("run", name))


def test_sub_command_examples_are_checked(tmp_path):
    result = runner.invoke(app, ["manifold", "--example", "nope", "-o", str(tmp_path)])
    assert result.exit_code != 0 and "available" in result.output
    result = runner.invoke(app, ["manifold", str(tmp_path / "x.toml"), "--example", "default", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "CONFIG or --example" in result.output


def test_sweep_and_plot_commands(tmp_path):
    cfg = tmp_path / "sw.toml"
    cfg.write_text(
        '[algorithm]\nhorizon = 1.0\n[simulation]\nd = 60\nseeds = 2\n'
        '[sweep]\n"algorithm.batch_fraction" = [0.5, 1.0]\n'
    )
    store_path = tmp_path / "sw.zarr"  # -o is the output folder; the store is named by the config
    result = runner.invoke(app, ["sweep", str(cfg), "-o", str(tmp_path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sweep", "--status", str(store_path)])
    assert result.exit_code == 0 and "2" in result.output
    result = runner.invoke(app, ["plot", str(store_path), "--var", "q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sw.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, ["plot", str(store_path), "--var", "nope"])
    assert result.exit_code == 2 and "not in the store" in result.output


def test_every_example_of_every_command_is_valid_and_names_are_unique():
    """Each command's examples validate as that command's config, and no two examples (of any
    commands) share an output name, so that they never overwrite each other's files."""
    from sgdlab.cli import _study
    from sgdlab.core.config import read_toml

    seen: dict[str, str] = {}
    for command in STUDIES:
        names = example_names(command)
        assert "default" in names, f"sgdlab {command} has no default example"
        for name in names:
            cfg = _study(command).load(read_toml(example_path(command, name)))
            where = f"{command}/{name}"
            assert cfg.name not in seen, f"examples {seen.get(cfg.name)} and {where} both write {cfg.name}.zarr"
            seen[cfg.name] = where


def test_common_flags_on_every_command():
    for command in [*STUDIES, "theory", "sweep"]:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        for flag in ("--example", "--set", "--out", "--quiet", "--no-plot", "--scheduler", "--workers"):
            assert flag in result.output, f"sgdlab {command} lacks {flag}"
    assert runner.invoke(app, ["--version"]).output.startswith("sgdlab ")


def test_user_text_is_printed_as_text_not_markup(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('name = "[bold red]x"\n[algorithm]\nhorizon = 0.5\n[simulation]\nd = 50\nseeds = 1\n')
    result = runner.invoke(app, ["run", str(cfg), "-o", str(tmp_path), "--no-plot", "-q"])
    assert result.exit_code == 0, result.output
    assert "[bold red]x.zarr" in result.output
    result = runner.invoke(app, ["run", str(cfg), "--set", "[sweep]=1"])
    assert result.exit_code == 2 and "[sweep]" in result.output


def test_output_names_stay_inside_the_output_folder(tmp_path):
    for bad in ("../../x", "/abs/x", ".hidden"):
        result = runner.invoke(app, ["run", "--example", "tiny", "-o", str(tmp_path), "--set", f"name='{bad}'"])
        assert result.exit_code == 2 and "name=" in result.output and "plain file name" in result.output
    assert not any(tmp_path.iterdir())


def test_dmft_only_phase_diagram_is_one_command(tmp_path):
    """`sgdlab sweep` runs the theory too: simulation.enabled = false gives a DMFT-only sweep."""
    cfg = tmp_path / "pd.toml"
    cfg.write_text(
        '[algorithm]\nhorizon = 1.0\nsave_every = 2\n[simulation]\nenabled = false\n'
        '[theory]\nmethods = ["dmft"]\nsamples = 2000\niterations = 5\n'
        '[sweep]\n"algorithm.batch_fraction" = [0.3, 0.6]\n"algorithm.persistence_time" = [1.0, 2.0]\n'
    )
    result = runner.invoke(app, ["sweep", str(cfg), "-o", str(tmp_path), "--workers", "0", "-q"])
    assert result.exit_code == 0, result.output
    ds = store.load(tmp_path / "pd.zarr")
    assert list(ds.method.values) == ["dmft"] and "seed" not in ds.dims
    assert ds.test_error.dims == ("algorithm.batch_fraction", "algorithm.persistence_time", "method", "t")
    assert np.all(np.isfinite(ds.test_error.values)) and np.all(ds.status.values == 1)
    assert (tmp_path / "pd.png").read_bytes()[:4] == b"\x89PNG"


def test_a_dmft_that_does_not_converge_is_kept_flagged_and_fails_the_command(tmp_path):
    result = runner.invoke(app, [
        "run", "--example", "tiny", "-o", str(tmp_path), "--no-plot",
        "--set", 'theory.methods=["dmft"]', "--set", "theory.samples=500", "--set", "theory.iterations=1",
        "--set", 'theory.start="zero"',
    ])
    assert result.exit_code == 1, result.output
    assert "did not converge" in result.output and "FLAGGED" in result.output  # in the message and the table
    ds = store.load(tmp_path / "tiny.zarr")
    assert ds.attrs["status"].startswith("flagged: DMFT did not converge") and ds.attrs["dmft_converged"] == 0


def test_an_unusable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["run", "--example", "tiny", "-o", str(blocker / "sub"), "-q"])
    assert result.exit_code == 2 and "cannot read or write" in result.output and "Traceback" not in result.output


def test_plot_and_status_on_the_wrong_kind_of_store_are_one_line(tmp_path):
    result = runner.invoke(app, ["run", "--example", "tiny", "-o", str(tmp_path), "-q", "--no-plot"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["sweep", "--status", str(tmp_path / "tiny.zarr")])
    assert result.exit_code == 2 and "not a sweep store" in result.output
    (tmp_path / "junk.zarr").mkdir()
    result = runner.invoke(app, ["plot", str(tmp_path / "junk.zarr")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_wide_tables_are_not_cut_at_80_columns(monkeypatch):
    """A pipe or a file gets rich's 80 columns by default, which cut wide tables: every example
    description is printed whole, on one line. (pytest-xdist sets COLUMNS=80 in its workers, which
    sgdlab honours like any COLUMNS: the console is rebuilt here without it.)"""
    import tomllib

    from sgdlab.core import report

    monkeypatch.delenv("COLUMNS", raising=False)
    console = report._console()
    assert not console.is_terminal and console.width == report.PIPE_WIDTH
    monkeypatch.setattr("sgdlab.cli.out_console", console)
    result = runner.invoke(app, ["examples"])
    assert result.exit_code == 0, result.output
    for command in STUDIES:
        for name in example_names(command):
            description = tomllib.loads(example_path(command, name).read_text()).get("description", "")
            assert description[:120] in result.output, (command, name, description)
    assert "…" not in result.output


def test_the_console_script_freezes_the_collector_when_done(monkeypatch):
    """`sgdlab` (the console script) runs the app, then freezes the objects it made, so the
    interpreter's shutdown does not traverse them; the exit status is the app's."""
    import gc
    import sys
    import tomllib
    from pathlib import Path

    import pytest

    from sgdlab.cli import main_entry

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["sgdlab"] == "sgdlab.cli:main_entry"
    monkeypatch.setattr(sys, "argv", ["sgdlab", "run", "--example", "no_such_example"])
    try:
        assert gc.get_freeze_count() == 0
        with pytest.raises(SystemExit) as exit_info:
            main_entry()
        assert exit_info.value.code == 2  # the app's status for a bad input, unchanged
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
