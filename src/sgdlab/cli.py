"""The ``sgdlab`` command line (typer + rich): every wing's study under one vocabulary.

Each study command takes ``CONFIG | --example NAME``, ``--set KEY=VALUE``, ``-o OUT_DIR``,
``--quiet``, ``--no-plot``, ``--scheduler ADDRESS``, ``--workers N``, ``--overwrite``; it writes
``OUT/NAME.zarr`` and ``OUT/NAME*.png`` and prints the paths; a config with a ``[sweep]`` table
runs the sweep on the one engine. Orchestration only: no numerics here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sgdlab.core.command import (
    CommonOptions,
    config_source,
    example_description,
    example_names,
    report_errors,
    run_study_command,
    status_table,
)
from sgdlab.core.report import out_console, say, table

app = typer.Typer(
    help="sgdlab: simulate GD/SGD variants in high dimension and put them beside their theory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_state = {"debug": False}

#: command -> (study import string, one-line help); studies are imported when their command runs
STUDIES = {
    "run": ("sgdlab.dmft.command:STUDY", "Gaussian-mixture classification: simulate GD/SGD variants and solve their DMFT, side by side."),
    "noise": ("sgdlab.dmft.command:NOISE", "The effective noise of SGD: FDT effective temperature, replica distance, decision margins."),
    "sde": ("sgdlab.sde.command:STUDY", "SDE limits of SGD: weak errors of GF / SME / SMF / SVAG against SGD over eta, fitted orders."),
    "manifold": ("sgdlab.manifold.command:STUDY", "Noisy GD near a zero-loss manifold: simulations at several eta beside the slow limit."),
    "timescales": ("sgdlab.two_layer.command:STUDY", "Two-layer learning time scales: finite-d flow, online SGD, reduced dynamics; plateaus and t_l."),
}
#: the ``study`` attr of a store -> its command
COMMAND_OF_STUDY = {"dmft": "run", "noise": "noise", "sde": "sde", "manifold": "manifold", "two_layer": "timescales"}

# The common options, declared once (typer reads them from the annotations).
Example = Annotated[Optional[str], typer.Option("--example", "-e", help="A built-in example (see `sgdlab examples`).")]
Set = Annotated[list[str], typer.Option("--set", "-s", help="Override a key, e.g. --set section.key=value (repeatable; values are TOML).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder: OUT/NAME.zarr and OUT/NAME*.png (NAME: the config's name).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table (paths are still printed).")]
Plot = Annotated[bool, typer.Option("--plot/--no-plot", help="Write the PNG figures.")]
Scheduler = Annotated[Optional[str], typer.Option("--scheduler", help="A [sweep] on an existing dask scheduler, e.g. tcp://10.0.0.1:8786 (default: a local cluster).")]
Workers = Annotated[Optional[int], typer.Option("--workers", "-w", help="A [sweep]'s local worker processes (0: in this process; default: auto, in this process unless the work left is long, then one worker per core).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="A [sweep]: replace a store that holds a different sweep.")]


def _study(command: str):
    from sgdlab.core.study import study_from_ref

    return study_from_ref(STUDIES[command][0])


def _version(value: bool):
    if value:
        import sgdlab

        print(f"sgdlab {sgdlab.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
):
    """sgdlab: simulate GD/SGD variants in high dimension and put them beside their theory."""
    _state["debug"] = debug


def _options(out, quiet, plot, scheduler, workers, overwrite) -> CommonOptions:
    return CommonOptions(out=out, quiet=quiet, plot=plot, scheduler=scheduler, workers=workers, overwrite=overwrite)


def _theory_only(source: dict) -> dict:
    """`sgdlab theory`: the config of `sgdlab run` without the simulation, named NAME-theory."""
    source.setdefault("simulation", {})["enabled"] = False
    theory_table = source.setdefault("theory", {})
    if not theory_table.get("methods"):
        theory_table["methods"] = ["dmft"]
    source["name"] = f"{source.get('name', 'default')}-theory"
    return source


def _register(name: str, command: str, help_text: str, prepare=None) -> None:
    """Register the CLI verb ``name`` running the study of ``command`` (its examples, its config),
    with ``prepare(source) -> source`` applied to the config table first."""

    def study_command(
        config: Optional[Path] = typer.Argument(None, help=f"TOML config file; omitted: the built-in example 'default' of `sgdlab {command}`."),
        example: Example = None,
        set_: Set = [],
        out: Out = Path("results"),
        quiet: Quiet = False,
        plot: Plot = True,
        scheduler: Scheduler = None,
        workers: Workers = None,
        overwrite: Overwrite = False,
    ):
        def go():
            source = config_source(command, config, example, set_)
            source = prepare(source) if prepare is not None else source
            return run_study_command(_study(command), source, _options(out, quiet, plot, scheduler, workers, overwrite))

        report_errors(go, _state["debug"])

    study_command.__doc__ = help_text
    app.command(name=name)(study_command)


for _command, (_ref, _help) in STUDIES.items():
    _register(_command, _command, _help + " A config with a [sweep] table runs the sweep into one store.")
_register(
    "theory", "run",
    "The Gaussian-mixture theory only (the [theory] methods; DMFT if none is listed): `sgdlab run` with "
    "simulation.enabled = false, written as NAME-theory. A [sweep] gives a DMFT phase diagram.",
    prepare=_theory_only,
)


@app.command()
def sweep(
    config: Optional[Path] = typer.Argument(None, help="TOML config of `sgdlab run` with a [sweep] table."),
    example: Example = None,
    set_: Set = [],
    out: Out = Path("results"),
    quiet: Quiet = False,
    plot: Plot = True,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    status: Optional[Path] = typer.Option(None, "--status", help="Only report done / failed / pending of this sweep store (any command's)."),
):
    """Run (or resume) a sweep of `sgdlab run` (every other command runs its own [sweep] too), or
    report a sweep store's progress with --status."""

    def go():
        from sgdlab.core.config import ConfigError

        if status is not None:
            from sgdlab.core.sweep import sweep_status

            summary = sweep_status(status)
            out_console.print(status_table(summary, status))
            for where, msg in summary.errors.items():
                say(f"failed {where}: {msg}")
            for where, flag in summary.flagged.items():
                say(f"flagged {where}: {flag}")
            return None
        source = config_source("run", config, example, set_)
        if "sweep" not in source:
            raise ConfigError(f"{config or example}: no [sweep] table (a sweep needs at least one axis, e.g. \"algorithm.batch_fraction\" = [0.1, 0.5])")
        return run_study_command(_study("run"), source, _options(out, quiet, plot, scheduler, workers, overwrite))

    report_errors(go, _state["debug"])


@app.command()
def plot(
    store_path: Path = typer.Argument(..., help="A zarr store written by any sgdlab command (a run or a sweep)."),
    variable: Optional[str] = typer.Option(None, "--var", "-v", help="Variable of a sweep figure (default: test_error if present)."),
    t: Optional[float] = typer.Option(None, "--t", help="Time of a sweep's heat map (default: the last saved time)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG path of the (main) figure (default: next to the store)."),
):
    """Redraw the figures of a store from the store alone: a run's figures, or a sweep's curves or phase diagram."""

    def go():
        from sgdlab.core import store as stores
        from sgdlab.core.config import ConfigError
        from sgdlab.core.plot import save_figure
        from sgdlab.core.sweep_plot import plot_sweep

        ds = stores.load(store_path)
        png = out or store_path.with_suffix(".png")
        if ds.attrs.get("kind") == "sweep":
            paths = [save_figure(plot_sweep(ds, variable, t), png)]
        else:
            if variable is not None or t is not None:
                raise ConfigError("--var and --t choose what a sweep figure shows; a single run's figures are drawn whole")
            command = COMMAND_OF_STUDY.get(ds.attrs.get("study", ""))
            if command is None:
                raise ConfigError(f"{store_path} has no known 'study' attr (written by another program or an older sgdlab)")
            figs = _study(command).figures(ds)
            paths = [save_figure(fig, png.with_name(png.stem + (f"_{k}" if k else "") + ".png")) for k, fig in figs.items()]
        for p in paths:
            say(f"wrote {p}")

    report_errors(go, _state["debug"])


@app.command()
def examples():
    """List the built-in example configs of every command."""
    rows = []
    for command in STUDIES:
        for name in example_names(command):
            rows.append([f"sgdlab {command}", f"--example {name}", example_description(command, name)])
    out_console.print(table("built-in examples", ["command", "example", "description"], rows, right=[False] * 3, no_wrap=2))


@app.command()
def info():
    """Print the versions, the JAX backend and devices."""
    import jax

    import sgdlab

    say(f"sgdlab {sgdlab.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")


def main_entry() -> None:
    """The ``sgdlab`` console script: :data:`app`, then a quick exit.

    When a command is done (its stores and figures written, its output flushed), the objects it
    made are moved out of the garbage collector's reach (``gc.freeze``), so that the
    interpreter's shutdown does not traverse them again: that traversal took ~1 s after a
    ``sgdlab run`` (JAX's, xarray's and the result's objects), every command, cold or warm.
    Nothing is left unwritten: ``atexit`` handlers and ``weakref.finalize`` still run, and the
    objects are freed by reference counting as the modules are cleared. In-process callers
    (tests, notebooks) use :data:`app` and are not frozen.
    """
    import gc

    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main_entry()
