"""Gaussian-mixture classification: GD, SGD, persistent SGD, SGF and Langevin, simulated at finite
``d`` and solved by dynamical mean-field theory (DMFT), with the effective noise of SGD.

Sources: Mignacco, Krzakala, Urbani, Zdeborova, "Dynamical mean-field theory for stochastic
gradient descent in Gaussian mixture classification", NeurIPS 2020; Mignacco & Urbani, "The
effective noise of stochastic gradient descent", J. Stat. Mech. 2022.

Quick use::

    from sgdlab import dmft
    ds = dmft.run({"algorithm": {"name": "sgd", "batch_fraction": 0.2}, "theory": {"methods": ["dmft"]}})
    ds.test_error.sel({"method": "sim"}).mean("seed")
    noise = dmft.noise.run()          # the effective-noise study (``sgdlab noise``)

Names are imported on first use (importing this package does not import matplotlib or the solvers).
"""

from sgdlab.core.lazy import lazy_exports

_WHERE = {
    "noise": "noise",
    "MaskChain": "batch_mask",
    "mask_chain": "batch_mask",
    "Config": "config",
    "load_config": "config",
    "run": "experiment",
    "simulate": "experiment",
    "solve_theory": "experiment",
    "NoiseStudyConfig": "noise",
    "figures": "plot",
    "plot_order_parameters": "plot",
    "GaussianMixture": "problem",
    "DMFTError": "solver",
    "DMFTResult": "solver",
    "Dynamics": "solver",
    "SolverOptions": "solver",
    "solve_dmft": "solver",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)
