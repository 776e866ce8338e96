"""The store of a sweep: its template, per-point regions and markers, and damage detection.

Layout: dims ``(*sweep dims, *dims of one run)``; ``status`` over the sweep dims (0 pending,
1 done, 2 failed); ``time`` (each point's times); markers ``STORE/_points/<flat index>.json``.
The client process is the only writer (see :mod:`sgdlab.core.sweep`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdlab.core.store import _sibling, quiet_zarr
from sgdlab.core.sweep_plan import Plan, Point

PENDING, DONE, FAILED = 0, 1, 2
MARKERS = "_points"


def _is_numeric(da: xr.DataArray) -> bool:
    return da.dtype.kind in "biuf"


def _template(plan: Plan, first: xr.Dataset | None) -> xr.Dataset:
    """The store of the whole grid: NaN data, pending status, the point's dims after the sweep's."""
    import dask.array as da

    shape, sweep_dims = plan.shape, plan.sweep_dims
    one = (1,) * len(shape)
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {name: values for name, values in plan.dims}
    for key, values in plan.zip_coords.items():
        coords[key] = ("zip", values)
    if first is not None:
        for name, var in first.data_vars.items():
            if _is_numeric(var):
                data_vars[name] = (sweep_dims + list(var.dims), da.full(shape + var.shape, np.nan, chunks=one + var.shape), var.attrs)
        if "t" in first.dims:
            n_t = first.sizes["t"]
            data_vars["time"] = (sweep_dims + ["t"], da.full(shape + (n_t,), np.nan, chunks=one + (n_t,)))
        for name, c in first.coords.items():
            if name in coords:
                continue
            if name not in first.dims and _is_numeric(c):  # may differ between points: one per point
                data_vars[name] = (sweep_dims + list(c.dims), da.full(shape + c.shape, np.nan, chunks=one + c.shape), c.attrs)
            else:
                coords[name] = (c.dims, c.values, c.attrs)
    data_vars["status"] = (sweep_dims, da.zeros(shape, dtype=np.int8, chunks=one))
    ds = xr.Dataset(data_vars, coords=coords)
    for name in list(ds.coords):
        if ds[name].dtype.kind == "U":
            ds[name] = ds[name].astype(object)
    ds.attrs = {
        "kind": "sweep",
        "study": plan.study.name,
        "study_ref": plan.study.ref,
        "config": plan.base.to_json(),
        "sweep_hash": plan.base.config_hash(),
        "sweep_dims": json.dumps(sweep_dims),
        **{k: v for k, v in (first.attrs if first is not None else {}).items() if k in ("sgdlab_version", "jax_version", "backend")},
    }
    return ds


def _create_store(store: Path, template: xr.Dataset) -> None:
    """Write the template (metadata only) beside ``store`` and rename it into place."""
    tmp = _sibling(store, "tmp")
    with quiet_zarr():
        template.to_zarr(tmp, mode="w", compute=False, consolidated=True)
    tmp.rename(store)


def read_markers(store: str | Path) -> dict[int, dict]:
    """The per-point markers of a sweep store: ``{flat index: marker dict}``."""
    folder = Path(store) / MARKERS
    out = {}
    if folder.is_dir():
        for f in folder.glob("[0-9]*.json"):
            try:
                body = json.loads(f.read_text())
                index = int(f.stem)
            except (ValueError, OSError):
                continue  # a truncated or stray marker: the point is not done (it is recomputed)
            if isinstance(body, dict) and body.get("status") in ("done", "failed"):
                out[index] = body
    return out


def damaged_points(store: str | Path, plan: Plan, markers: dict[int, dict]) -> list[int]:
    """Points whose marker says done but whose data does not read back (a missing or corrupted
    chunk, a deleted array, a status that is not done): they are recomputed on resume."""
    import zarr

    try:
        group = zarr.open_group(str(store), mode="r")
        sweep_dims = tuple(plan.sweep_dims)

        def per_point(name: str) -> bool:  # a variable over the sweep dims (not a coordinate)
            dims = getattr(group[name].metadata, "dimension_names", None) or ()
            return name not in ("status", "time") and tuple(dims[: len(sweep_dims)]) == sweep_dims

        names = [k for k in group.array_keys() if per_point(k)]
        status = group["status"]
    except Exception:
        return sorted(i for i, m in markers.items() if m.get("status") == "done")
    bad = []
    for p in plan.points:
        if markers.get(p.flat, {}).get("status") != "done":
            continue
        empty = set(markers[p.flat].get("empty", []))  # variables that were all-NaN when written
        try:
            ok = int(status[tuple(p.index)]) == DONE and all(
                n in empty or np.isfinite(np.asarray(group[n][tuple(p.index)], dtype=float)).any() for n in names
            )
        except Exception:
            ok = False
        if not ok:
            bad.append(p.flat)
    return bad


def _write_marker(store: Path, point: Point, status: str, error: str | None = None, seconds: float | None = None,
                  attrs: dict | None = None, empty: list[str] | None = None) -> None:
    folder = store / MARKERS
    if not folder.is_dir():
        folder.mkdir()
        # an empty zarr group, so that zarr readers see a known node and not a stray folder
        (folder / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    body = {
        "status": status,
        "index": list(point.index),
        "overrides": point.overrides,
        "config_hash": point.config_hash,
        "error": error,
        "seconds": seconds,
        "attrs": {k: v for k, v in (attrs or {}).items() if k != "config" and isinstance(v, (str, int, float, bool))},
        "empty": empty or [],
        "finished_at": time.time(),
    }
    tmp = folder / f".{point.flat}.json.tmp"
    tmp.write_text(json.dumps(body))
    tmp.replace(folder / f"{point.flat}.json")


def _check_fits(group, ds: xr.Dataset) -> str | None:
    """Why the point Dataset ``ds`` does not fit the store (``None`` when it does)."""
    for name, var in ds.data_vars.items():
        if not _is_numeric(var):
            continue
        if name not in group:
            return f"variable {name!r} is not in the store (every point must give the same variables)"
        want = group[name].shape[-var.ndim:] if var.ndim else ()
        if tuple(want) != var.shape:
            return f"variable {name!r} has shape {var.shape}, the store's points have {tuple(want)}"
    return None


def _write_point(group, point: Point, ds: xr.Dataset | None) -> None:
    """Write one point's region (its own chunks) into the open zarr group, status last."""
    idx = tuple(point.index)
    if ds is not None:
        for name, var in [*ds.data_vars.items(), *((n, c) for n, c in ds.coords.items() if n not in ds.dims)]:
            if _is_numeric(var) and name in group:
                group[name][idx] = np.asarray(var.values, dtype=np.float64)
        if "t" in ds.dims and "time" in group:
            group["time"][idx] = np.asarray(ds["t"].values, dtype=np.float64)
    group["status"][idx] = DONE if ds is not None else FAILED


class _Writer:
    """The client side: creates the store at the first result, writes regions and markers."""

    def __init__(self, plan: Plan, store: Path):
        self.plan, self.store = plan, store
        self.group = self._open() if store.exists() else None
        self.waiting: list[tuple[Point, str]] = []  # failures before the store exists

    def _open(self):
        import zarr

        return zarr.open_group(str(self.store), mode="r+")

    def _ensure(self, first: xr.Dataset | None) -> None:
        if self.group is None:
            _create_store(self.store, _template(self.plan, first))
            self.group = self._open()
            for point, msg in self.waiting:
                self.failed(point, msg)
            self.waiting = []

    def done(self, point: Point, ds: xr.Dataset) -> None:
        self._ensure(ds)
        why = _check_fits(self.group, ds)
        if why is not None:
            return self.failed(point, why)
        _write_point(self.group, point, ds)
        empty = [n for n, v in [*ds.data_vars.items(), *ds.coords.items()] if _is_numeric(v) and not np.isfinite(v.values).any()]
        _write_marker(self.store, point, "done", seconds=ds.attrs.get("seconds"), attrs=ds.attrs, empty=empty)

    def failed(self, point: Point, msg: str) -> None:
        if self.group is None:
            self.waiting.append((point, msg))
            return
        _write_point(self.group, point, None)
        _write_marker(self.store, point, "failed", error=msg)

    def close(self) -> None:
        if self.waiting:
            self._ensure(None)


def _open_attrs(store: Path) -> dict:
    with quiet_zarr(), xr.open_zarr(store, consolidated=False) as ds:
        return dict(ds.attrs)


def load_sweep(store: str | Path) -> xr.Dataset:
    """Open a sweep store (every point, pending ones NaN) and load it into memory."""
    from sgdlab.core.store import load

    return load(store)
