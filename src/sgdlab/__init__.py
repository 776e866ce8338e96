"""sgdlab: the learning dynamics of SGD in high dimensions, simulated and predicted.

One wing per model family, each with the same verb ``run(config) -> xarray.Dataset``:

- :mod:`sgdlab.dmft` (Gaussian-mixture classification, DMFT, effective noise);
- :mod:`sgdlab.sde` (stochastic modified flows, weak orders, mean field);
- :mod:`sgdlab.manifold` (noisy GD on zero-loss manifolds and its slow limit);
- :mod:`sgdlab.two_layer` (two-layer learning time scales).

Quick use::

    import sgdlab
    ds = sgdlab.run()                       # the built-in default experiment (Gaussian mixture)
    ds = sgdlab.run({"algorithm": {"name": "gd"}, "simulation": {"d": 500}})

Importing sgdlab enables JAX's 64-bit mode (``jax_enable_x64``; theory solvers run in float64;
simulators choose their dtype explicitly, ``simulation.dtype``) and JAX's persistent compilation
cache in ``~/.cache/sgdlab/jax`` (``SGDLAB_JAX_CACHE=DIR`` moves it, ``SGDLAB_JAX_CACHE=off``
leaves JAX's cache alone): see :mod:`sgdlab.core.jaxconfig`; both are set when JAX is first
imported, so importing sgdlab itself is cheap (its names are imported on first use). sgdlab never
selects a matplotlib backend.
"""

from importlib.metadata import PackageNotFoundError, version

from sgdlab.core.jaxconfig import configure_jax
from sgdlab.core.lazy import lazy_exports

configure_jax()

try:
    __version__ = version("sgdlab")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

_WHERE = {
    "ConfigError": "core.errors",
    "NonFiniteError": "core.errors",
    "SgdlabError": "core.errors",
    "Config": "dmft.config",
    "load_config": "dmft.config",
    "run": "dmft.experiment",
    **{wing: wing for wing in ("core", "dmft", "sde", "manifold", "two_layer")},  # sgdlab.dmft.run, ...
}
_, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = ["Config", "ConfigError", "NonFiniteError", "SgdlabError", "load_config", "run", "__version__"]
