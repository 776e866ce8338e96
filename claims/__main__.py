"""``python -m claims [NAMES] [--small] [--render] [--list]``: run claims, store, render the page."""

from __future__ import annotations

import sys
import time

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    names: list[str] | None = typer.Argument(None, help="claims to run (default: all; see --list)"),  # noqa: B008
    small: bool = typer.Option(False, "--small", help="quick small sizes; prints the records, stores nothing"),
    render: bool = typer.Option(False, "--render", help="write docs/claims.md from the stored records (runs nothing)"),
    list_: bool = typer.Option(False, "--list", help="list the claims and exit"),
) -> None:
    from claims import REGISTRY
    from claims import render as page
    from claims.record import store

    if list_:
        for name, (paper, _) in REGISTRY.items():
            typer.echo(f"{name:28s} {paper}")
        return
    if render and not names:
        typer.echo(f"wrote {page.write()}")
        return
    unknown = [n for n in names or [] if n not in REGISTRY]
    if unknown:
        typer.echo(f"unknown claim(s): {', '.join(unknown)}; allowed: {', '.join(REGISTRY)}", err=True)
        raise typer.Exit(2)
    import sgdlab  # noqa: F401  (float64 and the compilation cache before any JAX code)

    failed = []
    for name in names or list(REGISTRY):
        t0 = time.time()
        try:
            claim = REGISTRY[name][1](small=small)
        except Exception as err:  # noqa: BLE001  (one failing claim must not stop the others; reported at the end)
            typer.echo(f"{name}: FAILED ({type(err).__name__}: {err})", err=True)
            failed.append(name)
            continue
        nums = "; ".join(f"{n.name} = {n.value:.5g}" + (f" ± {n.error:.2g}" if n.error is not None else "")
                         + (f" [{n.low:.4g}, {n.high:.4g}]" if n.low is not None else "") for n in claim.numbers)
        typer.echo(f"{name}: {claim.verdict} ({time.time() - t0:.0f} s)\n  {nums}\n  {claim.why}")
        if not small:
            typer.echo(f"  stored {store(claim)}")
        sys.stdout.flush()
    if render:
        typer.echo(f"wrote {page.write()}")
    if failed:
        typer.echo(f"failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
