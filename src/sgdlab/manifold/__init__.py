"""Noisy gradient descent near a zero-loss manifold, beside its slow limit (``sgdlab manifold``).

Simulations of GD with injected noise (label noise, Dropout, DropConnect, perturbed and
anti-correlated perturbed GD, SGLD, minibatch SGD) at several step sizes eta, compared with the
eta -> 0 limit on the manifold of minimisers on its slow time scale, computed by a generic autodiff
solver. Shalova, Schlichting, Peletier, arXiv 2404.12293 (2024); Li, Wang, Arora, ICLR 2022.

Quick use::

    from sgdlab import manifold
    ds = manifold.run({"noise": {"name": "label_noise", "sigma": 1.0}})   # or a TOML path, or None
    fig = manifold.figures(ds)[""]

Modules: :mod:`~sgdlab.manifold.models` (the models), :mod:`~sgdlab.manifold.injections` (the
noise pieces and their laws), :mod:`~sgdlab.manifold.noise` (the simulators), :mod:`~sgdlab.manifold.limit` (the limit solver; it never imports the simulators),
:mod:`~sgdlab.manifold.experiment` (the only place where both meet), ``config``, ``plot``,
``command`` (:data:`STUDY`). Names are imported on first use (this package is cheap to import).
"""

from __future__ import annotations

from sgdlab.core.lazy import lazy_exports


_WHERE = {
    "run": "experiment",
    "ManifoldConfig": "config",
    "load_config": "config",
    "figures": "plot",
    "table": "plot",
    "bias_summary": "plot",
    "STUDY": "command",
    "solve_limit": "limit",
    "classify_noise": "limit",
    "gradient_flow_limit": "limit",
    "tangent_space": "limit",
    "non_degenerate_drift": "limit",
    "degenerate_coefficients": "limit",
    "phi_second_derivative": "limit",
    "make_injection": "injections",
    "make_runner": "noise",
    "make_model": "models",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)
