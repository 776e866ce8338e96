"""SDE limits of SGD: which continuous model (gradient flow, SME-1/2, the stochastic modified flow
SMF, SVAG) describes SGD, and to which weak order in the learning rate ``eta``.

Paper: Gess, Kassing, Konarovskyi, "Stochastic modified flows, mean-field limits and dynamics of
stochastic gradient descent", JMLR 25 (2024); SME: Li, Tai, E (2019); SVAG: Li, Malladi, Arora
(2021). Documentation: ``docs/sde.md``.

Quick use::

    from sgdlab import sde
    ds = sde.run({"study": {"models": ["gf", "sme1", "smf"], "etas": [1/8, 1/16, 1/32]}})
    ds.slope.to_pandas()              # measured weak orders; sde.figures(ds)[""] is the figure

The theory (models, exact moments, SDE Monte Carlo, mean-field SMF) lives in ``models``,
``moments``, ``solvers``, ``observables``, ``mean_field``; the simulator (SGD and SVAG Monte Carlo)
in ``sgd``; the study that puts them side by side in ``weak_error`` and ``experiment``. Names are
imported on first use, so ``import sgdlab.sde`` is cheap.
"""

from __future__ import annotations

from sgdlab.core.lazy import lazy_exports


#: public name -> the submodule that defines it
_WHERE = {
    # the study
    "run": "experiment",
    "SDEConfig": "config",
    "load_config": "config",
    "figures": "plot",
    "table": "plot",
    "weak_error_study": "weak_error",
    "fit_slope": "weak_error",
    "mean_field_study": "weak_error",
    # models and observables
    "SDEModel": "models",
    "SVAG": "models",
    "SDE": "models",
    "MODELS": "models",
    "GF": "models",
    "SME1": "models",
    "SME2": "models",
    "SMF": "models",
    "SMF_INDEPENDENT": "models",
    "SMF_EXPECTED_GRADIENT": "models",
    "sde_for": "models",
    "expected_order": "models",
    "Observable": "observables",
    "OBSERVABLES": "observables",
    # theory: exact moments and SDE Monte Carlo
    "sde_moments": "moments",
    "sgd_moments": "moments",
    "svag_moments": "moments",
    "NoClosedMomentsError": "moments",
    "sde_monte_carlo": "solvers",
    "simulate_sde": "solvers",
    "simulate_features": "solvers",
    # the simulator
    "sgd_monte_carlo": "sgd",
    "svag_monte_carlo": "sgd",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)
