"""Terminal output shared by every command: a progress bar and tables (rich).

User text (names, error messages, config values) is always printed as text, never as rich
markup: a name such as ``[bold]x`` is shown as typed.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

#: the line width when the output is a file or a pipe (rich's default there is 80 columns, which
#: cut wide tables); ``COLUMNS`` still overrides it, and a terminal keeps its own width
PIPE_WIDTH = 250


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return console


#: messages and paths go to stderr; tables (results) to stdout
err_console = _console(stderr=True)
out_console = _console()

ProgressFn = Callable[[int, int], None]


def say(message: str, style: str | None = None) -> None:
    """Print ``message`` verbatim (no markup) on stderr."""
    err_console.print(Text(str(message), style=style or ""), soft_wrap=True)


def error(message: str) -> None:
    """Print ``error: message`` on stderr, the message verbatim."""
    err_console.print(Text.assemble(("error: ", "bold red"), str(message)), soft_wrap=True)


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr; yields ``progress(done, total)``."""
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[bool] | None = None,
          no_wrap: int = 0) -> Table:
    """A rich table of plain-text cells (numbers are formatted by the caller); by default the
    first column is left-aligned and the others right-aligned; the first ``no_wrap`` columns do
    not wrap while the table fits. Nothing is ever cut: a table wider than the terminal folds
    its cells (a pipe or a file gets :data:`PIPE_WIDTH` columns)."""
    t = Table(title=Text(title), title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(Text(str(c)), justify="right" if (right[i] if right is not None else i > 0) else "left", no_wrap=i < no_wrap,
                     overflow="fold")
    for row in rows:
        t.add_row(*(Text(str(c)) for c in row))
    return t


def pm(mean: float, err: float | None, fmt: str = ".4g") -> str:
    """``"mean ± err"`` (or ``"mean"`` when ``err`` is None or NaN)."""
    if err is None or err != err:
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} ± {err:{fmt}}"
