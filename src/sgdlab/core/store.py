"""Results store: a Dataset in a zarr store, written so that a kill at any moment loses nothing.

:func:`save` writes the new store beside its final path (``.NAME.tmp-PID-XXXX``) and swaps it in:
the old store is first renamed to ``.NAME.old-PID-XXXX``, the new one renamed into place, then
the old one removed. A kill between the two renames leaves no store at ``path`` but the old one
beside it: :func:`recover` (run by every :func:`save`, :func:`load` and sweep) renames it back,
and removes temporaries whose writing process is gone. :func:`writer_lock` makes a second
process that wants to write the same store fail at once with a clear message.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import xarray as xr

from sgdlab.core.errors import ConfigError


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _owner(p: Path) -> int:
    """The pid encoded in a temporary's name (``.NAME.kind-PID-XXXX``), or -1."""
    try:
        return int(p.name.rsplit("-", 2)[-2])
    except (IndexError, ValueError):
        return -1


def recover(path: str | Path) -> list[str]:
    """Repair what a killed :func:`save` left beside ``path``; returns what was done (for a log).

    - no store at ``path`` but an old one beside it (killed between the two renames): the newest
      old store is renamed back into place;
    - temporaries (``.tmp-``/``.old-``) whose writing process is gone are removed.
    """
    path = Path(path)
    done = []
    if not path.parent.is_dir():
        return done
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not path.exists() and olds and not _pid_alive(_owner(olds[-1])):
        olds[-1].rename(path)
        done.append(f"restored {path} from {olds[-1].name} (a write was interrupted)")
        olds = olds[:-1]
    for p in [*olds, *path.parent.glob(f".{path.name}.tmp-*")]:
        if not _pid_alive(_owner(p)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            done.append(f"removed the stale temporary {p.name}")
    return done


@contextmanager
def writer_lock(path: str | Path) -> Iterator[None]:
    """Hold ``PATH.lock`` (with this process's pid) while writing ``path``; a second writer gets a
    :class:`ConfigError` at once. A lock left by a process that is gone is taken over."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                owner = int(json.loads(lock.read_text() or "{}").get("pid", -1))
            except (ValueError, OSError, AttributeError):
                owner = -1
            if _pid_alive(owner) and owner != os.getpid():
                raise ConfigError(
                    f"{path} is being written by another sgdlab process (pid {owner}); wait for it to finish, "
                    f"or remove {lock} if that process is gone"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:  # pragma: no cover - lost a race twice
        raise ConfigError(f"could not take the lock {lock}")
    try:
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notes on consolidated metadata and on v2-only features (one place)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        yield


def save(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to the zarr store ``path`` (replacing it atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = _sibling(path, "tmp")
    ds = ds.copy()
    for name in list(ds.variables):
        if ds[name].dtype.kind == "U":  # fixed-width unicode is not portable across zarr formats
            ds[name] = ds[name].astype(object)
    with quiet_zarr():
        ds.to_zarr(tmp, mode="w", consolidated=True)
    if path.exists():
        old = _sibling(path, "old")
        path.rename(old)
        tmp.rename(path)  # a kill before this line: recover() renames `old` back
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def load(path: str | Path) -> xr.Dataset:
    """Open the store at ``path`` and load it into memory (a damaged store is a clear error)."""
    path = Path(path)
    recover(path)
    if not path.exists():
        raise FileNotFoundError(f"no results store at {str(path)!r}")
    try:
        with quiet_zarr(), xr.open_zarr(path) as ds:
            out = ds.load()
    except Exception as err:  # not a zarr store, or a damaged one
        raise ConfigError(f"{path} is not a readable sgdlab store ({type(err).__name__}: {err})") from None
    for name in list(out.variables):
        if out[name].dtype == object:
            out[name] = out[name].astype(str)
    return out
