"""The ``sgdlab`` command line (typer + rich). Orchestration only: no numerics here."""

from __future__ import annotations

import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="sgdlab: simulate GD/SGD variants in high dimension and put them beside their theory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def example_names() -> list[str]:
    """Names of the built-in example configs."""
    files = resources.files("sgdlab") / "examples"
    return sorted(p.name.removesuffix(".toml") for p in files.iterdir() if p.name.endswith(".toml"))


def example_path(name: str) -> Path:
    """Path of the built-in example ``name`` (error listing the names if unknown)."""
    if name not in example_names():
        raise typer.BadParameter(f"unknown example {name!r}; available: {', '.join(example_names())}", param_hint="--example")
    return Path(str(resources.files("sgdlab") / "examples" / f"{name}.toml"))


def _parse_overrides(items: list[str]) -> dict:
    """``["algorithm.eta=0.05", ...]`` -> nested dict; values are parsed as TOML values."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE (e.g. algorithm.eta=0.05)", param_hint="--set")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare string such as loss=logistic
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _load(config: Optional[Path], example: Optional[str], overrides: list[str]):
    from sgdlab.dmft.config import ConfigError, load_config, merge_tables, read_toml

    if config is not None and example is not None:
        raise typer.BadParameter("give either CONFIG or --example, not both", param_hint="--example")
    path = example_path(example) if example is not None else (config if config is not None else example_path("default"))
    try:
        if not overrides:
            return load_config(path)
        return load_config(merge_tables(read_toml(path), _parse_overrides(overrides)))
    except ConfigError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(2) from None


def _summary_table(ds, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("method")
    table.add_column(f"t = {float(ds.t[-1]):g}: mean", justify="right")
    table.add_column("± std (seeds)", justify="right")
    for var in ("m", "q", "train_loss", "train_error", "test_loss", "test_error"):
        if var not in ds:
            continue
        for i, method in enumerate(map(str, ds.method.values)):
            da = ds[var].isel(method=i, t=-1)
            mean = float(da.mean())
            spread = method == "sim" and "seed" in da.dims and da.sizes["seed"] > 1
            table.add_row(var, str(method), f"{mean:.4f}", f"{float(da.std(ddof=1)):.4f}" if spread else "-")
    return table


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="TOML config file; omitted: the built-in default experiment."),
    example: Optional[str] = typer.Option(None, "--example", "-e", help="Run a built-in example config (see `sgdlab examples`)."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder; the store and figure go to OUT/NAME.zarr and OUT/NAME.png."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key, e.g. --set algorithm.eta=0.05 (repeatable)."),
    plot: bool = typer.Option(True, help="Write the PNG figure."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no table."),
):
    """Run an experiment: simulate and solve every [theory] method, write a zarr store and a PNG
    figure (simulation as mean ± spread over seeds, theories as lines), print a summary table."""
    _run_and_report(_load(config, example, set_), out, plot, quiet, simulation=True)


@app.command()
def theory(
    config: Optional[Path] = typer.Argument(None, help="TOML config file; omitted: the built-in default experiment."),
    example: Optional[str] = typer.Option(None, "--example", "-e", help="Use a built-in example config (see `sgdlab examples`)."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder: OUT/NAME-theory.zarr and OUT/NAME-theory.png."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key, e.g. --set theory.samples=60000 (repeatable)."),
    plot: bool = typer.Option(True, help="Write the PNG figure."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table."),
):
    """Solve only the theory (the [theory] methods; DMFT if none is listed), no simulation."""
    cfg = _load(config, example, set_)
    if not cfg.theory.methods:
        cfg = cfg.model_copy(update={"theory": cfg.theory.model_copy(update={"methods": ["dmft"]})})
    cfg = cfg.model_copy(update={"name": f"{cfg.name}-theory"})
    _run_and_report(cfg, out, plot, quiet, simulation=False)


def _run_and_report(cfg, out: Path, plot: bool, quiet: bool, simulation: bool) -> None:
    from sgdlab.core import store
    from sgdlab.dmft.experiment import NonFiniteError, run as run_experiment

    out.mkdir(parents=True, exist_ok=True)
    store_path, fig_path = out / f"{cfg.name}.zarr", out / f"{cfg.name}.png"
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as bar:
        what = (f"d={cfg.simulation.d}" if simulation else "") + (" + " if simulation and cfg.theory.methods else "")
        what += " + ".join(cfg.theory.methods)
        task = bar.add_task(f"{cfg.name}: {cfg.algorithm.name}, {what}", total=None)
        try:
            ds = run_experiment(
                cfg, progress=lambda done, total: bar.update(task, completed=done, total=total), simulation=simulation
            )
        except NonFiniteError as err:
            if err.partial is not None:
                store.save(err.partial, store_path)
            console.print(f"[bold red]error:[/] {err}\n(partial results up to that time: {store_path})")
            raise typer.Exit(1) from None
        except (ValueError, FloatingPointError) as err:  # e.g. a DMFT that cannot be solved
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(1) from None
    store.save(ds, store_path)
    if plot:
        from sgdlab.dmft.plot import plot_order_parameters, save_figure

        save_figure(plot_order_parameters(ds, title=cfg.description or cfg.name), fig_path)
    elapsed = time.perf_counter() - start
    if not quiet:
        Console().print(_summary_table(ds, f"{cfg.name} ({elapsed:.1f} s)"))
    console.print(f"store: {store_path}" + (f"\nfigure: {fig_path}" if plot else ""))


def _progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    )


def _status_table(summary, store: Path) -> Table:
    table = Table(title=f"sweep {store}", title_justify="left")
    for col in ("points", "done", "failed", "pending"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.total), str(summary.done), str(summary.failed), str(summary.pending))
    return table


@app.command()
def sweep(
    config: Optional[Path] = typer.Argument(None, help="TOML config with a [sweep] section."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The zarr store (default results/NAME.zarr)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Local worker processes (default: one per core)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of an existing dask scheduler, e.g. tcp://10.0.0.1:8786 (default: a LocalCluster)."),
    dashboard: bool = typer.Option(False, help="Serve the dask dashboard of the local cluster (loopback, port 8787)."),
    overwrite: bool = typer.Option(False, help="Delete an existing store that holds a different sweep."),
    status: Optional[Path] = typer.Option(None, "--status", help="Only report done / failed / pending of this store."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key of the base config, e.g. --set simulation.d=500."),
):
    """Run (or resume) a parameter sweep on dask.distributed into one zarr store."""
    from sgdlab.dmft.config import ConfigError
    from sgdlab.core.sweep import run_sweep, sweep_status

    if status is not None:
        try:
            summary = sweep_status(status)
        except FileNotFoundError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(2) from None
        Console().print(_status_table(summary, status))
        for where, msg in summary.errors.items():
            Console().print(f"[red]failed[/] {where}: {msg}")
        return
    if config is None:
        raise typer.BadParameter("a config with a [sweep] section is required (or --status STORE)", param_hint="CONFIG")
    cfg = _load(config, None, set_)
    if cfg.sweep is None:
        console.print(f"[bold red]error:[/] {config} has no [sweep] section")
        raise typer.Exit(2)
    store_path = out or Path("results") / f"{cfg.name}.zarr"
    with _progress_bar(False) as bar:
        task = bar.add_task(f"sweep {cfg.name}", total=None)
        try:
            summary = run_sweep(
                cfg, store_path, scheduler=scheduler, workers=workers, dashboard=dashboard, overwrite=overwrite,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except ConfigError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(2) from None
    Console().print(_status_table(summary, store_path))
    console.print(f"{summary.skipped} points already done (skipped); {summary.seconds:.1f} s")
    for where, msg in summary.errors.items():
        Console().print(f"[red]failed[/] {where}: {msg}")


@app.command()
def plot(
    store_path: Path = typer.Argument(..., help="A zarr store written by `sgdlab run` or `sgdlab sweep`."),
    variable: str = typer.Option("test_error", "--var", "-v", help="Variable of sweep figures (curves or heat map)."),
    t: Optional[float] = typer.Option(None, "--t", help="Time of the heat map (default: the last saved time)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG path (default: next to the store)."),
):
    """Make the natural figure of a store: order parameters of a run, curves or a phase diagram of a sweep."""
    from sgdlab.dmft import plot as plots
    from sgdlab.core import store as stores

    if not store_path.exists():
        console.print(f"[bold red]error:[/] no store at {store_path}")
        raise typer.Exit(2)
    ds = stores.load(store_path)
    if ds.attrs.get("kind") == "sweep":
        from sgdlab.core.sweep import load_sweep

        try:
            fig = plots.plot_sweep(load_sweep(store_path), variable, t)
        except ValueError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(2) from None
    else:
        fig = plots.plot_order_parameters(ds)
    png = out or store_path.with_suffix(".png")
    plots.save_figure(fig, png)
    console.print(f"figure: {png}")


def _sub_config(config: Optional[Path], example: Optional[str], kind: str) -> Path:
    """The config path of a sub-command: a file, or a built-in example of ``examples/<kind>/``."""
    folder = resources.files("sgdlab") / "examples" / kind
    names = sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
    if (config is None) == (example is None):
        raise typer.BadParameter(f"give CONFIG or --example NAME (available: {', '.join(names)})", param_hint="CONFIG")
    if example is not None:
        if example not in names:
            raise typer.BadParameter(f"unknown example {example!r}; available: {', '.join(names)}", param_hint="--example")
        return Path(str(folder / f"{example}.toml"))
    return config


def _run_command(fn, path: Path, out: Path, overrides: list[str] | None = None) -> None:
    """Run a sub-command's ``fn(config_path, out_dir, [overrides=...,] progress=...)`` with a
    progress bar and print its table; ``overrides``: the ``--set key=value`` items."""
    from sgdlab.dmft.config import ConfigError
    from sgdlab.dmft.experiment import NonFiniteError

    extra = {"overrides": _parse_overrides(overrides)} if overrides else {}
    with _progress_bar(False) as bar:
        task = bar.add_task(path.stem, total=None)
        try:
            table = fn(path, out, progress=lambda done, total: bar.update(task, completed=done, total=total), **extra)
        except ConfigError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(2) from None
        except NonFiniteError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(1) from None
    Console().print(table)


@app.command()
def manifold(
    config: Optional[Path] = typer.Argument(None, help="TOML config of a zero-loss-manifold experiment (docs/manifold.md)."),
    example: Optional[str] = typer.Option(None, "--example", "-e", help="A built-in example of examples/manifold/."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder: OUT/NAME.zarr and OUT/NAME.png."),
):
    """Noisy GD near a zero-loss manifold: simulations for several alpha beside the slow limit."""
    from sgdlab.manifold.experiment import manifold_command

    _run_command(manifold_command, _sub_config(config, example, "manifold"), out)


@app.command()
def sde(
    config: Optional[Path] = typer.Argument(None, help="TOML config of a weak-error study (docs/sde.md)."),
    example: Optional[str] = typer.Option(None, "--example", "-e", help="A built-in example of examples/sde/."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder: OUT/NAME.zarr and OUT/NAME.png."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key of the study config (repeatable)."),
):
    """SDE limits of SGD: weak errors of GF / SME / SMF / SVAG against SGD over eta, with fitted orders."""
    from sgdlab.sde.experiment import sde_command

    _run_command(sde_command, _sub_config(config, example, "sde"), out, set_)


@app.command()
def noise(
    config: Optional[Path] = typer.Argument(None, help="TOML config plus an optional [noise] table (docs/effective_noise.md)."),
    example: Optional[str] = typer.Option(None, "--example", "-e", help="A built-in example of examples/noise/."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder: OUT/noise.zarr and the three figures (a [noise.scan]: OUT/noise_scan.zarr and heat maps)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key, e.g. --set noise.max_lag=1.0 (repeatable)."),
):
    """The effective noise of SGD: FDT plot (T_eff), replica distance D(t), margin histogram; or a (b, tau) scan."""
    from sgdlab.dmft.noise import noise_command

    _run_command(noise_command, _sub_config(config, example, "noise"), out, set_)


@app.command()
def timescales(
    config: Optional[Path] = typer.Argument(None, help="TOML config of a two-layer time-scale study (docs/timescales.md)."),
    example: Optional[str] = typer.Option(None, "--example", "-e", help="A built-in example of examples/timescales/."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder: OUT/NAME.zarr, OUT/NAME_staircase.png, OUT/NAME_eps_scaling.png."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a key of the study config, e.g. --set dynamics.eps=1e-3 (repeatable)."),
):
    """Two-layer learning time-scales: finite-d flow, online SGD and reduced dynamics; plateaus, t_l, eps-scaling fit."""
    from sgdlab.two_layer.experiment import timescales_command

    _run_command(timescales_command, _sub_config(config, example, "timescales"), out, set_)


@app.command()
def examples():
    """List the built-in example configs (run one with `sgdlab run --example NAME`)."""
    table = Table(title="built-in examples")
    table.add_column("command")
    table.add_column("name")
    table.add_column("description")
    for name in example_names():
        data = tomllib.loads(example_path(name).read_text())
        table.add_row("run", name, data.get("description", ""))
    root = resources.files("sgdlab") / "examples"
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")), key=lambda p: p.name):
        command = {"sweeps": "sweep"}.get(folder.name, folder.name)
        for f in sorted(p for p in folder.iterdir() if p.name.endswith(".toml")):
            data = tomllib.loads(f.read_text())
            table.add_row(command, f.name.removesuffix(".toml"), data.get("description", ""))
    Console().print(table)


@app.command()
def info():
    """Print the versions and the JAX backend and devices."""
    import jax

    import sgdlab

    Console().print(f"sgdlab {sgdlab.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")


if __name__ == "__main__":  # pragma: no cover
    app()
