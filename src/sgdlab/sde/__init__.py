"""SDE limits of SGD: stochastic modified flows (SMF), SME, SVAG, exact moments, weak orders.

Source: Gess, Kassing, Konarovskyi, "Stochastic modified flows, mean-field limits and dynamics of
stochastic gradient descent", JMLR 25 (2024); spec ``03_stochastic_modified_flows.md``.

The public names, from one concept per private module:

- models as data (:mod:`~sgdlab.sde.models`): :class:`SDEModel`, :data:`GF`, :data:`SME1`,
  :data:`SME2`, :data:`SMF`, :data:`SMF_INDEPENDENT`, :data:`SMF_EXPECTED_GRADIENT` (negative
  control), :class:`SVAG`, :data:`MODELS`, :func:`sde_for` (drift and diffusion on a problem);
- observables (:mod:`~sgdlab.sde.observables`): :class:`Observable`, :data:`OBSERVABLES`;
- exact moments for linear-gradient problems (:mod:`~sgdlab.sde.moments`):
  :func:`sgd_moments`, :func:`svag_moments`, :func:`sde_moments`;
- Monte Carlo (:mod:`~sgdlab.sde.solvers`): :func:`sgd_monte_carlo`,
  :func:`svag_monte_carlo`, :func:`sde_monte_carlo`, :func:`simulate_sde`, the schemes
  ``euler``, ``weak2``, ``talay_tubaro``;
- :func:`weak_error_study` and :func:`fit_slope` (:mod:`~sgdlab.sde.weak_error`).

Quick use::

    from sgdlab.sde.problems import quadratic_1d
    from sgdlab.sde import weak_error_study
    ds = weak_error_study(quadratic_1d([0.5, 1.0, 2.0], [1.0, -0.5, 0.3]),
                          ["gf", "sme1", "smf", "smf_expected_gradient"],
                          [1/8, 1/16, 1/32, 1/64], ["mean", "second_moment"], T=1.0, x0=[[1.5]])
    ds.slope.to_pandas()       # measured weak orders
"""

from sgdlab.sde.models import (
    GF,
    MODELS,
    SDE,
    SME1,
    SME2,
    SMF,
    SMF_EXPECTED_GRADIENT,
    SMF_INDEPENDENT,
    SDEModel,
    SVAG,
    expected_order,
    get_model,
    psd_sqrt,
    sde_for,
)
from sgdlab.sde.moments import (
    NoClosedMomentsError,
    augmented_initial_moment,
    expectation_from_moments,
    moments_of,
    sde_generator_matrices,
    sde_moments,
    sgd_moments,
    svag_moments,
)
from sgdlab.sde.observables import (
    CROSS_COV,
    INNER,
    LOSS,
    MEAN,
    OBSERVABLES,
    SECOND_MOMENT,
    SQ_DISTANCE,
    VARIANCE,
    Observable,
    get_observable,
)
from sgdlab.sde.solvers import (
    SCHEME_ORDERS,
    SCHEMES,
    Estimate,
    euler_step,
    joint_sde,
    sde_monte_carlo,
    sgd_final_states,
    sgd_monte_carlo,
    simulate_features,
    simulate_sde,
    svag_monte_carlo,
    weak2_step,
)
from sgdlab.sde.weak_error import fit_slope, weak_error_study

__all__ = [
    "CROSS_COV", "Estimate", "GF", "INNER", "LOSS", "MEAN", "MODELS", "NoClosedMomentsError", "OBSERVABLES",
    "Observable", "SCHEMES", "SCHEME_ORDERS", "SDE", "SDEModel", "SECOND_MOMENT", "SME1", "SME2", "SMF",
    "SMF_EXPECTED_GRADIENT", "SMF_INDEPENDENT", "SQ_DISTANCE", "SVAG", "VARIANCE", "augmented_initial_moment",
    "euler_step", "expectation_from_moments", "expected_order", "fit_slope", "get_model", "get_observable", "joint_sde",
    "moments_of", "psd_sqrt", "sde_for", "sde_generator_matrices", "sde_moments", "sde_monte_carlo",
    "sgd_final_states", "sgd_moments", "sgd_monte_carlo", "simulate_features", "simulate_sde",
    "svag_moments", "svag_monte_carlo", "weak2_step", "weak_error_study",
]
