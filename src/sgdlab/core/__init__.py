"""The shared core of every wing: configs, errors, provenance, the atomic zarr store, the one
sweep engine, terminal reports, plot helpers, and the Study / command shape. It imports no wing.

After ``import sgdlab``, ``sgdlab.core.store.save(ds, path)`` and ``sgdlab.core.store.load(path)``
write and read result stores. Names are imported on first use.
"""

from sgdlab.core.lazy import lazy_exports

_WHERE = {
    "ConfigError": "errors",
    "NonFiniteError": "errors",
    "SgdlabError": "errors",
    **{m: m for m in ("config", "errors", "provenance", "store", "study", "sweep")},
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)
