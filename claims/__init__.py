"""Claims of the five papers behind sgdlab, each measured by a function that runs sgdlab's public
API and returns a :class:`~claims.record.Claim` (the claim, the command, the numbers with error
bars, a statistical verdict and why).

``python -m claims [NAMES] [--small]`` runs them and stores ``claims/results/NAME.json``;
``python -m claims --render`` writes ``docs/claims.md`` from the stored records alone (see
:mod:`claims.render`); ``tests/claims/test_claims.py`` reruns each claim (``slow``) and checks that
the page equals the rendering of the stored records (fast).

One module per paper: :mod:`claims.gaussian_mixture`, :mod:`claims.effective_noise`,
:mod:`claims.modified_flows`, :mod:`claims.zero_loss`, :mod:`claims.two_layer`; each has a
``CLAIMS`` dict ``{name: claim_function}``, and every function takes ``small: bool = False``
(a quick, smaller run; the stored records are never small).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from claims.record import Claim, Number

#: paper key (the module's name) -> section title of the page, in the page's order
PAPERS = {
    "gaussian_mixture": "Gaussian mixture and DMFT (Mignacco, Krzakala, Urbani, Zdeborová, NeurIPS 2020)",
    "effective_noise": "The effective noise of SGD (Mignacco & Urbani, J. Stat. Mech. 2022)",
    "modified_flows": "Stochastic modified flows (Gess, Kassing & Konarovskyi, JMLR 2024)",
    "zero_loss": "Noisy GD near the zero-loss manifold (Shalova, Schlichting & Peletier, 2024)",
    "two_layer": "Learning time scales of two-layer networks (Berthier, Montanari & Zhou, FoCM 2024)",
}


def _registry() -> dict[str, tuple[str, Callable[..., Claim]]]:
    reg = {}
    for paper in PAPERS:
        for name, fn in import_module(f"claims.{paper}").CLAIMS.items():
            reg[name] = (paper, fn)
    return reg


#: claim name -> (paper key, function), in the page's order
REGISTRY = _registry()

__all__ = ["PAPERS", "REGISTRY", "Claim", "Number"]
