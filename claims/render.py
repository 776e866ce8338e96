"""Render ``docs/claims.md`` from the stored records (``claims/results/*.json``) alone.

The page is a pure function of the records: :func:`render` never runs a claim, and the fast test
``tests/claims/test_claims.py`` checks that the page in the repository equals ``render()`` of the
stored records, so that neither can drift from the other.
"""

from __future__ import annotations

import math
from pathlib import Path

from claims.record import RESULTS, Claim, Number, load_all

#: the page (relative to the repository root)
PAGE = Path(__file__).resolve().parent.parent / "docs" / "claims.md"

HEADER = """\
# Claims of the five papers, reproduced

<!-- GENERATED FILE: do not edit by hand. It is written by `python -m claims --render` from the
stored records claims/results/*.json; tests/claims/test_claims.py fails if the two differ. -->

This page is **generated** from stored results: every row is one claim of one paper, the command
that reproduces it, the numbers it measured (± one standard error, or a 95% confidence interval
in brackets) and the verdict with its reason. Nothing here is typed by hand.

```bash
python -m claims                       # rerun every claim at the stored size, store claims/results/NAME.json
python -m claims gm_interpolation      # rerun some claims by name
python -m claims --small               # quick small-size run of every claim (prints, stores nothing)
python -m claims --list                # the names
python -m claims --render              # rewrite this page from the stored records
python -m pytest tests/claims -m slow  # rerun every claim and check its verdict and numbers
```

Verdicts: **reproduced** (the paper's statement holds by the stated statistical rule),
**partly** (part of it holds, or it holds only in a narrower sense, said why), **not
reproduced** (the rule fails, said why). Each rule is statistical and written in the row: a
measured value within two standard errors of a prediction, a fitted order whose 95% interval
contains the predicted one, a difference resolved by more than two standard errors. Each claim
has a `slow` test that reruns it and checks that the verdict is the stored one and that every
number agrees with the stored one within three combined standard errors.
"""


def fmt_number(n: Number) -> str:
    """``name = value ± error`` (two significant digits on the error), or ``value [low, high]``."""
    if n.kind == "se" and n.error is not None and math.isfinite(n.error) and n.error > 0:
        digits = max(0, 1 - math.floor(math.log10(n.error)))
        text = f"{n.value:.{digits}f} ± {n.error:.{digits}f}"
    elif n.kind == "ci95":
        span = max(abs(n.high - n.low), 1e-300)
        digits = max(0, 2 - math.floor(math.log10(span)))
        text = f"{n.value:.{digits}f} [{n.low:.{digits}f}, {n.high:.{digits}f}]"
    else:
        text = f"{n.value:.4g}"
    return f"{n.name} = {text}" + (f" ({n.note})" if n.note else "")


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, newlines as line breaks."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def paper_section(title: str, records: list[Claim]) -> str:
    rows = ["| claim | command | measured | verdict |", "|---|---|---|---|"]
    for c in records:
        nums = "<br>".join(_cell(fmt_number(n)) for n in c.numbers)
        verdict = (f"**{c.verdict}**<br>{_cell(c.why)}<br>*Rule:* {_cell(c.rule)}<br>*Setting:* "
                   f"{_cell(c.details.get('setting', ''))} ({c.elapsed_s:.0f} s)")
        rows.append(f"| {_cell(c.claim)} | `{c.command}` | {nums} | {verdict} |")
    return f"## {title}\n\n" + "\n".join(rows) + "\n"


def render(directory: Path = RESULTS) -> str:
    """The page for the records stored in ``directory`` (papers in the registry's order)."""
    from claims import PAPERS, REGISTRY

    stored = load_all(directory)
    parts = [HEADER]
    missing = [n for n in REGISTRY if n not in stored]
    for paper, title in PAPERS.items():
        recs = [stored[n] for n, (p, _) in REGISTRY.items() if p == paper and n in stored]
        if recs:
            parts.append(paper_section(title, recs))
    if missing:
        parts.append("## Not yet run\n\n" + ", ".join(f"`{n}`" for n in missing) + "\n")
    small = [c.name for c in stored.values() if c.small]
    if small:
        parts.append("**Warning:** stored at the small size: " + ", ".join(f"`{n}`" for n in small) + "\n")
    total = sum(c.elapsed_s for c in stored.values())
    parts.append(f"*{len(stored)} claims; the times in brackets are wall-clock seconds on the shared 2-core CPU "
                 f"machine where the records were made (sum {total / 60:.0f} min; a computation shared by two claims "
                 "counts in both).*\n")
    return "\n".join(parts)


def write(path: Path = PAGE, directory: Path = RESULTS) -> Path:
    """Write the page (atomically: beside, then renamed in)."""
    import os
    import tempfile

    text = render(directory)
    fd, tmp = tempfile.mkstemp(prefix=".claims.", suffix=".md", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
