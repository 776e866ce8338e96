"""The ``two_layer`` study as the core runs it: ``sgdlab timescales`` (CLI built by sgdlab.cli),
its ``[sweep]`` tables (:func:`sgdlab.core.sweep.run_sweep`) and ``sgdlab plot``."""

from __future__ import annotations

from sgdlab.core.study import Study
from sgdlab.two_layer.config import TimescalesConfig
from sgdlab.two_layer.experiment import STUDY_NAME, run

STUDY = Study(
    name=STUDY_NAME,
    command="timescales",
    config=TimescalesConfig,
    run=run,
    figures="sgdlab.two_layer.plot:figures",
    table="sgdlab.two_layer.plot:table",
    ref="sgdlab.two_layer.command:STUDY",
    sweep_variables=("risk_mean",),  # the learning curves of each point (t_half has a degree dim)
)
