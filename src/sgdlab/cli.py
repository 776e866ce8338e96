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


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _load(config: Optional[Path], example: Optional[str], overrides: list[str]):
    from sgdlab.config import ConfigError, load_config

    if config is not None and example is not None:
        raise typer.BadParameter("give either CONFIG or --example, not both", param_hint="--example")
    path = example_path(example) if example is not None else (config if config is not None else example_path("default"))
    try:
        if not overrides:
            return load_config(path)
        if not Path(path).is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = tomllib.loads(Path(path).read_text())
        data.setdefault("name", Path(path).stem)
        return load_config(_merge(data, _parse_overrides(overrides)))
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
            std = float(da.std(ddof=1)) if "seed" in da.dims and da.sizes["seed"] > 1 else float("nan")
            table.add_row(var, str(method), f"{mean:.4f}", f"{std:.4f}")
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
    """Run an experiment: simulate, write a zarr store and a PNG figure, print a summary table."""
    cfg = _load(config, example, set_)
    from sgdlab import store
    from sgdlab.experiment import NonFiniteError, run as run_experiment

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
        task = bar.add_task(f"{cfg.name}: {cfg.algorithm.name}, d={cfg.simulation.d}", total=None)
        try:
            ds = run_experiment(cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
        except NonFiniteError as err:
            if err.partial is not None:
                store.save(err.partial, store_path)
            console.print(f"[bold red]error:[/] {err}\n(partial results up to that time: {store_path})")
            raise typer.Exit(1) from None
    store.save(ds, store_path)
    if plot:
        from sgdlab.plot import plot_order_parameters, save_figure

        save_figure(plot_order_parameters(ds, title=cfg.description or cfg.name), fig_path)
    elapsed = time.perf_counter() - start
    if not quiet:
        Console().print(_summary_table(ds, f"{cfg.name} ({elapsed:.1f} s)"))
    console.print(f"store: {store_path}" + (f"\nfigure: {fig_path}" if plot else ""))


@app.command()
def examples():
    """List the built-in example configs (run one with `sgdlab run --example NAME`)."""
    table = Table(title="built-in examples")
    table.add_column("name")
    table.add_column("description")
    for name in example_names():
        data = tomllib.loads(example_path(name).read_text())
        table.add_row(name, data.get("description", ""))
    Console().print(table)


@app.command()
def info():
    """Print the versions and the JAX backend and devices."""
    import jax

    import sgdlab

    Console().print(f"sgdlab {sgdlab.__version__}, jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")


if __name__ == "__main__":  # pragma: no cover
    app()
