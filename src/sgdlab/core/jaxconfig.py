"""The JAX settings sgdlab makes when it is imported, in one place.

- ``jax_enable_x64``: the theory solvers need float64 (simulators choose their dtype themselves);
- JAX's persistent compilation cache, so that a second process with the same shapes skips
  compiling: in ``$SGDLAB_JAX_CACHE`` (default ``~/.cache/sgdlab/jax``); ``SGDLAB_JAX_CACHE=off``
  leaves JAX's cache settings alone. A cache directory the user already configured for JAX
  (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept.
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


class _AfterJaxImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs :func:`_configure_now` right after the module ``jax`` has executed, whoever imports it
    first (a one-shot post-import hook: it removes itself at the first ``import jax``)."""

    def find_spec(self, name, path=None, target=None):
        if name != "jax":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("jax")
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _configure_now()


def configure_jax() -> None:
    """What ``import sgdlab`` sets: float64 and the compilation cache. If JAX is not imported yet,
    they are set right after it is (so that ``import sgdlab`` does not import JAX, and the command
    line's ``--help`` and ``examples`` stay instant), else at once."""
    if "jax" in sys.modules:
        _configure_now()
    elif not any(isinstance(f, _AfterJaxImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterJaxImport())
