"""Solvable models: data, losses and order parameters (nothing of algorithms)."""

from sgdlab.problems.gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
