"""The shared core of every wing: configs, errors, provenance, the atomic zarr store, the one
sweep engine, terminal reports, plot helpers, and the Study / command shape. It imports no wing.

After ``import sgdlab``, ``sgdlab.core.store.save(ds, path)`` and ``sgdlab.core.store.load(path)``
write and read result stores.
"""

from sgdlab.core import config, errors, provenance, store, study, sweep  # noqa: F401
from sgdlab.core.errors import ConfigError, NonFiniteError, SgdlabError

__all__ = ["ConfigError", "NonFiniteError", "SgdlabError", "config", "errors", "provenance", "store", "study", "sweep"]
