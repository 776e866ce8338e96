"""The study object of ``sgdlab sde`` (the CLI verb and the sweep engine are built from it)."""

from __future__ import annotations

from sgdlab.core.study import Study
from sgdlab.sde.config import SDEConfig
from sgdlab.sde.experiment import STUDY_NAME, run

STUDY = Study(
    name=STUDY_NAME,
    command="sde",
    config=SDEConfig,
    run=run,
    figures="sgdlab.sde.plot:figures",
    table="sgdlab.sde.plot:table",
    ref="sgdlab.sde.command:STUDY",
)
