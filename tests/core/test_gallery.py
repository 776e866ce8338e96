"""Every gallery notebook (``docs/gallery/*.py``, jupytext percent format) runs from its first cell
to its figure at small sizes (``SGDLAB_GALLERY_SMALL=1``, as in CI) and draws a figure whose
panels all hold finite data.

``python tests/core/test_gallery.py [NAME ...]`` runs the notebooks at their full sizes instead and
writes their figures to ``docs/gallery/images/NAME.png`` (the ones the site shows)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jupytext
import matplotlib.figure
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GALLERY = ROOT / "docs" / "gallery"
MODELS = ["dmft", "effective_noise", "sde", "manifold", "timescales"]


def run_notebook(path: Path) -> dict:
    """Execute the code cells of a jupytext notebook in order, in one namespace; return it."""
    nb = jupytext.read(path)
    kinds = [cell.cell_type for cell in nb.cells]
    assert kinds.count("markdown") >= 2 and kinds.count("code") >= 2, f"{path.name}: not a notebook of cells"
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            exec(compile(cell.source, f"{path.name}, cell {i}", "exec"), namespace)
    return namespace


def finite_data(ax) -> bool:
    """Whether a panel holds at least one line, marker set or band with finite values."""
    arrays = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    arrays += [np.asarray(c.get_offsets(), dtype=float).ravel() for c in ax.collections if hasattr(c, "get_offsets")]
    arrays += [np.asarray(p.vertices, dtype=float).ravel() for c in ax.collections for p in c.get_paths()]
    return any(a.size and np.isfinite(a).any() for a in arrays)


def test_one_notebook_per_model_each_shown_on_the_site():
    assert sorted(p.stem for p in GALLERY.glob("*.py")) == sorted(MODELS)
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in MODELS:
        assert f"gallery/{name}.py" in nav, f"mkdocs.yml has no nav entry for gallery/{name}.py"
        assert (GALLERY / "images" / f"{name}.png").is_file(), f"no full-size figure images/{name}.png"
        text = (GALLERY / f"{name}.py").read_text()
        assert f"images/{name}.png" in text and "SGDLAB_GALLERY_SMALL" in text


@pytest.mark.parametrize("name", MODELS)
def test_notebook_runs_to_its_figure(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_GALLERY_SMALL", "1")
    monkeypatch.chdir(tmp_path)   # a notebook that wrote files would write them here
    namespace = run_notebook(GALLERY / f"{name}.py")
    fig = namespace.get("fig")
    assert isinstance(fig, matplotlib.figure.Figure), f"{name}: the notebook drew no figure `fig`"
    try:
        assert fig.axes, f"{name}: the figure has no panel"
        for ax in fig.axes:
            assert finite_data(ax), f"{name}: panel {ax.get_title()!r} holds no finite data"
            assert ax.get_xlabel(), f"{name}: panel {ax.get_title()!r} has no x label"
        assert fig.axes[0].get_ylabel(), f"{name}: the first panel has no y label"
        fig.savefig(tmp_path / f"{name}.png", dpi=60)
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


if __name__ == "__main__":   # redraw the site's figures at the notebooks' full sizes
    os.environ.pop("SGDLAB_GALLERY_SMALL", None)
    for name in sys.argv[1:] or MODELS:
        start = time.perf_counter()
        fig = run_notebook(GALLERY / f"{name}.py")["fig"]
        fig.savefig(GALLERY / "images" / f"{name}.png", dpi=110)
        print(f"{name}: docs/gallery/images/{name}.png ({time.perf_counter() - start:.0f} s)")
