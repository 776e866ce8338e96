"""Results store: an experiment's Dataset in a zarr store.

:func:`save` writes to a temporary sibling and renames it into place, so an existing store is
never left half-overwritten: if the process dies mid-write, the previous store is intact.
"""

from __future__ import annotations

import shutil
import uuid
import warnings
from pathlib import Path

import xarray as xr


def save(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to the zarr store ``path`` (replacing it atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    ds = ds.copy()
    for name in list(ds.variables):
        if ds[name].dtype.kind == "U":  # fixed-width unicode is not portable across zarr formats
            ds[name] = ds[name].astype(object)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        ds.to_zarr(tmp, mode="w", consolidated=True)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def load(path: str | Path) -> xr.Dataset:
    """Open the store at ``path`` and load it into memory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results store at {str(path)!r}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        with xr.open_zarr(path) as ds:
            out = ds.load()
    for name in list(out.variables):
        if out[name].dtype == object:
            out[name] = out[name].astype(str)
    return out
