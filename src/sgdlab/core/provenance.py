"""The attrs every result Dataset carries, written in one place.

``config`` (canonical JSON of the resolved config), ``config_hash``, ``study`` (which wing's
``run`` made it: ``dmft``, ``noise``, ``sde``, ``manifold``, ``two_layer``), ``status``
(``complete`` or ``failed: ...``), ``sgdlab_version``, ``jax_version``, ``backend``.
"""

from __future__ import annotations

from typing import Any


def provenance(config: Any, study: str, status: str = "complete") -> dict[str, str]:
    """The standard attrs of a result of ``study`` computed from the validated ``config``."""
    import jax

    from sgdlab import __version__

    return {
        "config": config.to_json(),
        "config_hash": config.config_hash(),
        "study": study,
        "status": status,
        "sgdlab_version": __version__,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
    }
