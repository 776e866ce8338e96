"""sgdlab: the learning dynamics of SGD in high dimensions, simulated and predicted.

Quick use::

    import sgdlab
    ds = sgdlab.run()                       # the built-in default experiment
    ds = sgdlab.run({"algorithm": {"name": "gd"}, "simulation": {"d": 500}})

sgdlab enables JAX's 64-bit mode on import (theory solvers run in float64); simulators choose
their dtype explicitly (``simulation.dtype``).
"""

from importlib.metadata import PackageNotFoundError, version

import jax

jax.config.update("jax_enable_x64", True)

try:
    __version__ = version("sgdlab")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from sgdlab.dmft.config import Config, ConfigError, load_config  # noqa: E402
from sgdlab.dmft.experiment import NonFiniteError, run  # noqa: E402

__all__ = ["Config", "ConfigError", "NonFiniteError", "load_config", "run", "__version__"]
