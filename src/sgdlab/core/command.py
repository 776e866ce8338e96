"""The one command shape of every study: ``CONFIG | --example NAME``, ``--set``, ``-o``,
``--quiet``, ``--no-plot``, ``--scheduler``, ``--workers``, ``--overwrite``.

:func:`run_study_command` is what every study's CLI verb does: load and validate the config
(any ``--set KEY=VALUE`` merged over the file), then either run it once, writing
``OUT/NAME.zarr`` and the figures ``OUT/NAME*.png`` and printing a summary table, or, when the
config has a ``[sweep]`` table, run the sweep into ``OUT/NAME.zarr`` on the one sweep engine.
It prints every path it wrote. Errors become one line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sgdlab.core.config import ConfigError, merge_tables, parse_overrides, read_toml
from sgdlab.core.errors import FlaggedResult, NonFiniteError
from sgdlab.core.report import error, out_console, progress_bar, say, table
from sgdlab.core.study import Study


def examples_folder(command: str):
    """The package folder of the built-in examples of ``command``."""
    return resources.files("sgdlab") / "examples" / command


def example_names(command: str) -> list[str]:
    """Names of the built-in examples of ``command``."""
    folder = examples_folder(command)
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def example_path(command: str, name: str) -> Path:
    """Path of the built-in example ``name`` of ``command`` (a ConfigError lists the names)."""
    names = example_names(command)
    if name not in names:
        raise ConfigError(f"--example {name!r} is not a built-in example of `sgdlab {command}`; available: {', '.join(names)}")
    return Path(str(examples_folder(command) / f"{name}.toml"))


def example_description(command: str, name: str) -> str:
    """The ``description`` of a built-in example."""
    return tomllib.loads(example_path(command, name).read_text()).get("description", "")


def config_source(command: str, config: Path | None, example: str | None, overrides: list[str]) -> dict[str, Any]:
    """The TOML table of ``CONFIG`` or ``--example NAME`` (default: the ``default`` example),
    with the ``--set`` overrides merged in."""
    if config is not None and example is not None:
        raise ConfigError("give either CONFIG or --example NAME, not both")
    path = config if config is not None else example_path(command, example or "default")
    return merge_tables(read_toml(path), parse_overrides(overrides))


@dataclass
class CommonOptions:
    """The options every study command takes."""

    out: Path = Path("results")
    quiet: bool = False
    plot: bool = True
    scheduler: str | None = None
    workers: int | None = None
    overwrite: bool = False


def _write_figures(study: Study, ds, stem: Path) -> list[Path]:
    from sgdlab.core.plot import save_figure

    paths = []
    for suffix, fig in study.figures(ds).items():
        paths.append(save_figure(fig, stem.with_name(stem.name + (f"_{suffix}" if suffix else "") + ".png")))
    return paths


def run_study_command(study: Study, source: dict[str, Any], opts: CommonOptions) -> list[Path]:
    """Run one config (or its sweep) of ``study`` as the CLI does; returns the paths written."""
    from sgdlab.core import store

    cfg = study.load(source)
    opts.out.mkdir(parents=True, exist_ok=True)
    store_path = opts.out / f"{cfg.name}.zarr"
    start = time.perf_counter()
    if cfg.sweep is not None:
        return _run_sweep_command(study, cfg, store_path, opts)
    with progress_bar(f"{cfg.name} ({study.command})", quiet=opts.quiet) as progress:
        try:
            ds = study.run(cfg, progress)
        except NonFiniteError as err:
            if err.partial is not None:
                store.save(err.partial, store_path)
                err.args = (f"{err}\n(what was computed before is kept in {store_path})",)
            raise
    written = [store.save(ds, store_path)]
    if opts.plot:
        written += _write_figures(study, ds, opts.out / cfg.name)
    if not opts.quiet:
        out_console.print(study.table(ds))
        say(f"{cfg.name}: {time.perf_counter() - start:.1f} s")
    for p in written:
        say(f"wrote {p}")
    status = str(ds.attrs.get("status", "complete"))
    if status != "complete":
        raise FlaggedResult(f"the result is {status}; it is kept in {store_path} with that status")
    return written


def _run_sweep_command(study: Study, cfg, store_path: Path, opts: CommonOptions) -> list[Path]:
    from sgdlab.core.sweep import load_sweep, run_sweep

    with progress_bar(f"sweep {cfg.name} ({study.command})", quiet=opts.quiet) as progress:
        summary = run_sweep(
            study, cfg, store_path, scheduler=opts.scheduler, workers=opts.workers, overwrite=opts.overwrite, progress=progress
        )
    if not opts.quiet:
        out_console.print(status_table(summary, store_path))
        say(f"{summary.skipped} points already done (skipped); {summary.seconds:.1f} s, {summary.executor}")
    for where, msg in summary.errors.items():
        say(f"failed {where}: {msg}")
    for where, status in summary.flagged.items():
        say(f"flagged {where}: {status}")
    written = [store_path]
    if opts.plot and summary.done:
        from sgdlab.core.plot import save_figure
        from sgdlab.core.sweep_plot import plot_sweep

        ds = load_sweep(store_path)
        targets = {v: store_path.with_name(f"{cfg.name}_{v}.png") for v in study.sweep_variables} or {None: store_path.with_suffix(".png")}
        for variable, png in targets.items():
            try:
                written.append(save_figure(plot_sweep(ds, variable), png))
            except ValueError as err:
                say(f"no sweep figure of {variable or 'the default variable'}: {err}")
    for p in written:
        say(f"wrote {p}")
    if summary.failed or summary.flagged:  # as a single run: kept, but the command fails
        raise FlaggedResult(f"{summary.failed} of {summary.total} points failed and {len(summary.flagged)} are flagged; "
                            f"they are kept in {store_path} with their status (sgdlab sweep --status {store_path})")
    return written


def status_table(summary, store: Path):
    """The done / failed / pending table of a sweep."""
    return table(f"sweep {store}", ["points", "done", "failed", "pending", "flagged (done)"],
                 [[summary.total, summary.done, summary.failed, summary.pending, len(summary.flagged)]], right=[True] * 5)


def report_errors(fn, debug: bool):
    """Call ``fn()``; an error becomes one line and an exit status (the traceback with ``debug``).

    Exit 2 for an invalid config or input, 1 for a failed computation.
    """
    import typer

    try:
        return fn()
    except typer.Exit:
        raise
    except Exception as err:
        if debug:
            raise
        if isinstance(err, (ConfigError, FileNotFoundError)):
            error(str(err))
            raise typer.Exit(2) from None
        if isinstance(err, (NonFiniteError, FlaggedResult)):
            error(str(err))
            raise typer.Exit(1) from None
        if "RESOURCE_EXHAUSTED" in str(err) or isinstance(err, MemoryError):
            error("out of memory while computing; lower the sizes (d, seeds or seed_batch, samples, horizon) "
                  f"or free memory ({type(err).__name__})")
            raise typer.Exit(1) from None
        if isinstance(err, OSError):
            error(f"cannot read or write {getattr(err, 'filename', None) or 'a file'}: {err.strerror or err} "
                  "(check -o OUT_DIR and the permissions)")
            raise typer.Exit(2) from None
        error(f"{type(err).__name__}: {err}" + "\n(run with `sgdlab --debug ...` for the traceback)")
        raise typer.Exit(1) from None
