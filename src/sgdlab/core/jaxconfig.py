"""The JAX settings sgdlab makes when it is imported, in one place.

- ``jax_enable_x64``: the theory solvers need float64 (simulators choose their dtype themselves);
- JAX's persistent compilation cache, so that a second process with the same shapes skips
  compiling: in ``$SGDLAB_JAX_CACHE`` (default ``~/.cache/sgdlab/jax``); ``SGDLAB_JAX_CACHE=off``
  leaves JAX's cache settings alone. A cache directory the user already configured for JAX
  (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept.

Both are set the moment JAX is imported (:func:`configure_jax`: at once if it already is, else by
a one-shot post-import hook), so that ``import sgdlab`` does not import JAX and the command line's
``--help`` stays instant; nothing is written to the environment of child processes.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path


def _cache_folder(current: str | None) -> str | None:
    """The cache folder to use given the one already configured (``None``: leave JAX's cache alone)."""
    setting = os.environ.get("SGDLAB_JAX_CACHE", "")
    if setting.lower() in ("off", "0", "false", "none"):
        return None
    if current and not setting:
        return current  # the user's own choice
    cache = setting or str(Path.home() / ".cache" / "sgdlab" / "jax")
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    return cache


def configure_compilation_cache() -> str | None:
    """Enable JAX's persistent compilation cache (idempotent); returns the folder, or ``None``
    when it is switched off or the folder cannot be created. Imports JAX."""
    import jax

    current = jax.config.jax_compilation_cache_dir
    cache = _cache_folder(current)
    if cache is not None and current != cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return cache


def _configure_now() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    configure_compilation_cache()


class _AfterJaxImport(importlib.abc.MetaPathFinder):
    """A one-shot post-import hook: runs :func:`_configure_now` right after the module ``jax`` has
    executed, whoever imports it first, then leaves ``sys.meta_path``. A mere lookup
    (``importlib.util.find_spec("jax")`` by a library probing for JAX) does not use it up."""

    _busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "jax" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec("jax")  # the other finders' answer
        finally:
            self._busy = False
        if spec is not None and spec.loader is not None:
            spec.loader = _ConfiguringLoader(spec.loader, self)
        return spec


class _ConfiguringLoader(importlib.abc.Loader):
    """The loader of ``jax``, then :func:`_configure_now`."""

    def __init__(self, loader, finder: _AfterJaxImport):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        _configure_now()


def configure_jax() -> None:
    """What ``import sgdlab`` sets: float64 and the compilation cache. If JAX is not imported yet,
    they are set right after it is (so that ``import sgdlab`` does not import JAX, and the command
    line's ``--help`` and ``examples`` stay instant), else at once."""
    if "jax" in sys.modules:
        _configure_now()
    elif not any(isinstance(f, _AfterJaxImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterJaxImport())
