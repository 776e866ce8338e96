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
"""

from sgdlab.dmft import noise
from sgdlab.dmft.batch_mask import MaskChain, mask_chain
from sgdlab.dmft.config import Config, load_config
from sgdlab.dmft.experiment import run, simulate, solve_theory
from sgdlab.dmft.noise import NoiseStudyConfig
from sgdlab.dmft.plot import figures, plot_order_parameters
from sgdlab.dmft.problem import GaussianMixture
from sgdlab.dmft.solver import DMFTError, DMFTResult, Dynamics, SolverOptions, solve_dmft

__all__ = [
    "Config",
    "DMFTError",
    "DMFTResult",
    "Dynamics",
    "GaussianMixture",
    "MaskChain",
    "NoiseStudyConfig",
    "SolverOptions",
    "figures",
    "load_config",
    "mask_chain",
    "noise",
    "plot_order_parameters",
    "run",
    "simulate",
    "solve_dmft",
    "solve_theory",
]
