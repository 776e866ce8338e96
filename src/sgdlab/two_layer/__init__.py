"""Learning time-scales of two-layer networks (study ``two_layer``, command ``sgdlab timescales``).

Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks", FoCM 2024
(BMZ): a wide two-layer network with first/second-layer learning-rate ratio ``eps`` learns a
single-index target degree by degree; the risk follows a staircase of plateaus
``(1/2) sum_{k>=l} phi_k^2`` with half-learning times ``t_l ~ eps^{1/(2l)}``. :func:`run` puts
the exact finite-``d`` population flow (theory), online SGD with step ``eta`` (simulator) and
the reduced ``(a, s)`` dynamics (``d = inf``) side by side on one log time grid, detects the
plateaus, measures ``t_l`` and fits its exponent over ``[scan] eps``.

Quick use::

    from sgdlab.two_layer import run, figures
    ds = run()          # the default example (or a dict of TOML keys, a TOML path, a TimescalesConfig)
    ds.t_half.to_pandas(); figures(ds)[""].savefig("staircase.png")

Layers: :mod:`~sgdlab.two_layer.problem` (the model, Hermite/Mehler maths) under the theory
(:mod:`~sgdlab.two_layer.flow`, :mod:`~sgdlab.two_layer.reduced`, :mod:`~sgdlab.two_layer.committee_ode`,
:mod:`~sgdlab.two_layer.analysis`) and the simulator (:mod:`~sgdlab.two_layer.sgd`), which never
import each other; :mod:`~sgdlab.two_layer.experiment` puts them side by side.
"""

from __future__ import annotations

from sgdlab.core.lazy import lazy_exports


#: public name -> module that defines it (imported on first use: ``import sgdlab.two_layer`` stays cheap)
_WHERE = {
    "run": "experiment",
    "TimescalesConfig": "config",
    "load_config": "config",
    "SingleIndex": "problem",
    "hermite_coefficients": "problem",
    "hermite_projection": "problem",
    "solve_population_flow": "flow",
    "solve_reduced": "reduced",
    "flow_from_random_starts": "flow",
    "degree_one_time": "reduced",
    "online_sgd": "sgd",
    "finite_data_sgd": "sgd",
    "solve_committee": "committee_ode",
    "detect_plateaus": "analysis",
    "half_learning_times": "analysis",
    "fit_power_law": "analysis",
    "figures": "plot",
    "table": "plot",
    "STUDY": "command",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)
