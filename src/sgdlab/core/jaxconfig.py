"""The JAX settings sgdlab makes when it is imported, in one place.

- ``jax_enable_x64``: the theory solvers need float64 (simulators choose their dtype themselves);
- JAX's persistent compilation cache, so that a second process with the same shapes skips
  compiling: in ``$SGDLAB_JAX_CACHE`` (default ``~/.cache/sgdlab/jax``); ``SGDLAB_JAX_CACHE=off``
  leaves JAX's cache settings alone. A cache directory the user already configured for JAX
  (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure_compilation_cache() -> str | None:
    """Enable JAX's persistent compilation cache (idempotent); returns the folder, or ``None``
    when it is switched off or the folder cannot be created."""
    import jax

    setting = os.environ.get("SGDLAB_JAX_CACHE", "")
    if setting.lower() in ("off", "0", "false", "none"):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current and not setting:
        return current  # the user's own choice
    cache = setting or str(Path.home() / ".cache" / "sgdlab" / "jax")
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    if current != cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return cache


def configure_jax() -> None:
    """What ``import sgdlab`` sets: float64 and the compilation cache."""
    import jax

    jax.config.update("jax_enable_x64", True)
    configure_compilation_cache()
