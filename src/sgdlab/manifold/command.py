"""The manifold study as the CLI and the sweep engine see it: ``sgdlab manifold``.

:data:`STUDY` wraps :func:`sgdlab.manifold.experiment.run` (simulations at every eta of
``simulation.etas`` beside the eta -> 0 limit), its figure and its bias table; the generic runner
:func:`sgdlab.core.command.run_study_command` loads, merges ``--set``, saves and prints.
"""

from __future__ import annotations

from sgdlab.core.study import Study
from sgdlab.manifold.config import ManifoldConfig
from sgdlab.manifold.experiment import STUDY_NAME, run

STUDY = Study(
    name=STUDY_NAME,
    command="manifold",
    config=ManifoldConfig,
    run=run,
    figures="sgdlab.manifold.plot:figures",
    table="sgdlab.manifold.plot:table",
    ref="sgdlab.manifold.command:STUDY",
)

__all__ = ["STUDY"]
